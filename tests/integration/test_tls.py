"""Real certificate issuance: Caddy on a test host gets its certificates from pebble over ACME.

pebble (Let's Encrypt's ACME test server) runs on the controller and validates every hostname
for real (HTTP-01 or TLS-ALPN-01 on the test host's ports 80/443, names resolved by its own
DNS). The `chat` preset's sites are deployed (`--only base --only caddy`: the sites answer
even without Synapse behind them), then the outside proxy checks verify the certificates with
pebble's issuing root as the one extra root (COMMONSTACK_CHECK_CA_FILE); a name pebble cannot
validate gets no certificate, and the check says where to look. The same host then
switches to `tls.mode: internal` (Caddy's own CA) and passes the same checks.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from commonstack import testhosts
from commonstack.checks.group import CA_FILE_ENV, HOSTS_FILE_ENV
from commonstack.stacks.paths import CADDY_LOCAL_ROOT
from commonstack.stacks.loader import load_profile
from commonstack.testhosts import TestHost
from tests.integration.conftest import new_host_name
from tests.integration.pebble import Pebble, pebble  # noqa: F401 (the fixture)
from tests.integration.stacks import check_results, deploy, failed_checks, write_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITES = ("--only", "base", "--only", "caddy")
ISSUANCE_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def server(testhosts_state: Path) -> Iterator[TestHost]:
    host = testhosts.up(new_host_name())
    yield host
    testhosts.down(host.name)


@pytest.fixture(scope="module")
def acme(
    server: TestHost, pebble: Pebble, testhost_ssh, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
) -> dict:
    """The group 'tls' with `tls.mode: acme` from pebble, deployed once for the module."""
    inventories = tmp_path_factory.mktemp("inventories")
    tls = {"mode": "acme", "acme_ca": pebble.directory_url(server), "acme_ca_root": "pebble.pem"}
    group = write_group(inventories, "tls", "chat", {"server": server}, overrides={"tls": tls})
    (group.folder / "pebble.pem").write_text(pebble.listener_root.read_text())
    names = site_names(group.stack_file)
    pebble.point(names, server)
    issuing_root = inventories / "pebble-issuing-root.pem"
    issuing_root.write_text(pebble.issuing_root())
    started = time.monotonic()
    deploy(inventories, "tls", *SITES)
    deployed = time.monotonic()

    def why() -> str:
        return issuance_log(server, testhost_ssh, pebble)

    certificates = {name: wait_for_certificate(server.address, name, issuing_root, why) for name in names}
    return {
        "inventories": inventories,
        "tls": tls,
        "names": names,
        "issuing_root": issuing_root,
        "certificates": certificates,
        "deploy_seconds": deployed - started,
        "issuance_seconds": time.monotonic() - deployed,
        "obtain_log": caddy_obtain_log(server, testhost_ssh),
    }


def site_names(stack_file: Path) -> list[str]:
    """Every name Caddy serves for the profile: the sites and the Matrix delegation."""
    profile = load_profile(stack_file)
    return sorted({*profile.hostnames().values(), profile.server_name})


def caddy_obtain_log(host: TestHost, ssh) -> list[str]:
    """What Caddy logged about getting certificates (its `tls.obtain` logger), oldest first."""
    result = ssh(host, "journalctl --unit caddy --output cat --no-pager --grep '\"logger\":\"tls.obtain\"'")
    return result.stdout.splitlines()


def issuance_log(host: TestHost, ssh, pebble: Pebble) -> str:  # noqa: F811
    """Why issuance may have stalled: Caddy's errors about certificates, and pebble's last words."""
    caddy = ssh(host, "journalctl --unit caddy --output cat --no-pager --priority err --lines 30")
    pebble_log = (pebble.folder / "pebble.log").read_text(errors="replace").splitlines()[-30:]
    return "Caddy's errors:\n" + caddy.stdout + "\npebble's log:\n" + "\n".join(pebble_log)


def wait_for_certificate(address: str, name: str, root: Path, explain: Callable[[], str] = str) -> dict:
    """The certificate `address` serves for `name` once it verifies against `root` alone.

    The chain (leaf + intermediate as Caddy sends it) must lead to `root`, and the name must be
    in its SANs (hostname checking is on); the public CAs are not trusted here. If none comes in
    time, the failure says `explain()` too.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(root))
    deadline = time.monotonic() + ISSUANCE_TIMEOUT
    while True:
        try:
            with socket.create_connection((address, 443), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname=name) as tls:
                    return tls.getpeercert()
        except (ssl.SSLError, OSError) as exc:  # no certificate yet: Caddy answers with an alert
            if time.monotonic() > deadline:
                pytest.fail(f"{name}: no certificate after {ISSUANCE_TIMEOUT:.0f} s ({exc})\n{explain()}")
            time.sleep(0.5)


def test_pebble_issues_a_certificate_for_every_hostname(acme):
    for name, certificate in acme["certificates"].items():
        assert ("DNS", name) in certificate["subjectAltName"], f"{name}: not in {certificate['subjectAltName']}"
        issuer = dict(pair[0] for pair in certificate["issuer"])
        assert issuer["commonName"].startswith("Pebble Intermediate CA"), issuer
    print(f"first deploy {acme['deploy_seconds']:.0f} s, every certificate {acme['issuance_seconds']:.1f} s later")


def test_the_first_deploy_lets_caddy_ask_for_each_certificate_once(acme):
    """No restart or reload after Caddy first read its sites: each would cut an order short, and
    with Let's Encrypt every cut-short order counts against the rate limits."""
    obtaining = [line for line in acme["obtain_log"] if '"msg":"obtaining certificate"' in line]
    assert len(obtaining) == len(acme["names"]), "\n".join(acme["obtain_log"])
    assert not [line for line in acme["obtain_log"] if '"level":"error"' in line], "\n".join(acme["obtain_log"])


def test_checks_are_green_with_the_issuing_root_trusted(acme, server, tmp_path, monkeypatch):
    hosts_file = tmp_path / "hosts"  # the names are in no DNS but pebble's: the outside view needs them too
    hosts_file.write_text(f"{server.address} {' '.join(acme['names'])}\n")
    monkeypatch.setenv(CA_FILE_ENV, str(acme["issuing_root"]))
    monkeypatch.setenv(HOSTS_FILE_ENV, str(hosts_file))
    results = check_results(acme["inventories"], "tls", *SITES)
    assert not failed_checks(results)
    proxy = [r for r in results if r["layer"] == "caddy"]
    assert proxy and all(r["outcome"] == "passed" for r in proxy), proxy


def test_proxy_checks_refuse_a_certificate_nobody_trusts(acme, monkeypatch):
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    results = check_results(acme["inventories"], "tls", "--only", "caddy")
    failed = {r["check"]: r["message"] for r in results if r["layer"] == "caddy" and r["outcome"] == "failed"}
    message = failed.get("every hostname has a valid fresh certificate", "")
    assert "certificate not valid" in message and "unable to get local issuer certificate" in message, failed


def test_second_deploy_changes_nothing(acme):
    again = deploy(acme["inventories"], "tls", *SITES)
    assert "Nothing to change." in again.stdout, again.stdout


def test_a_hostname_not_pointed_at_the_host_gets_no_certificate_and_the_check_says_why(acme, server, monkeypatch):
    """No A record for it: pebble's validation cannot reach the host (as with a DNS mistake)."""
    overrides = {"tls": acme["tls"], "matrix": {"hostname": "unpointed.try.test"}}
    write_group(acme["inventories"], "tls", "chat", {"server": server}, overrides=overrides)
    deploy(acme["inventories"], "tls", "--only", "caddy")
    monkeypatch.setenv(CA_FILE_ENV, str(acme["issuing_root"]))
    results = check_results(acme["inventories"], "tls", "--only", "caddy")
    failed = {r["check"]: r["message"] for r in results if r["layer"] == "caddy" and r["outcome"] == "failed"}
    message = failed.get("every hostname has a valid fresh certificate", "")
    assert "unpointed.try.test: Caddy has no certificate for it yet" in message, failed
    assert f"does unpointed.try.test point at {server.address} in DNS" in message


def test_internal_mode_passes_the_same_checks(acme, server, testhost_ssh, monkeypatch, tmp_path):
    inventories = acme["inventories"]
    hosts_file = tmp_path / "hosts"  # the names are in no DNS: without them, "points at this host" skips
    hosts_file.write_text(f"{server.address} {' '.join(acme['names'])}\n")
    monkeypatch.setenv(HOSTS_FILE_ENV, str(hosts_file))
    write_group(inventories, "tls", "chat", {"server": server})  # the tests' default: tls.mode internal
    deploy(inventories, "tls", *SITES)
    local_root = inventories / "caddy-local-root.pem"
    local_root.write_text(caddy_local_root(server, testhost_ssh))
    for name in acme["names"]:
        certificate = wait_for_certificate(server.address, name, local_root)
        issuer = dict(pair[0] for pair in certificate["issuer"])
        assert issuer["commonName"].startswith("Caddy Local Authority"), issuer
    monkeypatch.delenv(CA_FILE_ENV, raising=False)  # the check reads Caddy's root from the host itself
    results = check_results(inventories, "tls", "--only", "caddy")
    proxy = [r for r in results if r["layer"] == "caddy"]
    assert proxy and all(r["outcome"] == "passed" for r in proxy), proxy


def caddy_local_root(host: TestHost, ssh) -> str:
    """The root of Caddy's local CA, once Caddy has made it (at its first start with local_certs)."""
    deadline = time.monotonic() + 30
    while True:
        result = ssh(host, f"cat {CADDY_LOCAL_ROOT}")
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() > deadline:
            pytest.fail(f"Caddy made no local CA: {result.stderr.strip()}")
        time.sleep(0.5)
