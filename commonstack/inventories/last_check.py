"""A group's last health check, kept on this machine for the runbook (Group.last_check_file).

`check` and the checks that end a `deploy` save it. It holds verdicts and hints, never a secret:
messages are redacted again here, whatever the checks already did.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from commonstack.inventories.secrets import redact


@dataclass(frozen=True)
class LastCheck:
    checked_at: str  # "2026-11-30 10:12 UTC"
    command: str
    results: list[dict]  # {host, layer, check, outcome, message}

    def count(self, outcome: str) -> int:
        return sum(r["outcome"] == outcome for r in self.results)

    def of(self, outcome: str) -> list[dict]:
        return [r for r in self.results if r["outcome"] == outcome]


def save_last_check(path: Path, results: list[dict], command: str, secrets: Iterable[str]) -> None:
    """Write the results atomically (a check interrupted half-way leaves the previous file)."""
    hidden = list(secrets)

    def clean(text: str) -> str:
        return redact(text, hidden)

    document = {
        "checked_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": clean(command),
        "results": [
            {key: clean(str(result.get(key, ""))) for key in ("host", "layer", "check", "outcome", "message")}
            for result in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(temporary, path)


def load_last_check(path: Path) -> LastCheck | None:
    """The saved check, or None when there is none (or it cannot be read: the runbook says so)."""
    try:
        document = json.loads(path.read_text())
        return LastCheck(document["checked_at"], document["command"], list(document["results"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
