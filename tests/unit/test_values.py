"""The grammar of each profile value: what is accepted as written, what is refused, and that a
refusal quotes the value short and on one line."""

import shutil
import subprocess
from pathlib import Path

import pytest

from commonstack.stacks import values

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICpuz2tQFv6EjKDV2pnnRA2SPpnN5OQGcUDp/opY7rky"
# A security-key (FIDO) ed25519 key, from OpenSSH's regression tests.
SK_ED25519 = ("sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIBMaUvIr0pxHEA0yAJPaaAuK"
              "zJfNbVv9GbsKXsMhnrClAAAABHNzaDo=")
# Characters that end a line or a token in one of the formats values are written into.
HOSTILE = ["\n", "\r", "\x00", "\x1b", "\u2028", "\u202e", "\t", "\ud800", " ", '"', "`", "{", "}", "$", "\\", ";"]


def refused(check, value) -> str:
    with pytest.raises(ValueError) as caught:
        check(value)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message
    return message


@pytest.mark.parametrize("value", [
    "example.org", "Example.ORG", "example.org.", "xn--bcher-kva.example", "a-b.c-d.example.org",
    "a" * 63 + ".org", ".".join(["a" * 63] * 3) + "." + "b" * 61,  # 253 characters
])
def test_domains_per_rfc_1123(value):
    assert values.domain(value) == value.lower().removesuffix(".")


@pytest.mark.parametrize("value", [
    "", "org", "example", "-a.org", "a-.org", "a..org", "a_b.org", "example.org..", "1.2.3.4", "example.123",
    "a" * 64 + ".org", ".".join(["a" * 63] * 3) + "." + "b" * 62,  # 254 characters
    "*.example.org", "exa mple.org", "ex\u00e4mple.org",
    *(f"example.org{c}" for c in HOSTILE), *(f"exa{c}mple.org" for c in HOSTILE),
])
def test_domains_refused(value):
    assert "expected a DNS name" in refused(values.domain, value)


@pytest.mark.parametrize(("value", "expected"), [
    ("203.0.113.7", "203.0.113.7"), ("2001:db8::7", "2001:db8::7"), ("2001:DB8:0::7", "2001:db8::7"),
    ("vps.example.org", "vps.example.org"), ("pi", "pi"), ("Pi-4.Home.Arpa", "pi-4.home.arpa"),
    ("cafe.de", "cafe.de"), ("::1", "::1"),
])
def test_addresses(value, expected):
    assert values.address(value) == expected


@pytest.mark.parametrize("value", [
    "999.999.999.999", "0", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "0.0.0.0", "::", "224.0.0.1",
    "fe80::1%eth0", "fe80::1%\n", "host:22", "user@host", "", "a" * 254, "-host",
    *(f"203.0.113.7{c}" for c in HOSTILE), *(f"server{c}" for c in HOSTILE),
])
def test_addresses_refused(value):
    refused(values.address, value)


@pytest.mark.parametrize("value", ["root", "admin", "_apt", "deploy-bot", "a" * 32, "user_1"])
def test_unix_users(value):
    assert values.unix_user(value) == value


@pytest.mark.parametrize("value", ["", "Admin", "1admin", "a" * 33, "ad:min", "a$", "-admin", "a.b",
                                   *(f"admin{c}" for c in HOSTILE)])
def test_unix_users_refused(value):
    assert "Unix user name" in refused(values.unix_user, value)


@pytest.mark.parametrize("value", ["admin@example.org", "first.last+tag@mail.example.org", "o'brien@example.org",
                                   "it@charity.example.org", "a@b.co"])
def test_emails(value):
    assert values.email(value) == value


@pytest.mark.parametrize("value", [
    "nobody", "@example.org", "a@", "a@b", "a@@b.org", "a b@example.org", ".a@example.org", "a..b@example.org",
    "a{$HOME}@example.org", "a`id`@example.org", "a$(id)@example.org", "a@-x.org", "a" * 65 + "@example.org",
    *(f"admin@example.org{c}" for c in HOSTILE),
])
def test_emails_refused(value):
    assert "expected an email address" in refused(values.email, value)


@pytest.mark.parametrize("value", [
    "https://acme-v02.api.letsencrypt.org/directory", "https://10.231.0.1:14000/dir", "https://[2001:db8::1]/dir",
    "https://pebble:14000/dir", "https://ca.example.org/acme/acme/directory?x=1",
])
def test_https_urls(value):
    assert values.https_url(value) == value


@pytest.mark.parametrize("value", [
    "http://acme.example.org/dir", "https://", "https://user:pw@ca.example.org/", "https://ca.example.org:99999/",
    "https://ca.example.org:0/", "https://ca.example.org/dir#frag", "https://ca.example.org/{$HOME}",
    "https://ca.example.org/a b", "https://999.1.1.1/", "https://ca_x.example.org/", "ftp://x.org",
    "https://x.org\n}\n:80 {\n\tfile_server browse\n}", *(f"https://ca.example.org/dir{c}" for c in HOSTILE if c != ";"),  # ; is a URL character
])
def test_https_urls_refused(value):
    assert "expected an https:// URL" in refused(values.https_url, value)


@pytest.mark.parametrize("value", [
    "sftp:restic@backup.example.net:/srv/restic/charity", "sftp://restic@backup.example.net:2222//srv/restic",
    "/srv/backup", "local:/mnt/usb/restic", "rest:https://user:pw@backup.example.net:8000/charity/",
    "rest:http://192.168.1.5:8000/", "s3:s3.amazonaws.com/bucket/restic", "b2:bucket:path",
    "rclone:remote:path",
])
def test_restic_repositories(value):
    assert values.restic_repository(value) == value


@pytest.mark.parametrize("value", [
    "", "restic", "ftp://x.org/r", "relative/path", "rest:ftp://x.org/", "rest:https:///", "sftp:",
    "/srv/$HOME", "/srv/`id`", '/srv/"x"', "/srv/a b", "/srv/" + "a" * 1100,
    *(f"/srv/restic{c}" for c in HOSTILE),
])
def test_restic_repositories_refused(value):
    assert "expected a restic repository" in refused(values.restic_repository, value)


@pytest.mark.parametrize("value", [
    "*-*-* 03:30:00", "daily", "weekly", "Mon..Fri *-*-* 03:00", "Sat,Sun 04:00", "*-*-1/2 02:00:00",
    "2024-*-* 01:00", "*-*~1 05:00", "03:30", "*-*-* 03:30:00 UTC", "Mon *-*-* 03:00 Europe/Berlin",
])
def test_calendar_expressions(value):
    assert values.calendar(value) == value


@pytest.mark.parametrize("value", [
    "", "never", "daily\nUnit=rescue.service", "*-*-* 03:30:00\n", "03:30 Mon", "*-*-*  03:30", " daily",
    "Mon%n", "*-*-* 03:30:00 ;rm", "now", "*-*-* 03:30:00 UTC UTC", "x" * 101,
    *(f"*-*-* 03:30:00{c}" for c in HOSTILE),
])
def test_calendar_expressions_refused(value):
    refused(values.calendar, value)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed (apt-get install systemd)")
@pytest.mark.parametrize("value", ["*-*-* 99:00:00", "*-13-01 00:00", "Mon..Fri *-*-31/0 00:00"])
def test_calendar_expressions_systemd_refuses(value):
    assert "systemd-analyze calendar refuses" in refused(values.calendar, value)


def test_calendar_grammar_accepts_what_systemd_accepts_in_the_tests():
    """The grammar is the only check where systemd is missing: it must not refuse what systemd takes."""
    for value in ("*-*-* 03:30:00", "Mon..Fri *-*-* 03:00", "*-*~1 05:00", "Sat,Sun 04:00"):
        if shutil.which("systemd-analyze"):
            subprocess.run(["systemd-analyze", "calendar", value], check=True, capture_output=True)
        values.calendar(value)


def test_ssh_public_keys(tmp_path):
    assert values.ssh_public_key(ED25519 + " volunteer@laptop") == ED25519 + " volunteer@laptop"
    assert values.ssh_public_key(f"  {ED25519}   a comment with spaces") == ED25519 + " a comment with spaces"
    assert values.ssh_public_key(SK_ED25519) == SK_ED25519
    keygen = shutil.which("ssh-keygen")
    if keygen:
        for kind, bits in (("rsa", "3072"), ("ecdsa", "384")):
            subprocess.run([keygen, "-q", "-t", kind, "-b", bits, "-N", "", "-f", tmp_path / kind], check=True)
            line = (tmp_path / f"{kind}.pub").read_text().strip()
            assert values.ssh_public_key(line) == line


@pytest.mark.parametrize("value", [
    "not a key", "", "ssh-ed25519", "ssh-ed25519 !!!!", "ssh-ed25519 AAAA", ED25519[:-4],
    ED25519.replace("ssh-ed25519", "ssh-rsa"), ED25519.replace("ssh-ed25519", "ssh-dss"),
    f'command="id" {ED25519}', f"from=\"*\" {ED25519}", "/home/me/.ssh/id_ed25519", "/etc/shadow",
    ED25519 + " comment\nssh-ed25519 AAAA evil", ED25519 + "\n", ED25519 + " \x1b[2J",
])
def test_ssh_public_keys_refused(value):
    refused(values.ssh_public_key, value)


def test_weak_rsa_keys_are_refused(tmp_path):
    keygen = shutil.which("ssh-keygen")
    if not keygen:
        pytest.skip("ssh-keygen is not installed (apt-get install openssh-client)")
    subprocess.run([keygen, "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", tmp_path / "weak"], check=True)
    assert "too weak" in refused(values.ssh_public_key, (tmp_path / "weak.pub").read_text().strip())


@pytest.mark.parametrize("value", ["ca.pem", "certs/corp-ca.pem", "pebble.pem", "a b/c.pem"])
def test_group_files(value):
    assert values.group_file(value) == Path(value)


@pytest.mark.parametrize("value", ["/etc/ssl/certs/ca.pem", "../other/ca.pem", "certs/../../x", "~/ca.pem", "",
                                   "ca.pem\n", "ca\x00.pem", 'c"a.pem', "c\\a.pem", "x" * 1100])
def test_group_files_refused(value):
    refused(values.group_file, value)


def test_excerpts_are_short_and_one_line():
    message = refused(values.domain, "x\n" * 500_000)
    assert len(message) < 200 and "..." in message
