"""Kernel settings (sysctl): a fact of what the running kernel has, and setting what differs.

/etc/sysctl.d applies them at every boot (base's 60-commonstack-hardening.conf); this applies
them now, without a reboot. What a container cannot set is reported, not set.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import FactBase, operation

from commonstack.stacks.kernel import KernelValue, differences, parse, read_command


class KernelSettings(FactBase[dict[str, KernelValue]]):
    """The current value of each key (globs expanded), and whether it can be set here::

        {"kernel.kptr_restrict": KernelValue(value="0", writable=False), ...}

    A key that does not exist on this kernel (or in this container) is left out.
    """

    def command(self, keys: list[str]) -> str:
        return read_command(keys)

    def default(self) -> dict[str, KernelValue]:
        return {}

    def process(self, output) -> dict[str, KernelValue]:
        return parse(output)


@operation()
def kernel_settings(settings: dict[str, str]):
    """Set the kernel settings that differ from `settings` ({key or "conf.*" glob: value}).

    + settings: sysctl keys and their wanted values

    Keys that are read-only here (a container's view of the machine's kernel) are left as they
    are; with nothing else to set, the operation says which.

    **Example:**

    .. code:: python

        kernel_settings(name="Kernel hardening", settings={"kernel.dmesg_restrict": "1"})
    """
    current = host.get_fact(KernelSettings, keys=sorted(settings))
    to_set, read_only = differences(settings, current)
    if to_set:
        yield "sysctl -q -w " + " ".join(shlex.quote(item) for item in to_set)
    elif read_only:
        host.noop(f"read-only here (a container: the machine's kernel decides): {', '.join(read_only)}")
    else:
        host.noop("the kernel settings are as wanted")
