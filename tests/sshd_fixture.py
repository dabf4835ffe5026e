"""A real OpenSSH server on 127.0.0.1, for tests that need SSH but no test host.

``start_loopback_sshd()`` runs ``/usr/sbin/sshd -D -f CONFIG`` on 127.0.0.1 with a random
free port, a throwaway ed25519 host key and a throwaway client key authorised for root,
plus a ``known_hosts`` file that pins the host key (``[127.0.0.1]:PORT ssh-ed25519 ...``).
Nothing outside its own temporary directory is touched, except ``/run/sshd`` (sshd's
privilege-separation directory), which is created if missing.

Use it from pytest through a fixture::

    from tests.sshd_fixture import loopback_sshd_fixture
    loopback_sshd = loopback_sshd_fixture(scope="module")

or directly::

    with start_loopback_sshd() as sshd:
        ...sshd.port, sshd.key_path, sshd.known_hosts...

It skips (``pytest.skip``) with a clear reason when not root or when openssh-server is
not installed. This module imports neither pyinfra nor paramiko, so importing it does
not import ``ssl`` before the runner's gevent monkey-patching.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
ADDRESS = "127.0.0.1"


def skip_reason() -> str | None:
    """Why a loopback sshd cannot run here, or None."""
    if os.geteuid() != 0:
        return "loopback sshd needs root (sshd must run as root to accept logins as root)"
    if not SSHD.exists():
        return f"{SSHD} missing: apt-get install openssh-server"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen missing: apt-get install openssh-client"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ADDRESS, 0))
        return s.getsockname()[1]


def make_keypair(path: Path, comment: str = "commonstack-test") -> str:
    """Create an unencrypted ed25519 key at ``path``; return the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    return Path(f"{path}.pub").read_text().strip()


def known_hosts_line(port: int, public_key_line: str, address: str = ADDRESS) -> str:
    """A known_hosts line pinning ``public_key_line`` (``type base64 [comment]``)."""
    key_type, key_b64 = public_key_line.split()[:2]
    entry = address if port == 22 else f"[{address}]:{port}"
    return f"{entry} {key_type} {key_b64}\n"


@dataclass
class LoopbackSshd:
    address: str
    port: int
    user: str
    key_path: Path  # client private key authorised for root
    known_hosts: Path  # pins the server's host key
    host_public_key: str  # "ssh-ed25519 AAAA... comment"
    workdir: Path
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def other_known_hosts(self, name: str = "wrong_known_hosts") -> Path:
        """A known_hosts file pinning a *different* key for this address:port (a mismatch)."""
        other = self.workdir / f"{name}_key"
        if not other.exists():
            make_keypair(other, comment="not-the-server")
        path = self.workdir / name
        path.write_text(known_hosts_line(self.port, Path(f"{other}.pub").read_text(), self.address))
        return path

    def empty_known_hosts(self, name: str = "empty_known_hosts") -> Path:
        """A known_hosts file that does not know this server (an unknown host key)."""
        path = self.workdir / name
        path.write_text("# nothing pinned here\n")
        return path

    def target_fields(self, name: str, **overrides) -> dict:
        """The fields of a HostTarget for this sshd, as plain JSON-able values (paths as str),
        for a runner started in another process."""
        fields = dict(
            name=name,
            address=self.address,
            port=self.port,
            user=self.user,
            key_path=self.key_path,
            known_hosts=self.known_hosts,
            data={},
        )
        fields.update(overrides)
        for key in ("key_path", "known_hosts"):
            if fields[key] is not None:
                fields[key] = str(fields[key])
        return fields

    def target(self, name: str, **overrides):
        """A ``commonstack.deploys.runner.HostTarget`` for this sshd.

        Imports the runner, which monkey-patches gevent for the whole process: use it in a
        process that runs deploys, not inside a pytest process (see tests/unit/test_runner.py).
        """
        from commonstack.deploys.runner import HostTarget

        fields = self.target_fields(name, **overrides)
        for key in ("key_path", "known_hosts"):
            if fields[key] is not None:
                fields[key] = Path(fields[key])
        return HostTarget(**fields)


def _wait_listening(proc: subprocess.Popen, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect((ADDRESS, port))
                # sshd speaks first: wait for its banner so we know it is serving.
                if s.recv(4).startswith(b"SSH-"):
                    return True
            except OSError:
                pass
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def start_loopback_sshd(
    workdir: Path | None = None, use_pam: bool = False
) -> Iterator[LoopbackSshd]:
    """Start sshd on 127.0.0.1:<free port>; stop it (and only it) on exit.

    The client key is authorised for every user (one AuthorizedKeysFile for all). Without
    PAM (the default) sshd refuses accounts whose password is locked ("!" in /etc/shadow),
    which is how Debian creates most non-root users; ``use_pam=True`` lets them log in
    (PAM handles the account) for tests that need a non-root login.
    """
    reason = skip_reason()
    if reason:
        import pytest

        pytest.skip(reason)

    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="commonstack-sshd-")) if own_dir else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    # sshd reads authorized_keys as the logging-in user: keep the directory traversable.
    work.chmod(0o755)

    host_key = work / "ssh_host_ed25519_key"
    host_pub = make_keypair(host_key, comment="commonstack-test-host")
    client_key = work / "client_ed25519_key"
    client_pub = make_keypair(client_key, comment="commonstack-test-client")
    authorized_keys = work / "authorized_keys"
    authorized_keys.write_text(client_pub + "\n")
    authorized_keys.chmod(0o644)

    # Privilege separation directory (normally created by the service unit).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    proc: subprocess.Popen | None = None
    log_path = work / "sshd.log"
    port = 0
    for _attempt in range(5):
        port = free_port()
        config = work / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {ADDRESS}",
                    f"HostKey {host_key}",
                    f"PidFile {work / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized_keys}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    f"UsePAM {'yes' if use_pam else 'no'}",
                    "StrictModes no",
                    "UseDNS no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    # bash sources ~/.bashrc for commands run by sshd unless SHLVL says it is
                    # nested; a dev machine's .bashrc (pyenv init...) costs ~100 ms a command.
                    "SetEnv SHLVL=1",
                    "MaxStartups 100",
                    "MaxSessions 100",
                    "LogLevel VERBOSE",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-f", str(config), "-E", str(log_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if _wait_listening(proc, port):
            break
        _stop(proc)
        proc = None  # port taken between free_port() and bind: try another
    if proc is None:
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        raise RuntimeError(f"sshd did not start on {ADDRESS}; its log:\n{log}")

    known_hosts = work / "known_hosts"
    known_hosts.write_text(known_hosts_line(port, host_pub))

    try:
        yield LoopbackSshd(
            address=ADDRESS,
            port=port,
            user="root",
            key_path=client_key,
            known_hosts=known_hosts,
            host_public_key=host_pub,
            workdir=work,
            log_path=log_path,
            process=proc,
        )
    finally:
        _stop(proc)
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the listening sshd we started (by its own pid).

    Connections already accepted are served by per-connection children that end when their
    client disconnects (the runner closes its SSH clients at the end of every run).
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stderr is not None:
        proc.stderr.close()


def loopback_sshd_fixture(scope: str = "module"):
    """Build a pytest fixture yielding a LoopbackSshd (assign it to a name in a test module
    or conftest: ``loopback_sshd = loopback_sshd_fixture()``)."""
    import pytest

    @pytest.fixture(scope=scope)
    def loopback_sshd():
        with start_loopback_sshd() as sshd:
            yield sshd

    return loopback_sshd
