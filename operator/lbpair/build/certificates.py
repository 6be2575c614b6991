"""Pure: what a TLS VirtualHost's certificate says about itself (validity, serial, names) and what that
means at a given moment (valid, expiring, expired), for its status and events.

A build reads the certificate once per Secret version (inspect_certificate is memoised on the PEM text
and the server names); the moment is an argument, so an idle pair's periodic pass notices a certificate
entering its warning window or expiring without any edit, and a test moves time with a fake clock.
Names are matched as RFC 6125 says: DNS subjectAltNames if there are any (the subject's CN only when there
are none), case-insensitively, a wildcard standing for exactly one whole left-most label; an IPv4 server
name needs an IP-address subjectAltName.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from lbpair.model.files import ManagedFile
from lbpair.model.status import CertificateStatus, Condition, timestamp
from lbpair.render.model import ObjectKey, VirtualHost

MAX_SUBJECT_NAMES = 64  # what status.certificate.subjectNames holds
INSPECTED_CERTIFICATES = 8192
"""Memoised inspections: one per TLS Secret version in use, so a pair with thousands of TLS hosts re-reads
none of them on a pass that changes none."""


@dataclass(frozen=True)
class Certificate:
    """The leaf certificate of a TLS Secret, against the server names of the VirtualHost that uses it."""

    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: str
    """Upper-case hex in whole bytes, as `openssl x509 -serial` prints it."""
    subject_names: tuple[str, ...]
    """DNS and IP subjectAltNames; the subject's CN when there are none."""
    uncovered: tuple[str, ...]
    """Server names no subject name matches."""

    def status(self) -> CertificateStatus:
        return CertificateStatus(
            not_before=timestamp(self.not_before),
            not_after=timestamp(self.not_after),
            serial=self.serial,
            subject_names=list(self.subject_names[:MAX_SUBJECT_NAMES]),
            covers_server_names=not self.uncovered,
            uncovered_server_names=list(self.uncovered),
        )


@dataclass(frozen=True)
class ExpiryCheck:
    """The moment a pass looks at certificates, and how long before notAfter it warns."""

    now: datetime.datetime
    warn_before: datetime.timedelta

    @classmethod
    def warning_days_ahead(cls, now: datetime.datetime, days: float) -> ExpiryCheck:
        return cls(now, datetime.timedelta(days=days))

    def conditions(self, certificate: Certificate) -> list[Condition]:
        """CertificateValid (False: expired, not yet valid, or a server name not covered) and
        CertificateExpiring (True from `warn_before` ahead of notAfter, reason CertificateExpired after)."""
        not_after = timestamp(certificate.not_after)
        expired = self.now >= certificate.not_after
        if expired:
            valid = (False, "CertificateExpired", f"expired {not_after}")
        elif self.now < certificate.not_before:
            valid = (False, "CertificateNotYetValid", f"not valid before {timestamp(certificate.not_before)}")
        elif certificate.uncovered:
            valid = (
                False,
                "CertificateNamesNotCovered",
                f"no subject name covers {', '.join(certificate.uncovered)}",
            )
        else:
            valid = (True, "Valid", f"valid until {not_after}")
        if expired:
            expiring = (True, "CertificateExpired", f"expired {not_after}")
        elif self.now >= certificate.not_after - self.warn_before:
            days = self.warn_before / datetime.timedelta(days=1)
            expiring = (
                True,
                "CertificateExpiresSoon",
                f"expires {not_after}, within the {days:g}-day warning window",
            )
        else:
            expiring = (False, "NotExpiring", f"expires {not_after}")
        at = timestamp(self.now)
        return [
            Condition.of("CertificateValid", *valid, at=at),
            Condition.of("CertificateExpiring", *expiring, at=at),
        ]


def certificates_of(
    hosts: Sequence[VirtualHost], files: Sequence[ManagedFile]
) -> Mapping[ObjectKey, Certificate]:
    """The certificate each TLS VirtualHost of a build serves."""
    contents = {file.path: file.content for file in files}
    return {
        host.source: inspect_certificate(contents[host.tls.certificate_path], tuple(host.server_names))
        for host in hosts
        if host.tls is not None and host.tls.certificate_path in contents
    }


@functools.lru_cache(maxsize=INSPECTED_CERTIFICATES)
def inspect_certificate(pem: str, server_names: tuple[str, ...]) -> Certificate:
    """The first certificate of `pem` (already checked by lbpair.build.tls), against `server_names`."""
    leaf = x509.load_pem_x509_certificates(pem.encode())[0]
    names = subject_names(leaf)
    return Certificate(
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        serial=openssl_serial(leaf.serial_number),
        subject_names=names,
        uncovered=tuple(name for name in server_names if not covers(names, name)),
    )


def openssl_serial(number: int) -> str:
    """Upper-case hex in whole bytes, as `openssl x509 -serial` prints it (0xA11CE is 0A11CE)."""
    digits = f"{number:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


def subject_names(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        alternatives = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(name.value) for name in common_names)
    dns = alternatives.get_values_for_type(x509.DNSName)
    addresses = [str(address) for address in alternatives.get_values_for_type(x509.IPAddress)]
    return (*dns, *addresses)


def covers(names: Sequence[str], server_name: str) -> bool:
    """Whether a certificate with these subject names is valid for `server_name` (RFC 6125 6.4)."""
    wanted = server_name.lower()
    if wanted.rpartition(".")[2].isdigit():  # an IPv4 address: no top-level domain is all digits
        return wanted in names
    for name in (name.lower() for name in names):
        if name == wanted:
            return True  # also a wildcard server name (nginx's *.example.com) against the same wildcard
        if name.startswith("*.") and not wanted.startswith("*."):
            label, _, rest = wanted.partition(".")
            if label and rest == name[2:]:
                return True
    return False
