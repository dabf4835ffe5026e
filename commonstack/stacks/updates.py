"""Security updates a host has not installed yet: how the deploy and the checks read them."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Debian's security archive as apt names a release of it: its Label, which the origins pattern of
# unattended-upgrades (base's 52commonstack-unattended-upgrades) selects too.
SECURITY_LABEL = "Debian-Security:"

# A simulated upgrade against the package lists as they are: no lock taken, nothing changed.
SIMULATED_UPGRADE = "LC_ALL=C apt-get -s -o Debug::NoLocking=true dist-upgrade 2>/dev/null"


# Debian's version order (deb-version(7), dpkg's verrevcmp) as awk functions: deb_compare(A, B) is
# negative, zero or positive as `dpkg --compare-versions A lt|eq|gt B`; one awk compares them all
# where one dpkg each took 1.5 ms of CPU (24 of them on a base host). mawk, Debian's awk, has no
# ord(): CODE holds the printable ASCII characters' codes (deb_init fills it).
DEBIAN_VERSION_ORDER = r"""
function deb_init(   c) { for (c = 32; c < 127; c++) CODE[sprintf("%c", c)] = c }
function deb_order(c) {
  if (c == "" || c ~ /[0-9]/) return 0
  if (c ~ /[A-Za-z]/) return CODE[c]
  return c == "~" ? -1 : CODE[c] + 256
}
function deb_part(a, b,   x, y, da, db) {
  while (a != "" || b != "") {
    while ((a != "" && a !~ /^[0-9]/) || (b != "" && b !~ /^[0-9]/)) {
      x = deb_order(substr(a, 1, 1)); y = deb_order(substr(b, 1, 1))
      if (x != y) return x - y
      a = substr(a, 2); b = substr(b, 2)
    }
    match(a, /^[0-9]*/); da = substr(a, 1, RLENGTH); a = substr(a, RLENGTH + 1); sub(/^0+/, "", da)
    match(b, /^[0-9]*/); db = substr(b, 1, RLENGTH); b = substr(b, RLENGTH + 1); sub(/^0+/, "", db)
    if (length(da) != length(db)) return length(da) - length(db)
    if (da != db) return da "" < db "" ? -1 : 1
  }
  return 0
}
function deb_compare(a, b,   ea, eb, ra, rb, c) {
  ea = index(a, ":") ? substr(a, 1, index(a, ":") - 1) : 0; a = substr(a, index(a, ":") + 1)
  eb = index(b, ":") ? substr(b, 1, index(b, ":") - 1) : 0; b = substr(b, index(b, ":") + 1)
  if (ea + 0 != eb + 0) return ea + 0 < eb + 0 ? -1 : 1
  ra = match(a, /-[^-]*$/) ? substr(a, RSTART + 1) : ""; if (RSTART) a = substr(a, 1, RSTART - 1)
  rb = match(b, /-[^-]*$/) ? substr(b, RSTART + 1) : ""; if (RSTART) b = substr(b, 1, RSTART - 1)
  c = deb_part(a, b)
  return c ? c : deb_part(ra, rb)
}
"""


def may_be_pending(lists: str = "/var/lib/apt/lists", preferences: str = "/etc/apt/preferences") -> str:
    """A shell command that fails only when no security update can be pending, in about 15 ms of
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
  awk '{DEBIAN_VERSION_ORDER}
       BEGIN {{ deb_init() }}
       NR == FNR {{ if ($1 != "not-installed") v[$2] = v[$2] " " $3; next }}
       /^Package: / {{ p = $2 }}
       /^Version: / && p in v {{ n = split(v[p], old, " "); for (i = 1; i <= n; i++) if (deb_compare($2, old[i]) > 0) {{ newer = 1; exit }} }}
       END {{ exit !newer }}' - $found
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
