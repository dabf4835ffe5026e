"""The group's secrets: generated once, stored 0600 in secrets.yaml, never printed or logged."""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml

from commonstack.errors import SecretsError
from commonstack.stacks.model import StackProfile
from commonstack.stacks.reading import ReadError, load_yaml, read_text

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_SECRET = 4096


def generated_secrets(profile: StackProfile) -> list[str]:
    """Names of the secrets the kit generates for the services this profile enables."""
    names = []
    if profile.nextcloud.enabled:
        names += ["postgres_nextcloud_password", "nextcloud_admin_password"]
    if profile.matrix.enabled:
        names += [
            "postgres_synapse_password",
            "synapse_registration_shared_secret",
            "synapse_macaroon_secret_key",
            "synapse_form_secret",
            "matrix_admin_password",
        ]
        if profile.matrix.turn.enabled:
            names.append("turn_shared_secret")
    if profile.backup.enabled:
        names.append("restic_password")
    return names


def provided_secrets(profile: StackProfile) -> dict[str, str]:
    """Secrets only the volunteer can know, with where they come from."""
    if profile.smtp and profile.smtp.username:
        return {"smtp_password": f"the password of {profile.smtp.username} at {profile.smtp.host}"}
    return {}


class Secrets(Mapping[str, str]):
    """A read-only mapping whose repr never shows a value (it may end up in a traceback or log)."""

    def __init__(self, values: Mapping[str, str]):
        self._values = dict(values)

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({', '.join(sorted(self._values))}: values hidden)"


def redacted(profile: StackProfile) -> Secrets:
    """Placeholders for `render`, so reviewed configs carry no secret."""
    names = generated_secrets(profile) + list(provided_secrets(profile))
    return Secrets({name: f"<secret:{name}>" for name in names})


def ensure_secrets(path: Path, profile: StackProfile) -> Secrets:
    """Load the group's secrets, generating (and saving) any the profile now needs."""
    values = read_secrets(path)
    missing = [name for name in generated_secrets(profile) if not values.get(name)]
    if missing:
        values.update({name: secrets.token_urlsafe(32) for name in missing})
        _write(path, values)
    return require_provided(path, profile, values)


def require_provided(path: Path, profile: StackProfile, values: Mapping[str, str]) -> Secrets:
    for name, what in provided_secrets(profile).items():
        if not values.get(name):
            raise SecretsError(
                f"{path}: {name}: missing; add `{name}: ...` ({what}) to that file (it stays mode 0600)"
            )
    return Secrets(values)


def read_secrets(path: Path) -> dict[str, str]:
    """The secrets file's `name: value` lines. No error repeats anything written in it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read ({exc.strerror})") from None
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISREG(info.st_mode) and mode & 0o077:
        raise SecretsError(f"{path}: readable by other users (mode {mode:04o}); run `chmod 600 {path}`")
    try:
        data, tree = load_yaml(read_text(path), quote=False)
    except ReadError as exc:
        where = f":{exc.line}" if exc.line else ""
        raise SecretsError(f"{path}{where}: {exc.message}; fix it by hand (values are not shown)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SecretsError(f"{path}: expected `name: value` lines, one secret per line")
    lines = {key.value: key.start_mark.line + 1 for key, _ in tree.value if isinstance(key.value, str)}
    for name, value in data.items():
        where = f"{path}:{lines[name]}" if isinstance(name, str) and name in lines else str(path)
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise SecretsError(f"{where}: expected a secret's name (lowercase letters, digits, '_') before ':'")
        if not isinstance(value, str):
            what = "nothing" if value is None else f"a {type(value).__name__}"
            raise SecretsError(f"{where}: {name}: expected text, got {what}; put the value in quotes")
        if len(value) > MAX_SECRET or not value.isprintable():
            raise SecretsError(
                f"{where}: {name}: a secret is one line of at most {MAX_SECRET} printable characters "
                "(this one has a line break, a control character or is too long; value not shown)"
            )
    return data


def _write(path: Path, values: Mapping[str, str]) -> None:
    """Write atomically with mode 0600 from the start, so no other user can ever read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("# Generated by commonstack. Keep this file private; back it up safely.\n")
            yaml.safe_dump(dict(sorted(values.items())), handle, default_flow_style=False)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:  # e.g. a full disk: the old file is still intact
        temporary.unlink(missing_ok=True)
        raise SecretsError(f"{path}: cannot save new secrets ({exc.strerror}); the file is unchanged") from None
    os.replace(temporary, path)
