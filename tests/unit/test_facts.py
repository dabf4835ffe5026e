"""The kit's pyinfra facts, case by case: command output in, value out, through pyinfra's own
fact loading, empty output included (tests/unit/pyinfra_tables.py says how a case is written)."""

from __future__ import annotations

import pytest

from tests.unit.pyinfra_tables import cases, declared, load_fact, params, typed

# Facts whose module cannot be imported by a test process.
ELSEWHERE = {
    # runner.py patches gevent into whatever imports it, which a pytest-xdist worker does not
    # survive; tests/unit/test_runner.py exercises it in a child interpreter, through real diffs.
    "runner.RemoteFileBase64",
}


@pytest.mark.parametrize("case", params("facts"))
def test_fact(case):
    data = case.load()
    value, commands = load_fact(case.resolve(), data.get("args", {}), data["output"])
    assert commands == [data["command"]]
    assert typed(value) == typed(data["fact"])


def test_every_fact_has_cases_and_one_for_empty_output():
    with_cases = {case.subject for case in cases("facts")}
    assert declared("facts") - ELSEWHERE == with_cases
    empty = {case.subject for case in cases("facts") if case.load()["output"] == []}
    assert with_cases - empty == set(), "pyinfra gives default() for an empty output: every fact needs that case"
