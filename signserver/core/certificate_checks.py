"""The checks a certificate must pass before it becomes the certificate of an HSM key.

An imported certificate is rejected unless it parses, contains the key's own
public key, is valid now, is an end-entity certificate whose key usage
allows signing, and chains to a configured trust root. Each failure has its
own error code. The path is built and validated with pyhanko-certvalidator
without fetching anything, so revocation is not checked here: the signing
paths check it before every signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key
from cryptography.x509.oid import NameOID
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import ExpiredError, NotYetValidError, PathBuildingError, PathValidationError

from signserver.signing.errors import CertificateExpired, CertificateNotYetValid, CertificateUntrusted

from .key_errors import CertificateInvalid, CertificateKeyMismatch, CertificateKeyUsage

__all__ = ["CheckedCertificate", "parse_certificates", "check_certificate_for_key", "certificate_subject"]


@dataclass(frozen=True)
class CheckedCertificate:
    """A certificate that passed every check, with the validated path to its trust root."""

    certificate: x509.Certificate
    # The issuer first and the trust root last, as the signature formats embed them.
    chain: tuple[x509.Certificate, ...]

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")

    @property
    def subject(self) -> str:
        return certificate_subject(self.certificate)

    def chain_pem(self) -> str:
        return "".join(certificate.public_bytes(Encoding.PEM).decode() for certificate in self.chain)


def parse_certificates(data: bytes, field: str) -> list[x509.Certificate]:
    """Parse one or more PEM certificates, or one DER certificate, or raise CertificateInvalid naming ``field``."""
    try:
        if b"-----BEGIN" in data:
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
        # cryptography decodes names and extensions on first access. Decoding them here
        # reports a malformed one as invalid input instead of an internal error later.
        for certificate in certificates:
            certificate.subject.rfc4514_string()
            certificate.issuer.rfc4514_string()
            list(certificate.extensions)
    except ValueError as exc:
        raise CertificateInvalid(field=field, reason=str(exc)[:200]) from None
    if not certificates:
        raise CertificateInvalid(field=field, reason="no certificate found")
    return certificates


async def check_certificate_for_key(
    certificate_data: bytes,
    chain_data: bytes | None,
    public_key_der: bytes,
    key_id: str,
    trust_roots: Sequence[asn1_x509.Certificate],
    now: datetime,
) -> CheckedCertificate:
    """Run every import check on a certificate for the key whose SPKI DER is ``public_key_der``.

    ``certificate_data`` is the certificate in PEM or DER. Further PEM
    certificates after it count as chain certificates, like those of
    ``chain_data``. The checks run in this order: parse, public key, validity
    period, key usage, path to a trust root.
    """
    certificates = parse_certificates(certificate_data, "certificate")
    certificate, extra = certificates[0], certificates[1:]
    chain = [*extra, *(parse_certificates(chain_data, "chain") if chain_data else [])]

    _check_public_key(certificate, public_key_der, key_id)
    _check_validity(certificate, now)
    _check_key_usage(certificate)
    path = await _validate_path(certificate, chain, trust_roots, now)
    return CheckedCertificate(certificate=certificate, chain=path)


def certificate_subject(certificate: x509.Certificate) -> str:
    """Return the certificate's common name, or its whole subject when it has none."""
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common_names:
        return str(common_names[-1].value)
    return certificate.subject.rfc4514_string()


def _canonical_public_key(der: bytes) -> bytes:
    return load_der_public_key(der).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _check_public_key(certificate: x509.Certificate, public_key_der: bytes, key_id: str) -> None:
    # Both sides are re-encoded, so that an RSA algorithm identifier with or
    # without NULL parameters, for example, still compares equal.
    try:
        certified = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, UnsupportedAlgorithm):
        # A key type that cryptography cannot load is in any case not the HSM's RSA or EC key.
        certified = b""
    if certified != _canonical_public_key(public_key_der):
        raise CertificateKeyMismatch(subject=certificate_subject(certificate), key_id=key_id)


def _check_validity(certificate: x509.Certificate, now: datetime) -> None:
    if now < certificate.not_valid_before_utc:
        raise CertificateNotYetValid(subject=certificate_subject(certificate),
                                     valid_from=certificate.not_valid_before_utc.isoformat())
    if now > certificate.not_valid_after_utc:
        raise CertificateExpired(subject=certificate_subject(certificate),
                                 valid_to=certificate.not_valid_after_utc.isoformat())


def _check_key_usage(certificate: x509.Certificate) -> None:
    """Require an end-entity certificate whose key usage includes digitalSignature or nonRepudiation."""
    subject = certificate_subject(certificate)
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise CertificateKeyUsage(subject=subject, found="basicConstraints cA=TRUE")

    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateKeyUsage(subject=subject, found="no keyUsage extension") from None
    if not (usage.digital_signature or usage.content_commitment):
        raise CertificateKeyUsage(subject=subject, found="keyUsage " + (_usage_names(usage) or "(empty)"))


def _usage_names(usage: x509.KeyUsage) -> str:
    names = {
        "digital_signature": "digitalSignature",
        "content_commitment": "nonRepudiation",
        "key_encipherment": "keyEncipherment",
        "data_encipherment": "dataEncipherment",
        "key_agreement": "keyAgreement",
        "key_cert_sign": "keyCertSign",
        "crl_sign": "cRLSign",
    }
    return ", ".join(name for attribute, name in names.items() if getattr(usage, attribute))


async def _validate_path(certificate: x509.Certificate, chain: Sequence[x509.Certificate],
                         trust_roots: Sequence[asn1_x509.Certificate], now: datetime) -> tuple[x509.Certificate, ...]:
    """Build and validate a path to one of ``trust_roots`` and return it without the leaf, issuer first."""
    subject = certificate_subject(certificate)
    leaf = _to_asn1(certificate)
    intermediates = [_to_asn1(item) for item in chain]
    context = ValidationContext(
        trust_roots=list(trust_roots),
        other_certs=intermediates,
        moment=now,
        allow_fetching=False,
        # Nothing is fetched, so revocation stays unchecked here. The signing paths check it.
        revocation_mode="soft-fail",
    )
    validator = CertificateValidator(leaf, intermediate_certs=intermediates, validation_context=context)
    try:
        path = await validator.async_validate_path()
    except ExpiredError as exc:
        raise CertificateExpired(subject=_failed_subject(exc, now) or subject,
                                 valid_to=exc.expired_dt.isoformat()) from None
    except NotYetValidError as exc:
        raise CertificateNotYetValid(subject=_failed_subject(exc, now) or subject,
                                     valid_from=exc.valid_from.isoformat()) from None
    except (PathBuildingError, PathValidationError, ValueError) as exc:
        # ValueError: asn1crypto could not decode a certificate of the chain.
        raise CertificateUntrusted(subject=subject, reason=str(exc)[:300]) from None

    authorities = [x509.load_der_x509_certificate(item.dump()) for item in path.iter_certs(include_root=True)]
    return tuple(reversed(authorities[:-1]))


def _failed_subject(error: PathValidationError, now: datetime) -> str | None:
    """Return the subject of the certificate in the failed path whose validity period does not contain ``now``."""
    for item in error.current_path.iter_certs(include_root=True):
        validity = item["tbs_certificate"]["validity"]
        if not validity["not_before"].native <= now <= validity["not_after"].native:
            return certificate_subject(x509.load_der_x509_certificate(item.dump()))
    return None


def _to_asn1(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))
