"""Fixtures of the health checks: what each host is expected to run, from the group's plan.

`commonstack check` writes that expectation as JSON and points COMMONSTACK_CHECK_CONTEXT at
it; the checks themselves are plain testinfra tests (`pytest --hosts=ssh://NAME ...`).
"""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture(scope="module")
def stack(host) -> dict:
    """What this host should run: layers, services, ports, hostnames, sizing (see context.py)."""
    path = os.environ.get("COMMONSTACK_CHECK_CONTEXT")
    if not path:
        pytest.skip("no expectations: run through `commonstack check`, or set COMMONSTACK_CHECK_CONTEXT")
    hosts = json.loads(open(path).read())["hosts"]
    name = host.backend.get_hostname()
    if name not in hosts:
        pytest.skip(f"{name} is not a host of this group")
    return hosts[name]


@pytest.fixture(scope="module")
def controller() -> dict:
    """Settings of the outside view (the machine running the checks)."""
    path = os.environ.get("COMMONSTACK_CHECK_CONTEXT")
    return json.loads(open(path).read())["controller"] if path else {}

