"""The commands the checks wait on longest, started in the background at a host's first check.

Each check module lists its own in `slowest_commands(stack)` (tuples of `host.run` arguments,
for what the host should run); conftest.py's `head_start` starts those of every module on
shells of their own (shell.py gives each thread one) while the first checks run. A check then
asks for the answer with `run`, which takes it once: a second call runs the command again; or
with `shared`, for what several checks read (the same answer to each).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

_pool = ThreadPoolExecutor(4, thread_name_prefix="ahead")
_started: dict[tuple[str, str], Future] = {}  # (host name, command line) -> its result
_shared: dict[tuple[str, str], Future] = {}  # the same, kept for every check that asks
_lock = threading.Lock()


def _key(host, command: tuple[str, ...]) -> tuple[str, str]:
    return host.backend.get_hostname(), host.backend.quote(*command)


def start(host, commands: Iterable[tuple[str, ...]]) -> None:
    """Run `commands` on `host` in the background (each once, until `run` takes its answer)."""
    for command in commands:
        key = _key(host, command)
        with _lock:
            if key not in _started:
                _started[key] = _pool.submit(host.run, *command)


def _take(key: tuple[str, str]) -> Future | None:
    """The answer started ahead for `key` (with the lock held), unless it still waits for a thread
    of the pool: then it is called off, and the check asking runs the command itself."""
    future = _started.pop(key, None)
    return future if future is not None and not future.cancel() else None


def run(host, command: str, *args: str):
    """What `host.run(command, *args)` answers: the answer of the one started ahead, else now."""
    with _lock:
        future = _take(_key(host, (command, *args)))
    return future.result() if future else host.run(command, *args)


def shared(host, command: str, *args: str):
    """What `host.run(command, *args)` answers, run once for every check of this run that asks
    (started ahead, or run by the first to ask, in its own thread)."""
    key = _key(host, (command, *args))
    mine = None
    with _lock:
        if key not in _shared:
            _shared[key] = _take(key) or (mine := Future())
        future = _shared[key]
    if mine is not None:
        try:
            mine.set_result(host.run(command, *args))
        except BaseException as error:
            mine.set_exception(error)
    return future.result()


def check_output(host, command: str, *args: str) -> str:
    """What `host.check_output(command, *args)` answers, from the one started ahead if any."""
    __tracebackhide__ = True
    out = run(host, command, *args)  # named as testinfra names it: report.py finds the failed command by it
    assert out.rc == 0, f"Unexpected exit code {out.rc} for {out}"
    return out.stdout.rstrip("\r\n")
