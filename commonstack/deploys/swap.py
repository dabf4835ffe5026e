"""A swap file sized by the sizing rules, as a pyinfra operation that changes only what differs."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.facts.files import File, FindInFile

from commonstack.deploys.facts import InContainer


class ActiveSwaps(FactBase[list[str]]):
    """Paths of the swap areas in use (from /proc/swaps)."""

    def command(self) -> str:
        return "tail -n +2 /proc/swaps | cut -d' ' -f1"

    def default(self) -> list[str]:
        return []  # no swap in use: /proc/swaps has its header only, and pyinfra gives default()

    def process(self, output) -> list[str]:
        return [line.strip() for line in output if line.strip()]


@operation()
def swapfile(path: str = "/swapfile", size_mb: int = 0):
    """Ensure a swap file of `size_mb` MB at `path`, active and in /etc/fstab (0: no swap file).

    + path: where the swap file lives
    + size_mb: its size; 0 removes nothing and creates nothing

    Containers cannot enable swap: there the file and fstab entry are made and swapon is skipped.

    **Example:**

    .. code:: python

        swapfile(name="2 GB of swap", path="/swapfile", size_mb=2048)
    """
    if size_mb <= 0:
        host.noop("no swap file wanted")
        return
    commands = []
    active = path in host.get_fact(ActiveSwaps)
    existing = host.get_fact(File, path=path)
    if not existing or existing["size"] != size_mb * 1024 * 1024:
        if existing and active:
            commands.append(f"swapoff {path}")
            active = False  # switched off to be made again: it must be switched on again below
        commands.append(f"rm -f {path}")
        commands.append(f"fallocate -l {size_mb}M {path} || dd if=/dev/zero of={path} bs=1M count={size_mb}")
        commands.append(f"chmod 600 {path}")
        commands.append(f"mkswap {path}")
    if not host.get_fact(FindInFile, path="/etc/fstab", pattern=f"^{path} "):
        commands.append(f"echo '{path} none swap sw 0 0' >> /etc/fstab")
    if not host.get_fact(InContainer) and not active:
        commands.append(f"swapon {path}")
    if not commands:
        host.noop(f"swap file {path} of {size_mb} MB is in place")
    yield from commands
