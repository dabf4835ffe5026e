"""Reading the files a group keeps (profiles, secrets, presets, certificates) with bounded effort.

A profile is edited by hand and copied from chat messages, so nothing in it may hang the kit,
exhaust its memory or be read as something else:

- only regular files are opened: a FIFO or a device is refused from its metadata, never read;
- at most MAX_BYTES of a file are read, and the text must be UTF-8;
- YAML is composed with budgets: at most MAX_NODES values once aliases are expanded (a "billion
  laughs" document is refused while it is parsed, not after), at most MAX_DEPTH levels of nesting,
  no alias inside its own anchor, and no key written twice in one mapping (naming both lines).

Every refusal is a ReadError with a short message and, where known, a line; a message quotes at most
EXCERPT characters of the input.
"""

from __future__ import annotations

import os
import reprlib
import stat
from pathlib import Path
from typing import Any

import yaml
import yaml.composer
import yaml.reader
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.resolver import Resolver

MAX_BYTES = 1_000_000
# A whole profile is about a hundred values, a preset fifty: these leave room for anything a group
# writes and refuse what only a generator would.
MAX_NODES = 5_000
MAX_DEPTH = 32
EXCERPT = 40

try:  # libyaml's parser: a profile of MAX_BYTES is parsed in a fraction of a second.
    from yaml.cyaml import CParser as _Parser
except ImportError:  # a PyYAML built without libyaml: Python's parser, about five times slower
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class ReadError(Exception):
    """A file that cannot be used: `message` is one line; `line` and `column` (1-based) where known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


_short = reprlib.Repr()
_short.maxstring = _short.maxother = EXCERPT
_short.maxlist = _short.maxdict = _short.maxtuple = _short.maxset = 3
_short.maxlevel = 2


def excerpt(value: Any) -> str:
    """A short, one-line, printable quote of any value (however long, deep or hostile it is)."""
    if isinstance(value, str):
        return repr(value[:EXCERPT]) + ("..." if len(value) > EXCERPT else "")
    return _short.repr(value)


def read_text(path: Path, limit: int = MAX_BYTES) -> str:
    """The text of a regular file of at most `limit` bytes, as UTF-8."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ReadError("file not found") from None
    except OSError as exc:
        raise ReadError(f"cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ReadError("is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ReadError("is not a regular file (a pipe, socket or device); name a plain file")
    if info.st_size > limit:
        raise ReadError(f"is larger than {limit // 1000} kB ({info.st_size // 1000} kB); is it the right file?")
    try:
        # O_NONBLOCK: should the file have been swapped for a FIFO since the stat, opening it still
        # returns at once, and the fstat below refuses it before anything is read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ReadError(f"cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ReadError("is not a regular file (a pipe, socket or device); name a plain file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ReadError(f"is larger than {limit // 1000} kB; is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ReadError(f"is not UTF-8 text (byte {exc.start + 1}); save it as UTF-8", line=line) from None


def load_kit_yaml(path: Path) -> Any:
    """One of the kit's own YAML files (versions.yaml, the templates' files.yaml), not the group's:
    trusted, and read by most commands. libyaml's safe loader where PyYAML has it: the same data,
    ten times sooner (1 ms for versions.yaml, not 12)."""
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_yaml(text: str, quote: bool = True) -> tuple[Any, Node | None]:
    """The data of one YAML document and its node tree (for line numbers), within the budgets.

    With quote=False (secrets), no message repeats anything written in the file, not even a key.
    """
    loader = _BoundedLoader(text, quote)
    try:
        tree = loader.get_single_node()
        data = loader.construct_document(tree) if tree is not None else None
    except ReadError:
        raise
    except yaml.composer.ComposerError as exc:
        if exc.context != "expected a single document in the stream":
            raise _malformed(exc, quote) from None
        raise ReadError("a second YAML document (after a line `---`); keep one",
                        line=exc.problem_mark.line + 1) from None
    except yaml.MarkedYAMLError as exc:
        raise _malformed(exc, quote) from None
    except yaml.reader.ReaderError as exc:  # a control character, which YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        raise ReadError(f"malformed YAML: a control character (code {exc.character:#x}); YAML allows none",
                        line=line) from None
    except yaml.YAMLError as exc:
        raise ReadError(f"malformed YAML: {exc}" if quote else "malformed YAML") from None
    except (ValueError, OverflowError):  # a constructor's: a date like 2024-13-45, a 5000-digit number
        failed = loader.failed
        quoted = f": {excerpt(failed.value)}" if quote and failed is not None else ""
        raise ReadError(f"a value YAML cannot read{quoted}",
                        line=failed.start_mark.line + 1 if failed else None) from None
    finally:
        loader.dispose()
    return data, tree


def _malformed(exc: yaml.MarkedYAMLError, quote: bool) -> ReadError:
    mark = exc.problem_mark or exc.context_mark
    message = f"malformed YAML: {exc.problem or exc.context}" if quote else "malformed YAML"
    if quote and exc.context and exc.problem and exc.context_mark:  # e.g. where a bracket opened
        message += f" ({exc.context} that starts at line {exc.context_mark.line + 1})"
    return ReadError(message, line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None)


class _BoundedLoader(Composer, _Parser, SafeConstructor, Resolver):
    """yaml.SafeLoader's behaviour, composed under budgets (the Composer comes first in the MRO so
    that its node building runs here, over libyaml's events)."""

    def __init__(self, text: str, quote: bool):
        _Parser.__init__(self, text)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        Composer.__init__(self)
        self.quote = quote
        self.depth = 0
        self.composed = 0
        self.expanded: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded
        self.failed: Node | None = None  # the value a constructor could not read

    def compose_node(self, parent, index):
        is_alias = self.check_event(AliasEvent)
        event = self.peek_event()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ReadError(f"nested more than {MAX_DEPTH} levels deep", line=event.start_mark.line + 1)
        self.composed += 1
        if self.composed > MAX_NODES:
            raise ReadError(f"more than {MAX_NODES} values; a stack profile needs far fewer",
                            line=event.start_mark.line + 1)
        node = super().compose_node(parent, index)
        self.depth -= 1
        if is_alias:
            if id(node) not in self.expanded:
                raise ReadError("an alias used inside its own anchor (it would never end)",
                                line=event.start_mark.line + 1)
            return node
        if isinstance(node, SequenceNode):
            size = 1 + sum(self.expanded[id(child)] for child in node.value)
        elif isinstance(node, MappingNode):
            size = 1 + sum(self.expanded[id(k)] + self.expanded[id(v)] for k, v in node.value)
        else:
            size = 1
        if size > MAX_NODES:
            raise ReadError(f"aliases expand to more than {MAX_NODES} values", line=event.start_mark.line + 1)
        self.expanded[id(node)] = size
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError):
            self.failed = self.failed or node
            raise

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` merges by design; the keys written beside it win
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    raise ReadError("a key that is a list or a mapping; keys are names", line=line) from None
                if first is not None:
                    name = f"the key {excerpt(key)}" if self.quote else "a key"
                    where = f"twice on line {line}" if first == line else f"on lines {first} and {line}"
                    raise ReadError(f"{name} is written {where} of one mapping; keep one", line=line)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)
