"""The numbers of a dotted version, for comparisons: apart from versions.py (which loads the pinned
versions with pydantic) so that the health checks, which compare versions, start without it."""

from __future__ import annotations

import re


def numeric(version: str) -> tuple[int, ...]:
    """A dotted version's numbers, for comparisons ("20.10.24" is not older than "20.10")."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def major(version: str) -> int:
    return numeric(version)[0]
