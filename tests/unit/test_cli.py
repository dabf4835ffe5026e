"""The CLI as a volunteer meets it: init, presets, validate, render, schema, and clear errors."""

import json
import os
import stat
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from commonstack.cli import main
from commonstack.stacks.loader import preset_names
from tests.unit.terminal import Terminal


@pytest.fixture
def run(tmp_path):
    def invoke(*args: str):
        return CliRunner().invoke(main, ["--inventories", str(tmp_path / "inv"), *args])

    return invoke


def init_small(run):
    result = run("init", "tenants", "--preset", "small-group", "--domain", "tenants.example.org",
                 "--host", "root@203.0.113.7")
    assert result.exit_code == 0, result.output
    return result


def test_init_writes_profile_and_private_secrets(run, tmp_path):
    result = init_small(run)
    folder = tmp_path / "inv" / "tenants"
    profile = yaml.safe_load((folder / "stack.yaml").read_text())
    assert profile["preset"] == "small-group"
    assert profile["hosts"] == [{"name": "server", "address": "203.0.113.7", "user": "root"}]
    assert stat.S_IMODE((folder / "secrets.yaml").stat().st_mode) == 0o600
    secrets = yaml.safe_load((folder / "secrets.yaml").read_text())
    assert not any(value in result.output for value in secrets.values())


def test_init_never_overwrites_without_force(run, tmp_path):
    init_small(run)
    stack = tmp_path / "inv" / "tenants" / "stack.yaml"
    stack.write_text(stack.read_text() + "# my notes\n")
    secrets_before = (tmp_path / "inv" / "tenants" / "secrets.yaml").read_text()
    result = run("init", "tenants", "--preset", "chat", "--domain", "x.org", "--host", "1.2.3.4")
    assert result.exit_code == 2 and "already exists" in result.output and "--force" in result.output
    assert "# my notes" in stack.read_text()
    forced = run("init", "tenants", "--preset", "chat", "--domain", "x.org", "--host", "1.2.3.4", "--force")
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "inv" / "tenants" / "secrets.yaml").read_text().startswith(secrets_before.rstrip("\n")[:60])


def test_init_with_a_bad_domain_leaves_nothing_behind(run, tmp_path):
    result = run("init", "tenants", "--preset", "chat", "--domain", "not a domain", "--host", "1.2.3.4")
    assert result.exit_code == 2
    assert "--domain: expected a DNS name" in result.output
    assert not (tmp_path / "inv" / "tenants").exists()


def test_init_split_places_two_named_hosts(run, tmp_path):
    result = run("init", "coop", "--preset", "split", "--domain", "coop.example.org",
                 "--host", "home=pi@192.168.1.20", "--host", "vps=root@203.0.113.7:2222", "--no-email")
    assert result.exit_code == 0, result.output
    profile = yaml.safe_load((tmp_path / "inv" / "coop" / "stack.yaml").read_text())
    assert profile["hosts"] == [{"name": "home", "address": "192.168.1.20", "user": "pi"},
                                {"name": "vps", "address": "203.0.113.7", "user": "root", "port": 2222}]


def test_presets_lists_each_with_its_smallest_host(run):
    result = run("presets")
    assert result.exit_code == 0
    for name in preset_names():
        assert name in result.output
    assert "Raspberry Pi 4 with 4 GB or a 2 GB VPS" in result.output


def test_validate_reports_each_host(run):
    init_small(run)
    result = run("validate", "tenants")
    assert result.exit_code == 0, result.output
    assert "server (203.0.113.7): matrix, nextcloud, turn" in result.output
    assert "valid" in result.output


def test_validate_refuses_a_host_too_small(run, tmp_path):
    init_small(run)
    stack = tmp_path / "inv" / "tenants" / "stack.yaml"
    stack.write_text(stack.read_text().replace("user: root", "user: root\n  memory_mb: 1024"))
    result = run("validate", "tenants")
    assert result.exit_code == 2
    assert "hosts[0] (server)" in result.output and "1024 MB" in result.output


def test_unknown_group_says_how_to_create_it(run):
    result = run("validate", "nosuch")
    assert result.exit_code == 2 and "commonstack init nosuch" in result.output


def test_render_writes_every_config_without_secrets(run, tmp_path):
    init_small(run)
    out = tmp_path / "review"
    result = run("render", "tenants", "--out", str(out))
    assert result.exit_code == 0, result.output
    caddyfile = out / "server" / "etc" / "caddy" / "Caddyfile"
    assert "cloud.tenants.example.org" in caddyfile.read_text()
    secrets = yaml.safe_load((tmp_path / "inv" / "tenants" / "secrets.yaml").read_text())
    for path in out.rglob("*"):
        if path.is_file():
            assert not any(value in path.read_text() for value in secrets.values()), path
    again = run("render", "tenants", "--out", str(out))
    assert again.exit_code == 2 and "not empty" in again.output


def test_schema_is_json_schema_of_the_profile(run):
    result = run("schema")
    schema = json.loads(result.output)
    assert {"domain", "hosts", "matrix", "nextcloud", "discourse"} <= set(schema["properties"])


def test_errors_are_one_line_without_traceback(tmp_path):
    inventories = tmp_path / "inv" / "g"
    inventories.mkdir(parents=True)
    (inventories / "stack.yaml").write_text("preset: chat\ngroup: g\ndomain: [x\n")
    env = dict(os.environ, COMMONSTACK_INVENTORIES=str(tmp_path / "inv"))
    result = subprocess.run([sys.executable, "-m", "commonstack", "validate", "g"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {inventories / 'stack.yaml'}:4:1: malformed YAML")
    assert "flow sequence that starts at line 3" in result.stderr


def test_help_teaches_with_examples():
    result = CliRunner().invoke(main, ["init", "--help"])
    assert "Examples:" in result.output and "--preset split" in result.output


def test_help_lists_the_layers_without_loading_heavy_libraries():
    """--help reads the layer registry alone: no pydantic, jinja2 or pyinfra (they take seconds)."""
    code = (
        "import sys; from click.testing import CliRunner; from commonstack.cli import main; "
        "out = CliRunner().invoke(main, ['deploy', '--help']).output; "
        "print(sorted(m for m in ('pydantic', 'jinja2', 'pyinfra', 'yaml') if m in sys.modules)); print(out)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, _, help_text = result.stdout.partition("\n")
    assert loaded == "[]"
    from commonstack.stacks.layers import LAYER_NAMES

    assert all(name in help_text for name in LAYER_NAMES)


def test_init_asks_for_what_is_missing_on_a_terminal(tmp_path):
    """A real pseudo-terminal: init prompts for the preset, the domain, the host and email."""
    terminal = Terminal(tmp_path / "inv", "init", "coop")
    terminal.answer("Preset", "chat")
    terminal.answer("domain", "coop.example.org")
    terminal.answer("SSH address of host", "root@203.0.113.9")
    terminal.answer("through an SMTP relay?", "n")
    status, shown = terminal.finish()
    assert status == 0, shown
    profile = yaml.safe_load((tmp_path / "inv" / "coop" / "stack.yaml").read_text())
    assert profile["preset"] == "chat" and profile["domain"] == "coop.example.org"
    assert profile["hosts"] == [{"name": "server", "address": "203.0.113.9", "user": "root"}]


def test_upgrade_refuses_a_request_no_host_could_do_before_connecting(run, tmp_path):
    """Exit 2 and one line, before any host is contacted (203.0.113.7 is a documentation address)."""
    init_small(run)
    env = dict(os.environ, COMMONSTACK_INVENTORIES=str(tmp_path / "inv"))
    cases = {
        ("--only", "synapse", "--to", "1.150.0"): "--to 1.150.0: not a synapse release this kit knows (1.160.0,",
        ("--to", "1.160.0"): "--to 1.160.0: name the one layer it is for with --only",
        ("--only", "caddy"): "--only caddy: it has no releases of its own to upgrade",
        ("--only", "synapse", "--to", "1.163.2", "--only", "nextcloud"): "name the one layer it is for",
    }
    for args, expected in cases.items():
        result = subprocess.run([sys.executable, "-m", "commonstack", "upgrade", "tenants", *args],
                                capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert "Reading" not in result.stdout, "a host was contacted"


def test_backup_commands_speak_of_hosts_and_layers_only(run):
    init_small(run)
    for command in (["restore", "tenants", "--service", "synapse"], ["backup", "tenants", "--service", "x"]):
        result = run(*command)
        assert result.exit_code == 2 and "No such option '--service'" in result.output, result.output
    result = run("restore", "tenants", "--only", "nope")
    assert result.exit_code == 2 and "'nope' is not one of" in result.output


def test_backup_commands_need_backups_in_the_profile(run, tmp_path):
    init_small(run)
    for command in ("backup", "backups", "drill"):
        result = run(command, "tenants")
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines()[-1] == (
            f"error: {tmp_path / 'inv' / 'tenants' / 'stack.yaml'}: backup: not enabled; add `backup: {{enabled: true, "
            "repository: sftp:USER@HOST:/PATH}` (see the README's Backups) and deploy"
        )


def test_backups_keys_prints_each_hosts_public_key_and_no_secret(run, tmp_path):
    init_small(run)
    stack = tmp_path / "inv" / "tenants" / "stack.yaml"
    profile = yaml.safe_load(stack.read_text())
    profile["backup"] = {"enabled": True, "repository": "sftp:restic@backup.example.net:/srv/restic/tenants"}
    stack.write_text(yaml.safe_dump(profile))
    (tmp_path / "inv" / "tenants" / "known_hosts").write_text("")
    result = run("backups", "tenants", "--keys")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ssh-ed25519 ") and result.output.strip().endswith("commonstack-backup-tenants-server")
    secrets = yaml.safe_load((tmp_path / "inv" / "tenants" / "secrets.yaml").read_text())
    assert "backup_ssh_seed" in secrets and not any(value in result.output for value in secrets.values())
