"""Preflight refusals: what a layer checks on the host before it changes anything."""

from __future__ import annotations

from commonstack.errors import CommonstackError


class SourceUnavailable(CommonstackError):
    """An upstream source (tarball, git repository, registry) cannot be reached from the host.

    `deploy` fails the host with this one line before any change; `try` skips the layer with it
    and deploys the rest.
    """

    def __init__(self, layer: str, reason: str):
        self.layer, self.reason = layer, reason
        super().__init__(f"{layer}: {reason}")


def require_upstream(plan, layer: str, source: str, instead: str = "") -> None:
    """Refuse, without contacting it, an upstream source that an offline profile cannot reach."""
    if plan.profile.offline:
        reason = f"the profile says offline: true, so {source} is not fetched"
        raise SourceUnavailable(layer, f"{reason} ({instead})" if instead else reason)
