"""Test certificates made on the spot with cryptography: a key and a self-signed certificate with the
names, validity and serial a test asks for (PEM text, as a kubernetes.io/tls Secret holds them)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: str
    private_key: str
    serial: int


def make_certificate(
    *,
    common_name: str,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    serial: int,
) -> IssuedCertificate:
    """A self-signed P-256 certificate; with no dns_names and no ip_addresses, no subjectAltName at all."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    alternatives: list[x509.GeneralName] = [x509.DNSName(dns) for dns in dns_names]
    alternatives += [x509.IPAddress(ipaddress.IPv4Address(address)) for address in ip_addresses]
    if alternatives:
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    certificate = builder.sign(key, hashes.SHA256())
    return IssuedCertificate(
        certificate=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        private_key=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        serial=serial,
    )
