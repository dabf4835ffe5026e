"""What a plan shows: which operations would change, with ``_if=`` conditions applied, and a unified
diff of each file an upload would change (used by runner.py; changes nothing on a host).

pyinfra evaluates ``_if`` only while executing, so ``will_change`` of a conditional operation
(typically ``server.shell(..., _if=<a config changed>)``) is always True while preparing.
`plan_conditions` walks each host's operations in order and marks every one complete with its
*planned* result (``did_change()`` then answers "would change"), so conditions built on
``did_change()`` of earlier operations evaluate as they will during the run. A condition that
cannot be evaluated yet falls back to its ``would_change()`` method if it has one, else counts
as true (the plan then over-reports, never under-reports).

Diffs compare an upload's source (the desired content) with the file on the host, read with a
read-only fact (`RemoteFileBase64`), for the operations that would change.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import functools
import logging
from typing import Any

import gevent

from . import pyinfra_api as api
from .prefetch import read_ahead

log = logging.getLogger(__name__)

MISSING = "__COMMONSTACK_NO_SUCH_FILE__"


class RemoteFileBase64(api.FactBase):
    """The exact bytes of a remote file (base64 on the wire), ``MISSING`` when there is no
    such file, ``None`` (the default) when it could not be read. Read-only."""

    def command(self, path):
        return api.StringCommand(
            "if [ -f",
            api.QuoteString(path),
            "]; then base64 -w 0 <",
            api.QuoteString(path),
            f"&& echo; else echo {MISSING}; fi",
        )

    def process(self, output):
        text = "".join(output).strip()
        if text == MISSING:
            return MISSING
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None


def conditions_hold(conditions: Any) -> bool:
    """Whether an operation's ``_if`` conditions hold, as far as a plan can tell."""
    if not conditions:
        return True
    if callable(conditions):
        conditions = [conditions]
    for condition in conditions:
        try:
            ok = bool(condition())
        except Exception:
            would_change = getattr(condition, "would_change", None)
            try:
                ok = bool(would_change()) if callable(would_change) else True
            except Exception:
                ok = True
        if not ok:
            return False
    return True


def plan_conditions(state: Any) -> dict[tuple[str, str], bool]:
    """{(host name, op hash): would change} for every operation of the active hosts, ``_if``
    conditions applied; marks each operation complete as planned."""
    planned: dict[tuple[str, str], bool] = {}

    def walk(host):
        with api.host_context(state, host):
            for op_hash in host.op_hash_order:
                op_data = state.ops[host].get(op_hash)
                if op_data is None:
                    continue
                will = api.prepared_change(op_data) and conditions_hold(op_data.global_arguments.get("_if"))
                planned[(host.name, op_hash)] = will
                api.mark_planned(op_data, will)

    greenlets = [state.pool.spawn(walk, host) for host in list(state.active_hosts)]
    gevent.joinall(greenlets)
    for greenlet in greenlets:
        if not greenlet.successful():
            log.debug("planning conditions failed: %r", greenlet.exception)
    return planned


def file_diffs(state: Any, changing: dict[Any, list[str]], answers: dict | None = None) -> dict[tuple[str, str], str | None]:
    """{(host name, op hash): unified diff} of the uploads of the `changing` operations
    ({host: [op hash]}); None where the diff cannot be shown as text. With the runner's fact
    `answers` (prefetch.py), each host's files are read in one batch."""
    diffs: dict[tuple[str, str], str | None] = {}

    def diffs_for(host, op_hashes):
        with api.host_context(state, host):
            for op_hash in op_hashes:
                try:
                    diffs[(host.name, op_hash)] = _diff_of(state, host, state.ops[host][op_hash])
                except Exception:
                    log.debug("no diff for %s on %s", op_hash, host.name, exc_info=True)

    work = {host: functools.partial(diffs_for, host, op_hashes) for host, op_hashes in changing.items() if op_hashes}
    if answers is not None:
        read_ahead(state, work, answers)
    diffs.clear()
    greenlets = [state.pool.spawn(read) for read in work.values()]
    gevent.joinall(greenlets)
    return diffs


def _diff_of(state: Any, host: Any, op_data: Any) -> str | None:
    uploads = [c for c in op_data.command_generator() if isinstance(c, api.FileUploadCommand)]
    if not uploads:
        return None
    parts = []
    for upload in uploads:
        desired = api.read_upload_source(upload.src)
        current = api.get_fact(state, host, RemoteFileBase64, kwargs={"path": upload.dest}, apply_failed_hosts=False)
        if current is None:  # could not read it: unknown
            return None
        diff = unified_diff(upload.dest, None if current == MISSING else current, desired)
        if diff is None:
            return None
        parts.append(diff)
    return "".join(parts) or None


def unified_diff(dest: str, current: bytes | None, desired: bytes) -> str | None:
    """A unified diff, or None when it cannot be shown as text (binary content)."""
    try:
        old = "" if current is None else current.decode("utf-8")
        new = desired.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\0" in old or "\0" in new:
        return None
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile="/dev/null" if current is None else f"{dest} (current)",
        tofile=f"{dest} (desired)",
    )
    out = []
    for line in lines:
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append(line)
    return "".join(out) or None
