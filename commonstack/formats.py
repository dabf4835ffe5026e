"""Writing one value into a config format so that it stays one value there.

The profile's grammars (stacks/values.py) already keep control characters and a format's special
characters out; these are the second wall, for a value that got through anyway (a template
change, a new field, a secret edited by hand). Each either quotes the value for its format or
raises UnsafeValue: a line break, in particular, can never be written, since in every one of these
formats it would end the directive and let the rest of the value start another.

The jinja2 filters of the renderer (rendering.py) and the kit's ssh_config (inventories/openssh.py)
use them.
"""

from __future__ import annotations

import re
import shlex

from commonstack.errors import CommonstackError

_CADDY_BARE = re.compile(r"[A-Za-z0-9._~:/@%+=,-]+")
_CADDY_PLACEHOLDER = re.compile(r"\{[$A-Za-z_]")  # {$ENV} at load time, {http.request...} at runtime
_CADDY_ADDRESS = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_SYSTEMD_BARE = re.compile(r"[A-Za-z0-9._:/@+=,-]+")
_SSH_BARE = re.compile(r"[A-Za-z0-9._/@:+,~%-]+")
_SUDOERS_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


class UnsafeValue(CommonstackError, ValueError):
    """A value that cannot be written into its format as one value (exit 2, bad input). Its
    message never quotes the value, which may be a secret."""


def one_line(value: str, where: str = "a config file") -> str:
    """A value free of control and invisible characters (newline, NUL, escape, U+2028, ...)."""
    if not value.isprintable():
        raise UnsafeValue(f"a value with a control character cannot be written into {where}")
    return value


def caddy(value: str) -> str:
    """A Caddyfile token: bare when it can be, else in backquotes (Caddy's raw quotes: no escapes)."""
    one_line(value, "a Caddyfile")
    if _CADDY_PLACEHOLDER.search(value):
        raise UnsafeValue("a value with a Caddy placeholder ({...}) cannot be written into a Caddyfile")
    if _CADDY_BARE.fullmatch(value):
        return value
    if "`" in value:
        raise UnsafeValue("a value with a backquote cannot be written into a Caddyfile")
    return f"`{value}`"


def caddy_address(value: str) -> str:
    """A Caddyfile site address: only a host name (Caddy gets it a certificate), never quoted."""
    one_line(value, "a Caddyfile")
    if not _CADDY_ADDRESS.fullmatch(value):
        raise UnsafeValue("only a host name can be a site address in a Caddyfile")
    return value


def systemd(value: str) -> str:
    """The value of a unit file setting (OnCalendar=, Description=): '%' starts a specifier."""
    one_line(value, "a systemd unit")
    if value.endswith("\\"):  # a final backslash continues the line into the next setting
        raise UnsafeValue("a value ending in a backslash cannot be written into a systemd unit")
    return value.replace("%", "%%")


def systemd_arg(value: str) -> str:
    """One argument of an Exec*= command line: quoted, with specifiers and variables escaped."""
    one_line(value, "a systemd unit")
    if _SYSTEMD_BARE.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def systemd_env(value: str) -> str:
    """A value of an EnvironmentFile=, double-quoted (also right for a shell that sources the file)."""
    one_line(value, "an environment file")
    return '"' + re.sub(r'(["\\`$])', r"\\\1", value) + '"'


def shell(value: str) -> str:
    """One word of a shell command line."""
    return shlex.quote(one_line(value, "a shell script"))


def conf(value: str) -> str:
    """The value of a `key=value` or `key value` line (turnserver.conf and the like)."""
    one_line(value, "a config file")
    if value != value.strip() or value.startswith("#"):
        raise UnsafeValue("a value with surrounding spaces or a leading '#' cannot be written into a config file")
    return value


def sudoers_user(value: str) -> str:
    """A user name in sudoers: only a Unix user name, never a keyword, alias, %group or #uid."""
    if not _SUDOERS_USER.fullmatch(value):
        raise UnsafeValue("only a Unix user name can be written into sudoers")
    return value


def ssh_config(value: str, tokens: bool = False, suffix: str = "") -> str:
    """An ssh_config argument; with `tokens`, for keywords that expand %d, %h, ... (paths), whose
    own `suffix` of tokens (e.g. /%n) is kept."""
    one_line(value, "an ssh_config")
    if '"' in value:
        raise UnsafeValue("a value with a double quote cannot be written into an ssh_config")
    if tokens:
        value = value.replace("%", "%%")
    value += suffix
    return value if _SSH_BARE.fullmatch(value) else f'"{value}"'
