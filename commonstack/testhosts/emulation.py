"""What an emulated (qemu-user) test host gets in place of what qemu-user cannot give it.

Test hosts only, never real hosts: each relaxation is a limit of emulation, not of the stack.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

# qemu cannot give a service a user namespace or systemd's credentials mount, so units asking for
# them fail (217/USER, 243/CREDENTIALS: Debian's redis-server, systemd-tmpfiles-setup,
# systemd-sysusers...; on trixie, systemd 257 also imports credentials in journald, sysctl,
# logind and getty: ImportCredential=), nor a network namespace (225/NETWORK: "Failed to set up
# network namespacing", the kit's sandbox of coturn-certificate). A top-level drop-in: it applies
# to every service, including ones installed later, and its name sorts after the kit's own
# 40-commonstack-hardening.conf, so it wins.
SERVICE_DROP_IN = """\
# commonstack: a limit of qemu-user emulation on this test host; not for real hosts
[Service]
PrivateUsers=no
PrivateNetwork=no
LoadCredential=
SetCredential=
ImportCredential=
"""

# qemu-user refuses netlink sockets other than route, uevent and audit (linux-user/syscall.c), so
# an emulated nft cannot reach nftables (NETLINK_NETFILTER: "Protocol not supported"). The
# controller's own nft, with its libraries and loader, runs natively in the host (the kernel needs
# no emulation for its own architecture) and loads the host's firewall for real. Debian's nft is
# diverted to /usr/sbin/nft.distrib when the deploy installs it.
NATIVE_NFT_DIR = "usr/local/lib/commonstack-native-nft"
NFT = "/usr/sbin/nft"
_WRAPPER = f"""\
#!/bin/sh
# commonstack: a limit of qemu-user emulation on this test host; not for real hosts.
# qemu-user cannot pass nftables' netlink protocol: this runs the controller's own nft natively.
exec /{NATIVE_NFT_DIR}/loader --library-path /{NATIVE_NFT_DIR} /{NATIVE_NFT_DIR}/nft "$@"
"""


def prepare_emulated(root: Path) -> None:
    """Relax what qemu-user cannot do, in a host's root filesystem before it boots."""
    _write(root / "etc/systemd/system/service.d/50-commonstack-emulation.conf", SERVICE_DROP_IN)
    _native_nft(root)


def _native_nft(root: Path) -> None:
    folder = root / NATIVE_NFT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    linked = subprocess.run(["ldd", NFT], capture_output=True, text=True, check=True).stdout
    libraries = re.findall(r"=> (/\S+)", linked)
    loader = next(path for path in re.findall(r"^\s*(/\S+ld-linux\S*)", linked, re.M))
    for library in libraries:
        shutil.copy2(os.path.realpath(library), folder / Path(library).name)
    shutil.copy2(os.path.realpath(loader), folder / "loader")
    shutil.copy2(NFT, folder / "nft")
    _write(root / NFT.lstrip("/"), _WRAPPER, mode=0o755)
    with (root / "var/lib/dpkg/diversions").open("a") as diversions:  # dpkg-divert --local --rename
        diversions.write(f"{NFT}\n{NFT}.distrib\n:\n")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
