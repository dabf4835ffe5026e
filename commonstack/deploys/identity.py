"""Keeping pyinfra's operation identities apart on hosts whose operations differ."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyinfra import host


@contextmanager
def operation_identity(marker: int) -> Iterator[None]:
    """pyinfra 3.10's API identifies an operation by its position in the host's sequence
    (issue #1370), so on hosts with different services unrelated operations would share an
    identity. Operations added inside this block carry `marker` in theirs as well: give each
    optional part (a layer, one database of several) its own fixed marker."""
    host.loop_position.append(marker)
    try:
        yield
    finally:
        host.loop_position.pop()
