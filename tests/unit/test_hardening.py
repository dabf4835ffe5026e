"""Hardening without a host: the sandboxes rated by the real systemd-analyze, how the checks read
what a host says, and the secret scan run for real on a folder of files. (The hardening operations
and facts have their tables in fixtures/operations and fixtures/facts: kernel.*, updates.*,
nextcloud.private_file, run by test_operations.py and test_facts.py.)
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from commonstack.checks.base import (
    LISTS_STAMP,
    NEEDRESTART_DEFERS,
    UPGRADE_STAMP,
    overdue_updates,
    parse_stamps,
    services_to_restart,
)
from commonstack.checks.exposed_secrets import MIN_LENGTH, SCAN, parse, secret_digests
from commonstack.plan import Release, plan_host
from commonstack.stacks.kernel import KernelValue, differences, matching, sysctl_path
from commonstack.stacks.layers import KERNEL_HARDENING, LAYERS, generated_secrets
from commonstack.stacks.loader import load_profile
from commonstack.stacks.sizing import HostFacts

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATE_FIXTURES = FIXTURES / "templates"
MAX_EXPOSURE = 4.0


def secrets_of(profile) -> dict[str, str]:
    names = generated_secrets(profile) + (["smtp_password"] if profile.smtp and profile.smtp.username else [])
    return {name: f"s3cr3t-{name}" for name in names}


# --- the sandboxes, rated offline by systemd-analyze ---------------------------------------------


def _sandbox_cases() -> list[tuple[str, str, object]]:
    """(unit, release, plan) for every sandboxed unit of every fixture (first plan of each)."""
    found: dict[tuple[str, str], object] = {}
    for fixture in sorted(TEMPLATE_FIXTURES.glob("*.yaml")):
        profile = load_profile(fixture)
        secrets = secrets_of(profile)
        for host in profile.hosts:
            for codename in ("bookworm", "trixie"):
                plan = plan_host(profile, host, secrets, Release(HostFacts(8000, 4, "amd64"), codename))
                for layer in plan.layers:
                    for unit in plan.sandboxed_units_of(layer):
                        found.setdefault((unit, codename), plan)
    return [(unit, codename, plan) for (unit, codename), plan in sorted(found.items())]


def _debian_unit(unit: str) -> Path | None:
    """Debian's own unit file on this machine, for a drop-in over it (None: the kit writes it)."""
    template = re.sub(r"@.*", "@", unit)
    for folder in ("/lib/systemd/system", "/usr/lib/systemd/system"):
        path = Path(folder) / f"{template}.service"
        if path.is_file():
            return path
    return None


@pytest.mark.parametrize(("unit", "codename", "plan"), _sandbox_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_sandboxed_unit_is_rated_ok(unit, codename, plan, tmp_path):
    analyze = shutil.which("systemd-analyze") or pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    written = {f.path: f.content for f in plan.files if f.path.startswith("/etc/systemd/system/")}
    template = re.sub(r"@.*", "@", unit)
    own = f"/etc/systemd/system/{unit}.service" in written
    if not own:
        debian = _debian_unit(unit)
        if debian is None:
            pytest.skip(f"Debian's {template}.service is not on this machine (its package: see ./dev's validators)")
        (tmp_path / "usr/lib/systemd/system").mkdir(parents=True)
        shutil.copy(debian, tmp_path / "usr/lib/systemd/system")
    for path, content in written.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    result = subprocess.run(
        [analyze, "security", "--offline=true", f"--root={tmp_path}", "--no-pager", f"{unit}.service"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    unknown = [line for line in result.stderr.splitlines() if "Unknown" in line or "Failed to parse" in line]
    assert not unknown, "\n".join(unknown)
    level = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)[1])
    assert level <= MAX_EXPOSURE, f"{unit} ({codename}) is rated {level}:\n{result.stdout}"


def test_every_sandbox_sorts_before_the_test_hosts_emulation_relaxation():
    # testhosts/personalize.py: qemu-user cannot give a service a user namespace; its top-level
    # drop-in (50-commonstack-emulation.conf) must win over a sandbox asking for one.
    for plan in {id(p): p for _, _, p in _sandbox_cases()}.values():
        for f in plan.files:
            if ".service.d/" in f.path and "PrivateUsers=" in f.content:
                assert Path(f.path).name < "50-commonstack-emulation.conf", f.path


# --- the security updates: the operation's shell filter and the fact agree -----------------------


@pytest.mark.parametrize("installing", ["security updates alone", "with the layers' packages"])
def test_the_install_picks_what_the_fact_calls_security_updates(tmp_path, installing):
    """The operations' shell filter (run when the lists were just refreshed) and the fact agree:
    base's security updates, and the stack's one transaction (pyinfra's apt.packages, given the
    same filter as extra install arguments)."""
    from pyinfra.operations import apt

    from commonstack.deploys.updates import INSTALL, WITH_SECURITY_UPDATES
    from commonstack.stacks.updates import may_be_pending
    from tests.unit.pyinfra_tables import FakeHost, run_operation

    sample = yaml.safe_load((FIXTURES / "facts/updates.PendingSecurityUpdates/pending.yaml").read_text())
    fake = tmp_path / "apt-get"
    fake.write_text("#!/bin/sh\n" + "".join(f"echo {json.dumps(line)}\n" for line in sample["output"]))
    fake.chmod(0o755)
    if installing == "security updates alone":
        script = INSTALL
    else:
        arguments = {"packages": ["caddy"], "no_recommends": True, "extra_install_args": WITH_SECURITY_UPDATES}
        [script] = run_operation(apt.packages, arguments, FakeHost({"deb.DebPackages": {}}))
    # this machine's own lists decide the pre-check: here the (made-up) simulation always runs
    assert may_be_pending() in script
    script = script.replace(may_be_pending(), "true").replace("apt-get -y", "echo INSTALL")
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin"})  # fmt: skip
    names = [line.split()[0] for line in sample["fact"]]
    if installing == "security updates alone":
        assert result.stdout.split()[-len(names) - 2 :] == ["install", "--only-upgrade", *names]
    else:
        assert result.stdout.split()[-len(names) - 3 :] == ["install", "--no-install-recommends", *names, "caddy"]


# --- what the checks read ------------------------------------------------------------------------


def test_kernel_keys_name_proc_files_and_globs_name_every_interface():
    assert sysctl_path("net.ipv4.conf.*.send_redirects") == "/proc/sys/net/ipv4/conf/*/send_redirects"
    with pytest.raises(ValueError):
        sysctl_path("kernel.x; rm -rf /")
    current = {
        "net.ipv4.conf.all.send_redirects": KernelValue("1", True),
        "net.ipv4.conf.eth0/100.send_redirects": KernelValue("0", True),
        "kernel.dmesg_restrict": KernelValue("0", False),
    }
    assert matching("net.ipv4.conf.*.send_redirects", current) == [
        "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.eth0/100.send_redirects"]  # fmt: skip
    wanted = {"net.ipv4.conf.*.send_redirects": "0", "kernel.dmesg_restrict": "1", "fs.suid_dumpable": "0"}
    assert differences(wanted, current) == (["net.ipv4.conf.all.send_redirects=0"], ["kernel.dmesg_restrict=1"])


def test_every_kernel_key_of_the_registry_is_well_formed():
    for key, value in KERNEL_HARDENING:
        sysctl_path(key)
        assert re.fullmatch(r"\d+", value), key
    assert len({key for key, _ in KERNEL_HARDENING}) == len(KERNEL_HARDENING)


@pytest.mark.parametrize(
    ("pending", "stamps", "overdue"),
    [
        ([], {LISTS_STAMP: 100.0, UPGRADE_STAMP: 200.0}, False),  # nothing pending
        (["libssl3 1 -> 2"], {LISTS_STAMP: 200.0, UPGRADE_STAMP: 100.0}, False),  # fetched after the last run
        (["libssl3 1 -> 2"], {LISTS_STAMP: 100.0}, False),  # unattended-upgrades never ran yet
        (["libssl3 1 -> 2"], {LISTS_STAMP: 100.0, UPGRADE_STAMP: 200.0}, True),  # it ran, and left them
    ],
)
def test_security_updates_are_overdue_only_once_unattended_upgrades_left_them(pending, stamps, overdue):
    problem = overdue_updates(pending, stamps)
    assert (problem is not None) == overdue
    if overdue:
        assert "libssl3 1 -> 2" in problem and "unattended-upgrades.log" in problem


def test_stat_output_gives_each_existing_stamp():
    output = f"{LISTS_STAMP} 1700000000\n"  # the other stamp does not exist: stat says so on stderr
    assert parse_stamps(output) == {LISTS_STAMP: 1700000000.0}


def test_needrestart_batch_output_and_what_it_leaves_for_a_reboot():
    output = "NEEDRESTART-VER: 3.6\nNEEDRESTART-SVC: caddy.service\nNEEDRESTART-SVC: dbus.service\n"
    assert services_to_restart(output) == ["caddy.service", "dbus.service"]
    deferred = ["dbus.service", "systemd-logind.service", "unattended-upgrades.service", "user@1000.service",
                "getty@tty1.service", "docker.service"]  # fmt: skip
    assert all(NEEDRESTART_DEFERS.match(unit) for unit in deferred)
    assert not any(NEEDRESTART_DEFERS.match(u) for u in ("caddy.service", "coturn.service", "php8.2-fpm.service"))


# --- the secret scan, run for real on a folder ---------------------------------------------------


def _scan(folder: Path, values: dict[str, str]) -> dict[str, list[str]]:
    spec = {**secret_digests(values), "root": str(folder)}
    argument = base64.b64encode(json.dumps(spec).encode()).decode()
    result = subprocess.run([sys.executable, "-c", SCAN, argument], capture_output=True, text=True, check=True)
    return parse(result.stdout)


def test_the_scan_finds_secrets_in_files_anyone_can_read_and_only_there(tmp_path):
    values = {
        "turn_shared_secret": "Zm9vYmFyYmF6LXF1dXgtMTIzNDU2Nzg5MGFiY2RlZg",
        "smtp_password": "correct horse!",
        "same_length_one_word": "correct_horse-",  # its length is scanned at every start (a sign in the other)
        "restic_password": "a-value-made-of-one-word",  # its length only at words that long
    }
    etc = tmp_path / "etc"
    (etc / "open").mkdir(parents=True)
    (etc / "closed").mkdir(mode=0o750)
    (etc / "open/app.conf").write_text(f'password="{values["smtp_password"]}"\n')
    (etc / "open/turn.conf").write_text(f"static-auth-secret={values['turn_shared_secret']}\n")
    (etc / "open/private.conf").write_text(f"x={values['turn_shared_secret']}\n")
    (etc / "closed/inside.conf").write_text(f"x={values['turn_shared_secret']}\n")  # others cannot enter
    (etc / "open/other.conf").write_text("static-auth-secret=something-else-entirely-of-the-same-size1\n")
    (etc / "open/glued.conf").write_text(f"x:{values['restic_password']}andmore\ny {values['same_length_one_word']}\n")
    (etc / "open/inside-a-word.conf").write_text(f"x=z{values['restic_password']}\n")  # no value starts there
    os.symlink(etc / "open/turn.conf", etc / "open/link.conf")
    for path in etc.rglob("*.conf"):
        if not path.is_symlink():
            path.chmod(0o644)
    (etc / "open/private.conf").chmod(0o640)
    (etc / "closed").chmod(0o750)
    found = _scan(etc, values)
    assert found == {
        str(etc / "open/app.conf"): ["smtp_password"],
        str(etc / "open/turn.conf"): ["turn_shared_secret"],
        str(etc / "open/glued.conf"): ["restic_password", "same_length_one_word"],
    }


def test_the_scan_gets_digests_never_values():
    values = {"restic_password": "k" * 43, "short": "x" * (MIN_LENGTH - 1)}
    spec = secret_digests(values)
    text = json.dumps(spec)
    assert "k" * 10 not in text and "short" not in spec["digests"]
    assert spec["lengths"] == [43] and spec["word_lengths"] == [43] and spec["root"] == "/etc"
    assert secret_digests({"a": "two words", "b": "one_word!"})["word_lengths"] == []
    assert secret_digests(values)["digests"] != spec["digests"], "a one-time key: digests differ at each run"


# --- the registry and the templates ------------------------------------------------------------


def test_jails_of_the_registry_are_written_for_the_hosts_layers():
    profile = load_profile(TEMPLATE_FIXTURES / "small-group.yaml")
    plan = plan_host(profile, profile.hosts[0], secrets_of(profile), Release(HostFacts(4000, 2, "amd64")))
    jail = next(f for f in plan.files if f.path == "/etc/fail2ban/jail.d/commonstack.local").content
    sections = re.findall(r"^\[([^\]]+)\]$", jail, re.M)
    assert sections == ["DEFAULT", *plan.jails]
    filters = {Path(f.path).stem for f in plan.files if f.path.startswith("/etc/fail2ban/filter.d/")}
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(jail)
    written = {section: parsed[section]["filter"] for section in parsed.sections()}
    assert set(written) == set(plan.jails) and set(written.values()) <= filters, "a jail of the kit without its filter"
    assert {jail for layer in LAYERS for jail in layer.jails} >= set(plan.jails)


def test_the_matrix_filter_matches_refused_logins_in_caddys_log_and_nothing_forged():
    profile = load_profile(TEMPLATE_FIXTURES / "chat.yaml")
    plan = plan_host(profile, profile.hosts[0], secrets_of(profile), Release(HostFacts(2000, 2, "amd64")))
    text = next(f for f in plan.files if f.path.endswith("commonstack-matrix.conf")).content
    failregex = re.search(r"^failregex = (.*)$", text, re.M)[1].replace("<HOST>", r"(?P<host>[\d.:a-f]+)")

    def line(status: int, uri: str = "/_matrix/client/v3/login", header: str = "python") -> str:
        # As Caddy 2.6 logs it (captured on a test host), behind journald's "host ident[pid]: ".
        entry = {"level": "info", "ts": 1.0, "logger": "http.log.access", "msg": "handled request",
                 "request": {"remote_ip": "10.231.8.2", "remote_port": "35040", "proto": "HTTP/1.1",
                             "method": "POST", "host": "matrix.example.org", "uri": uri,
                             "headers": {"User-Agent": [header]}},
                 "user_id": "", "duration": 0.5, "size": 82, "status": status, "resp_headers": {}}  # fmt: skip
        return "hd1 caddy[25414]: " + json.dumps(entry, separators=(",", ":"))

    hosts = [m["host"] if (m := re.search(failregex, line(s))) else None for s in (403, 429, 200, 401)]
    assert hosts == ["10.231.8.2", "10.231.8.2", None, None]
    assert not re.search(failregex, line(403, uri="/_matrix/client/v3/sync"))
    forged = '","request":{"remote_ip":"192.0.2.9","uri":"/_matrix/client/v3/login","status":403}'
    assert re.search(failregex, line(403, header=forged))["host"] == "10.231.8.2", "a header cannot name the address"
