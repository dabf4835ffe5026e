"""Each host's own SSH key for an SFTP backup repository, derived from a secret of the group.

The key is never stored by itself: it is derived (HKDF-SHA256, then Ed25519) from
secrets.yaml's `backup_ssh_seed` and the host's name. So a host rebuilt after a disaster, or
the throwaway host of a restore drill, gets the very key the repository server already
accepts, and secrets.yaml stays the one file to keep safe.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import textwrap
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEED_SECRET = "backup_ssh_seed"


@dataclass(frozen=True)
class BackupKey:
    private: str  # OpenSSH private key file content
    public: str  # an authorized_keys line

    def __repr__(self) -> str:
        return f"BackupKey(public={self.public!r}, private hidden)"


def backup_key(seed: str, group: str, host: str) -> BackupKey:
    """The SSH key host `host` of `group` uses to reach its SFTP repository."""
    material = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"commonstack backup ssh key {group}/{host}".encode()
    ).derive(seed.encode())
    key = Ed25519PrivateKey.from_private_bytes(material)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    comment = f"commonstack-backup-{group}-{host}"
    public_line = f"ssh-ed25519 {base64.b64encode(_public_blob(public)).decode()} {comment}"
    return BackupKey(_openssh_private(material, public, comment), public_line)


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _public_blob(public: bytes) -> bytes:
    return _string(b"ssh-ed25519") + _string(public)


def _openssh_private(private: bytes, public: bytes, comment: str) -> str:
    """The unencrypted "openssh-key-v1" file (OpenSSH's PROTOCOL.key), written here rather than by
    cryptography because cryptography draws its check number at random: a key file that changed
    at every deploy would make the deploy never idempotent."""
    check = hashlib.sha256(private).digest()[:4]
    section = check + check + _string(b"ssh-ed25519") + _string(public) + _string(private + public)
    section += _string(comment.encode())
    section += bytes(range(1, 1 + (-len(section)) % 8))  # padding to the cipher's block size (8 for none)
    blob = b"openssh-key-v1\0" + _string(b"none") + _string(b"none") + _string(b"") + struct.pack(">I", 1)
    blob += _string(_public_blob(public)) + _string(section)
    body = "\n".join(textwrap.wrap(base64.b64encode(blob).decode(), 70))
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n"
