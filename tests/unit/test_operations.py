"""The kit's pyinfra operations, case by case: facts in, commands out, and nothing more on a
second run (tests/unit/pyinfra_tables.py says how a case is written)."""

from __future__ import annotations

import pytest

from tests.unit.pyinfra_tables import FakeHost, cases, declared, given, params, run_operation


@pytest.mark.parametrize("case", params("operations"))
def test_operation(case):
    data = case.load()
    operation = case.resolve()
    kwargs, facts = data.get("kwargs", {}), data.get("facts", {})

    host = FakeHost(facts)
    commands = run_operation(operation, kwargs, host)
    assert commands == data["commands"]
    assert host.noops == ([data["noop"]] if "noop" in data else [])
    if not commands:
        assert "noop" in data, "a case where nothing changes says why (noop:)"
    unread = given(facts) - host.read
    assert not unread, f"the case gives facts the operation never reads: {sorted(unread)}"

    if commands:
        assert "facts_after" in data or "kwargs_after" in data, (
            "a case that changes something says what the facts are after it (facts_after:, kwargs_after:)"
        )
    again = FakeHost(data.get("facts_after", {}), facts)
    second = run_operation(operation, {**kwargs, **data.get("kwargs_after", {})}, again)
    assert second == [], f"not idempotent: a second run still yields {second}"
    assert again.noops, "a second run, with nothing to do, says why"


def test_every_operation_has_cases():
    assert declared("operations") == {case.subject for case in cases("operations")}
