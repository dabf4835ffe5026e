"""Security updates a host has not installed yet: how the deploy and the checks read them."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Debian's security archive as apt names a release of it: its Label, which the origins pattern of
# unattended-upgrades (base's 52commonstack-unattended-upgrades) selects too.
SECURITY_LABEL = "Debian-Security:"

# A simulated upgrade against the package lists as they are: no lock taken, nothing changed.
SIMULATED_UPGRADE = "LC_ALL=C apt-get -s -o Debug::NoLocking=true dist-upgrade 2>/dev/null"


def may_be_pending(lists: str = "/var/lib/apt/lists", preferences: str = "/etc/apt/preferences") -> str:
    """A shell command that fails only when no security update can be pending, in about 20 ms of
    CPU where the simulated upgrade takes 300 ms: for apt to upgrade an installed package from
    the security archive, that archive's package list must hold a newer version of it (apt never
    downgrades unless a pin of 1000 or more says so). It succeeds (the simulation is needed) when
    one does, or when the lists cannot be read that way: none labelled Debian-Security, compressed
    lists (Acquire::GzipIndexes), a pin of 1000 or more."""
    return f"""(
grep -Eqis '^Pin-Priority:[[:space:]]*[1-9][0-9]{{3,}}' {preferences} {preferences}.d/* && exit 0
found=
for r in {lists}/*_InRelease {lists}/*_Release; do
  grep -qsx 'Label: {SECURITY_LABEL.rstrip(":")}' "$r" || continue
  p=${{r%InRelease}}; p=${{p%Release}}
  for f in "$p"*_Packages.*; do [ -e "$f" ] && exit 0; done
  for f in "$p"*_Packages; do [ -e "$f" ] && found="$found $f"; done
done
[ -n "$found" ] || exit 0
dpkg-query -W -f='${{db:Status-Status}} ${{Package}} ${{Version}}\n' |
  awk 'NR == FNR {{ if ($1 != "not-installed") v[$2] = v[$2] " " $3; next }}
       /^Package: / {{ p = $2 }}
       /^Version: / && p in v && index(v[p] " ", " " $2 " ") == 0 {{ print $2 v[p] }}' - $found |
  {{ while read -r new old; do for o in $old; do dpkg --compare-versions "$new" gt "$o" && exit 0; done; done; exit 1; }}
)"""


# What is pending: the simulation's "Inst" lines, run only when something may be.
PENDING_COMMAND = f"if {may_be_pending()}; then {SIMULATED_UPGRADE} | grep '^Inst '; fi || true"

# The names of the installed packages a security update is pending for, as apt sees them when it runs.
SECURITY_UPGRADES = f"{{ {PENDING_COMMAND}; }} | awk '$3 ~ /^\\[/ && /{SECURITY_LABEL}/ {{print $2}}'"

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
