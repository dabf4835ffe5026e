"""Fixtures of the health checks: what each host is expected to run (from the group's plan), and
what several layers' checks share: the visitor's trust, the container question, the Matrix login.

`commonstack check` writes that expectation as JSON and points COMMONSTACK_CHECK_CONTEXT at
it; the checks themselves are plain testinfra tests (`pytest --hosts=ssh://NAME ...`).
"""

from __future__ import annotations

import json
import os
import ssl
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache

import pytest

from commonstack.checks import ahead
from commonstack.checks.expect import NOT_HERE, require_layer
from commonstack.checks.matrix_login import admin_session
from commonstack.checks.probes import calibrate, declared_tcp_ports, start_probes
from commonstack.checks.runner import CONTEXT_ENV
from commonstack.stacks.layers import check_modules
from commonstack.stacks.paths import CADDY_LOCAL_ROOT

_background = ThreadPoolExecutor(4, thread_name_prefix="head-start")
_logins: dict[str, Future] = {}  # host name -> the one admin login of this run
_slowest_started: set[str] = set()  # the hosts whose slowest commands are started


# The checks may start before `commonstack check` has read the hosts' facts (checks/runner.py):
# the file appears, whole, once it has.
CONTEXT_WAIT = 600  # seconds


@cache
def _context(path: str) -> dict:
    deadline = time.monotonic() + CONTEXT_WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            pytest.fail(f"no expectations in {path} after {CONTEXT_WAIT} s")
        time.sleep(0.01)
    with open(path) as handle:
        return json.load(handle)


def _expected(host) -> dict | None:
    path = os.environ.get(CONTEXT_ENV)
    return _context(path)["hosts"].get(host.backend.get_hostname()) if path else None


@pytest.fixture(scope="module", autouse=True)
def head_start(host, request) -> None:
    """What the checks of a host will wait on longest starts in the background at its first
    check: the outside TCP probes (after measuring the round trip, see probes.calibrate), the
    Matrix admin's login (about a second of password hashing on the host), and every check
    module's slowest commands (its `slowest_commands(stack)`, see ahead.py)."""
    if not os.environ.get(CONTEXT_ENV):
        return
    expected = _expected(host)
    if expected is None:  # not reached, or left out by the caller: no command is sent to it
        pytest.skip(f"{host.backend.get_hostname()} {NOT_HERE}")
    address = expected["address"]
    ssh = next((int(p["port"]) for p in expected["firewall_ports"] if p["why"] == "SSH"), None)
    if ssh:
        _background.submit(calibrate, address, ssh).add_done_callback(
            lambda _: start_probes(address, sorted({*expected["never_public"], *declared_tcp_ports(expected["firewall_ports"])}))
        )
    if "synapse" in expected["layers"] and expected.get("matrix"):
        _admin_login(host, expected["matrix"]["admin_user_id"])
    name = host.backend.get_hostname()
    if name not in _slowest_started:
        _slowest_started.add(name)
        # In the layers' order, base's first (needrestart's scan is the slowest), whatever order
        # the modules run in (runner.run_order): the pool takes them as they come.
        layer_order = {module: position for position, module in enumerate(check_modules())}
        modules = dict.fromkeys(item.module for item in request.session.items)
        for module in sorted(modules, key=lambda m: layer_order.get(m.__name__.rpartition(".")[2], len(layer_order))):
            if hasattr(module, "slowest_commands"):
                ahead.start(host, module.slowest_commands(expected))


def _admin_login(host, admin_user_id: str) -> Future:
    name = host.backend.get_hostname()
    if name not in _logins:
        _logins[name] = _background.submit(admin_session, host, admin_user_id)
    return _logins[name]


@pytest.fixture(scope="module")
def stack(host) -> dict:
    """What this host should run: layers, services, ports, hostnames, sizing (see context.py)."""
    if not os.environ.get(CONTEXT_ENV):
        pytest.skip("no expectations: run through `commonstack check`, or set COMMONSTACK_CHECK_CONTEXT")
    expected = _expected(host)
    if expected is None:
        pytest.skip(f"{host.backend.get_hostname()} is not a host of this group")
    return expected


@pytest.fixture(scope="module")
def controller() -> dict:
    """Settings of the outside view (the machine running the checks)."""
    path = os.environ.get(CONTEXT_ENV)
    return _context(path)["controller"] if path else {}


# Module fixtures that several check modules ask for, read once per host and run.
_per_host: dict[tuple[str, str], object] = {}


@pytest.fixture(scope="module")
def in_container(host) -> bool:
    """Whether the host is a container (a test host, an LXC VPS): no swap, no clock of its own."""
    key = ("in_container", host.backend.get_hostname())
    if key not in _per_host:
        _per_host[key] = host.run_expect([0, 1], "systemd-detect-virt --container").rc == 0
    return _per_host[key]


@pytest.fixture(scope="module")
def trust(host, stack, controller) -> ssl.SSLContext:
    """What a visitor trusts: the public CAs, plus the group's own CA where it uses one."""
    require_layer(stack, "caddy")  # no Caddy on this host: nothing is served, nothing to trust
    key = ("trust", host.backend.get_hostname())
    if key not in _per_host:
        context = ssl.create_default_context()
        if controller.get("ca_file"):
            context.load_verify_locations(controller["ca_file"])
        if stack["tls_mode"] == "internal":
            root = host.run("cat -- %s", CADDY_LOCAL_ROOT)
            assert root.rc == 0, f"Caddy has no local CA yet ({CADDY_LOCAL_ROOT}): `journalctl -u caddy`"
            context.load_verify_locations(cadata=root.stdout)
        _per_host[key] = context
    return _per_host[key]


@pytest.fixture(scope="module")
def matrix_admin(host, stack) -> dict:
    """The outcomes of one login as the Matrix admin on the host (see matrix_login.py), begun
    in the background by `head_start`."""
    require_layer(stack, "synapse")
    return _admin_login(host, stack["matrix"]["admin_user_id"]).result()
