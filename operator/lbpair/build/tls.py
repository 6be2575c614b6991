"""Checks of a TLS Secret's certificate and key before they go to the nodes (cryptography is used here and
in lbpair.build.certificates only).

nginx -t refuses the whole config when one certificate or key does not load or the two do not match, so a
tenant's bad Secret would otherwise block every other tenant's change on the pair. `tls.crt` must hold
certificates and nothing else: a private key pasted into it would land in a world-readable file.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization

MAX_PEM_BYTES = 1 << 20
_BASE64_LINES = r"(?:[A-Za-z0-9+/=]{1,128}\r?\n)+"
CERTIFICATES = re.compile(
    rf"(?:-----BEGIN CERTIFICATE-----\r?\n{_BASE64_LINES}-----END CERTIFICATE-----(?:\r?\n)*)+"
)
PRIVATE_KEY = re.compile(
    rf"-----BEGIN ((?:RSA |EC )?PRIVATE KEY)-----\r?\n{_BASE64_LINES}-----END \1-----(?:\r?\n)*"
)
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tls_pair_problems(certificate: str, private_key: str) -> list[str]:
    """What is wrong with a certificate chain and its key, as nginx would load them; [] if nothing."""
    problems = []
    if len(certificate) > MAX_PEM_BYTES or not CERTIFICATES.fullmatch(certificate):
        problems.append("tls.crt must hold PEM CERTIFICATE blocks only")
    if len(private_key) > MAX_PEM_BYTES or not PRIVATE_KEY.fullmatch(private_key):
        problems.append("tls.key must hold one unencrypted PEM private key")
    if problems:
        return problems
    try:
        leaf = x509.load_pem_x509_certificates(certificate.encode())[0]
    except ValueError:
        return ["tls.crt does not hold valid X.509 certificates"]
    try:
        key = serialization.load_pem_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError):  # TypeError: the key is encrypted
        return ["tls.key is not a valid unencrypted private key"]
    if key.public_key().public_bytes(*_SPKI) != leaf.public_key().public_bytes(*_SPKI):
        return ["tls.key does not match the first certificate of tls.crt"]
    return []
