"""The second wall: a value that got past the profile's grammars still cannot add a directive.

Each hostile value is put into a valid profile *without* validation (pydantic's model_copy), as a
template change or a new field might one day let it through, and the host's files are rendered.
Either the renderer refuses it (UnsafeValue, one line naming the file, never quoting the value)
or every file it reaches is the same file with the value in its place: same lines, same
directives, and accepted by the tool that reads it (caddy, systemd-analyze, visudo, sh, bash, ssh,
YAML) with the value read back exactly.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from jinja2.utils import htmlsafe_json_dumps

from jinja2 import nodes

from commonstack import formats, rendering
from commonstack.inventories.openssh import ssh_config
from commonstack.inventories.targets import HostTarget
from commonstack.formats import UnsafeValue
from commonstack.plan import Release, plan_host
from commonstack.stacks.model import StackProfile
from commonstack.stacks.sizing import HostFacts

PROFILE = StackProfile.model_validate({
    "preset": "full", "group": "charity", "domain": "charity.example.org", "admin_email": "it@charity.example.org",
    "hosts": [{"name": "server", "address": "203.0.113.50"}],
    "nextcloud": {"enabled": True}, "discourse": {"enabled": True},
    "matrix": {"enabled": True, "turn": {"external_ip": "203.0.113.50"}},
    "smtp": {"host": "smtp.example.net", "username": "forum@charity.example.org"},
    "tls": {"mode": "acme", "acme_ca": "https://acme.example.org/directory"},
    "backup": {"enabled": True, "repository": "sftp:restic@backup.example.net:/srv/restic", "schedule": "daily"},
})
SECRETS = {name: f"s3cr3t-{name}" for name in (
    "postgres_nextcloud_password", "postgres_synapse_password", "synapse_registration_shared_secret",
    "synapse_macaroon_secret_key", "synapse_form_secret", "turn_shared_secret", "nextcloud_admin_password",
    "matrix_admin_password", "restic_password", "smtp_password")}
RELEASE = Release(HostFacts(memory_mb=8000, cpus=4, arch="amd64"), "bookworm")

# Each field that reaches a rendered file, with the valid value it has in PROFILE.
FIELDS = {
    "matrix.hostname": "matrix.charity.example.org",
    "nextcloud.hostname": "cloud.charity.example.org",
    "discourse.hostname": "forum.charity.example.org",
    "admin_email": "it@charity.example.org",
    "tls.acme_ca": "https://acme.example.org/directory",
    "backup.schedule": "daily",
    "backup.repository": "sftp:restic@backup.example.net:/srv/restic",
    "admin.user": "admin",
    "hosts.name": "server",
    "matrix.turn.external_ip": "203.0.113.50",
    "smtp.username": "forum@charity.example.org",
    "group": "charity",
    "secrets.turn_shared_secret": SECRETS["turn_shared_secret"],
    "secrets.restic_password": SECRETS["restic_password"],
    "secrets.smtp_password": SECRETS["smtp_password"],
}
# What the issue found, and the characters that end a line or a token in one format or another.
PAYLOADS = [
    "\n}\n:80 {\n\tfile_server browse\n}", "\nUnit=rescue.service", "\nProxyCommand touch /tmp/pwned",
    "\nALL ALL=(ALL) NOPASSWD: ALL", "\r\nX-Injected: 1", "\x00", "\u2028next", "\x1b[2J", "\ud800",
    " extra words", '"quoted"', "'single'", "`id`", "$(id)", "${HOME}", "{$HOME}", "{http.request.uri}",
    "%n%h", "#comment", ";id", "\\", "trailing\\", "a=b", ",more", " ",
]
WHOLE_VALUES = ["ALL", "%sudo", "#0", "+netgroup", "-", "Defaults", "localhost:80", "*"]


def with_value(field: str, value: str) -> tuple[StackProfile, dict]:
    """PROFILE and SECRETS with one value replaced, bypassing every validator."""
    if field.startswith("secrets."):
        return PROFILE, {**SECRETS, field.removeprefix("secrets."): value}
    if field == "hosts.name":
        return PROFILE.model_copy(update={"hosts": [PROFILE.hosts[0].model_copy(update={"name": value})]}), SECRETS
    *parents, last = field.split(".")
    chain = [PROFILE]
    for part in parents:
        chain.append(getattr(chain[-1], part))
    updated = chain[-1].model_copy(update={last: value})
    for model, part in zip(reversed(chain[:-1]), reversed(parents)):
        updated = model.model_copy(update={part: updated})
    return updated, SECRETS


def render(profile: StackProfile, secrets: dict) -> dict[str, str]:
    return {f.path: f.content for f in plan_host(profile, profile.hosts[0], secrets, RELEASE).files}


# A value every format takes as it is: a file rendered with it shows where the value goes.
MARKER = "qqmarkerqq"


# Fields the plan reads as well as writes need a marker of their own kind: the repository's kind
# and server decide the backup script's sections, so its marker is an SFTP address.
MARKERS = {"backup.repository": f"sftp:restic@backup.example.net:/srv/{MARKER}"}


# Files derived from a value rather than written with it: the backup key is derived from the host's
# and group's names (and commented with them inside its base64).
DERIVED = {"/etc/commonstack/backup-ssh-key": re.compile(
    r"-----BEGIN OPENSSH PRIVATE KEY-----\n(?:[A-Za-z0-9+/=]{1,70}\n)+-----END OPENSSH PRIVATE KEY-----\n")}


@functools.cache
def rendered_with_marker(field: str) -> dict[str, str]:
    marker = MARKERS.get(field, MARKER)
    return {path: content.replace(marker, MARKER) for path, content in render(*with_value(field, marker)).items()}


def representations(value: str) -> list[str]:
    """The ways a template may write a value: escaped for JSON or quoted for its format, or as it is
    when it is one printable line (a line break must never be written as it is)."""
    found = {json.dumps(value)[1:-1], json.dumps(value), htmlsafe_json_dumps(value)[1:-1]}
    for quote in (formats.caddy, formats.caddy_address, formats.systemd, formats.systemd_arg, formats.systemd_env,
                  formats.conf, formats.shell):
        try:
            found.add(quote(value))
        except UnsafeValue:
            pass
    if value.isprintable():
        found.add(value)
    found |= {r[1:-1] for r in found if len(r) > 1 and r[0] == r[-1] and r[0] in "\"'`"}  # inside its quotes
    return sorted(found, key=len, reverse=True)


def in_its_place(content: str, with_marker: str, value: str) -> bool:
    """Whether `content` is the file rendered with the marker, with the value in each of the
    marker's places (escaped or quoted) and nothing else changed: no line, no directive added."""
    alternatives = "|".join(re.escape(r) for r in representations(value))
    pattern = re.escape(with_marker).replace(MARKER, f"(?:{alternatives})")
    return re.fullmatch(pattern, content, re.S) is not None


def cases():
    for field, valid in FIELDS.items():
        for payload in PAYLOADS:
            yield field, valid + payload
        for value in WHOLE_VALUES:
            yield field, value


@pytest.mark.parametrize(("field", "value"), list(cases()))
def test_a_value_that_slipped_through_cannot_add_a_directive(field, value, tmp_path):
    profile, secrets = with_value(field, value)
    try:
        files = render(profile, secrets)
    except UnsafeValue as refusal:
        message = str(refusal)
        assert "\n" not in message and (not value.strip() or value.strip() not in message)
        return
    expected = rendered_with_marker(field)
    assert set(files) == set(expected)
    for path, content in files.items():
        if path in DERIVED:  # derived from the value: a different key, never another line
            assert DERIVED[path].fullmatch(content), f"{path} is not one key"
        elif content != expected[path]:
            assert in_its_place(content, expected[path], value), f"{path} changed beyond the value"
            written = any(MARKER in line and not line.lstrip().startswith(("#", ";", "//"))
                          for line in expected[path].splitlines())
            read_back(path, content, value if written else None, tmp_path)


def strings(data) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [s for k, v in data.items() for s in strings(k) + strings(v)]
    if isinstance(data, list):
        return [s for item in data for s in strings(item)]
    return []


def read_back(path: str, content: str, value: str | None, tmp_path: Path) -> None:
    """The file's own tool accepts it and, where it can say so, reads the value back exactly
    (`value` is None where the file has it in a comment only)."""
    file = tmp_path / path.lstrip("/")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(content)
    if path == "/etc/caddy/Caddyfile" and shutil.which("caddy"):
        result = subprocess.run(["caddy", "adapt", "--config", file, "--adapter", "caddyfile"], capture_output=True,
                                text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr
        assert value is None or any(value in found for found in strings(json.loads(result.stdout)))
    elif path.endswith((".service", ".timer")) and shutil.which("systemd-analyze"):
        result = subprocess.run(["systemd-analyze", "verify", "--man=no", file], capture_output=True, text=True,
                                cwd=tmp_path)
        # systemd may refuse the value itself (a calendar it cannot read: the profile's grammar is
        # the wall for that); what it must never see is another key, section or line.
        said = result.stdout + result.stderr
        assert not re.search(r"Unknown (key|section)|Missing '='|Invalid section header", said), said
    elif path.startswith("/etc/sudoers.d/") and shutil.which("visudo"):
        file.chmod(0o440)
        assert subprocess.run(["visudo", "-c", "-f", file], capture_output=True).returncode == 0
    elif path.endswith((".yaml", ".yml")):
        assert value is None or any(value in found for found in strings(yaml.safe_load(content)))
    elif path == "/etc/commonstack/restic-repository":  # read back by the script with $(cat ...)
        assert value is None or content == value + "\n"
    elif path.startswith("/usr/local/sbin/"):
        shell = "bash" if content.startswith("#!/bin/bash") else "sh"
        assert subprocess.run([shell, "-n", file]).returncode == 0


@pytest.mark.parametrize("value", [v for v in PAYLOADS + WHOLE_VALUES])
def test_the_ssh_config_of_the_checks_keeps_each_value_in_its_place(value, tmp_path):
    """hosts[].user once got a ProxyCommand into this file; ssh -G reads it as ssh would."""
    if not shutil.which("ssh"):
        pytest.skip("ssh is not installed (apt-get install openssh-client)")
    folder = tmp_path / ("keys " + "%d")  # a path with a space and an ssh token
    folder.mkdir()
    host = HostTarget("server", "203.0.113.50", "admin" + value, 2222, folder / "id", folder / "known_hosts")
    try:
        text = ssh_config([host], control_dir=folder)
    except UnsafeValue:
        return
    config = tmp_path / "ssh_config"
    config.write_text(text)
    result = subprocess.run(["ssh", "-G", "-F", config, "server"], capture_output=True, text=True)
    if result.returncode != 0:
        return  # ssh refuses the file: it cannot be used at all, let alone run a command
    settings = {}
    for line in result.stdout.splitlines():
        key, _, rest = line.partition(" ")
        settings.setdefault(key, rest)
    assert "proxycommand" not in settings and "localcommand" not in settings
    assert settings["user"] == "admin" + value
    assert settings["identityfile"] == str(folder / "id").replace("%", "%%")  # -G shows it before expansion
    assert settings["hostname"] == "203.0.113.50" and settings["port"] == "2222"


def test_the_filters_quote_what_they_can_and_refuse_the_rest():
    assert formats.caddy("matrix.example.org") == "matrix.example.org"
    assert formats.caddy('{"m.server": "m.example.org:443"}') == '`{"m.server": "m.example.org:443"}`'
    assert formats.systemd("Mon 50%") == "Mon 50%%"
    assert formats.systemd_arg("a b$c%d") == '"a b$$c%%d"'
    assert formats.systemd_env('a"b\\c$d`e') == '"a\\"b\\\\c\\$d\\`e"'
    assert formats.shell("it's") == "'it'\"'\"'s'"
    assert formats.ssh_config("/home/my keys/id", tokens=True) == '"/home/my keys/id"'
    assert formats.ssh_config("/tmp/%d", tokens=True, suffix="/%n") == "/tmp/%%d/%n"
    for refuse, value in ((formats.caddy, "a{$HOME}"), (formats.caddy, "a{http.request.uri}"), (formats.caddy, "a`b"),
                          (formats.systemd, "a\\"), (formats.conf, " a"), (formats.conf, "#a"),
                          (formats.sudoers_user, "ALL"), (formats.sudoers_user, "%sudo"),
                          (formats.ssh_config, 'a"b'), (formats.shell, "a\nb")):
        with pytest.raises(UnsafeValue):
            refuse(value)
    for quote in (formats.caddy, formats.systemd, formats.systemd_arg, formats.systemd_env, formats.shell,
                  formats.conf, formats.ssh_config):
        for line_break in ("\n", "\r", "\x00", "\u2028", "\x85"):
            with pytest.raises(UnsafeValue):
                quote(f"a{line_break}b")


# Names under which templates reach the profile's values (the profile, and what they `set` from it).
PROFILE_NAMES = {"profile", "host", "hostnames", "secrets", "smtp", "turn", "name", "matrix_host", "on_host"}
NUMBERS = {"port", "min_port", "max_port", "daily", "weekly", "monthly"}  # strict ints in the model
FILTERS = {"caddy", "caddy_address", "systemd", "systemd_arg", "systemd_env", "shell", "conf", "line", "sudoers_user",
           "tojson"}


def test_every_value_a_template_writes_goes_through_a_filter_for_its_format():
    """Each {{ ... }} that writes a value of the profile, outside a comment, ends with the filter of
    its format or is one of the model's integers: a template line added later cannot forget it."""
    templates = Path(rendering.TEMPLATES_DIR)
    unfiltered = []
    for template in sorted(templates.rglob("*.j2")):
        source = template.read_text()
        lines = source.splitlines()
        for output in rendering._environment().parse(source).find_all(nodes.Output):
            for node in output.nodes:
                line = lines[node.lineno - 1].lstrip()
                if isinstance(node, nodes.TemplateData) or line.startswith(("#", ";", "//")):
                    continue  # text, or a comment (the renderer's finalize keeps every value on one line)
                names = {n.name for n in node.find_all(nodes.Name)} | ({node.name} if isinstance(node, nodes.Name) else set())
                if not names & PROFILE_NAMES:
                    continue  # the kit's own numbers and constants: sizing, facts, versions
                if isinstance(node, nodes.Filter) and node.name in FILTERS:
                    continue
                if isinstance(node, nodes.Getattr) and node.attr in NUMBERS:
                    continue
                if isinstance(node, nodes.CondExpr) and all(isinstance(n, nodes.Const) for n in (node.expr1, node.expr2)):
                    continue
                unfiltered.append(f"{template.relative_to(templates)}:{node.lineno}: {line}")
    assert not unfiltered, "\n".join(unfiltered)
