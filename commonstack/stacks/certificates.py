"""CA certificates a profile ships to its hosts: X.509 certificates in PEM, and nothing else.

A file copied from a colleague or exported from a browser may hold more than certificates (a key
next to its certificate, a whole bundle with notes). Only what parses as certificates is shipped,
re-encoded by `cryptography`, so a private key in the file can never reach a host: a file with
anything else in it is refused, naming what was found.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography is imported when a profile names certificates, not by every command
    from cryptography import x509

# A CA bundle of a whole operating system is about 200 kB.
MAX_BYTES = 512_000
_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,40})-----")
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]{1,76}={0,2}")


class NotCertificates(ValueError):
    """What the file holds instead of certificates: one line, quoting nothing from the file."""


def ca_certificates(text: str) -> str:
    """The certificates of a PEM file, re-encoded (one or more), or NotCertificates.

    Read line by line (a PEM file is lines): blank lines between blocks, and nothing else.
    """
    from cryptography.hazmat.primitives.serialization import Encoding
    found: list[x509.Certificate] = []
    kind, start, body = None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if kind is None:
            begin = _BEGIN.fullmatch(line)
            if begin:
                kind, start, body = begin.group(1), number, []
                if kind != "CERTIFICATE":
                    what = "a private key" if "PRIVATE KEY" in kind else f"a {kind} block"
                    raise NotCertificates(
                        f"holds {what} (line {number}); only certificates may go to the hosts: keep the "
                        "-----BEGIN CERTIFICATE----- blocks and remove the rest"
                    )
            elif line:
                raise NotCertificates(
                    f"has text that is not a certificate at line {number}; keep only the "
                    "-----BEGIN CERTIFICATE----- blocks"
                )
        elif line == f"-----END {kind}-----":
            found.append(_certificate(body, start))
            kind = None
        elif _BASE64_LINE.fullmatch(line):
            body.append(line)
        else:
            raise NotCertificates(f"the certificate that begins at line {start} is broken at line {number}")
    if kind is not None:
        raise NotCertificates(f"the certificate that begins at line {start} has no -----END CERTIFICATE-----")
    if not found:
        raise NotCertificates("holds no PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)")
    return "".join(cert.public_bytes(Encoding.PEM).decode("ascii") for cert in found)


def _certificate(body: list[str], line: int) -> x509.Certificate:
    from cryptography import x509
    pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(body) + "\n-----END CERTIFICATE-----\n"
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii"))
    except ValueError:
        raise NotCertificates(f"the block at line {line} does not parse as an X.509 certificate") from None
