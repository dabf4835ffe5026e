"""`commonstack upgrade`: backed-up, health-gated upgrades that roll themselves back.

preflight.py decides, from a survey of each host and before any change, what would be upgraded
and every reason to refuse; upgrader.py runs it, one layer of one host at a time. The host-side
steps live with the deploys (deploys/upgrade.py and deploys/LAYER_upgrade.py); the health gate is
the checks' own runner. This package is the one place that drives both.
"""
