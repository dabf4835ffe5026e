"""Helpers shared by the check modules."""

from __future__ import annotations

from commonstack.stacks.versions import numeric

NOT_HERE = "is not on this host"


def require_layer(stack: dict, layer: str) -> None:
    """Skip a check of a layer the host does not run (the report leaves such checks out)."""
    import pytest  # here: `commonstack check` reads NOT_HERE without loading pytest

    if layer not in stack["layers"]:
        pytest.skip(f"{layer} {NOT_HERE}")


def require_release(service: dict, running: str, what: str) -> None:
    """The release running must be the one the profile wants. An older one, outside an upgrade's
    health gate (`exact_version`), is a pending upgrade: the check skips, saying so."""
    import pytest

    wanted = service["version"]
    if running == wanted:
        return
    if running and not service.get("exact_version") and numeric(running) < numeric(wanted):
        pytest.skip(f"{what} {running} runs here and the profile asks for {wanted}: run `commonstack upgrade`")
    assert running == wanted, (
        f"{what} {running or 'is missing'} runs here, not {wanted}"
        + ("" if service.get("exact_version") else ": `commonstack upgrade` moves releases forward only")
    )
