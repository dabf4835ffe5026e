"""Hostile profiles and secrets files, generated, against the CLI as a volunteer runs it.

Every class of issue 17 is generated here: values that carry a line break or a format's special
characters into a rendered file, values that are silently wrong (999.999.999.999, port: true),
alias bombs, huge and deeply nested documents, duplicate keys, files that are not UTF-8, wrong
types in secrets.yaml. Whatever the input, `commonstack validate` (and `render`) answer within a
second of CPU with either exit 0 or exit 2 and one line that names the file (and the key, for a
value), never a traceback or an internal error; a secrets file's values never appear in it. A value
that is accepted renders files that are the files of a neutral value with this one in its place
(tests/unit/test_formats.py: in_its_place), read back by the tool that reads each file.
"""

from __future__ import annotations

import re
import stat
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from commonstack.cli import main
from commonstack.errors import ProfileError
from commonstack.inventories.groups import Group
from commonstack.inventories.secrets import redacted
from commonstack.stacks.loader import load_profile
from commonstack.plan import plan_group
from tests.unit.test_certificates import make_ca
from tests.unit.test_formats import DERIVED, MARKER, PAYLOADS, in_its_place, read_back, render, rendered_with_marker, with_value

SECONDS = 1.0  # of CPU, for any one command on any one profile
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

VALID = {"preset": "small-group", "group": "g", "domain": "example.org", "admin_email": "a@example.org",
         "hosts": [{"name": "vps", "address": "203.0.113.7"}]}


def run_cli(root: Path, *args: str):
    """One command, in process, timed in CPU seconds (other work on the machine does not count)."""
    started = time.process_time()
    result = CliRunner().invoke(main, ["--inventories", str(root), *args])
    return result, time.process_time() - started


def assert_one_clear_line(result, spent: float, file: Path, key: str | None = None, hidden: tuple = ()):
    output = result.output
    assert spent < SECONDS, f"{spent:.2f} s"
    assert "Traceback" not in output and "internal error" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 0:
        return
    assert result.exit_code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith(f"error: {file}"), lines[0]
    if key:
        assert key in lines[0], lines[0]
    assert len(lines[0]) < 600, lines[0]
    for value in hidden:
        assert value not in lines[0], "a secret's value was printed"


def group_folder(tmp_path: Path, stack: str | bytes, secrets: str | bytes | None = None) -> Path:
    folder = tmp_path / "g"
    folder.mkdir(exist_ok=True)
    (folder / "stack.yaml").write_bytes(stack if isinstance(stack, bytes) else stack.encode("utf-8", "surrogatepass"))
    if secrets is not None:
        path = folder / "secrets.yaml"
        path.write_bytes(secrets if isinstance(secrets, bytes) else secrets.encode("utf-8", "surrogatepass"))
        path.chmod(0o600)
    return folder


# ---------------------------------------------------------------------------------------------
# Values: every string of the profile, with what breaks one format or another
# ---------------------------------------------------------------------------------------------

# Where each field is written in a stack.yaml, and a valid value for it.
YAML_FIELDS = {
    "domain": ("domain", "example.org"),
    "admin_email": ("admin_email", "a@example.org"),
    "group": ("group", "g"),
    "hosts[0].name": (("hosts", 0, "name"), "vps"),
    "hosts[0].address": (("hosts", 0, "address"), "203.0.113.7"),
    "hosts[0].user": (("hosts", 0, "user"), "root"),
    "hosts[0].port": (("hosts", 0, "port"), 22),
    "hosts[0].role": (("hosts", 0, "role"), "VPS at a provider"),
    "hosts[0].ssh_key": (("hosts", 0, "ssh_key"), "keys/id_ed25519"),
    "matrix.hostname": (("matrix", "hostname"), "matrix.example.org"),
    "matrix.server_name": (("matrix", "server_name"), "example.org"),
    "matrix.turn.external_ip": (("matrix", "turn", "external_ip"), "203.0.113.7"),
    "nextcloud.hostname": (("nextcloud", "hostname"), "cloud.example.org"),
    "nextcloud.default_phone_region": (("nextcloud", "default_phone_region"), "DE"),
    "nextcloud.archive": (("nextcloud", "archive"), "nextcloud.tar.bz2"),
    "admin.user": (("admin", "user"), "admin"),
    "admin.ssh_keys[0]": (("admin", "ssh_keys", 0),
                          "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICpuz2tQFv6EjKDV2pnnRA2SPpnN5OQGcUDp/opY7rky me"),
    "tls.email": (("tls", "email"), "tls@example.org"),
    "tls.acme_ca": (("tls", "acme_ca"), "https://acme.example.org/directory"),
    "tls.acme_ca_root": (("tls", "acme_ca_root"), "ca.pem"),
    "backup.repository": (("backup", "repository"), "sftp:restic@backup.example.net:/srv/restic"),
    "backup.schedule": (("backup", "schedule"), "daily"),
    "extra_ca_certificates[0]": (("extra_ca_certificates", 0), "ca.pem"),
    "smtp.host": (("smtp", "host"), "smtp.example.net"),
    "smtp.username": (("smtp", "username"), "forum"),
    "smtp.port": (("smtp", "port"), 587),
}
PROVIDED = "smtp_password: s3cr3t\n"  # what a volunteer adds when the relay needs a login
# A few keys need their neighbours to be set at all.
CONTEXT = {"tls": {"acme_ca": "https://acme.example.org/directory"}, "backup": {"enabled": True, "repository": "/srv/r"},
           "smtp": {"host": "smtp.example.net"}, "admin": {}, "matrix": {"turn": {}}, "nextcloud": {},
           "extra_ca_certificates": []}


def profile_with(field: str, value) -> dict:
    where, _ = YAML_FIELDS[field]
    document = yaml.safe_load(yaml.safe_dump(VALID))
    path = (where,) if isinstance(where, str) else where
    node = document
    for index, part in enumerate(path[:-1]):
        following = path[index + 1]
        if isinstance(node, dict) and part not in node:
            fresh = [] if isinstance(following, int) else {}
            node[part] = yaml.safe_load(yaml.safe_dump(CONTEXT.get(part, fresh))) if index == 0 else fresh
        if isinstance(node[part], list) and isinstance(following, int) and not node[part]:
            node[part].append(None)
        node = node[part]
    node[path[-1]] = value
    return document


hostile_text = st.text(
    alphabet=st.sampled_from(list("aZ09.-_@:/%$`'\"{}[]#;&|\\ =,*~!?()<>^") +
                             ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\u2028", "\u202e", "\ud800", "\xe9"]),
    max_size=40,
)
hostile_values = st.one_of(
    st.builds(lambda field, payload, where: (field, _insert(YAML_FIELDS[field][1], payload, where)),
              st.sampled_from(sorted(YAML_FIELDS)), st.sampled_from(PAYLOADS) | hostile_text, st.integers(0, 100)),
    st.tuples(st.sampled_from(sorted(YAML_FIELDS)), hostile_text),
    st.tuples(st.sampled_from(sorted(YAML_FIELDS)), st.sampled_from(
        [True, False, None, 0, -1, 65536, 22.0, 1e400, "22", [], {}, "x" * 5000, "999.999.999.999", "0", "::",
         "a" * 64 + ".org", ".".join(["a" * 63] * 4) + ".org"])),
)


def _insert(valid, payload: str, where: int):
    text = str(valid)
    at = where % (len(text) + 1)
    return text[:at] + payload + text[at:]


@FUZZ
@given(case=hostile_values)
def test_hostile_values_are_refused_on_one_line_or_kept_in_their_place(tmp_path_factory, case):
    field, value = case
    tmp_path = tmp_path_factory.mktemp("fuzz")
    folder = group_folder(tmp_path, yaml.safe_dump(profile_with(field, value)), secrets=PROVIDED)
    (folder / "ca.pem").write_text(CA)
    result, spent = run_cli(tmp_path, "validate", "g")
    # The key is named (or its section, for a rule of the section such as "enabled but no
    # repository"), or the line and column where YAML itself refused the text.
    key = None if result.exit_code == 0 or "malformed YAML" in result.output else field.split("[")[0].split(".")[0]
    assert_one_clear_line(result, spent, folder / "stack.yaml", key=key)
    event("accepted" if result.exit_code == 0 else "refused")  # --hypothesis-show-statistics
    if result.exit_code == 0:
        check_accepted(field, load_profile(folder / "stack.yaml"), tmp_path)


def check_accepted(field: str, profile, tmp_path: Path) -> None:
    """An accepted value (as the profile holds it, normalized), where test_formats knows the field:
    the files of the marker profile with this value in the marker's places, read back by their tools."""
    where, _ = YAML_FIELDS[field]
    value = profile
    for part in (where,) if isinstance(where, str) else where:
        value = value[part] if isinstance(part, int) else getattr(value, part)
    same = {"matrix.hostname": "matrix.hostname", "nextcloud.hostname": "nextcloud.hostname",
            "backup.schedule": "backup.schedule",
            "admin.user": "admin.user", "tls.acme_ca": "tls.acme_ca", "hosts[0].name": "hosts.name",
            "smtp.username": "smtp.username", "group": "group", "matrix.turn.external_ip": "matrix.turn.external_ip"}
    # backup.repository is not compared here: its kind (sftp, local, rest) decides the backup
    # script's sections, so test_formats renders it against an SFTP marker of the same kind.
    if field not in same or not isinstance(value, str):
        return
    known = same[field]
    files = render(*with_value(known, value))
    expected = rendered_with_marker(known)
    for path, content in files.items():
        if path in DERIVED:
            assert DERIVED[path].fullmatch(content), f"{path} is not one key"
        elif content != expected[path]:
            assert in_its_place(content, expected[path], value), f"{path} changed beyond the value {value!r}"
            written = any(MARKER in line and not line.lstrip().startswith("#") for line in expected[path].splitlines())
            read_back(path, content, value if written else None, tmp_path)


# ---------------------------------------------------------------------------------------------
# Documents: types, unknown keys, and the shapes that once hung or exhausted the kit
# ---------------------------------------------------------------------------------------------

KEYS = ["preset", "group", "domain", "admin_email", "hosts", "name", "address", "port", "matrix",
        "nextcloud", "discourse", "enabled", "host", "turn", "external_ip", "tls", "mode", "smtp",
        "backup", "repository", "sizing", "bogus", "server_name", "registration", "acme_ca"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["small-group", "chat", "vps", "203.0.113.7", "a@b.org", "x.org"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=25,
)
near_valid = st.tuples(st.sampled_from(KEYS), values).map(lambda kv: yaml.safe_dump({**VALID, kv[0]: kv[1]}))
host_tweaks = st.dictionaries(st.sampled_from(["memory_mb", "cpus", "arch", "sizing", "port", "name"]), values, max_size=3)
tweaked_hosts = host_tweaks.map(lambda t: yaml.safe_dump({**VALID, "hosts": [{**VALID["hosts"][0], **t}]}))


def laughs(levels: int, width: int, where: str) -> str:
    lines = ['l0: &l0 ["lol"]'] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return yaml.safe_dump(VALID) + "\n".join(lines) + f"\n{where}: *l{levels - 1}\n"


shapes = st.one_of(
    st.builds(laughs, st.integers(2, 12), st.integers(2, 20), st.sampled_from(["group", "matrix", "bogus"])),
    st.integers(10, 200_000).map(lambda n: "group: " + "[" * n + "]" * n + "\n"),
    st.integers(33, 3000).map(lambda n: "".join("  " * i + "a:\n" for i in range(n))),
    st.integers(5_000, 120_000).map(lambda n: "hosts: [" + ", ".join(["{name: a, address: 1.2.3.4}"] * (n // 30)) + "]\n"),
    st.integers(100_000, 990_000).map(lambda n: yaml.safe_dump({**VALID, "group": "g" + "x" * n})),
    st.integers(1_000_001, 3_000_000).map(lambda n: "# " + "x" * n + "\n"),
    st.sampled_from(["hosts", "domain", "matrix"]).map(lambda key: yaml.safe_dump(VALID) + yaml.safe_dump({key: {}})),
    st.binary(max_size=200).map(lambda b: b"group: " + b + b"\n"),
    st.text(max_size=200),
)
documents = st.one_of(near_valid, tweaked_hosts, shapes,
                      st.dictionaries(st.sampled_from(KEYS), values, max_size=8).map(yaml.safe_dump))


@FUZZ
@given(text=documents)
def test_hostile_documents_end_in_one_clear_line_within_a_second(tmp_path_factory, text):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    folder = group_folder(tmp_path, text)
    for command in (("validate", "g"), ("render", "g", "--out", str(tmp_path / "out"), "--force")):
        result, spent = run_cli(tmp_path, *command)
        assert_one_clear_line(result, spent, folder / "stack.yaml")


# ---------------------------------------------------------------------------------------------
# Secrets files: the same shapes, and no value ever printed
# ---------------------------------------------------------------------------------------------

SECRET_VALUE = "hunter2-correct-horse"
secret_values = st.one_of(
    st.just(SECRET_VALUE), st.none(), st.integers(), st.booleans(), st.lists(st.just(SECRET_VALUE), max_size=2),
    st.dictionaries(st.just("a"), st.just(SECRET_VALUE), max_size=1), st.just(SECRET_VALUE + "\nsecond line"),
    st.just(SECRET_VALUE + "\x00"), st.just(SECRET_VALUE * 300), st.just("\ud800" + SECRET_VALUE),
)
secret_names = st.one_of(st.sampled_from(["turn_shared_secret", "smtp_password", "restic_password"]),
                         st.text(max_size=10), st.integers(), st.just("Bad Name"))
secrets_documents = st.one_of(
    st.dictionaries(secret_names, secret_values, max_size=4).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.just(f"turn_shared_secret: {SECRET_VALUE}\nturn_shared_secret: {SECRET_VALUE}x\n"),
    st.just(f"turn_shared_secret: [{SECRET_VALUE}\n"),
    st.just(f"turn_shared_secret: {SECRET_VALUE}\n---\nx: 1\n"),
    st.builds(laughs, st.integers(2, 10), st.integers(2, 20), st.just("turn_shared_secret")),
    st.binary(max_size=100).map(lambda b: b"turn_shared_secret: " + SECRET_VALUE.encode() + b + b"\n"),
    st.text(max_size=100).map(lambda t: f"turn_shared_secret: {SECRET_VALUE}\n{t}"),
)


@FUZZ
@given(text=secrets_documents)
def test_hostile_secrets_files_end_in_one_line_that_shows_no_value(tmp_path_factory, text):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    folder = group_folder(tmp_path, yaml.safe_dump(VALID), secrets=text)
    result, spent = run_cli(tmp_path, "validate", "g")
    if result.exit_code:
        assert "secrets.yaml" in result.output, result.output
    assert_one_clear_line(result, spent, folder / ("secrets.yaml" if result.exit_code else "stack.yaml"),
                          hidden=(SECRET_VALUE, "hunter2"))


# ---------------------------------------------------------------------------------------------
# The classes of issue 17, one by one (the generators above cover them with variations)
# ---------------------------------------------------------------------------------------------

CA, _ = make_ca()


@pytest.mark.parametrize(("addition", "key", "what"), [
    ("tls:\n  acme_ca: \"https://x.org\\n}\\n:80 {\\nfile_server browse\\n}\"\n", "tls.acme_ca", "https:// URL"),
    ("backup:\n  enabled: true\n  repository: /srv/r\n  schedule: \"daily\\nUnit=rescue.service\"\n",
     "backup.schedule", "calendar"),
    ("admin:\n  user: \"admin\\n\"\n", "admin.user", "Unix user name"),
    ("admin:\n  user: www-data\n", "admin.user", "system account"),
    ("admin:\n  ssh_keys: [\"not a key\"]\n", "admin.ssh_keys[0]", "SSH public key"),
    ("admin:\n  ssh_keys: [\"/root/.ssh/id_ed25519\"]\n", "admin.ssh_keys[0]", "SSH public key"),
    ("matrix:\n  hostname: \"m.example.org\\n\"\n", "matrix.hostname", "DNS name"),
    ("nextcloud:\n  hostname: " + "a" * 250 + ".org\n", "nextcloud.hostname", "DNS name"),
    ("smtp:\n  host: smtp.example.org\n  port: true\n", "smtp.port", "valid integer"),
    ("extra_ca_certificates: [/etc/ssl/certs/ca-certificates.crt]\n", "extra_ca_certificates[0]", "outside the group"),
])
def test_each_class_of_the_issue_is_refused_naming_file_and_key(tmp_path, addition, key, what):
    folder = group_folder(tmp_path, yaml.safe_dump(VALID) + addition)
    result, spent = run_cli(tmp_path, "validate", "g")
    assert result.exit_code == 2 and what in result.output and f": {key}: " in result.output, result.output
    assert_one_clear_line(result, spent, folder / "stack.yaml", key)


@pytest.mark.parametrize(("old", "new", "key"), [
    ("203.0.113.7", "999.999.999.999", "hosts[0].address"),
    ("203.0.113.7", "'0'", "hosts[0].address"),
    ("203.0.113.7", "'server\\n'", "hosts[0].address"),
    ("name: vps", "name: \"vps\\n\"", "hosts[0].name"),
    ("name: vps", "name: vps\n  user: \"root\\nProxyCommand touch /tmp/pwned\"", "hosts[0].user"),
    ("name: vps", "name: vps\n  port: true", "hosts[0].port"),
    ("group: g", "group: \"g\\n\"", "group"),
    ("admin_email: a@example.org", "admin_email: \"a@example.org\\n\"", "admin_email"),
])
def test_silently_wrong_values_are_refused(tmp_path, old, new, key):
    folder = group_folder(tmp_path, yaml.safe_dump(VALID).replace(old, new))
    result, spent = run_cli(tmp_path, "validate", "g")
    assert result.exit_code == 2, result.output
    assert_one_clear_line(result, spent, folder / "stack.yaml", key)


def test_a_second_hosts_list_is_refused_naming_both_lines(tmp_path):
    folder = group_folder(tmp_path, yaml.safe_dump(VALID) + "hosts:\n  - {name: b, address: 203.0.113.8}\n")
    result, spent = run_cli(tmp_path, "validate", "g")
    assert "the key 'hosts' is written on lines" in result.output
    assert_one_clear_line(result, spent, folder / "stack.yaml")


@pytest.mark.parametrize("preset", ["/etc/passwd", "../../../../etc/hostname", "presets/chat", "chat.yaml",
                                    "../presets/chat", "versions"])
def test_a_preset_is_a_name_never_a_path(tmp_path, preset):
    folder = group_folder(tmp_path, yaml.safe_dump({**VALID, "preset": preset}))
    result, spent = run_cli(tmp_path, "validate", "g")
    assert result.exit_code == 2 and "unknown preset" in result.output
    assert_one_clear_line(result, spent, folder / "stack.yaml", "preset")


@pytest.mark.parametrize("special", ["fifo", "folder", "/dev/zero", "/dev/urandom"])
@pytest.mark.parametrize("file", ["stack.yaml", "secrets.yaml", "ca.pem"])
def test_special_files_are_refused_without_being_read(tmp_path, special, file):
    folder = group_folder(tmp_path, yaml.safe_dump({**VALID, "extra_ca_certificates": ["ca.pem"]}), secrets="")
    (folder / "ca.pem").write_text(CA)
    target = folder / file
    target.unlink()
    if special == "fifo":
        import os

        os.mkfifo(target)
    elif special == "folder":
        target.mkdir()
    elif not Path(special).exists():
        pytest.skip(f"{special} does not exist here")
    else:
        target.symlink_to(special)
    result, spent = run_cli(tmp_path, "validate", "g")
    assert result.exit_code == 2, result.output
    assert re.search("not a regular file|is a folder|leads outside the group's folder", result.output), result.output
    file_named = folder / ("stack.yaml" if file == "ca.pem" else file)
    assert_one_clear_line(result, spent, file_named)


@pytest.mark.parametrize(("content", "what"), [
    (b"turn_shared_secret: caf\xe9\n", "not UTF-8"),
    (b"turn_shared_secret: 12345\n", "turn_shared_secret: expected text, got a int"),
    (b"turn_shared_secret: [a, b]\n", "turn_shared_secret: expected text, got a list"),
    (b"turn_shared_secret:\n", "turn_shared_secret: expected text, got nothing"),
    (b"turn_shared_secret: \"a\\nb\"\n", "turn_shared_secret: a secret is one line"),
    (b"- a list\n", "expected `name: value` lines"),
])
def test_a_secrets_file_that_cannot_be_used_names_the_key_and_shows_no_value(tmp_path, content, what):
    group_folder(tmp_path, yaml.safe_dump(VALID), secrets=content)
    result, spent = run_cli(tmp_path, "validate", "g")
    assert result.exit_code == 2 and what in result.output, result.output
    assert_one_clear_line(result, spent, tmp_path / "g" / "secrets.yaml", hidden=("caf", "12345"))


def test_secrets_readable_by_others_are_refused_before_they_are_parsed(tmp_path):
    group_folder(tmp_path, yaml.safe_dump(VALID), secrets="x: [unclosed\n")
    (tmp_path / "g" / "secrets.yaml").chmod(0o644)
    result, _ = run_cli(tmp_path, "validate", "g")
    assert result.exit_code == 2 and "chmod 600" in result.output
    assert stat.S_IMODE((tmp_path / "g" / "secrets.yaml").stat().st_mode) == 0o644, "nothing is changed for the user"


def test_render_of_a_lone_surrogate_is_one_line(tmp_path):
    """YAML's escape for half a UTF-16 pair is not a character: the file is refused where it says so."""
    folder = group_folder(tmp_path, yaml.safe_dump(VALID) + "smtp:\n  host: smtp.example.org\n  username: \"a\\ud800\"\n")
    result, spent = run_cli(tmp_path, "render", "g", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "stack.yaml:10:" in result.output and "invalid Unicode" in result.output
    assert_one_clear_line(result, spent, folder / "stack.yaml")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# The loader alone: the promise that a ProfileError is all it raises
# ---------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=documents)
def test_loader_never_raises_anything_but_a_profile_error(tmp_path_factory, text):
    tmp_path = tmp_path_factory.mktemp("loader")
    path = group_folder(tmp_path, text) / "stack.yaml"
    try:
        profile = load_profile(path)
        # A profile that loads is planned offline too (sizing, rendering): same promise.
        plan_group(Group("g", tmp_path), profile, redacted(profile))
    except ProfileError as error:
        message = str(error)
        assert message.startswith(str(path)) or message.startswith(str(tmp_path))
        assert "\n" not in message, "errors are one line"


def test_the_generated_profiles_do_reach_planning(tmp_path: Path):
    """The strategies above start from this document: it must load and plan, or they test little."""
    path = group_folder(tmp_path, yaml.safe_dump(VALID)) / "stack.yaml"
    profile = load_profile(path)
    assert plan_group(Group("g", tmp_path), profile, redacted(profile))[0].files
    for field, (_, valid) in YAML_FIELDS.items():
        document = profile_with(field, valid)
        group_folder(tmp_path, yaml.safe_dump(document), secrets=PROVIDED)
        (tmp_path / "g" / "ca.pem").write_text(CA)
        result, _ = run_cli(tmp_path, "validate", "g")
        assert result.exit_code == 0, (field, result.output)


def test_bad_sizing_overrides_are_profile_errors(tmp_path: Path):
    path = tmp_path / "stack.yaml"
    for sizing in ({"bogus_field": 1}, {"php_fpm_max_children": -5}):
        path.write_text(yaml.safe_dump({**VALID, "hosts": [{**VALID["hosts"][0], "sizing": sizing}]}))
        try:  # refused by the model (a negative number) or by sizing (a name it does not know)
            profile = load_profile(path)
            plan_group(Group("g", tmp_path), profile, redacted(profile))
        except ProfileError as error:
            assert "hosts[0].sizing" in str(error)
        else:
            raise AssertionError(f"{sizing} was accepted")
