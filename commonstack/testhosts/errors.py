"""The one error type of the test-host package."""

from __future__ import annotations

from ..errors import CommonstackError


class TestHostError(CommonstackError):
    """A test host cannot be created, reached or removed; the message says what to do."""

    __test__ = False  # not a pytest test class, despite the name
