"""Turning a copy of the cached rootfs into one particular host, before it boots."""

from __future__ import annotations

import uuid
from pathlib import Path

from . import sshkeys
from .errors import TestHostError
from .emulation import prepare_emulated
from .network import Subnet

CONTROLLER_CA = Path("/etc/ssl/certs/ca-certificates.crt")

_SSHD = """\
# commonstack test host: root logs in with the test key only; one host key, pinned by the caller
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
"""


def personalize(root: Path, name: str, trust_controller_ca: bool, emulated: bool) -> str:
    """Name, identity, DNS and SSH access for one host; returns its SSH host public key line."""
    _write(root, "etc/hostname", f"{name}\n")
    _write(root, "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    # Unique per host; an empty one would make systemd treat every boot as a first boot.
    _write(root, "etc/machine-id", f"{uuid.uuid4().hex}\n", mode=0o444)
    _write(root, "etc/resolv.conf", _resolv_conf())
    _write(root, "root/.ssh/authorized_keys", f"{sshkeys.public_key()}\n", mode=0o600)
    (root / "root/.ssh").chmod(0o700)
    _write(root, "etc/ssh/sshd_config.d/10-commonstack-testhost.conf", _SSHD)
    if trust_controller_ca:
        _trust_controller_ca(root)
    if emulated:
        prepare_emulated(root)
    return sshkeys.generate_host_key(root, name)


def write_network(root: Path, subnet: Subnet) -> None:
    """The address ``network.configure_container_side`` sets, for systemd-networkd if a deploy enables it.

    "10-" sorts before Debian's 80-container-host0.network (DHCP), which would otherwise win.
    """
    _write(
        root,
        "etc/systemd/network/10-host0.network",
        f"[Match]\nName=host0\n\n[Network]\nAddress={subnet.address}/24\nGateway={subnet.gateway}\n",
    )


def _resolv_conf() -> str:
    text = Path("/etc/resolv.conf").read_text()
    # A local stub resolver (systemd-resolved) is not reachable from inside: use its upstreams.
    upstream = Path("/run/systemd/resolve/resolv.conf")
    if "nameserver 127." in text and upstream.exists():
        return upstream.read_text()
    return text


def _trust_controller_ca(root: Path) -> None:
    """The controller's CA bundle, so TLS through an intercepting proxy (pip -> PyPI) verifies.

    The bundle replaces the system one (ca-certificates is not in minbase) and is also put
    where update-ca-certificates looks, so it survives a later install of ca-certificates.
    """
    if not CONTROLLER_CA.is_file():
        raise TestHostError(f"trust_controller_ca: no {CONTROLLER_CA} here (apt-get install ca-certificates)")
    bundle = CONTROLLER_CA.read_text()
    _write(root, "usr/local/share/ca-certificates/commonstack-controller.crt", bundle)
    _write(root, "etc/ssl/certs/ca-certificates.crt", bundle)


def _write(root: Path, relative: str, text: str, mode: int = 0o644) -> None:
    path = root / relative
    # Replace symlinks instead of writing through them: an absolute link would point into the controller.
    if path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
