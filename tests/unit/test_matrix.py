"""Matrix without test hosts: the server-name guard, the installer script, the checks'
expectations, and the TURN client of the login check against a real coturn on loopback. (Its
facts and operations have their tables: tests/unit/test_facts.py, test_operations.py.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import sys
import time

import pytest

from commonstack.checks import matrix_login
from commonstack.checks.context import host_expectations
from commonstack.checks.probes import stun_answers
from commonstack.deploys.synapse import (
    NoSynapseWheel,
    ServerNameChanged,
    point_venv_at,
    refuse_changed_server_name,
    require_wheel,
    wheel_sha256,
)
from commonstack.plan import Release, plan_host
from commonstack.stacks.model import StackProfile
from commonstack.stacks.sizing import HostFacts
from commonstack.stacks.versions import versions

SECRETS = {
    name: f"s3cr3t-{name}"
    for name in (
        "postgres_synapse_password",
        "synapse_registration_shared_secret",
        "synapse_macaroon_secret_key",
        "synapse_form_secret",
        "matrix_admin_password",
        "turn_shared_secret",
    )
}


def chat_profile(**matrix) -> StackProfile:
    return StackProfile.model_validate(
        {
            "group": "tenants",
            "domain": "example.org",
            "admin_email": "admin@example.org",
            "hosts": [{"name": "vps", "address": "203.0.113.7"}],
            "matrix": {"enabled": True, **matrix},
        }
    )


def plan_for(profile: StackProfile, arch: str = "amd64"):
    return plan_host(profile, profile.hosts[0], SECRETS, Release(HostFacts(memory_mb=1024, cpus=1, arch=arch)))


# --- the server name never changes -----------------------------------------------------------


@pytest.mark.parametrize("recorded", ["", "example.org"])
def test_a_new_or_unchanged_server_name_is_accepted(recorded):
    refuse_changed_server_name(recorded, "example.org")


def test_a_changed_server_name_is_refused_in_one_line_that_says_what_to_do():
    with pytest.raises(ServerNameChanged) as refused:
        refuse_changed_server_name("example.org", "chat.example.org")
    message = str(refused.value)
    assert "\n" not in message and len(message) < 280  # the runner shows 300 characters of it
    assert "set up as example.org" in message and "set matrix.server_name: example.org" in message


# --- the installer ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_the_installer_takes_the_release_and_its_wheel_hash_and_renders_no_version(arch):
    """A new pin must not change the installer (a changed file would restart Synapse at the next
    deploy): the release and its hash are arguments."""
    plan = plan_for(chat_profile(), arch)
    script = next(f for f in plan.files if f.path == "/usr/local/sbin/commonstack-install-synapse")
    synapse = versions().synapse
    assert script.mode == "0755"
    assert "\nversion=$1\nsha256=$2\nvenv=/opt/synapse/venv-$version\n" in script.content
    assert not [v for v in synapse.known if v in script.content]
    assert "--require-hashes" in script.content and '"${wheel}[postgres]"' in script.content
    held = plan_for(chat_profile(version=synapse.known[0]), arch)
    assert [f.content for f in held.files] == [f.content for f in plan.files], "holding a release renders the same"
    assert wheel_sha256(synapse.known[0], arch) == synapse.releases[synapse.known[0]].sha256[arch]


def test_the_installer_runs_for_real_and_keeps_a_working_release(tmp_path):
    """The installer's own logic against a fake python3 and pip: a release already there is kept."""
    plan = plan_for(chat_profile())
    script = next(f for f in plan.files if f.path == "/usr/local/sbin/commonstack-install-synapse")
    installer = tmp_path / "install"
    # Here as this user (no matrix-synapse account on the controller), in a folder of the test's.
    content = script.content.replace("/opt/synapse", str(tmp_path / "opt"))
    installer.write_text(content.replace("runuser -u matrix-synapse -- ", ""))
    (tmp_path / "opt" / "venv-1.160.0" / "bin").mkdir(parents=True)
    python = tmp_path / "opt" / "venv-1.160.0" / "bin" / "python"
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    done = subprocess.run(["sh", str(installer), "1.160.0", "0" * 64], capture_output=True, text=True)
    assert done.returncode == 0 and "Synapse 1.160.0 is in" in done.stdout, done.stderr
    refused = subprocess.run(["sh", str(installer), "1.160.0"], capture_output=True, text=True)
    assert refused.returncode == 2 and "usage:" in refused.stderr


def test_pointing_the_virtualenv_link_converts_the_old_layout_and_never_moves_into_a_release(tmp_path):
    opt = tmp_path / "opt" / "synapse"
    (opt / "venv" / "lib" / "python3.11" / "site-packages" / "matrix_synapse-1.160.0.dist-info").mkdir(parents=True)
    (opt / "venv-1.163.2").mkdir()
    command = point_venv_at("1.163.2").replace("/opt/synapse", str(opt))
    subprocess.run(["sh", "-ec", command], check=True)
    assert (opt / "venv").is_symlink() and str((opt / "venv").readlink()) == "venv-1.163.2"
    assert (opt / "venv-1.160.0" / "lib").is_dir(), "the old layout's virtualenv is kept under its release"
    (opt / "venv-1.160.0" / "bin").mkdir()
    subprocess.run(["sh", "-ec", point_venv_at("1.160.0").replace("/opt/synapse", str(opt))], check=True)
    assert str((opt / "venv").readlink()) == "venv-1.160.0"
    assert sorted(p.name for p in opt.iterdir()) == ["venv", "venv-1.160.0", "venv-1.163.2"]


def test_an_architecture_without_a_wheel_is_refused():
    require_wheel("amd64")
    require_wheel("arm64")
    with pytest.raises(NoSynapseWheel, match="not armhf"):
        require_wheel("armhf")


# --- what the checks expect -------------------------------------------------------------------


def test_the_checks_expect_matrix_without_any_password():
    plan = plan_for(chat_profile(registration="token"))
    expected = host_expectations(plan)
    assert expected["matrix"] == {
        "server_name": "example.org",
        "hostname": "matrix.example.org",
        "version": versions().synapse.version,
        "exact_version": False,
        "admin_user_id": "@admin:example.org",
        "registration": "token",
    }
    assert SECRETS["matrix_admin_password"] not in json.dumps(expected)


# --- the TURN client of the login check, against a real coturn --------------------------------


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def coturn(tmp_path_factory):
    """coturn on loopback with a shared secret, as Synapse's TURN REST API expects."""
    turnserver = shutil.which("turnserver")
    if not turnserver:
        pytest.skip("coturn is not installed (apt-get install coturn)")
    folder = tmp_path_factory.mktemp("coturn")
    port, relay = _free_udp_port(), _free_udp_port()
    secret = "the-shared-secret"
    process = subprocess.Popen(
        [turnserver, "-n", "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=turn.test",
         "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
         f"--min-port={relay}", f"--max-port={relay}", "--no-tls", "--no-dtls", "--no-cli",
         "--log-file=stdout", f"--pidfile={folder / 'turn.pid'}", f"--userdb={folder / 'turndb'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    started = time.monotonic()
    while not stun_answers("127.0.0.1", port, attempts=1):  # bound and listening
        assert process.poll() is None and time.monotonic() - started < 30, "coturn did not start"
        time.sleep(0.1)
    yield port, secret
    process.terminate()
    process.wait(timeout=10)


def _turn_credentials(secret: str, user_id: str = "@admin:example.org") -> tuple[str, str]:
    """What Synapse's /voip/turnServer hands out (synapse/rest/client/voip.py)."""
    username = f"{int(time.time()) + 3600}:{user_id}"
    password = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return username, password


def _script_functions() -> dict:
    namespace: dict = {"__name__": "as_admin"}  # not __main__: defines, runs nothing
    exec(compile(matrix_login.AS_ADMIN, "AS_ADMIN", "exec"), namespace)
    return namespace


def test_the_login_check_allocates_a_relay_with_synapses_credentials(coturn):
    port, secret = coturn
    username, password = _turn_credentials(secret)
    assert _script_functions()["allocate"](("127.0.0.1", port), username, password) == "ok"


def test_the_login_check_reports_credentials_from_another_secret(coturn):
    port, _ = coturn
    username, password = _turn_credentials("not-the-secret")
    outcome = _script_functions()["allocate"](("127.0.0.1", port), username, password)
    assert outcome.startswith("coturn refused the credentials: 401"), outcome


def test_the_login_check_reports_a_password_file_it_cannot_read(tmp_path, capsys):
    _script_functions()["main"]("@admin:example.org", str(tmp_path / "missing"), 3478)
    report = json.loads(capsys.readouterr().out)
    assert report == {"login": f"cannot read {tmp_path / 'missing'}: No such file or directory"}


def test_the_login_check_script_needs_only_the_standard_library():
    # It runs on the host with Synapse's virtualenv Python, whatever that holds.
    imported = {
        name.strip().split(".")[0]
        for line in matrix_login.AS_ADMIN.splitlines()
        if line.startswith("import ")
        for name in line.removeprefix("import ").split(",")
    }
    assert imported and imported <= sys.stdlib_module_names, imported
