"""pyinfra's internals stay in one module (commonstack/deploys/pyinfra_api.py): the runner's modules
import pyinfra through it alone, and it names the release pyproject.toml pins."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from commonstack.deploys import pyinfra_api

DEPLOYS = Path(__file__).resolve().parents[2] / "commonstack" / "deploys"
RUNNER_MODULES = ("runner.py", "connect.py", "run_log.py", "preview.py", "prefetch.py")


def pyinfra_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        found += [n for n in names if n == "pyinfra" or n.startswith(("pyinfra.", "pyinfra_cli"))]
    return found


@pytest.mark.parametrize("module", RUNNER_MODULES)
def test_the_runner_reaches_pyinfra_only_through_pyinfra_api(module):
    assert pyinfra_imports(DEPLOYS / module) == [], f"{module}: import these through pyinfra_api.py"


def test_pyinfra_api_names_the_release_pyproject_pins():
    pyproject = (DEPLOYS.parents[1] / "pyproject.toml").read_text()
    pinned = re.search(r'"pyinfra==([^"]+)"', pyproject)[1]
    assert pyinfra_api.PINNED == pinned


def test_pyinfra_api_memoizes_the_global_arguments_type_hints():
    from pyinfra.api import arguments

    assert arguments.all_global_arguments() is arguments.all_global_arguments()
