"""The pyinfra runner patches gevent into the process that imports it; nothing else may."""

import subprocess
import sys

import pytest

MODULES = [
    "commonstack.cli",
    "commonstack.checks.group",
    "commonstack.checks.runner",
    "commonstack.deploys.stack",
    "commonstack.testhosts",
    "commonstack.trial",
]


@pytest.mark.parametrize("module", MODULES)
def test_importing_does_not_patch_gevent(module):
    code = f"import {module}, sys; print('gevent.monkey' in sys.modules and __import__('gevent.monkey').monkey.is_module_patched('socket'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
