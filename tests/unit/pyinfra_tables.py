"""Tables of cases for the kit's own pyinfra operations and facts, in pyinfra's style (its
tests/test_operations.py and tests/test_facts.py): one small YAML file per case, no root, no host.

Operations: facts in, commands out
----------------------------------
``fixtures/operations/MODULE.OPERATION/CASE.yaml``, for ``commonstack.deploys.MODULE.OPERATION``::

    # A VPS without swap: the file is made, written into fstab and switched on.
    kwargs: {path: /swapfile, size_mb: 1024}   # the operation's arguments
    facts:                                     # what host.get_fact answers, and nothing more
      facts.InContainer: false                 # a fact without arguments: its value
      files.File:                              # with arguments: by pyinfra's "name=value, ..."
        path=/swapfile: null                   #   (sorted by name, as in pyinfra's own tables)
    commands:                                  # exactly what it yields, in order
      - rm -f /swapfile
      - [upload, "the file's content, or a local path", /the/remote/path]
    facts_after:                               # the facts once those commands ran (what changed)
      files.File: {path=/swapfile: {size: 1073741824}}
    kwargs_after: {installed: true}            # arguments that carry state read before the deploy
    noop: no swap file wanted                  # with no commands: the reason it gives (host.noop)
    known_bug: why the case fails today        # optional: a strict xfail, until the bug is fixed

The fake host answers only from the table: a fact the operation reads that the case does not
give fails the case, and so does a fact the case gives that the operation never reads.

Every case runs a second time, as in pyinfra's own operation tests, with ``facts_after`` laid over
``facts`` and ``kwargs_after`` over ``kwargs``. It must yield nothing then, or the operation is
not idempotent. So a case that yields commands says what they change, and says it truthfully:
the facts as the host would report them after exactly those commands.

Facts: command output in, value out
-----------------------------------
``fixtures/facts/MODULE.FACT/CASE.yaml``, for ``commonstack.deploys.MODULE.FACT``::

    args: {path: /var}                          # the fact's arguments (left out when none)
    command: df -Pk /var | awk '...'            # exactly the command it runs on the host
    output: ["40960"]                           # its output, one line per item
    fact: 40960                                 # the value a deploy gets

They run through pyinfra's own fact loading (``pyinfra.api.facts.get_fact`` on a host of its
``@fake`` connector), so an empty output gives the fact's ``default()`` -- never ``process([])``
-- exactly as in a deploy. Every fact needs a case with ``output: []``. Values compare with
their types (``false`` is not ``0``); a dataclass compares as its fields.

Names and values
----------------
A fact is named as pyinfra names its own, without the package: ``files.File``,
``swap.ActiveSwaps``, ``discourse.GitCheckout``. Objects YAML has no word for are built with
``!new:module.Name`` followed by a mapping (keyword arguments) or a scalar (one argument), e.g.
``!new:io.StringIO "text"`` or ``!new:commonstack.deploys.nextcloud_source.NextcloudRelease
{...}``; bytes are ``!!binary``. A case may repeat a mapping with an anchor and ``<<: *name``
(then keys of its own), but not with a list of them: PyYAML 6.0.4 lets the later mapping of
``<<: [*a, *b]`` win.

A new operation or fact (``@operation`` or a ``FactBase`` subclass in commonstack/deploys/)
needs only its folder of cases: tests/unit/test_operations.py and test_facts.py find it, and fail
until it has one.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api import Config, FileUploadCommand, Inventory, State, StringCommand
from pyinfra.api.facts import get_fact
from pyinfra.api.util import get_kwargs_str
from pyinfra.context import ctx_host, ctx_state

FIXTURES = Path(__file__).parent / "fixtures"
DEPLOYS = Path(__file__).resolve().parents[2] / "commonstack" / "deploys"
PACKAGES = ("pyinfra.facts.", "commonstack.deploys.")


# --- the case files ----------------------------------------------------------------------------


class _CaseLoader(yaml.SafeLoader):
    """YAML's safe loader, plus ``!new:module.Name`` for the objects an operation takes."""


def _construct_new(loader: _CaseLoader, suffix: str, node: yaml.Node) -> Any:
    module, _, name = suffix.rpartition(".")
    cls = getattr(import_module(module), name)
    if isinstance(node, yaml.MappingNode):
        return cls(**loader.construct_mapping(node, deep=True))
    return cls(loader.construct_scalar(node))


_CaseLoader.add_multi_constructor("!new:", _construct_new)


@dataclass(frozen=True)
class Case:
    subject: str  # "swap.swapfile", "discourse.GitCheckout": the folder's name
    path: Path

    @property
    def id(self) -> str:
        return f"{self.subject}/{self.path.stem}"

    def load(self) -> dict[str, Any]:
        return yaml.load(self.path.read_text(), _CaseLoader)  # noqa: S506 (a SafeLoader)

    def resolve(self) -> Any:
        """The operation or fact class the folder is named for."""
        module, name = self.subject.split(".")
        return getattr(import_module(f"commonstack.deploys.{module}"), name)


def cases(kind: str) -> list[Case]:
    """Every case of `kind` ("operations" or "facts"), sorted."""
    return [
        Case(folder.name, path)
        for folder in sorted((FIXTURES / kind).iterdir())
        for path in sorted(folder.glob("*.yaml"))
    ]


def params(kind: str) -> list[Any]:
    """`cases(kind)` as pytest parameters: named by their file, a known bug as a strict xfail."""
    found = []
    for case in cases(kind):
        bug = case.load().get("known_bug")
        marks = [pytest.mark.xfail(reason=bug, strict=True)] if bug else []
        found.append(pytest.param(case, id=case.id, marks=marks))
    return found


def declared(kind: str) -> set[str]:
    """Every operation (kind "operations") or fact ("facts") that commonstack/deploys declares,
    as MODULE.NAME, read from the source: importing deploys/runner.py would patch gevent into
    the test process."""
    names = set()
    for source in sorted(DEPLOYS.glob("*.py")):
        for node in ast.parse(source.read_text()).body:
            if kind == "facts" and isinstance(node, ast.ClassDef):
                bases = {ast.unparse(base).split("[")[0] for base in node.bases}
                if "FactBase" in bases:
                    names.add(f"{source.stem}.{node.name}")
            elif kind == "operations" and isinstance(node, ast.FunctionDef):
                decorators = {ast.unparse(d).split("(")[0] for d in node.decorator_list}
                if "operation" in decorators:
                    names.add(f"{source.stem}.{node.name}")
    return names


# --- operations ----------------------------------------------------------------------------


def fact_name(cls: type) -> str:
    """A fact's name in the tables: "files.File", "swap.ActiveSwaps"."""
    module = cls.__module__
    for package in PACKAGES:
        module = module.removeprefix(package)
    return f"{module}.{cls.__name__}"


class MissingFact(LookupError):
    pass


class FakeHost:
    """What an operation sees of `pyinfra.host`: facts from tables (the first that has the
    answer wins), and the noop it reports. It records which facts were read."""

    name = "fakehost"

    def __init__(self, *tables: dict[str, Any]):
        self.tables = tables
        self.noops: list[str] = []
        self.read: set[tuple[str, str | None]] = set()

    def get_fact(self, cls: type, **kwargs: Any) -> Any:
        name, key = fact_name(cls), get_kwargs_str(kwargs) or None
        self.read.add((name, key))
        for table in self.tables:
            if name in table and key is None:
                return table[name]
            if name in table and isinstance(table[name], dict) and key in table[name]:
                return table[name][key]
        raise MissingFact(f"the case gives no value for {name}" + (f" ({key})" if key else ""))

    def noop(self, description: str) -> None:
        self.noops.append(description)

    def get_temp_filename(self, *args: Any, **kwargs: Any) -> str:
        return "_tempfile_"


def given(table: dict[str, Any]) -> set[tuple[str, str | None]]:
    """The (fact, arguments) pairs a table answers, in FakeHost.read's terms."""
    pairs: set[tuple[str, str | None]] = set()
    for name, value in table.items():
        if isinstance(value, dict) and value and all("=" in key for key in value):
            pairs |= {(name, key) for key in value}
        else:
            pairs.add((name, None))
    return pairs


@contextmanager
def _as_current(host: Any, state: Any = None) -> Iterator[None]:
    """pyinfra's context (`from pyinfra import host`) pointed at these, restored even on an error."""
    old_host, old_state = ctx_host.get(), ctx_state.get()
    ctx_host.set(host)
    if state is not None:
        ctx_state.set(state)
    try:
        yield
    finally:
        ctx_host.set(old_host)
        ctx_state.set(old_state)


def command_data(command: Any) -> Any:
    """A yielded command as the tables write it: a string, or [upload, content or path, dest]."""
    if isinstance(command, str):
        return command
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    if isinstance(command, FileUploadCommand):
        if hasattr(command.src, "read"):
            command.src.seek(0)
            return ["upload", command.src.read(), str(command.dest)]
        return ["upload", str(command.src), str(command.dest)]
    raise TypeError(f"{command!r} is a command the tables cannot write yet")


def run_operation(operation: Any, kwargs: dict[str, Any], host: FakeHost) -> list[Any]:
    """The commands `operation` yields on `host` (its noop, if any, lands in host.noops)."""
    with _as_current(host):
        return [command_data(command) for command in operation._inner(**kwargs)]


# --- facts ---------------------------------------------------------------------------------


@cache
def _fake_pyinfra_host() -> tuple[State, Any]:
    """One host of pyinfra's @fake connector: it answers every command from its fake_responses."""
    inventory = Inventory((["@fake"], {"fake_delay": 0, "fake_delay_jitter": 0}))
    state = State(inventory, Config())
    host = inventory.get_host("@fake")
    host.connect()
    return state, host


def load_fact(fact: type, args: dict[str, Any], output: list[str]) -> tuple[Any, list[str]]:
    """The value pyinfra gives a deploy for `fact` when its command prints `output`, and the
    commands it ran for it."""
    state, host = _fake_pyinfra_host()
    host.connector.data["fake_responses"] = {re.compile(""): {"stdout": output}}
    host.connector.executed_commands.clear()
    with _as_current(host, state):
        value = get_fact(state, host, fact, kwargs=args)
    return value, list(host.connector.executed_commands)


def typed(value: Any) -> Any:
    """`value` with each scalar's type beside it, so that a comparison tells False from 0."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [typed(item) for item in value]
    return (type(value).__name__, value)
