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
