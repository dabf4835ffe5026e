"""What used to end in a traceback or a misleading line, run as a volunteer runs it (a real process,
real pipes, real sockets on this machine's loopback): one clear line, exit 2 (bad input) or 1 (a
host's fault)."""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from commonstack.cli import main

COMMAND = [sys.executable, "-m", "commonstack"]
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICpuz2tQFv6EjKDV2pnnRA2SPpnN5OQGcUDp/opY7rky"


def commonstack(root: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMMONSTACK_INVENTORIES": str(root)}
    env.pop("COMMONSTACK_DEBUG", None)
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60, env=env, **kwargs)


def group_on(root: Path, address: str, port: int) -> None:
    folder = root / "g"
    folder.mkdir(parents=True)
    (folder / "stack.yaml").write_text(yaml.safe_dump({
        "preset": "chat", "group": "g", "domain": "example.org", "admin_email": "a@example.org",
        "hosts": [{"name": "vps", "address": address, "port": port}]}))
    (folder / "known_hosts").write_text(f"[{address}]:{port} {ED25519}\n")


def closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_closing_the_output_pipe_ends_the_command_quietly():
    for reader in ("head -c1", "true"):
        done = subprocess.run(f"{' '.join(COMMAND)} presets | {reader}; exit ${{PIPESTATUS[0]}}", shell=True,
                              executable="/bin/bash", capture_output=True, text=True, timeout=60)
        assert done.stderr == "", done.stderr
        assert done.returncode in (0, 1)


def test_pin_keys_against_a_port_that_is_not_ssh_is_one_line(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_like_a_web_server():
        for _ in range(3):
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer_like_a_web_server, daemon=True).start()
    group_on(tmp_path, "127.0.0.1", port)
    try:
        done = commonstack(tmp_path, "pin-keys", "g", "-y")
    finally:
        server.close()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "paramiko" not in done.stderr
    assert done.stderr.strip() == f"error: 127.0.0.1:{port} did not speak SSH — is it the SSH port?"


def test_pin_keys_against_a_closed_port_is_the_host_s_fault(tmp_path):
    port = closed_port()
    group_on(tmp_path, "127.0.0.1", port)
    done = commonstack(tmp_path, "pin-keys", "g", "-y")
    assert done.returncode == 1 and done.stderr.strip() == f"error: cannot reach 127.0.0.1:{port}: Connection refused — is the host up?"


def test_deploy_with_every_host_unreachable_says_nothing_was_deployed(tmp_path):
    group_on(tmp_path, "127.0.0.1", closed_port())
    done = commonstack(tmp_path, "deploy", "g", "-y")
    assert done.returncode == 1
    assert "vps: unreachable" in done.stdout and "connection refused" in done.stdout
    assert "Nothing to change" not in done.stdout
    assert "Nothing was deployed: no host could be reached or planned." in done.stdout


@pytest.mark.parametrize(("spec", "what"), [
    ("Server=root@203.0.113.5", "the host's name: expected a short lowercase name"),
    ("vps=Root@203.0.113.5", "the host's user: expected a Unix user name"),
    ("vps=root@999.999.999.999", "the host's address: expected an IP address"),
    ("vps=root@203.0.113.5:70000", "the host's port: expected a port number"),
    ("vps=root@203.0.113.5:0", "the host's port: expected a port number"),
    ("a@b@203.0.113.5", "expected [NAME=][USER@]ADDRESS[:PORT]"),
])
def test_init_checks_each_part_of_a_host(tmp_path, spec, what):
    result = CliRunner().invoke(main, ["--inventories", str(tmp_path), "init", "g", "--preset", "chat",
                                       "--domain", "example.org", "--host", spec])
    assert result.exit_code == 2 and what in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "g" / "stack.yaml").exists()


def test_init_takes_an_ipv6_address_with_a_port_in_brackets(tmp_path):
    result = CliRunner().invoke(main, ["--inventories", str(tmp_path), "init", "g", "--preset", "chat",
                                       "--domain", "example.org", "--host", "vps=admin@[2001:db8::7]:2222"])
    assert result.exit_code == 0, result.output
    hosts = yaml.safe_load((tmp_path / "g" / "stack.yaml").read_text())["hosts"]
    assert hosts == [{"name": "vps", "address": "2001:db8::7", "user": "admin", "port": 2222}]
