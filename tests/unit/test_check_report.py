"""The check report and its forms: the pytest plugin's verdicts (a real pytest run with
testinfra's local backend), the table a volunteer reads, JUnit XML, JSON, and what the runner
adds around them (module selection from the layer registry, redaction, its ssh_config)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest

from commonstack.checks.report import write_junit
from commonstack.checks.runner import CHECKS_DIR, CheckResult
from commonstack.inventories.openssh import ssh_config
from commonstack.cli import _print_checks
from commonstack.inventories.secrets import redact
from commonstack.inventories.targets import HostTarget
from commonstack.stacks.layers import LAYERS, check_modules

CHECKS = '''
import pytest

@pytest.fixture(scope="module")
def broken(host):
    assert False, "the fixture's hint"

def test_answers(host):
    assert host.run("true").rc == 0

def test_is_configured(host):
    assert host.run("false").rc == 0, "it is not configured: run `commonstack deploy`"

def test_reads_a_file(host):
    host.check_output("sh -c 'echo first >&2; echo no such file >&2; exit 3'")

def test_not_here(host):
    pytest.skip("matrix is not on this host")

def test_needs_a_fixture(host, broken):
    pass
'''


def run_plugin(tmp_path: Path, *extra: str) -> list[dict]:
    (tmp_path / "demo.py").write_text(CHECKS)
    results = tmp_path / "results.jsonl"
    env = dict(os.environ, COMMONSTACK_CHECK_RESULTS=str(results), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "testinfra.plugin",
         "-p", "xdist.plugin", "-p", "commonstack.checks.report", "-c", os.devnull, f"--rootdir={tmp_path}",
         "--hosts=local://", *extra, str(tmp_path / "demo.py")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return sorted((json.loads(line) for line in results.read_text().splitlines()), key=lambda r: r["line"])


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist workers"])
def test_each_check_gets_one_verdict_with_its_hint(tmp_path, workers):
    results = run_plugin(tmp_path, *workers)
    verdicts = {r["check"]: (r["outcome"], r["message"]) for r in results}
    assert verdicts == {
        "answers": ("passed", ""),
        "is configured": ("failed", "it is not configured: run `commonstack deploy`"),
        "reads a file": (
            "failed", "`sh -c 'echo first >&2; echo no such file >&2; exit 3'` failed (exit 3): no such file"
        ),
        "not here": ("skipped", "matrix is not on this host"),
        "needs a fixture": ("failed", "the fixture's hint"),
    }  # fmt: skip
    # A module that is no layer's is its own label (demo); a layer's module is labelled by its layer.
    assert {(r["host"], r["module"], r["layer"]) for r in results} == {("local", "demo", "demo")}


def results_of_two_hosts() -> list[CheckResult]:
    return [
        CheckResult("vps", "base", "firewall is active", "passed", "", 0.25),
        CheckResult("vps", "base", "swap file is in place", "skipped", "a container cannot enable swap"),
        CheckResult("vps", "caddy", "web ports answer from outside", "failed",
                    "port 443 (HTTPS) does not answer from here: is it open in your provider's firewall?"),
        CheckResult("home", "host", "no reboot is pending", "passed", ""),
    ]  # fmt: skip


def test_the_table_groups_by_host_and_layer_and_says_what_to_look_at(capsys):
    assert _print_checks(results_of_two_hosts()) is False
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "vps  1 failed",
        "  base   pass  firewall is active",
        "         skip  swap file is in place — a container cannot enable swap",
        "  caddy  FAIL  web ports answer from outside",
        "               -> port 443 (HTTPS) does not answer from here: is it open in your provider's firewall?",
        "home  all passed",
        "  host   pass  no reboot is pending",
        "4 checks: 2 passed, 1 failed, 1 skipped",
    ]


def test_the_table_of_a_healthy_group(capsys):
    assert _print_checks([CheckResult("vps", "host", "no reboot is pending", "passed", "")]) is True
    assert capsys.readouterr().out.splitlines()[-1] == "1 checks: 1 passed, 0 failed, 0 skipped"


def test_junit_has_a_suite_per_host_and_a_case_per_check(tmp_path):
    path = tmp_path / "checks.xml"
    write_junit(results_of_two_hosts(), path, name="commonstack check tenants")
    root = ET.parse(path).getroot()
    assert (root.tag, root.get("tests"), root.get("failures"), root.get("skipped")) == ("testsuites", "4", "1", "1")
    assert [s.get("name") for s in root] == ["vps", "home"]
    failure = root.find("./testsuite[@name='vps']/testcase[@name='web ports answer from outside']/failure")
    assert failure.get("message").startswith("port 443 (HTTPS)")
    assert root.find(".//testcase[@name='swap file is in place']/skipped") is not None
    assert root.find(".//testcase[@name='firewall is active']").get("time") == "0.250"


def test_layers_select_their_check_modules_in_registry_order():
    assert check_modules(("caddy", "base")) == ("base", "host", "caddy")
    assert check_modules(("backup",)) == ("backup",)
    assert check_modules(("redis",)) == ("redis",)
    every = check_modules()
    assert len(every) == len(set(every)), "a check module belongs to one layer"
    assert {path.stem for path in CHECKS_DIR.glob("*.py") if _has_checks(path)} == set(every)
    assert all(item.checks or not item.deploy for item in LAYERS), "a deployed layer has checks"


def _has_checks(path: Path) -> bool:
    return "\ndef test_" in path.read_text()


def test_secrets_are_replaced_longest_first():
    assert redact("token abc123 and abc", ["abc123", "abc", ""]) == "token ******** and ********"


def test_ssh_config_pins_keys_and_shares_one_connection_per_host(tmp_path):
    host = HostTarget("vps", "203.0.113.7", "admin", 2222, tmp_path / "key", tmp_path / "known_hosts")
    config = ssh_config([host], control_dir=tmp_path)
    for line in ("Host vps", "HostName 203.0.113.7", "Port 2222", "User admin", "StrictHostKeyChecking yes",
                 "BatchMode yes", f"UserKnownHostsFile {tmp_path / 'known_hosts'}", "GlobalKnownHostsFile /dev/null",
                 f"IdentityFile {tmp_path / 'key'}", "IdentitiesOnly yes", f"ControlPath {tmp_path}/%n"):  # fmt: skip
        assert f"  {line}\n" in config or config.startswith(line), line


def test_check_help_documents_the_options_and_the_environment():
    from click.testing import CliRunner

    from commonstack.cli import main

    result = CliRunner().invoke(main, ["check", "--help"])
    assert result.exit_code == 0
    for text in ("--host", "--only", "--json", "--junit", "COMMONSTACK_CHECK_HOSTS_FILE",
                 "COMMONSTACK_CHECK_CA_FILE", "pytest --hosts=ssh://HOST"):  # fmt: skip
        assert text in result.output, text
    assert isinstance(main.commands["check"], click.Command)
