"""Fixtures of the health checks: what each host is expected to run (from the group's plan), and
what several layers' checks share: the visitor's trust, the container question, the Matrix login.

`commonstack check` writes that expectation as JSON and points COMMONSTACK_CHECK_CONTEXT at
it; the checks themselves are plain testinfra tests (`pytest --hosts=ssh://NAME ...`).
"""

from __future__ import annotations

import json
import os
import ssl

import pytest

from commonstack.checks.expect import require_layer
from commonstack.checks.matrix_login import admin_session
from commonstack.stacks.paths import CADDY_LOCAL_ROOT


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


@pytest.fixture(scope="module")
def in_container(host) -> bool:
    """Whether the host is a container (a test host, an LXC VPS): no swap, no clock of its own."""
    return host.run_expect([0, 1], "systemd-detect-virt --container").rc == 0


@pytest.fixture(scope="module")
def trust(host, stack, controller) -> ssl.SSLContext:
    """What a visitor trusts: the public CAs, plus the group's own CA where it uses one."""
    require_layer(stack, "caddy")  # no Caddy on this host: nothing is served, nothing to trust
    context = ssl.create_default_context()
    if controller.get("ca_file"):
        context.load_verify_locations(controller["ca_file"])
    if stack["tls_mode"] == "internal":
        root = host.file(CADDY_LOCAL_ROOT)
        assert root.exists, f"Caddy has no local CA yet ({CADDY_LOCAL_ROOT}): `journalctl -u caddy`"
        context.load_verify_locations(cadata=root.content_string)
    return context


@pytest.fixture(scope="module")
def matrix_admin(host, stack) -> dict:
    """The outcomes of one login as the Matrix admin on the host (see matrix_login.py)."""
    require_layer(stack, "synapse")
    return admin_session(host, stack["matrix"]["admin_user_id"])
