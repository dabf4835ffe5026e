"""Deploying a group with pyinfra: converge.py plans and applies; runner.py drives pyinfra."""

# The pyinfra release whose internals pyinfra_api.py was written for (pyproject.toml pins the same).
# Here, not there, so that what depends only on it (fact_memory.py's contexts) need not load pyinfra.
PINNED = "3.10.0"
