"""Writing a layer's rendered config files, and conditions on what those writes changed."""

from __future__ import annotations

from collections.abc import Sequence
from io import StringIO

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from commonstack.plan import HostPlan


def put_configs(plan: HostPlan, layer: str) -> list[OperationMeta]:
    """Upload every file of `layer`; the returned metas tell whether a service must restart."""
    return [
        files.put(
            name=f"Write {config.path}",
            src=StringIO(config.content),
            dest=config.path,
            mode=config.mode,
            user=config.user,
            group=config.group,
            create_remote_dir=True,
        )
        for config in plan.files_of(layer)
    ]


class Changed:
    """An `_if=` condition: true once any of these operations changed something, and none of
    the `unless` ones did (a reload is not wanted after a restart that already read the change).

    pyinfra evaluates `_if` only while executing; a plan asks `would_change()` instead,
    so a restart shows in the plan exactly when a file it depends on would change.
    """

    def __init__(self, operations: list[OperationMeta], unless: Sequence[OperationMeta] = ()):
        self.operations = operations
        self.unless = unless

    def __call__(self) -> bool:
        return any(op.did_change() for op in self.operations) and not any(op.did_change() for op in self.unless)

    def would_change(self) -> bool:
        return any(op.will_change for op in self.operations) and not any(op.will_change for op in self.unless)


def changed(*groups: list[OperationMeta], unless: Sequence[OperationMeta] = ()) -> Changed:
    return Changed([op for group in groups for op in group], list(unless))
