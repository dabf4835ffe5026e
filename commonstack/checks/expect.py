"""Helpers shared by the check modules."""

from __future__ import annotations

NOT_HERE = "is not on this host"


def require_layer(stack: dict, layer: str) -> None:
    """Skip a check of a layer the host does not run (the report leaves such checks out)."""
    import pytest  # here: `commonstack check` reads NOT_HERE without loading pytest

    if layer not in stack["layers"]:
        pytest.skip(f"{layer} {NOT_HERE}")
