"""Finding the group's secrets in files of /etc that anyone on the host can read, without the
secrets ever leaving this machine.

The check sends the host keyed digests (SHA-256 of a random one-time key + the value) and the
values' lengths, never a value; a script on the host hashes the stretch of each length that starts
at each word or sign of the readable files (at each word at least that long, where every value of
that length is one word, as generated ones are), and reports only which file matched which
secret's *name*. A secret shorter than MIN_LENGTH cannot be told apart from ordinary text and is left out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets as random
from collections.abc import Mapping

MIN_LENGTH = 8
WORD = re.compile(rb"[A-Za-z0-9_-]+")  # what SCAN calls a word
# Larger files in /etc are not configuration (and would take long to hash at every offset).
MAX_FILE_BYTES = 1 << 20

# Runs on the host (python3, which fail2ban brings): prints [[path, [secret names]], ...].
SCAN = r'''
import base64, hashlib, json, os, re, stat, sys

spec = json.loads(base64.b64decode(sys.argv[1]))
names = {bytes.fromhex(digest): name for name, digest in spec["digests"].items()}
lengths = sorted(set(spec["lengths"]))
keyed = hashlib.sha256(bytes.fromhex(spec["key"]))
# A value starts where a word (letters, digits, _ and -: what the kit's secrets are made of) or a
# sign starts: after "=", a quote, a space, ":"... Looking only there keeps the scan well under a second.
starts = re.compile(rb"[A-Za-z0-9_-]+|[^\sA-Za-z0-9_-]")
# Where every value of a length is one word, only the words at least that long can hold one.
words = {length: re.compile(rb"[A-Za-z0-9_-]{%d,}" % length) for length in spec["word_lengths"]}
found = []
for folder, subfolders, files in os.walk(spec["root"]):
    # What is inside a folder others cannot enter is not readable by them, whatever its mode.
    subfolders[:] = [s for s in subfolders if stat.S_ISDIR((m := os.lstat(os.path.join(folder, s)).st_mode))
                     and m & stat.S_IXOTH]
    for name in files:
        path = os.path.join(folder, name)
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or not info.st_mode & stat.S_IROTH or info.st_size > spec["max_bytes"]:
            continue
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        hits, offsets = set(), None
        for length in lengths:
            if length in words:
                candidates = [match.start() for match in words[length].finditer(data)]
            else:
                offsets = offsets if offsets is not None else [match.start() for match in starts.finditer(data)]
                candidates = offsets
            for start in candidates:
                digest = keyed.copy()
                digest.update(data[start:start + length])
                name = names.get(digest.digest())
                if name:
                    hits.add(name)
        if hits:
            found.append([path, sorted(hits)])
print(json.dumps(found))
'''


def secret_digests(values: Mapping[str, str]) -> dict:
    """What the scan needs to recognise each secret: a one-time key, a keyed digest per secret name,
    the lengths to look for. Safe to write into the checks' context file: no value can be read back."""
    key = random.token_bytes(32)
    usable = {name: value.encode() for name, value in values.items() if len(value) >= MIN_LENGTH}
    lengths = {len(value) for value in usable.values()}
    signs = {len(value) for value in usable.values() if not WORD.fullmatch(value)}
    return {
        "key": key.hex(),
        "digests": {name: hashlib.sha256(key + value).hexdigest() for name, value in usable.items()},
        "lengths": sorted(lengths),
        "word_lengths": sorted(lengths - signs),  # every value of that length one word
        "max_bytes": MAX_FILE_BYTES,
        "root": "/etc",
    }


def scan_command(digests: dict) -> tuple[str, str, str]:
    """`host.run` arguments: python3 runs SCAN with the digests (the command is quoted by testinfra)."""
    return "python3 -c %s %s", SCAN, base64.b64encode(json.dumps(digests).encode()).decode()


def parse(output: str) -> dict[str, list[str]]:
    """SCAN's output -> {path: [secret names]}."""
    return {path: names for path, names in json.loads(output.strip().splitlines()[-1])}
