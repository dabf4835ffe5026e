"""The checks' shell backend (checks/shell.py) against a REAL sshd on 127.0.0.1 (tests/sshd_fixture.py):
what a command returns is what testinfra's own ssh backend returns for it, byte for byte, while
every command of a thread goes through one `ssh` process; a lost connection is an error. And a
command started ahead (checks/ahead.py) answers once. Skipped, with the reason, when not root or
when openssh-server is not installed.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import testinfra

from commonstack.checks.shell import ShellBackend  # registers shell://
from commonstack.checks import ahead
from commonstack.inventories.openssh import QUICK_KEX, key_exchanges, quick_first, ssh_config
from commonstack.inventories.targets import HostTarget

try:
    from tests.sshd_fixture import loopback_sshd_fixture
except ModuleNotFoundError:  # the repo root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.sshd_fixture import loopback_sshd_fixture

loopback_sshd = loopback_sshd_fixture(scope="module")

COMMANDS = [
    "printf 'no final newline'",
    "printf 'a\\0b\\377\\n'",  # binary: a NUL and a byte that is no UTF-8
    "echo out; echo err >&2; exit 3",
    "head -c 300000 /dev/zero | tr '\\0' x",  # more than a pipe holds
    "head -c 300000 /dev/zero | tr '\\0' e >&2; echo both",  # on both streams at once
    "printf 'ready\\n'; exit",
    "printf 'caf\\303\\251\\n'",
    "cat",  # stdin is empty, not the shell's own
    "true",
    "exit 127",
]


@pytest.fixture(autouse=True)
def no_shell_outlives_its_test():
    """testinfra keeps every host it made (its cache): their shells end with each test."""
    yield
    for host in testinfra.host.Host._host_cache.values():
        if isinstance(host.backend, ShellBackend):
            host.backend.close()


@pytest.fixture(scope="module")
def config(loopback_sshd, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("shell")
    path = folder / "ssh_config"
    target = HostTarget("one", loopback_sshd.address, loopback_sshd.user, loopback_sshd.port,
                        loopback_sshd.key_path, loopback_sshd.known_hosts)  # fmt: skip
    path.write_text(ssh_config([target]))
    return str(path)


def test_connections_open_with_a_quick_key_exchange_of_the_clients_own_defaults(config):
    """Debian 12's ssh tries sntrup761x25519 first, 0.10-0.15 s of its CPU per connection here."""
    said = subprocess.run(["ssh", "-v", "-F", config, "one", "true"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert said.returncode == 0, said.stderr
    [chosen] = [line.split("kex: algorithm: ")[1] for line in said.stderr.splitlines() if "kex: algorithm: " in line]
    assert chosen in QUICK_KEX
    default = subprocess.run(["ssh", "-F", "/dev/null", "-G", "any"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True).stdout  # fmt: skip
    [listed] = [line.split(" ", 1)[1] for line in default.splitlines() if line.startswith("kexalgorithms ")]
    if key_exchanges() is not None:  # reordered, never widened
        assert sorted(key_exchanges().split(",")) == sorted(listed.split(","))


# Default lists as `ssh -G` prints them: OpenSSH 9.2's (Debian 12), and modelled on 10.0's (Debian 13:
# ML-KEM first) and 8.4's (Debian 11: no post-quantum exchange).
KEX_9_2 = ("sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,"
           "ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,"
           "diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256")  # fmt: skip
KEX_10_0 = "mlkem768x25519-sha256," + KEX_9_2
KEX_8_4 = ("curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,"
           "diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,"
           "diffie-hellman-group14-sha256")  # fmt: skip


def test_the_quick_key_exchanges_come_first_and_nothing_is_added():
    """A Debian 13 controller would agree on sntrup761x25519 with a Debian 12 host (no ML-KEM there)."""
    assert quick_first(KEX_9_2.split(",")) == "curve25519-sha256," + KEX_9_2.replace("curve25519-sha256,", "", 1)
    reordered = quick_first(KEX_10_0.split(",")).split(",")
    assert reordered[:3] == ["mlkem768x25519-sha256", "curve25519-sha256", "sntrup761x25519-sha512"]
    assert sorted(reordered) == sorted(KEX_10_0.split(","))
    assert quick_first(KEX_8_4.split(",")) is None  # quick first already: the client's own order
    assert quick_first([]) is None
    assert quick_first(["curve25519-sha256\n  ProxyCommand x", "sntrup761x25519-sha512"]) is None


def test_answers_are_those_of_testinfras_ssh_backend(config):
    through_shell = testinfra.get_host("shell://one", ssh_config=config)
    through_ssh = testinfra.get_host("ssh://one", ssh_config=config)
    for command in COMMANDS:
        got, expected = through_shell.run(command), through_ssh.run(command)
        assert (got.rc, got.stdout_bytes, got.stderr_bytes) == (expected.rc, expected.stdout_bytes,
                                                                expected.stderr_bytes), command  # fmt: skip
    assert through_shell.run("echo out; echo err >&2; exit 3").stderr == "err\n"
    assert len(through_shell.backend._idle) == 1, "one shell served every command"


def test_threads_get_a_shell_each_and_their_answers_do_not_mix(config):
    host = testinfra.get_host("shell://one?timeout=9", ssh_config=config)  # its own backend
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda n: host.run(f"sleep 0.2; echo {n}").stdout, range(12)))
    assert answers == [f"{n}\n" for n in range(12)]
    assert 1 < len(host.backend._idle) <= 4


def test_a_lost_connection_is_an_error_and_the_next_command_reconnects(config):
    host = testinfra.get_host("shell://one?timeout=8", ssh_config=config)
    assert host.run("echo $PPID").rc == 0
    [lost] = host.backend._idle
    lost.process.kill()
    with pytest.raises(RuntimeError, match="the SSH connection failed while running `true`: is the host still up"):
        host.run("true")
    assert host.run("echo again").stdout == "again\n"


def test_a_host_that_refuses_is_an_error(loopback_sshd, tmp_path):
    path = tmp_path / "ssh_config"
    target = HostTarget("swapped", loopback_sshd.address, loopback_sshd.user, loopback_sshd.port,
                        loopback_sshd.key_path, loopback_sshd.other_known_hosts())  # fmt: skip
    path.write_text(ssh_config([target]))
    host = testinfra.get_host("shell://swapped", ssh_config=str(path))
    with pytest.raises(RuntimeError, match="Host key verification failed"):
        host.run("true")


def test_the_token_is_on_no_command_line_and_the_shell_ends_with_its_process(config):
    host = testinfra.get_host("shell://one?timeout=7", ssh_config=config)
    processes = host.run("ps -eo args").stdout  # this machine is the host
    [one] = host.backend._idle
    assert "IFS= read -r t" in processes and one.token.decode() not in processes
    host.backend.close()
    assert one.process.returncode == 0
    assert not host.backend._idle


def test_a_command_started_ahead_answers_once_then_runs_again(config, tmp_path):
    host = testinfra.get_host("shell://one?timeout=6", ssh_config=config)
    count = tmp_path / "runs"  # this machine is the host
    command = f"echo run >> {count}; wc -l < {count}"
    ahead.start(host, [(command,)])
    ahead._started[("one", command)].result()  # it ran before any check asked for it
    assert count.read_text() == "run\n"
    assert ahead.run(host, command).stdout == "1\n"  # its answer, not a second run
    assert ahead.run(host, command).stdout == "2\n"  # taken once: the next call runs it again
    assert ahead.check_output(host, "echo other") == "other"  # never started ahead: runs now


def test_a_shared_answer_runs_once_for_every_check_that_asks(config, tmp_path):
    host = testinfra.get_host("shell://one?timeout=5", ssh_config=config)
    count = tmp_path / "runs"  # this machine is the host
    command = f"echo run >> {count}; wc -l < {count}"
    ahead.start(host, [(command,)])
    answers = [ahead.shared(host, command).stdout for _ in range(3)]
    assert answers == ["1\n"] * 3 and count.read_text() == "run\n"  # started ahead, then kept
    other = f"echo again >> {count}; wc -l < {count}"
    assert [ahead.shared(host, other).stdout for _ in range(2)] == ["2\n"] * 2  # not started ahead: once


def test_a_check_never_waits_for_the_pool_to_run_what_it_asks(config, tmp_path):
    """With every thread of the pool busy, an answer not started yet, or started but still
    waiting for a thread, is run by the check that asks (once), not after the pool's work."""
    host = testinfra.get_host("shell://one?timeout=4", ssh_config=config)
    gate, count = tmp_path / "gate", tmp_path / "runs"  # this machine is the host
    busy = [f"while [ ! -e {gate} ]; do sleep 0.05; done; echo {n}" for n in range(ahead._pool._max_workers)]
    queued = f"echo run >> {count}; wc -l < {count}"
    ahead.start(host, [(command,) for command in busy] + [(queued,)])
    with ThreadPoolExecutor(1) as checks:  # the checks' thread: it must not hang
        answers = checks.submit(lambda: (ahead.run(host, queued).stdout, ahead.shared(host, "echo shared").stdout))
        try:
            assert answers.result(timeout=20) == ("1\n", "shared\n")
            assert not any(ahead._started[("one", command)].done() for command in busy)  # the pool still busy
        finally:
            gate.touch()
    assert [ahead.run(host, command).stdout for command in busy] == [f"{n}\n" for n in range(len(busy))]
    assert count.read_text() == "run\n"  # the queued one ran once: by the check, not by the pool too
