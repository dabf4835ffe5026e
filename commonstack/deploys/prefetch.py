"""Reading every fact a host's operations need in a few remote commands, not one each.

pyinfra 3.10 keeps no fact cache: while preparing, each ``host.get_fact`` is one SSH round trip,
one after another (a no-op plan of a small-group host asks 165 of them). Here, before the real
prepare (`discover`, each host in a greenlet of its own: its batches run on it while the
controller adds the operations of the other hosts):

1. *Discovery passes*: the operations are added to a throwaway State whose hosts have no
   connection (``pyinfra_api.fake_connection``). Every fact command they ask for is answered
   from the outputs known so far or, when unknown, noted and answered with empty output (the
   fact's default). An operation that raises on such a default is contained to itself
   (``pyinfra_api.evaluate_each_operation``). Facts that pyinfra's operations ask next are asked
   along (``pyinfra_api.related_facts``: a file's checksum and folder, a unit's enabled state,
   the host's date after apt's update stamp).
2. After each pass, the commands it noted run on the real host in ONE remote shell script, as
   pyinfra's connector would run each (same sudo wrapping), a few side by side; their exit
   status, stdout and stderr come back separately (a tar archive, base64) and become what
   pyinfra's connector would have returned. Passes end with the first one that adds all the
   operations (an earlier one stops where deploy code raised on a default, e.g. an unsupported
   release): typically two, and two remote commands.
3. The real prepare then asks the same commands (the same code with the same answers)
   and gets the outputs from `FactAnswers`; a command no pass noted (a fact asked only once
   another answered, beyond the related ones) goes to the host as usual.

The commands the real prepare asked are remembered (fact_memory.py): a host's next run sends
them as its one batch at once, without a discovery pass (`plan` and `deploy` send it before
pyinfra loads: early_batch.py).

The outputs hold only while preparing, when nothing changes on a host: while executing, every
command goes to the host (``FactAnswers.run`` checks the stage). A command that needs stdin or a
terminal, asks for a sudo password, or whose output is not text is never answered from a batch.
A fact class with ``read_ahead = False`` (one that reaches beyond the host and may take long, like
deploys/nextcloud.py's DownloadProblem) is read only when the real prepare asks for it: a
discovery pass, answered with defaults, may ask for facts the real one does not need.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import posixpath
import shlex
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gevent

from commonstack.deploys import pyinfra_api as api
from commonstack.deploys.fact_memory import Commands
from commonstack.deploys.early_batch import EarlyBatch
from commonstack.deploys.fact_shortcuts import Together, at_once, shortcut

log = logging.getLogger(__name__)

MAX_PASSES = 8  # discovery stops here; what is still unknown is read one by one as before
LANES = 4  # commands of a batch run side by side on the host (each is small; a few are slow)


def command_key(command: Any, arguments: dict) -> str | None:
    """What identifies a command's output while preparing; None: never answered from a batch."""
    if arguments.get("_stdin") or arguments.get("_get_pty"):
        return None
    return repr((api.raw_command(command), sorted((k, repr(v)) for k, v in arguments.items())))


@dataclass(frozen=True)
class Noted:
    """A command a discovery pass asked, and the shell condition under which it is worth
    running (None: always; a fact read ahead of need may not be, like a swap file's checksum)."""

    command: Any
    arguments: dict
    guard: str | None = None


@dataclass
class FactAnswers:
    """One host's fact outputs read in batches, and the count of commands sent to it."""

    outputs: dict[str, tuple[int, Any]] = field(default_factory=dict)  # key -> (exit status, CommandOutput)
    # Batched, but not run (condition false), left out of a merged command's answer, or unreadable.
    not_run: set[str] = field(default_factory=set)
    sent: int = 0  # remote commands (batches included)
    answered: int = 0  # commands answered from a batch while preparing
    noting: dict[str, Noted] | None = None  # while `read_ahead` notes commands instead of sending them
    lines: Commands = field(default_factory=dict)  # key -> (line, condition) of each batched command
    # Each command the real prepare asked (`recording`), None where a batch answered it.
    asked: dict[str, Noted | None] = field(default_factory=dict)
    recording: bool = False
    ahead: bool = True  # whether the fact being asked may be read ahead of need

    def output(self, key: str | None, arguments: dict) -> tuple[bool, Any] | None:
        if key is None or key not in self.outputs:
            return None
        status, output = self.outputs[key]
        codes = arguments.get("_success_exit_codes")
        return (status in codes) if codes else status == 0, output

    def run(self, state, original, command, print_output, print_input, **arguments):
        """The real host's ``run_shell_command``: from a batch while preparing, else on the host."""
        if state.current_stage == api.StateStage.Prepare:
            key = command_key(command, arguments)
            answer = self.output(key, arguments)
            if self.recording and key is not None and self.ahead:
                self.asked.setdefault(key, None if answer is not None else Noted(command, arguments))
            if answer is not None:
                self.answered += 1
                return answer
            if self.noting is not None and key is not None:
                self.noting.setdefault(key, Noted(command, arguments))
                return True, api.CommandOutput([])
        ran = original(command, print_output=print_output, print_input=print_input, **arguments)
        self.sent += 1
        return ran


def discover(
    state,
    shadow_state: Callable[[], Any],
    add_operations: Callable[[], None],
    answers: dict[str, FactAnswers],
    remembered: dict[str, Commands] | None = None,
    early: dict[str, EarlyBatch] | None = None,
) -> None:
    """Fill `answers` (by host name) for the active hosts of `state`, in discovery passes, each
    host in a greenlet of its own: its batch runs on it while the controller adds the operations
    of the others.

    `shadow_state()` makes a throwaway State with the same inventory (never connected): one for
    each pass, where each host adds its operations once. A host's passes end with the first one
    that adds all its operations (an earlier one may stop where deploy code raised on a fact read
    as its default); what the answers to that pass's batch lead to is read by the real prepare,
    one command at a time (a few: the usual follow-ups are asked along, see `api.related_facts`).
    A second complete pass would cost as much CPU as reading them.

    A host with `remembered` commands (fact_memory.py: those its last prepare asked) has no
    discovery pass: they run in one batch, and the real prepare reads what they lack one by one.
    An `early` batch already sent to a host (early_batch.py) answers it if it is the same batch.
    """
    shadows: dict[int, Any] = {}

    def of_pass(number: int) -> Any:
        if number not in shadows:
            shadows[number] = shadow_state()
            api.evaluate_each_operation(shadows[number], lambda e: log.debug("discovery: an operation raised %r", e))
        return shadows[number]

    def discover_host(host) -> None:
        known = answers[host.name]
        if commands := (remembered or {}).get(host.name):
            fetched = time.perf_counter()
            sent_early = _run_batch(state, host, commands, known, (early or {}).get(host.name))
            log.debug("stage remembered on %s (%d commands%s): batch %.2f s", host.name, len(commands),
                      ", sent early" if sent_early else "", time.perf_counter() - fetched)  # fmt: skip
            return
        for number in range(1, MAX_PASSES + 1):
            cpu = time.process_time()
            wanted, finished = _discovery_pass(of_pass(number), host.name, add_operations, known)
            cpu = time.process_time() - cpu
            fetched = time.perf_counter()
            if wanted:
                _fetch(state, host, wanted, known)
            log.debug("stage pass %d on %s (%d commands, %s): operations %.2f s CPU, batch %.2f s", number, host.name,
                      len(wanted), "complete" if finished else "stopped", cpu, time.perf_counter() - fetched)  # fmt: skip
            # Another pass when this one stopped and its batch answered something.
            if finished or not any(k in known.outputs for k in wanted):
                return

    greenlets = {state.pool.spawn(discover_host, host): host for host in state.active_hosts}
    gevent.joinall(list(greenlets))
    for greenlet, host in greenlets.items():
        if not greenlet.successful():  # its facts are read one command at a time, as pyinfra does
            log.debug("reading the facts of %s in batches failed: %r", host.name, greenlet.exception)


def read_ahead(state, work: dict[Any, Callable[[], Any]], answers: dict[str, FactAnswers]) -> None:
    """Run each host's read-only `work` twice: first noting the commands it sends (answered with
    empty output), which then run in one batch per host; then for real, answered from the batch.
    For reads made after preparing, like the current content of the files a plan would change."""

    def note(host, read):
        answers[host.name].noting = {}
        try:
            read()
        except Exception as e:  # what it read was made up: only the commands count
            log.debug("reading ahead on %s: %r", host.name, e)
        finally:
            wanted, answers[host.name].noting = answers[host.name].noting, None
        if wanted:
            _fetch(state, host, wanted, answers[host.name])

    greenlets = [state.pool.spawn(note, host, read) for host, read in work.items()]
    gevent.joinall(greenlets)


def _discovery_pass(shadow, name: str, add_operations, known: FactAnswers) -> tuple[dict[str, Noted], bool]:
    """Add the operations of the host `name` to `shadow`: the commands asked that no batch has
    answered yet (`known`), and whether all its operations were added. It makes `shadow` pyinfra's
    current State, which is global: only discovery passes run meanwhile (the real prepare comes
    after every host's), so a pass that waits on something may at worst show another host's pass
    the wrong shadow, which then notes too few commands."""
    shadow_host = shadow.inventory.get_host(name)
    wanted: dict[str, Noted] = {}
    guard: list[str | None] = [None]  # the condition of the related fact being asked
    ahead = [True]  # whether the fact being asked may be read ahead of need

    def run_shell_command(command, print_output=False, print_input=False, **arguments):
        key = command_key(command, arguments)
        answer = known.output(key, arguments)
        if answer is not None:
            return answer
        noting = ahead[0] and key is not None and key not in known.not_run
        if noting and (key not in wanted or guard[0] is None):
            wanted[key] = Noted(command, arguments, guard[0])
        return True, api.CommandOutput([])

    get_fact = shadow_host.get_fact

    def get_fact_and_related(fact, *args, **kwargs):
        ahead[0] = getattr(fact, "read_ahead", True)
        try:
            value = get_fact(fact, *args, **kwargs)
        finally:
            ahead[0] = True
        for related, related_kwargs, condition in api.related_facts(fact, kwargs):
            guard[0] = condition
            try:
                get_fact(related, **related_kwargs)
            except Exception:  # only read ahead: the real prepare asks what it needs
                pass
            finally:
                guard[0] = None
        return value

    api.fake_connection(shadow_host, run_shell_command)
    shadow_host.get_fact = get_fact_and_related
    with api.run_context(shadow), api.host_context(shadow, shadow_host):
        try:
            add_operations()
        except Exception as e:  # facts read as defaults can make deploy code raise: fine here
            log.debug("discovery pass on %s stopped: %s", name, e)
            return wanted, False
    return wanted, True


@contextmanager
def recording(host, answers: FactAnswers) -> Iterator[None]:
    """While the real prepare of `host` runs: note in `answers.asked` each command it asks, except
    those of a fact not to read ahead of need (`read_ahead = False`)."""
    get_fact = host.get_fact

    def get_fact_noting_ahead(fact, *args, **kwargs):
        answers.ahead = getattr(fact, "read_ahead", True)
        try:
            return get_fact(fact, *args, **kwargs)
        finally:
            answers.ahead = True

    answers.recording = True
    host.get_fact = get_fact_noting_ahead
    try:
        yield
    finally:
        answers.recording = False
        host.get_fact = get_fact


def asked_commands(state, host, answers: FactAnswers) -> Commands:
    """The batch lines of the commands the real prepare asked (`recording`), for fact_memory.py:
    as batched, or, for one read on its own, as pyinfra ran it."""
    return {
        key: answers.lines[key] if noted is None else (_batch_line(state, host, noted), None)
        for key, noted in answers.asked.items()
    }


def _fetch(state, host, wanted: dict[str, Noted], answers: FactAnswers) -> None:
    """Run the `wanted` commands on `host` in one batch; keep their outputs in `answers`."""
    commands = {key: (_batch_line(state, host, noted), noted.guard) for key, noted in wanted.items()}
    _run_batch(state, host, commands, answers)


@dataclass(frozen=True)
class Batch:
    """Commands as one batch sends them: `line` (the command line pyinfra's connector runs for
    `sh`) runs `script` from its stdin; the answer holds the commands that run `alone` (indices
    into the commands), then each merged one (fact_shortcuts.py)."""

    line: str
    script: str
    alone: list[int]
    merged: list[Together]

    @property
    def line_and_script(self) -> tuple[str, str]:
        return self.line, self.script


def batch_of(state, host, commands: Commands) -> Batch:
    """The batch that runs `commands` on `host`: units' states, paths' stats and files'
    checksums asked together (fact_shortcuts.py), each merged command one more in it."""
    lines = list(commands.values())
    merged = at_once(lines)
    members = {index for together in merged for index in together.members}
    alone = [index for index in range(len(lines)) if index not in members]
    script = batch_script([lines[i] for i in alone] + [(t.command, None) for t in merged])
    return Batch(api.shell_command_line(state, host, api.StringCommand("sh"), {}), script, alone, merged)


def _run_batch(state, host, commands: Commands, answers: FactAnswers, early: EarlyBatch | None = None) -> bool:
    """Run `commands` on `host` in one batch, or take the answer of the `early` one when it sent
    the same (then True); keep their outputs (and lines) in `answers`."""
    answers.lines.update(commands)
    keys = list(commands)
    batch = batch_of(state, host, commands)
    printed = early.answer(batch.line, batch.script, gevent.sleep) if early else None
    if printed is not None:
        answers.sent += 1
        lines = printed
    else:
        try:
            status, output = host.run_shell_command(api.StringCommand("sh"), _stdin=batch.script)
        except api.ConnectError as e:  # connecting on first use: the runner says why (runner.py)
            log.debug("fact batch on %s not sent: %s", host.name, e)
            return False
        if not status:
            log.debug("fact batch on %s failed: %s", host.name, output.stderr)
            return False
        lines = output.stdout_lines
    found = parse_batch(lines)
    answered = {batch.alone[position]: found[position] for position in range(len(batch.alone)) if position in found}
    for position, together in enumerate(batch.merged, start=len(batch.alone)):
        code, stdout, stderr = found.get(position, (1, [], ["not run"]))
        for index, block in zip(together.members, together.split(code, stdout, stderr) or []):
            if block is not None:
                answered[index] = (code, block, [])
    answers.not_run.update(key for index, key in enumerate(keys) if index not in answered)
    for index, (code, stdout, stderr) in answered.items():
        if any(line.strip() in api.SUDO_PASSWORD_LINES for line in stderr):
            continue  # a sudo prompt: the real command reproduces pyinfra's handling of it
        combined = [api.OutputLine("stdout", line) for line in stdout] + [api.OutputLine("stderr", line) for line in stderr]
        answers.outputs[keys[index]] = (code, api.CommandOutput(combined))
    return printed is not None


def _batch_line(state, host, noted: Noted) -> str:
    """The command line pyinfra would run, its command replaced by a cheaper one that prints the
    same where there is one (fact_shortcuts.py), or when that line only hands the command to
    `sh -c`, the command itself: the batch runs it in a subshell of its own `sh` (one process
    fewer each)."""
    raw = shortcut(api.raw_command(noted.command))
    line = api.shell_command_line(state, host, api.StringCommand(raw), noted.arguments)
    return raw if line == f"sh -c {shlex.quote(raw)}" else line


def batch_script(commands: list[tuple[str, str | None]], lanes: int = LANES) -> str:
    """A POSIX shell script running each (command line, condition) in `lanes` side by side, then
    printing one line: the base64 of a tar archive holding, for the i-th, ``i.s`` (its exit
    status, or "-" when its condition was false), ``i.o`` (stdout) and ``i.e`` (stderr)."""
    # A shell cut off from its client (a batch stopped, an interrupted plan) exits through its
    # EXIT trap, which removes its files: a shell killed by a signal runs no trap.
    script = ["d=$(mktemp -d) || exit 1", "trap 'rm -rf \"$d\"' EXIT", "trap 'exit 1' HUP PIPE TERM"]
    for lane in range(min(lanes, len(commands))):
        script.append("{")
        for index in range(lane, len(commands), lanes):
            line, condition = commands[index]
            run = f'( {line}\n) >"$d/{index}.o" 2>"$d/{index}.e" </dev/null; echo $? >"$d/{index}.s"'
            if condition:
                run = f'if {condition}; then {run}; else echo - >"$d/{index}.s"; fi'
            script.append(run)
        script.append("} &")
    script += ["wait", 'tar -C "$d" -cf - . | base64 -w 0 && echo']
    return "\n".join(script) + "\n"


def parse_batch(lines: list[str]) -> dict[int, tuple[int, list[str], list[str]]]:
    """What `batch_script` printed -> {index: (exit status, stdout lines, stderr lines)}; a
    command not run (its condition was false) or whose output is not UTF-8 text (pyinfra's
    connector would fail on it) is left out."""
    try:
        archive = tarfile.open(fileobj=io.BytesIO(base64.b64decode("".join(lines), validate=True)))
        files = {
            posixpath.basename(member.name): archive.extractfile(member).read()
            for member in archive.getmembers()
            if member.isfile()
        }
    except (ValueError, binascii.Error, tarfile.TarError):
        return {}
    found: dict[int, tuple[int, list[str], list[str]]] = {}
    for name, status in files.items():
        index, _, kind = name.partition(".")
        if kind != "s" or not index.isdigit():
            continue
        try:
            found[int(index)] = (int(status), _lines(files[f"{index}.o"]), _lines(files[f"{index}.e"]))
        except (KeyError, ValueError, UnicodeDecodeError):
            continue
    return found


def _lines(data: bytes) -> list[str]:
    """Output lines as pyinfra's SSH connector reads them: split at newlines, the last one kept
    when it has none."""
    text = data.decode("utf-8")
    if not text:
        return []
    parts = text.split("\n")
    return parts[:-1] if text.endswith("\n") else parts
