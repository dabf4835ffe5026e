"""`commonstack runbook`: the handover document of every preset, in Markdown and HTML, with the
facts a next volunteer needs and never a secret value; and a look at the HTML in a real browser
(headless Chromium) where ./dev installed one."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from commonstack.cli import main
from commonstack.inventories.groups import Group
from commonstack.inventories.groups import group as named_group
from commonstack.inventories.last_check import load_last_check, save_last_check
from commonstack.stacks.loader import preset_names
from commonstack.stacks.versions import versions

PASSWORD = "relay-pw-Zq81xK"
REPOSITORY_PASSWORD = "rest-pw-77Hq"
HOSTS = {"split": ["home=pi@192.168.1.20", "vps=root@203.0.113.7"]}


def make_group(tmp_path: Path, preset: str) -> Path:
    """A group of the preset with SMTP, backups to a rest-server whose URL holds a password, and a
    saved check whose messages quoted secrets (as a careless check might)."""
    inventories = tmp_path / "inv"
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    hosts = [item for spec in HOSTS.get(preset, ["root@203.0.113.7"]) for item in ("--host", spec)]
    result = CliRunner().invoke(main, [
        "--inventories", str(inventories), "init", "coop", "--preset", preset, "--domain", "coop.example.org",
        *hosts, "--smtp-host", "smtp.example.net", "--smtp-user", "u", "--smtp-password-file", str(password_file)])
    assert result.exit_code == 0, result.output
    folder = inventories / "coop"
    with (folder / "stack.yaml").open("a") as stack:
        stack.write(yaml.safe_dump({"backup": {
            "enabled": True, "repository": f"rest:https://coop:{REPOSITORY_PASSWORD}@backup.example.net/coop/"}}))
    secrets = secret_values(folder)
    results = [
        {"host": "server", "layer": "base", "check": "ssh is hardened", "outcome": "passed", "message": ""},
        {"host": "server", "layer": "caddy", "check": "certificates are fresh", "outcome": "failed",
         "message": f"the key {secrets[0]} expired"},
        {"host": "server", "layer": "caddy", "check": "every hostname points at this host",
         "outcome": "skipped", "message": "names are in no DNS"},
    ]
    save_last_check(Group("coop", inventories).last_check_file, results, f"commonstack check coop --x {secrets[-1]}",
                    secrets)
    return inventories


def secret_values(folder: Path) -> list[str]:
    values = yaml.safe_load((folder / "secrets.yaml").read_text()).values()
    return [*values, REPOSITORY_PASSWORD]


def write(inventories: Path, *extra: str) -> tuple[str, str]:
    result = CliRunner().invoke(main, ["--inventories", str(inventories), "runbook", "coop", *extra])
    assert result.exit_code == 0, result.output
    out = Path(extra[1]) if extra else inventories / "coop"
    return (out / "runbook.md").read_text(), (out / "runbook.html").read_text()


@pytest.mark.parametrize("preset", preset_names())
def test_the_runbook_of_every_preset_has_no_secret(tmp_path, preset):
    inventories = make_group(tmp_path, preset)
    secrets = secret_values(inventories / "coop")
    assert PASSWORD in secrets and len(secrets) > 1
    for text in write(inventories):
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{len(leaked)} secret value(s) in the runbook"


@pytest.mark.parametrize("preset", preset_names())
def test_the_runbook_says_what_runs_where_and_how_to_look_after_it(tmp_path, preset):
    inventories = make_group(tmp_path, preset)
    group = named_group("coop", inventories)
    profile = group.load()
    markdown, html = write(inventories, "--out", str(tmp_path / "handover"))
    for text in (markdown, html):
        for host in profile.hosts:
            assert host.address in text
        for hostname in profile.hostnames().values():
            assert f"https://{hostname}" in text
        for command in ("check coop", "backup coop", "backups coop", "restore coop --snapshot ID",
                        "upgrade coop --list", "upgrade coop", "plan coop", "deploy coop"):
            assert f"commonstack {command}" in text, command
        assert str(group.secrets_file) in text
        assert "rest:https://coop:********@backup.example.net/coop/" in text
        assert "1 passed" in text and "1 failed" in text and "1 skipped" in text
        assert "names are in no DNS" in text
        if profile.matrix.enabled:
            assert versions().synapse.version in text and "@admin:coop.example.org" in text
        if profile.nextcloud.enabled:
            assert versions().nextcloud.version in text and "nextcloud_admin_password" in text
        if profile.discourse.enabled:
            assert versions().discourse_docker.commit[:12] in text
    assert not (inventories / "coop" / "runbook.md").exists()  # --out: only there


def test_the_html_is_well_formed_and_has_no_scripts(tmp_path):
    _, html = write(make_group(tmp_path, "full"))
    parser = TagBalance()
    parser.feed(html)
    assert parser.open == [] and "script" not in parser.seen
    assert "<style>" in html and "http" not in html.split("<style>")[1].split("</style>")[0]  # nothing fetched


class TagBalance(HTMLParser):
    VOID = {"meta", "br", "img", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.seen: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.seen.add(tag)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def test_without_a_saved_check_the_runbook_says_how_to_get_one(tmp_path):
    inventories = make_group(tmp_path, "chat")
    Group("coop", inventories).last_check_file.unlink()
    markdown, _ = write(inventories)
    assert "No health check saved yet: run `commonstack check coop`" in markdown


def test_a_saved_check_is_redacted_and_a_damaged_one_is_ignored(tmp_path):
    path = tmp_path / "last-check.json"
    save_last_check(path, [{"host": "h", "layer": "s", "check": "c", "outcome": "failed", "message": "pw is hunter22"}],
                    "commonstack check g", ["hunter22"])
    assert "hunter22" not in path.read_text()
    assert load_last_check(path).of("failed")[0]["message"] == "pw is ********"
    path.write_text("{not json")
    assert load_last_check(path) is None


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (./dev installs Debian's chromium)")
def test_the_html_renders_in_a_real_browser(tmp_path):
    """Headless Chromium (flags that work on a machine with a closed network) draws the page."""
    write(make_group(tmp_path, "split"))
    page = tmp_path / "inv" / "coop" / "runbook.html"
    shot = tmp_path / "runbook.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1400", f"--screenshot={shot}",
         page.as_uri()],
        check=True, capture_output=True, timeout=60,
    )
    width, height, colours = png_summary(shot.read_bytes())
    assert (width, height) == (1100, 1400)
    assert colours > 20, "the page looks blank"


def png_summary(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the first 200 rows): enough to tell a page from a blank."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, offset = b"", 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            chunks += data[offset + 8:offset + 8 + length]
        offset += 12 + length
    pixels = zlib.decompress(chunks)
    return width, height, len(set(pixels[: width * 4 * 200]))


def test_the_admin_accounts_are_the_ones_the_deploys_create():
    from commonstack.deploys.nextcloud import ADMIN_USER
    from commonstack.deploys.synapse import ADMIN_LOCALPART
    from commonstack.runbook.document import MATRIX_ADMIN, NEXTCLOUD_ADMIN

    assert (NEXTCLOUD_ADMIN, MATRIX_ADMIN) == (ADMIN_USER, ADMIN_LOCALPART)
