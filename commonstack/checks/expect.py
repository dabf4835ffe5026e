"""Helpers shared by the check modules."""

from __future__ import annotations

import re

from commonstack.checks import ahead
from commonstack.stacks.version_numbers import numeric

NOT_HERE = "is not on this host"


def require_layer(stack: dict, layer: str) -> None:
    """Skip a check of a layer the host does not run (the report leaves such checks out)."""
    import pytest  # here: `commonstack check` reads NOT_HERE without loading pytest

    if layer not in stack["layers"]:
        pytest.skip(f"{layer} {NOT_HERE}")


# systemd-analyze security rates a unit's exposure from 0 to 10; up to this it says "OK".
MAX_EXPOSURE = 4.0
_EXPOSURE = re.compile(r"Overall exposure level for (\S+?)(?:\.service)?: ([\d.]+) (\S+)")


def exposures(host, stack: dict) -> dict[str, tuple[float, str]]:
    """{unit: (level, word)} as `systemd-analyze security` rates the units every layer of the host
    sandboxes (one call for all of them, read once for every check); a unit it cannot rate is left out."""
    units = sorted({unit for layer_units in stack["sandboxed"].values() for unit in layer_units})
    output = ahead.shared(host, "systemd-analyze security --no-pager" + " %s" * len(units), *units).stdout
    return {found[1]: (float(found[2]), found[3]) for found in _EXPOSURE.finditer(output)}


def assert_sandboxed(host, stack: dict, layer: str) -> None:
    """Each unit the layer sandboxes is rated OK (<= MAX_EXPOSURE) by systemd-analyze security."""
    units = stack["sandboxed"].get(layer, [])
    rated = exposures(host, stack) if units else {}
    problems = []
    for unit in units:
        if unit not in rated:
            problems.append(f"{unit}: `systemd-analyze security {unit}` cannot rate it (is it installed?)")
        elif rated[unit][0] > MAX_EXPOSURE:
            level, word = rated[unit]
            folder = re.sub(r"@.*", "@", unit)
            problems.append(
                f"{unit} is {word} ({level}; OK is up to {MAX_EXPOSURE}): its sandbox "
                f"(/etc/systemd/system/{folder}.service.d/) is missing or loosened; `commonstack deploy` puts it back, "
                f"`systemd-analyze security {unit}` lists what it may do"
            )
    assert not problems, "; ".join(problems)


JAILS = "fail2ban-client status"  # read once for every layer's jails (ahead.shared)


def assert_jails_active(host, stack: dict, layer: str) -> None:
    """fail2ban runs each jail that guards the layer's logins."""
    jails = stack["jails"].get(layer, [])
    if not jails:
        return
    status = ahead.shared(host, JAILS)
    assert status.rc == 0, (
        f"fail2ban does not answer ({(status.stderr or status.stdout).strip()[:200]}): nothing bans login guessers; "
        "`systemctl status fail2ban` and `journalctl -u fail2ban` say why"
    )
    active = re.search(r"Jail list:\s*(.*)", status.stdout)
    running = {jail.strip() for jail in active[1].split(",")} if active else set()
    missing = [jail for jail in jails if jail not in running]
    assert not missing, (
        f"fail2ban runs no jail {', '.join(missing)} (it runs: {', '.join(sorted(running)) or 'none'}): "
        "see /etc/fail2ban/jail.d/commonstack.local and `fail2ban-client -t`"
    )


def require_release(service: dict, running: str, what: str) -> None:
    """The release running must be the one the profile wants. An older one, outside an upgrade's
    health gate (`exact_version`), is a pending upgrade: the check skips, saying so."""
    import pytest

    wanted = service["version"]
    if running == wanted:
        return
    if running and not service.get("exact_version") and numeric(running) < numeric(wanted):
        pytest.skip(f"{what} {running} runs here and the profile asks for {wanted}: run `commonstack upgrade`")
    assert running == wanted, (
        f"{what} {running or 'is missing'} runs here, not {wanted}"
        + ("" if service.get("exact_version") else ": `commonstack upgrade` moves releases forward only")
    )
