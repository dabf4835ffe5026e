"""CA certificates named in a profile: only certificates reach the hosts, only from the group's folder."""

import datetime
import os
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from commonstack.errors import ProfileError
from commonstack.inventories.groups import Group
from commonstack.inventories.secrets import redacted
from commonstack.stacks.certificates import NotCertificates, ca_certificates
from commonstack.stacks.loader import load_profile
from commonstack.plan import CA_FOLDER, plan_group


def make_ca(name: str = "Test CA") -> tuple[str, str]:
    """A real self-signed CA: (certificate PEM, private key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


CERT, KEY = make_ca()
OTHER, _ = make_ca("Other CA")


def test_one_or_more_certificates_are_shipped_re_encoded():
    assert ca_certificates(CERT) == CERT
    assert ca_certificates(f"\n{CERT}\n\n{OTHER}") == CERT + OTHER
    assert ca_certificates(CERT.replace("\n", "\r\n")) == CERT


@pytest.mark.parametrize(("text", "what"), [
    (KEY + CERT, "holds a private key (line 1)"),
    (CERT + KEY, "holds a private key"),
    (CERT + KEY.replace("PRIVATE KEY", "EC PRIVATE KEY"), "holds a private key"),
    (CERT + KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"), "holds a private key"),
    (CERT.replace("CERTIFICATE", "CERTIFICATE REQUEST"), "a CERTIFICATE REQUEST block"),
    ("Issuer: Test CA\n" + CERT, "has text that is not a certificate at line 1"),
    (CERT + "-- notes --\n", "has text that is not a certificate"),
    ("", "holds no PEM certificate"),
    ("\x30\x82\x01\x0a", "has text that is not a certificate"),
    (CERT.replace("-----END CERTIFICATE-----\n", ""), "has no -----END CERTIFICATE-----"),
    ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "does not parse as an X.509 certificate"),
    ("-----BEGIN CERTIFICATE-----\n" * 20_000, "broken at line 2"),
])
def test_anything_but_certificates_is_refused(text, what):
    with pytest.raises(NotCertificates) as caught:
        ca_certificates(text)
    assert what in str(caught.value)
    assert "MI" not in str(caught.value), "no part of the file is quoted"


BASE = {"preset": "chat", "group": "g", "domain": "example.org", "admin_email": "a@example.org",
        "hosts": [{"name": "vps", "address": "203.0.113.7"}]}


def plan_with(tmp_path: Path, **overrides):
    folder = tmp_path / "g"
    folder.mkdir(exist_ok=True)
    (folder / "stack.yaml").write_text(yaml.safe_dump({**BASE, **overrides}))
    profile = load_profile(folder / "stack.yaml")
    return plan_group(Group("g", tmp_path), profile, redacted(profile))


def error_of(tmp_path: Path, **overrides) -> str:
    with pytest.raises(ProfileError) as caught:
        plan_with(tmp_path, **overrides)
    return str(caught.value)


def test_a_bundle_with_a_key_never_reaches_a_plan(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "corp.pem").write_text(CERT + KEY)
    message = error_of(tmp_path, extra_ca_certificates=["corp.pem"])
    assert "extra_ca_certificates[0]" in message and "corp.pem: holds a private key" in message


def test_the_certificates_are_what_the_hosts_get(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "corp.pem").write_text("\n" + CERT)
    files = {f.path: f.content for f in plan_with(tmp_path, extra_ca_certificates=["corp.pem"])[0].files}
    assert files[f"{CA_FOLDER}/extra-0.crt"] == CERT


@pytest.mark.parametrize("path", ["/etc/ssl/certs/ca-certificates.crt", "/nonexistent/x.pem", "../x.pem",
                                  "sub/../../x.pem"])
def test_paths_outside_the_group_folder_are_refused_alike_whether_they_exist_or_not(tmp_path, path):
    message = error_of(tmp_path, extra_ca_certificates=[path])
    assert "is outside the group's folder" in message
    assert "not found" not in message and "No such file" not in message


def test_a_link_out_of_the_group_folder_is_refused_before_it_is_followed(tmp_path):
    (tmp_path / "g").mkdir()
    for name, target in (("exists.pem", "/etc/hostname"), ("missing.pem", "/nonexistent/x.pem")):
        os.symlink(target, tmp_path / "g" / name)
        message = error_of(tmp_path, extra_ca_certificates=[name])
        assert "leads outside the group's folder" in message


def test_a_loop_of_links_is_one_line(tmp_path):
    (tmp_path / "g").mkdir()
    os.symlink("b.pem", tmp_path / "g" / "a.pem")
    os.symlink("a.pem", tmp_path / "g" / "b.pem")
    assert "loop of symbolic links" in error_of(tmp_path, extra_ca_certificates=["a.pem"])


def test_special_files_and_big_files_are_refused_unread(tmp_path):
    (tmp_path / "g").mkdir()
    os.mkfifo(tmp_path / "g" / "fifo.pem")
    assert "not a regular file" in error_of(tmp_path, extra_ca_certificates=["fifo.pem"])
    with (tmp_path / "g" / "big.pem").open("wb") as handle:
        handle.truncate(2 * 1000**3)
    assert "larger than" in error_of(tmp_path, extra_ca_certificates=["big.pem"])
    (tmp_path / "g" / "certs").mkdir()
    assert "is a folder" in error_of(tmp_path, extra_ca_certificates=["certs"])


def test_the_acme_root_is_checked_the_same_way(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "pebble.pem").write_text(KEY)
    tls = {"mode": "acme", "acme_ca": "https://10.231.0.1:14000/dir", "acme_ca_root": "pebble.pem"}
    assert "tls.acme_ca_root" in error_of(tmp_path, tls=tls)
    (tmp_path / "g" / "pebble.pem").write_text(CERT)
    files = {f.path: f.content for f in plan_with(tmp_path, tls=tls)[0].files}
    assert files["/etc/caddy/acme-ca-root.pem"] == CERT
