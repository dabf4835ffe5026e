"""Security updates a host has not installed yet: how the deploy and the checks read them."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Debian's security archive as apt names a release of it: its Label, which the origins pattern of
# unattended-upgrades (base's 52commonstack-unattended-upgrades) selects too.
SECURITY_LABEL = "Debian-Security:"

# A simulated upgrade against the package lists as they are: no lock taken, nothing changed.
SIMULATED_UPGRADE = "LC_ALL=C apt-get -s -o Debug::NoLocking=true dist-upgrade 2>/dev/null"
PENDING_COMMAND = f"{SIMULATED_UPGRADE} | grep '^Inst ' || true"

# `apt-get -s` prints one line per package it would install: "Inst NAME [OLD] (NEW ARCHIVES [ARCH])".
_INST = re.compile(r"^Inst (\S+) \[([^\]]*)\] \((\S+) ([^)]*)\)")


def pending_security_updates(lines: Iterable[str]) -> list[str]:
    """PENDING_COMMAND's output -> ["NAME OLD -> NEW", ...] of the installed packages that Debian's
    security archive has a newer version of (a new package, "Inst NAME (NEW ...)", is not one)."""
    return sorted(
        f"{found[1]} {found[2]} -> {found[3]}"
        for line in lines
        if (found := _INST.match(line.strip())) and SECURITY_LABEL in found[4]
    )
