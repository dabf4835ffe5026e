"""Pinned SSH host keys of a group (its known_hosts), so no connection trusts blindly."""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
from pathlib import Path

from commonstack.errors import CommonstackError, HostError
from commonstack.stacks.reading import ReadError, read_text


_SCAN_LOG = logging.getLogger("commonstack.known_hosts.scan")
_SCAN_LOG.addHandler(logging.NullHandler())
_SCAN_LOG.propagate = False


def host_pattern(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(key_base64: str) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -l` and providers' consoles show it."""
    digest = hashlib.sha256(base64.b64decode(key_base64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def scan_host_key(address: str, port: int, timeout: float = 10.0) -> tuple[str, str]:
    """(key type, base64 key) the SSH server at address:port presents."""
    import paramiko

    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise HostError(f"cannot reach {address}:{port}: {exc.strerror or exc} — is the host up?") from None
    transport = paramiko.Transport(sock)
    # The transport's thread logs the traceback of a failed handshake, which Python's last-resort
    # handler would print; the one line raised below says it all.
    transport.set_log_channel(_SCAN_LOG.name)
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return key.get_name(), key.get_base64()
    except (paramiko.SSHException, EOFError, OSError):
        # paramiko's reason ("Error reading SSH protocol banner", with or without the reset that
        # followed) depends on timing and says no more than this line.
        raise HostError(f"{address}:{port} did not speak SSH — is it the SSH port?") from None
    finally:
        transport.close()


def pin(known_hosts: Path, address: str, port: int, key_type: str, key_base64: str) -> bool:
    """Add a host's key; False if already pinned. A different pinned key is an error, never replaced."""
    pattern = host_pattern(address, port)
    try:
        lines = read_text(known_hosts).splitlines() if known_hosts.exists() else []
    except ReadError as exc:
        raise CommonstackError(f"{known_hosts}: {exc.message}") from None
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and pattern in fields[0].split(","):
            if fields[2] == key_base64:
                return False
            if fields[1] == key_type:
                raise CommonstackError(
                    f"{known_hosts}: {pattern} is pinned with another {key_type} key. If the host was "
                    f"reinstalled, delete that line and pin again; otherwise do not connect."
                )
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    with known_hosts.open("a") as handle:
        handle.write(f"{pattern} {key_type} {key_base64}\n")
    known_hosts.chmod(0o600)
    return True
