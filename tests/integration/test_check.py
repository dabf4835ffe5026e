"""`commonstack check` on a real test host: green when healthy, and when something is broken on
purpose, exactly the check that should fail fails, with the hint a volunteer needs.

One host of the small-group preset with the shared layers deployed (`--only base --only
postgres --only redis --only caddy`, as its checks are run: `check --only ...`). The names of
try.test are in no DNS: the outside checks read them from a hosts file of the test's own
(COMMONSTACK_CHECK_HOSTS_FILE), never from the controller's /etc/hosts. Each breakage is
undone before the next test, which starts by requiring that.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import pytest
import yaml
from cryptography import x509

from commonstack import testhosts
from commonstack.checks.group import HOSTS_FILE_ENV
from tests.integration.conftest import new_host_name
from tests.integration.stacks import cli, deploy, write_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAYERS = ("--only", "base", "--only", "postgres", "--only", "redis", "--only", "caddy")
GROUP = "checked"
SITE = "cloud.try.test"  # Nextcloud's site on the host (its app is not deployed here: only Caddy's site)
STRAY_PORT = 8899  # not one of the ports base.py probes itself (context.NEVER_PUBLIC)
FILL_MOUNT = "/srv/commonstack-check-fill"
# A service of the test's own, on its own copy of a library that it then replaces.
STALE_UNIT = "commonstack-check-stale"
STALE_LIBRARY = PurePosixPath("/usr/local/lib/commonstack-check-stale/libcap.so.2")


@pytest.fixture(scope="module")
def checked(testhosts_state: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    host = testhosts.up(new_host_name(), memory="2G")
    try:
        inventories = tmp_path_factory.mktemp("inventories")
        group = write_group(inventories, GROUP, "small-group", {"server": host})
        first = deploy(inventories, GROUP, *LAYERS)
        names = sorted({*group.load().hostnames().values(), group.load().server_name})
        hosts_file = inventories / "hosts"
        hosts_file.write_text(f"# what DNS would say for the group\n{host.address} {' '.join(names)}\n")
        secrets = yaml.safe_load(group.secrets_file.read_text())
        yield {"host": host, "inventories": inventories, "hosts_file": hosts_file, "names": names,
               "first": first, "secrets": [v for v in secrets.values() if v], "outputs": [first]}
    finally:
        testhosts.down(host.name)


def run_check(checked: dict, *extra: str, hosts_file: Path | None = None):
    """`commonstack check GROUP --only (the deployed layers) EXTRA...`, names from the hosts file."""
    env_file = hosts_file or checked["hosts_file"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOSTS_FILE_ENV, str(env_file))
        result = cli(checked["inventories"], "check", GROUP, *LAYERS, *extra, timeout=300)
    checked["outputs"].append(result)
    assert result.returncode in (0, 1), f"check could not run:\n{result.stdout}\n{result.stderr}"
    return result


def failures(checked: dict, **kwargs) -> tuple[dict[tuple[str, str], str], list[dict]]:
    """{(layer, check): message} of what failed, and every result (from --json)."""
    result = run_check(checked, "--json", **kwargs)
    results = json.loads(result.stdout)
    failed = {(r["layer"], r["check"]): r["message"] for r in results if r["outcome"] == "failed"}
    assert result.returncode == (1 if failed else 0)
    return failed, results


@pytest.fixture
def healthy(checked):
    """Each breakage starts from a green host, and records the verdicts of the first green run."""
    failed, results = failures(checked)
    assert not failed, failed
    checked.setdefault("baseline", [(r["layer"], r["check"], r["outcome"]) for r in results])


def test_deploy_ends_with_the_health_checks(checked):
    output = checked["first"].stdout
    assert "Health checks:" in output, output
    after = output.split("Health checks:", 1)[1]
    assert "0 failed" in after and "pass  firewall is active" in after, after
    # No DNS for try.test here: the check says so instead of failing.
    assert "are in no DNS (a reserved test domain)" in after


def test_a_healthy_host_passes_every_check(checked, healthy, tmp_path):
    junit = tmp_path / "checks.xml"
    result = run_check(checked, "--junit", str(junit))
    assert result.returncode == 0, result.stdout
    assert "0 failed" in result.stdout and "FAIL" not in result.stdout

    failed, results = failures(checked)
    assert not failed
    ran = {r["layer"] for r in results if r["outcome"] == "passed"}
    assert ran == {"base", "postgres", "redis", "caddy"}
    passed = {(r["layer"], r["check"]) for r in results if r["outcome"] == "passed"}
    assert {("caddy", "every hostname points at this host"), ("caddy", "web ports answer from outside"),
            ("base", "no undeclared port answers from outside"), ("base", "every filesystem has free space"),
            ("base", "memory is available"), ("base", "no systemd unit has failed")} <= passed
    skipped = {r["check"]: r["message"] for r in results if r["outcome"] == "skipped"}
    assert "timesyncd does not run" in skipped.get("clock is synchronised", ""), skipped
    # Checks of layers that were not deployed are left out (TURN: coturn; Synapse).
    assert not [r for r in results if "turn" in r["check"]]

    suites = ET.parse(junit).getroot()
    assert suites.get("failures") == "0" and int(suites.get("tests")) == len(results)


def test_host_and_only_narrow_the_run(checked):
    _, results = failures(checked)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOSTS_FILE_ENV, str(checked["hosts_file"]))
        result = cli(checked["inventories"], "check", GROUP, "--json", "--host", "server", "--only", "base",
                     "--only", "caddy", timeout=300)  # fmt: skip
    narrowed = json.loads(result.stdout)
    assert {r["layer"] for r in narrowed} == {"base", "caddy"}
    assert len(narrowed) == len([r for r in results if r["layer"] in ("base", "caddy")])


def test_a_stopped_service_fails_its_checks(checked, healthy, testhost_ssh):
    host = checked["host"]
    assert testhost_ssh(host, "systemctl stop redis-server").returncode == 0
    try:
        failed, _ = failures(checked)
    finally:
        testhost_ssh(host, "systemctl start redis-server")
    assert set(failed) == {("redis", "redis answers on its socket"), ("redis", "redis memory is capped")}, failed
    assert failed[("redis", "redis answers on its socket")] == "Redis is down: `journalctl -u redis-server`"
    # A command that fails says so in one line, not with testinfra's repr of its result.
    assert failed[("redis", "redis memory is capped")].startswith("`redis-cli -s /run/redis/redis-server.sock")
    assert "Could not connect to Redis" in failed[("redis", "redis memory is capped")]


def test_a_service_on_a_replaced_library_fails(checked, healthy, testhost_ssh):
    """A service still runs the copy of a library that an update replaced on disk (what an update
    leaves when nothing restarts the service): needrestart's check names that service, and only it."""
    with on_replaced_library(testhost_ssh, checked["host"], "time.sleep(3600)"):
        failed, _ = failures(checked)
    assert list(failed) == [("base", "no service runs a replaced library")], failed
    message = failed[("base", "no service runs a replaced library")]
    assert message.startswith(f"{STALE_UNIT}.service still run(s) libraries an update replaced"), message
    assert f"sudo systemctl restart {STALE_UNIT}.service" in message


def test_a_replaced_library_in_a_process_that_ends_passes(checked, healthy, testhost_ssh):
    """needrestart names the service of a process that ends while it runs (CI once saw ssh.service
    named, for the checks' own commands): the check asks it again, and passes when that process is
    gone. Here the service's only process ends before needrestart's second look, as soon as the
    first is over (the test above shows that a look while it runs names it)."""
    host = checked["host"]
    seen = STALE_LIBRARY.parent / "seen"
    # The first needrestart is waited for by its pid: the second may start as soon as it ends.
    until_looked_at = (
        "import os\n"
        "def looking():\n"
        "    for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "        try:\n"
        "            if open(f'/proc/{pid}/comm').read().strip() == 'needrestart': return pid\n"
        "        except OSError: pass\n"
        "while not (first := looking()): time.sleep(0.02)\n"
        f"open('{seen}', 'w').close()\n"
        "while os.path.exists(f'/proc/{first}'): time.sleep(0.02)\n"
    )
    with on_replaced_library(testhost_ssh, host, until_looked_at):
        failed, _ = failures(checked)
        looked = testhost_ssh(host, f"test -e {seen}").returncode == 0
    assert looked, "needrestart never ran while the service did: the test proved nothing"
    assert not failed, failed


def test_a_stray_port_open_in_the_firewall_fails(checked, healthy, testhost_ssh):
    host = checked["host"]
    opened = testhost_ssh(
        host,
        f"systemd-run --unit stray-port python3 -m http.server {STRAY_PORT} "
        f"&& nft insert rule inet commonstack input tcp dport {STRAY_PORT} accept",
    )
    assert opened.returncode == 0, opened.stderr
    try:
        wait_until_answers(host.address, STRAY_PORT)
        failed, _ = failures(checked)
    finally:
        testhost_ssh(host, "systemctl stop stray-port; systemctl restart nftables")
    assert list(failed) == [("base", "no undeclared port answers from outside")], failed
    message = failed[("base", "no undeclared port answers from outside")]
    assert message.startswith(f"port {STRAY_PORT} (python3) answers from outside, but no service of this host needs it")
    assert "nft list ruleset" in message


def test_a_full_disk_fails(checked, healthy, testhost_ssh):
    host = checked["host"]
    filled = testhost_ssh(
        host,
        f"mkdir -p {FILL_MOUNT} && mount -t tmpfs -o size=8M commonstack-fill {FILL_MOUNT} "
        f"&& head -c 7500000 /dev/zero > {FILL_MOUNT}/blob",
    )
    try:
        assert filled.returncode == 0, filled.stderr
        failed, _ = failures(checked)
    finally:
        testhost_ssh(host, f"umount {FILL_MOUNT}; rmdir {FILL_MOUNT}")
    assert list(failed) == [("base", "every filesystem has free space")], failed
    message = failed[("base", "every filesystem has free space")]
    assert re.match(rf"{FILL_MOUNT}: \d+% free \(\d\.\d MB of 8\.0 MB\), under 15%", message), message
    assert f"du -xh --max-depth=2 {FILL_MOUNT}" in message


def test_a_certificate_about_to_expire_fails(checked, healthy, testhost_ssh):
    """Caddy issues a 45-minute certificate for one site, from the group's own CA: what a visitor
    sees when renewal has stalled (tls internal's threshold is one hour)."""
    host = checked["host"]
    block = r"\n\ttls {\n\t\tissuer internal {\n\t\t\tlifetime 45m\n\t\t}\n\t}"
    shortened = testhost_ssh(
        host,
        "cp /etc/caddy/Caddyfile /root/Caddyfile.deployed "
        f"&& sed -i 's/^{SITE} {{$/&{block}/' /etc/caddy/Caddyfile && grep -q 'lifetime 45m' /etc/caddy/Caddyfile "
        f"&& {reissue(SITE)}",
    )
    try:
        assert shortened.returncode == 0, shortened.stderr
        assert served_lifetime(host.address, SITE) < 3600
        failed, _ = failures(checked)
    finally:
        restored = testhost_ssh(host, f"cp /root/Caddyfile.deployed /etc/caddy/Caddyfile && {reissue(SITE)}")
        assert restored.returncode == 0, restored.stderr
        assert served_lifetime(host.address, SITE) > 6 * 3600
    assert list(failed) == [("caddy", "every hostname has a valid fresh certificate")], failed
    message = failed[("caddy", "every hostname has a valid fresh certificate")]
    assert message.startswith(f"{SITE}: certificate expires in 0.0 days") and "journalctl -u caddy" in message


def test_a_hostname_pointed_elsewhere_fails(checked, healthy, tmp_path):
    host = checked["host"]
    elsewhere = tmp_path / "hosts"
    others = [n for n in checked["names"] if n != SITE]
    # 198.51.100.7 (TEST-NET-2, documentation): no check sends anything to it.
    elsewhere.write_text(f"198.51.100.7 {SITE}\n{host.address} {' '.join(others)}\n")
    result = run_check(checked, "--json", hosts_file=elsewhere)
    results = json.loads(result.stdout)
    failed = {(r["layer"], r["check"]): r["message"] for r in results if r["outcome"] == "failed"}
    assert list(failed) == [("caddy", "every hostname points at this host")], failed
    assert failed[("caddy", "every hostname points at this host")] == (
        f"{SITE} points at 198.51.100.7, not at this host ({host.address}): "
        "correct its A/AAAA records at your DNS provider"
    )
    # The same verdict as a volunteer reads it, and for CI: exit status 1 both times.
    table = run_check(checked, "--junit", str(tmp_path / "checks.xml"), hosts_file=elsewhere)
    assert table.returncode == 1
    lines = table.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if "FAIL  every hostname points at this host" in line)
    assert lines[row + 1].strip() == "-> " + failed[("caddy", "every hostname points at this host")]
    assert ", 1 failed, " in lines[-1], lines[-1]
    case = ET.parse(tmp_path / "checks.xml").getroot().find(".//testcase[@name='every hostname points at this host']")
    assert case is not None and case.find("failure").get("message").startswith(f"{SITE} points at 198.51.100.7")


def test_everything_is_green_again(checked):
    """After every breakage was undone, the host is exactly as healthy as at first."""
    failed, results = failures(checked)
    assert not failed, failed
    verdicts = [(r["layer"], r["check"], r["outcome"]) for r in results]
    assert verdicts == checked["baseline"]
    assert len([v for v in verdicts if v[2] == "passed"]) >= 20


def test_nothing_secret_in_any_output(checked):
    outputs = "".join(r.stdout + r.stderr for r in checked["outputs"])
    assert len(checked["outputs"]) > 5 and checked["secrets"]
    assert not [s for s in checked["secrets"] if s in outputs]


# --- helpers ----------------------------------------------------------------------------------


@contextmanager
def on_replaced_library(testhost_ssh, host, then: str) -> Iterator[None]:
    """While STALE_UNIT runs: a Python program that loads its own copy of a library, which is then
    replaced on disk (a new file, as dpkg writes one), and runs `then`. Stopped and removed after
    (--collect: even failed, the unit is not left to fail the next test's checks)."""
    program = f"import ctypes, time\nctypes.CDLL('{STALE_LIBRARY}')\n{then}"
    loaded = f"grep -qs {STALE_LIBRARY} /proc/$(systemctl show -P MainPID {STALE_UNIT})/maps"
    try:
        started = testhost_ssh(
            host,
            f'mkdir -p {STALE_LIBRARY.parent} && cp -L "$(dpkg -L libcap2 | grep /libcap.so.2$)" {STALE_LIBRARY} '
            f"&& systemd-run --collect --unit {STALE_UNIT} python3 -c {shlex.quote(program)} "
            f"&& for i in $(seq 100); do {loaded} && break; sleep 0.1; done && {loaded} "
            f"&& cp {STALE_LIBRARY} {STALE_LIBRARY}.new && mv {STALE_LIBRARY}.new {STALE_LIBRARY}",
            timeout=30,
        )
        assert started.returncode == 0, started.stderr
        yield
    finally:
        testhost_ssh(host, f"systemctl stop {STALE_UNIT}; rm -rf {STALE_LIBRARY.parent}")


def reissue(name: str) -> str:
    """A shell command: Caddy forgets its certificate for `name` and starts afresh (a reload keeps
    certificates it holds in memory)."""
    stored = f"/var/lib/caddy/.local/share/caddy/certificates/local/{name}"
    return f"systemctl stop caddy && rm -rf {stored} && systemctl start caddy"


def served_lifetime(address: str, name: str, timeout: float = 30) -> float:
    """Seconds left on the certificate `address` serves for `name` (once it serves one)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, 443), timeout=5) as raw:
                with context.wrap_socket(raw, server_hostname=name) as tls:
                    der = tls.getpeercert(binary_form=True)
            expires = x509.load_der_x509_certificate(der).not_valid_after_utc
            return (expires - datetime.now(timezone.utc)).total_seconds()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def wait_until_answers(address: str, port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((address, port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
