"""Data flows one way: what (stacks) -> where (inventories) -> rendering -> plan -> deploys / checks
-> the commands. A module imports only from its own package or from a lower level, never a
higher one; deploys and checks never import each other; and only the deploys import pyinfra.

The graph is read from the source (every import statement, at module level or inside a
function), so a lazy import counts as much as any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "commonstack"

# Levels, lowest first. Modules of one level may import each other only within their package.
LEVELS = {
    "commonstack": 0,  # the package itself (empty)
    "commonstack.errors": 0,
    "commonstack.formats": 1,  # quoting values for config formats: pure functions
    "commonstack.stacks": 1,
    "commonstack.inventories": 2,
    "commonstack.rendering": 3,
    "commonstack.plan": 4,
    "commonstack.deploys": 5,
    "commonstack.checks": 5,
    "commonstack.testhosts": 5,
    "commonstack.runbook": 5,
    "commonstack.trial": 6,
    "commonstack.backups": 6,
    "commonstack.upgrades": 6,  # drives deploys and checks together
    "commonstack.cli": 7,
    "commonstack.__main__": 8,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The LEVELS entry a module belongs to (its package, or itself)."""
    for unit in sorted(LEVELS, key=len, reverse=True):
        if module == unit or (unit != "commonstack" and module.startswith(unit + ".")):
            return unit
    raise AssertionError(f"{module} is not placed in LEVELS: give it a level")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                if node.module:
                    found.add(f"{base}.{node.module}")
                else:  # from . import module
                    found.update(f"{base}.{alias.name}" for alias in node.names)
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {i for i in imports_of(path) if i in modules and i != name}
        for name, path in modules.items()
    }


def test_every_module_has_a_level():
    for module in graph():
        unit_of(module)


def test_no_module_imports_a_higher_level_or_a_sibling_package():
    wrong = []
    for module, imported in graph().items():
        own = unit_of(module)
        for target in imported:
            other = unit_of(target)
            if other != own and LEVELS[other] >= LEVELS[own]:
                wrong.append(f"{module} imports {target} ({other} is not below {own})")
    assert not wrong, "\n".join(sorted(wrong))


def test_there_is_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target] if target in path else [module, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_only_the_deploys_import_pyinfra():
    """The runner must patch gevent before pyinfra loads: only commonstack.deploys may import it."""
    wrong = [
        module
        for module, path in ((module_name(p), p) for p in PACKAGE.rglob("*.py"))
        if unit_of(module) != "commonstack.deploys" and any(i.split(".")[0] == "pyinfra" for i in imports_of(path))
    ]
    assert not wrong, f"these import pyinfra: {wrong}"


def test_the_graph_test_sees_a_violation(tmp_path):
    """The reader itself: an upward import in a lower module is reported."""
    source = tmp_path / "probe.py"
    source.write_text("from commonstack.deploys.stack import deploy_host\n")
    assert "commonstack.deploys.stack" in imports_of(source)
