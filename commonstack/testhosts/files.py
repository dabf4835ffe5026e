"""Removing a host's (or a build's) directory tree without ever crossing into a mount."""

from __future__ import annotations

import re
from pathlib import Path

from .commands import run


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in our mount namespace, deepest first."""
    prefix = str(path)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])  # "\040" -> " "
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    # debootstrap leaves /proc and /sys mounted in its target when it fails; nspawn's own
    # mounts live in its private namespace, but a crash must never make us delete through one.
    for point in mounts_under(path):
        run(["umount", "--lazy", point])
    if path.exists() or path.is_symlink():
        run(["rm", "-rf", "--one-file-system", str(path)])
