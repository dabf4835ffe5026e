"""Host names, and the machine-wide names derived from them."""

from __future__ import annotations

import re

from .errors import TestHostError

# Linux interface names hold 15 characters; nspawn names the host side of the veth
# "ve-" + NAME and shortens longer names, so 12 characters keep "ve-NAME" exact.
MAX_NAME = 12
_NAME = re.compile(rf"[a-z](?:[a-z0-9-]{{0,{MAX_NAME - 2}}}[a-z0-9])?")

SUITES = ("bookworm", "trixie")
ARCHES = ("amd64", "arm64")


def validate(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise TestHostError(
            f"test host name {name!r}: use 1-{MAX_NAME} characters a-z, 0-9 and '-', starting with a "
            f"letter and not ending with '-' (the host's interface is 've-NAME', at most 15 characters)"
        )
    return name


def validate_image(suite: str, arch: str) -> None:
    if suite not in SUITES:
        raise TestHostError(f"test host suite {suite!r}: expected one of {', '.join(SUITES)}")
    if arch not in ARCHES:
        raise TestHostError(f"test host arch {arch!r}: expected one of {', '.join(ARCHES)}")


def veth(name: str) -> str:
    """The host side of the host's veth pair, as systemd-nspawn names it."""
    return f"ve-{name}"
