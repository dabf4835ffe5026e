"""Can this machine run test hosts? Checked before anything is created."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from .errors import TestHostError

# command -> Debian package that provides it
_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "nft": "nftables",
    "ssh-keygen": "openssh-client",
    "tar": "tar",
}
# Debian architecture -> qemu/kernel name (foreign architectures run through qemu-user-static)
QEMU_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
# How qemu's binfmt registration is made: systemd-binfmt reads qemu-user-binfmt's files (qemu 9.1
# and later: Debian 13, and Debian 12's backports); binfmt-support's update-binfmts, Debian 12's 7.2.
BINFMT_D = Path("/usr/lib/binfmt.d")
SYSTEMD_BINFMT = "/usr/lib/systemd/systemd-binfmt"


def require_support(arch: str = "amd64") -> None:
    """Raise ``TestHostError`` saying what is missing: Linux, root, or tools to install."""
    if platform.system() != "Linux":
        raise TestHostError(f"test hosts need Linux (systemd-nspawn); this is {platform.system()}")
    if os.geteuid() != 0:
        raise TestHostError("test hosts need root (systemd-nspawn, network and cgroup setup): run as root")
    tools = dict(_TOOLS)
    if arch != native_arch():
        tools[f"qemu-{QEMU_ARCH[arch]}-static"] = "qemu-user-static"
        if not (BINFMT_D / f"qemu-{QEMU_ARCH[arch]}.conf").exists():
            tools["update-binfmts"] = "binfmt-support"
    missing = sorted({pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None})
    if missing:
        raise TestHostError(f"test hosts need more tools: apt-get install {' '.join(missing)}")


def native_arch() -> str:
    """This machine's architecture in Debian's spelling."""
    machine = platform.machine()
    return next((deb for deb, qemu in QEMU_ARCH.items() if qemu == machine), machine)
