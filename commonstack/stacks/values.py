"""The grammar of every profile value that reaches a rendered file, a command line or a path.

Each check matches the whole value (re.fullmatch: `$` would let a final newline through), bounds
its length and refuses control characters, so a value cannot end one directive and start another
wherever it is written. Each returns the value as it will be used, or raises ValueError with a
message that quotes at most a short excerpt of what was given.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from commonstack.stacks.reading import excerpt

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"  # RFC 1123: 1-63 letters, digits, '-' inside
_LABEL_RE = re.compile(_LABEL)
_SLUG_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
_UNIX_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# RFC 5322's dot-atom, without the characters that mean something to a shell or a Caddyfile
# ($ ` { } | are allowed by the RFC and by no mail provider a group uses).
_LOCAL_PART_RE = re.compile(r"[A-Za-z0-9!#%&'*+/=?^_~-]+(?:\.[A-Za-z0-9!#%&'*+/=?^_~-]+)*")
# What may follow the host in an https URL: RFC 3986's path and query characters, less $ (Caddy
# reads {$NAME} as an environment variable) and with no fragment.
_URL_REST_RE = re.compile(r"(?:/[A-Za-z0-9._~!&'()*+,;=:@%/-]*)?(?:\?[A-Za-z0-9._~!&'()*+,;=:@%/?-]*)?")
_RESTIC_BACKENDS = ("local", "sftp", "rest", "s3", "b2", "azure", "gs", "swift", "rclone")
_RESTIC_LOCATION_RE = re.compile(r"[A-Za-z0-9._~:/@%+=,-]+")
_PATH_RE = re.compile(r"[^\x00-\x1f\x7f\"\\]+")

MAX_DOMAIN = 253
MAX_TEXT = 200
MAX_PATH = 1024


def text(value: str, max_length: int = MAX_TEXT) -> str:
    """Free text (a note, a user name at a mail relay): printable, one line, bounded, not empty."""
    if not value.strip():
        raise ValueError("is empty; write a value or leave the key out")
    if len(value) > max_length:
        raise ValueError(f"longer than {max_length} characters: {excerpt(value)}")
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise ValueError(f"contains a control or invisible character ({bad!r}): {excerpt(value)}")
    return value


def country_code(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{2}", value):
        raise ValueError(f"expected an ISO 3166-1 country code like DE, got {excerpt(value)}")
    return value


def commit(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{40}", value):
        raise ValueError(f"expected a full 40-character git commit hash (lowercase hex), got {excerpt(value)}")
    return value


def app_id(value: str) -> str:
    """Nextcloud's app ids, as its app store has them: lowercase letters, digits and '_'."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", value):
        raise ValueError(f"expected a Nextcloud app id like calendar (lowercase letters, digits, '_'), got {excerpt(value)}")
    return value


def slug(value: str) -> str:
    if not _SLUG_RE.fullmatch(value):
        raise ValueError(
            f"expected a short lowercase name (letters, digits, '-'; starting with a letter), got {excerpt(value)}"
        )
    return value


def setting_name(value: str) -> str:
    """A name of a tuning setting, such as php_fpm_max_children."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", value):
        raise ValueError(f"expected a setting name like php_fpm_max_children, got {excerpt(value)}")
    return value


def unix_user(value: str) -> str:
    if not _UNIX_USER_RE.fullmatch(value):
        raise ValueError(
            f"expected a Unix user name (lowercase letters, digits, '_' or '-', at most 32), got {excerpt(value)}"
        )
    return value


def _dns_name(value: str) -> str | None:
    """The lowercased name when `value` is an RFC 1123 host name (one final dot allowed), else None."""
    name = value.lower().removesuffix(".")
    if not name or len(name) > MAX_DOMAIN:
        return None
    labels = name.split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return None  # an all-digit last label is a mistyped address (999.999.999.999, 0), not a name
    return name


def domain(value: str) -> str:
    """A public DNS name of two labels or more."""
    name = _dns_name(value)
    if name is None or "." not in name:
        raise ValueError(
            f"expected a DNS name like example.org (labels of letters, digits and '-', at most 63 "
            f"characters each and {MAX_DOMAIN} in all), got {excerpt(value)}"
        )
    return name


def ip_address(value: str) -> str:
    """An IPv4 or IPv6 address of a host: parsed, so 999.999.999.999 or 0 is not one."""
    try:
        if "%" in value:  # a zone (fe80::1%eth0) names an interface of this machine, not a host
            raise ValueError
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"expected an IP address like 203.0.113.7, got {excerpt(value)}") from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{address} is not the address of a host")
    return str(address)


def address(value: str) -> str:
    """An IP address or a host name (a single label, such as an ssh_config alias, is allowed)."""
    if re.fullmatch(r"[0-9a-fA-F:.%]+", value) and not _dns_name(value):
        return ip_address(value)
    name = _dns_name(value)
    if name is None:
        raise ValueError(f"expected an IP address or a DNS name, got {excerpt(value)}")
    return name


def public_ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"expected an IPv4 address like 203.0.113.7, got {excerpt(value)}") from None


def email(value: str) -> str:
    local, at, host = value.rpartition("@")
    if not at or len(value) > 254 or len(local) > 64 or not _LOCAL_PART_RE.fullmatch(local) or "." not in host:
        raise ValueError(f"expected an email address like admin@example.org, got {excerpt(value)}")
    name = _dns_name(host)
    if name is None:
        raise ValueError(f"expected an email address like admin@example.org, got {excerpt(value)}")
    return f"{local}@{name}"


def _is_host(name: str) -> bool:
    """A DNS name or an IP address, as urlsplit gives a URL's host."""
    if _dns_name(name):
        return True
    try:
        ip_address(name)
    except ValueError:
        return False
    return True


def https_url(value: str) -> str:
    """An https:// URL of a server: no credentials, no fragment, no characters a config would read."""
    problem = f"expected an https:// URL like https://acme.example.org/directory, got {excerpt(value)}"
    if len(value) > 2048 or not value.startswith("https://"):
        raise ValueError(problem)
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is not a number in 0-65535
    except ValueError:
        raise ValueError(problem) from None
    if "@" in parts.netloc or port == 0 or not _is_host(parts.hostname or ""):
        raise ValueError(problem)
    if not _URL_REST_RE.fullmatch(value[len("https://") + len(parts.netloc):]):
        raise ValueError(problem)
    return value


def restic_repository(value: str) -> str:
    """A restic repository: a local path or one of restic's backends (sftp:, rest:, s3:, ...)."""
    problem = (f"expected a restic repository like sftp:user@host:/srv/restic, rest:https://host:8000/ "
               f"or /srv/backup, got {excerpt(value)}")
    backend, colon, rest = value.partition(":")
    if value.startswith("/"):
        backend, rest = "local", value
    elif not colon or backend not in _RESTIC_BACKENDS:
        raise ValueError(problem)
    if len(value) > MAX_PATH or not _RESTIC_LOCATION_RE.fullmatch(rest):
        raise ValueError(problem)
    if backend == "rest":  # rest:http(s)://[user:password@]host[:port]/[path]
        try:
            parts = urlsplit(rest)
            parts.port
        except ValueError:
            raise ValueError(problem) from None
        if parts.scheme not in ("http", "https") or not _is_host(parts.hostname or ""):
            raise ValueError(problem)
    return value


# systemd.time(7): [WEEKDAYS] [DATE] [TIME] [TIMEZONE], or one of its shorthands.
_CAL_COMPONENT = r"(?:\*|\d{1,4}(?:\.\.\d{1,4})?)(?:/\d{1,4})?"
_CAL_LIST = rf"{_CAL_COMPONENT}(?:,{_CAL_COMPONENT})*"
_WEEKDAY = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]{0,6}"
_CALENDAR_TOKENS = (
    re.compile(rf"{_WEEKDAY}(?:\.\.{_WEEKDAY})?(?:,{_WEEKDAY}(?:\.\.{_WEEKDAY})?)*", re.I),
    re.compile(rf"(?:{_CAL_LIST}-)?{_CAL_LIST}[-~]{_CAL_LIST}"),
    re.compile(rf"{_CAL_LIST}:{_CAL_LIST}(?::{_CAL_LIST}(?:\.\d{{1,6}})?)?"),
    re.compile(r"UTC|[A-Z][A-Za-z_]+(?:/[A-Za-z_+-]+){1,2}"),
)
_CALENDAR_SHORTHANDS = {"minutely", "hourly", "daily", "weekly", "monthly", "yearly", "annually",
                        "quarterly", "semiannually"}


def calendar(value: str) -> str:
    """A systemd OnCalendar= expression: its grammar here, and systemd's own parser when present."""
    problem = f"expected a systemd calendar expression like '*-*-* 03:30:00' or 'daily', got {excerpt(value)}"
    if len(value) > 100:
        raise ValueError(problem)
    if value.lower() not in _CALENDAR_SHORTHANDS:
        position = 0
        for token in value.split(" "):  # each part at most once, in systemd's order
            matched = next((i for i in range(position, len(_CALENDAR_TOKENS))
                            if _CALENDAR_TOKENS[i].fullmatch(token)), None)
            if matched is None:
                raise ValueError(problem)
            position = matched + 1
    if not _systemd_accepts_calendar(value):
        raise ValueError(f"systemd-analyze calendar refuses {excerpt(value)}; see `man systemd.time`")
    return value


@cache
def _systemd_accepts_calendar(value: str) -> bool:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        return True  # no systemd here (a Mac, a container): the grammar above has to do
    try:
        result = subprocess.run([analyze, "calendar", "--", value], capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return result.returncode == 0


SSH_KEY_TYPES = (
    "ssh-ed25519", "sk-ssh-ed25519@openssh.com", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-rsa",
)


def ssh_public_key(value: str) -> str:
    """One OpenSSH public key, `TYPE BASE64 [COMMENT]`, parsed; returned in that normal form.

    No authorized_keys options (command=, from=): a profile grants a login, nothing more.
    """
    text(value, max_length=16_384)
    parts = value.split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ValueError(
            f"expected an SSH public key like 'ssh-ed25519 AAAA... you@laptop' (the one line of a .pub "
            f"file), got {excerpt(value)}"
        )
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    try:
        blob = base64.b64decode(parts[1], validate=True)
        key = load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (binascii.Error, ValueError):
        raise ValueError(f"not a valid {parts[0]} key (its base64 part does not parse): {excerpt(value)}") from None
    except UnsupportedAlgorithm:  # a type this machine's OpenSSL was built without
        raise ValueError(f"{parts[0]} keys cannot be checked here; use an ssh-ed25519 key") from None
    if not blob.startswith(len(parts[0]).to_bytes(4, "big") + parts[0].encode()):
        raise ValueError(f"the key's type inside does not say {parts[0]}: {excerpt(value)}")
    if getattr(key, "key_size", 2048) < 2048 and parts[0] == "ssh-rsa":
        raise ValueError(f"an RSA key of {key.key_size} bits is too weak; use ssh-ed25519 or RSA of 2048 bits or more")
    return " ".join(parts)


def local_path(value: str) -> Path:
    """A path on this machine (absolute, or relative to the group's folder)."""
    if not value or len(value) > MAX_PATH or not _PATH_RE.fullmatch(value) or not value.isprintable():
        raise ValueError(f"expected a file path (printable, no quotes or backslashes), got {excerpt(value)}")
    return Path(value)


def group_file(value: str) -> Path:
    """A file inside the group's folder, named relative to it (e.g. certs/ca.pem)."""
    path = local_path(value)
    posix = PurePosixPath(value)
    if posix.is_absolute() or value.startswith("~") or ".." in posix.parts:
        raise ValueError(
            f"{excerpt(value)} is outside the group's folder: copy the file into the group's folder "
            "(next to stack.yaml) and name it relative to it, e.g. certs/ca.pem"
        )
    return path
