"""Demo PKI used in tests and demos in place of the Vietnamese Government CA.

It builds a two-level hierarchy (root CA, issuing CA with ``pathLenConstraint``
0) and issues end-entity certificates for keys that live elsewhere, usually in
the HSM: document signing certificates for officials and agency seals, and
RFC 3161 time-stamping certificates. Profiles follow RFC 5280; the
time-stamping profile follows RFC 3161 section 2.3. Given ``RevocationUrls``,
a certificate names its issuer's OCSP responder and certificate in the
authority information access extension (RFC 5280 section 4.2.2.1) and its
issuer's CRL in the CRL distribution points (section 4.2.1.13). The OCSP
responder certificate is a delegated one (RFC 6960 section 4.2.2.2).

The CA keys are software RSA keys. They play the part of an external CA, so
they are never service keys and must not be used outside tests and demos.
"""

from __future__ import annotations

import datetime
import os
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID, ObjectIdentifier

__all__ = [
    "CertificateAuthority",
    "SubjectSpec",
    "RevocationUrls",
    "ID_KP_DOCUMENT_SIGNING",
    "create_root_ca",
    "create_issuing_ca",
    "issue_signing_certificate",
    "issue_tsa_certificate",
    "issue_ocsp_responder_certificate",
    "reissue_certificate",
    "write_pem",
    "write_private_key",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "write_file_atomically",
]

# id-kp-documentSigning, RFC 9336.
ID_KP_DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")

CA_KEY_SIZE = 3072
# Certificates start one hour in the past so that a verifier whose clock runs
# slightly behind still accepts a certificate issued a moment ago.
BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class CertificateAuthority:
    """A demo CA: its certificate and its software RSA private key."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey


@dataclass(frozen=True)
class RevocationUrls:
    """URLs of the OCSP responder, the CRL and the certificate of a certificate's issuer.

    Every URL must be http or https, because relying parties such as pyHanko
    and OpenSSL fetch nothing else. ``None`` leaves that entry out.
    """

    ocsp_url: str | None = None
    crl_url: str | None = None
    ca_issuers_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("ocsp_url", "crl_url", "ca_issuers_url"):
            url = getattr(self, name)
            if url is not None and not url.lower().startswith(("http://", "https://")):
                raise ValueError(f"RevocationUrls.{name} must be an http or https URL, got {url!r}")


@dataclass(frozen=True)
class SubjectSpec:
    """Subject distinguished name of an end-entity certificate.

    ``user_id`` goes into the UID attribute (0.9.2342.19200300.100.1.1), where
    Vietnamese CAs put the holder's identity number, e.g. ``"CCCD:001085012345"``.
    """

    common_name: str
    organization: str
    organizational_unit: str | None = None
    locality: str | None = None
    state: str | None = None
    country: str = "VN"
    title: str | None = None
    user_id: str | None = None

    def __post_init__(self) -> None:
        if not self.common_name.strip():
            raise ValueError("SubjectSpec.common_name is empty, set it to the holder's full name")
        if not self.organization.strip():
            raise ValueError("SubjectSpec.organization is empty, set it to the agency name")
        if len(self.country) != 2 or not self.country.isascii() or not self.country.isalpha():
            raise ValueError(
                f"SubjectSpec.country must be a two-letter ISO 3166 code such as 'VN', got {self.country!r}"
            )

    def to_name(self) -> x509.Name:
        """Build the X.509 name, most general attribute first, strings in NFC."""
        attributes = [
            (NameOID.COUNTRY_NAME, self.country.upper()),
            (NameOID.STATE_OR_PROVINCE_NAME, self.state),
            (NameOID.LOCALITY_NAME, self.locality),
            (NameOID.ORGANIZATION_NAME, self.organization),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, self.organizational_unit),
            (NameOID.TITLE, self.title),
            (NameOID.COMMON_NAME, self.common_name),
            (NameOID.USER_ID, self.user_id),
        ]
        return _build_name(attributes)


def create_root_ca(
    common_name: str, organization: str, *, validity_days: int = 3650
) -> CertificateAuthority:
    """Create a self-signed RSA-3072 root CA without a path length limit."""
    _check_validity_days(validity_days)
    key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_SIZE)
    name = _ca_name(common_name, organization)
    not_before = _now() - BACKDATE

    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    certificate = builder.sign(key, hashes.SHA256())
    return CertificateAuthority(certificate=certificate, private_key=key)


def create_issuing_ca(
    root: CertificateAuthority,
    common_name: str,
    organization: str,
    *,
    validity_days: int = 1825,
    revocation_urls: RevocationUrls | None = None,
) -> CertificateAuthority:
    """Create an RSA-3072 issuing CA under ``root`` that may sign only end-entity certificates.

    ``revocation_urls`` are the root's: its CRL and its certificate.
    """
    _check_validity_days(validity_days)
    key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_SIZE)

    builder = _builder_under(root, key.public_key(), _ca_name(common_name, organization), validity_days)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    builder = builder.add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
    builder = _add_revocation_urls(builder, revocation_urls)
    certificate = builder.sign(root.private_key, hashes.SHA256())
    return CertificateAuthority(certificate=certificate, private_key=key)


def issue_signing_certificate(
    ca: CertificateAuthority,
    public_key_der: bytes,
    subject: SubjectSpec,
    *,
    validity_days: int = 730,
    revocation_urls: RevocationUrls | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    """Issue a document signing certificate for an RSA or EC public key.

    ``public_key_der`` is a DER SubjectPublicKeyInfo, as read from the HSM.
    Key usage is digitalSignature and nonRepudiation (contentCommitment), and
    the extended key usage lists id-kp-documentSigning and emailProtection,
    because NSS and Adobe Reader accept emailProtection for document signers.
    ``revocation_urls`` are the issuing CA's. ``not_before`` and ``not_after``
    replace the validity that starts now and lasts ``validity_days``, for
    example to issue an already expired certificate in a test.
    """
    _check_validity_days(validity_days)
    public_key = _load_subject_public_key(public_key_der)

    builder = _builder_under(ca, public_key, subject.to_name(), validity_days, not_before, not_after)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(_key_usage(digital_signature=True, content_commitment=True), critical=True)
    builder = builder.add_extension(
        x509.ExtendedKeyUsage([ID_KP_DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]),
        critical=False,
    )
    builder = _add_revocation_urls(builder, revocation_urls)
    return builder.sign(ca.private_key, hashes.SHA256())


def issue_tsa_certificate(
    ca: CertificateAuthority,
    public_key_der: bytes,
    subject: SubjectSpec,
    *,
    validity_days: int = 1825,
    revocation_urls: RevocationUrls | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    """Issue a time-stamping authority certificate for an RSA or EC public key.

    RFC 3161 section 2.3 requires the extended key usage to contain only
    id-kp-timeStamping and to be marked critical. The other arguments are
    those of ``issue_signing_certificate``.
    """
    _check_validity_days(validity_days)
    public_key = _load_subject_public_key(public_key_der)

    builder = _builder_under(ca, public_key, subject.to_name(), validity_days, not_before, not_after)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(_key_usage(digital_signature=True, content_commitment=True), critical=True)
    builder = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
    )
    builder = _add_revocation_urls(builder, revocation_urls)
    return builder.sign(ca.private_key, hashes.SHA256())


def issue_ocsp_responder_certificate(
    ca: CertificateAuthority, public_key_der: bytes, subject: SubjectSpec, *, validity_days: int = 730
) -> x509.Certificate:
    """Issue a delegated OCSP responder certificate that signs responses for ``ca``'s certificates.

    RFC 6960 section 4.2.2.2 requires id-kp-OCSPSigning in the extended key
    usage. The id-pkix-ocsp-nocheck extension (section 4.2.2.2.1) lets
    clients skip the revocation check of the responder certificate itself,
    so it carries no OCSP or CRL URL.
    """
    _check_validity_days(validity_days)
    public_key = _load_subject_public_key(public_key_der)

    builder = _builder_under(ca, public_key, subject.to_name(), validity_days)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(_key_usage(digital_signature=True), critical=True)
    builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
    builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    return builder.sign(ca.private_key, hashes.SHA256())


def reissue_certificate(
    ca: CertificateAuthority,
    certificate: x509.Certificate,
    *,
    revocation_urls: RevocationUrls | None = None,
    validity_days: int = 730,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    """Issue a new certificate with the subject, public key and profile of ``certificate``.

    The key usage, extended key usage and basic constraints are copied. The
    serial number, validity, key identifiers and ``revocation_urls`` are new.
    The other arguments are those of ``issue_signing_certificate``.
    """
    _check_validity_days(validity_days)
    public_key = certificate.public_key()
    if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise ValueError(f"certificate contains an unsupported {type(public_key).__name__}, expected an RSA or EC key")

    builder = _builder_under(ca, public_key, certificate.subject, validity_days, not_before, not_after)
    for extension in certificate.extensions:
        if isinstance(extension.value, _REISSUED_EXTENSIONS):
            builder = builder.add_extension(extension.value, critical=extension.critical)
    builder = _add_revocation_urls(builder, revocation_urls)
    return builder.sign(ca.private_key, hashes.SHA256())


# The profile of a certificate that reissue_certificate keeps. Every other extension is rebuilt or dropped.
_REISSUED_EXTENSIONS = (x509.BasicConstraints, x509.KeyUsage, x509.ExtendedKeyUsage)


def write_pem(path: Path, *certs: x509.Certificate) -> None:
    """Write one or more certificates to ``path`` as concatenated PEM blocks."""
    if not certs:
        raise ValueError(f"write_pem needs at least one certificate for {path}")
    data = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)
    _write_atomically(Path(path), data, mode=0o644)


def write_private_key(path: Path, key: PrivateKeyTypes) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM to a file readable only by its owner.

    The file is created with mode 0600 from the start and renamed into place,
    so the key is never readable by others, not even for a moment.
    """
    data = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    _write_atomically(Path(path), data, mode=0o600)


def write_file_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to a new file created with ``mode``, then rename it over ``path``.

    Readers see either the old or the new content, never a partial file.
    """
    _write_atomically(Path(path), data, mode=mode)


def load_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Load every certificate from a PEM file, or the one certificate of a DER file."""
    data = Path(path).read_bytes()
    if b"-----BEGIN" in data:
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise ValueError(f"no valid PEM certificate in {path}: {exc}") from exc
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise ValueError(f"{path} is neither a PEM nor a DER certificate: {exc}") from exc


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """Load the only certificate in ``path``, raising ValueError if the file contains several."""
    certificates = load_certificates(path)
    if len(certificates) != 1:
        raise ValueError(
            f"{path} contains {len(certificates)} certificates, expected 1 (use load_certificates for a bundle)"
        )
    return certificates[0]


def load_private_key(path: str | os.PathLike[str]) -> PrivateKeyTypes:
    """Load an unencrypted private key from a PEM or DER file."""
    data = Path(path).read_bytes()
    if b"-----BEGIN" in data:
        return serialization.load_pem_private_key(data, password=None)
    return serialization.load_der_private_key(data, password=None)


def _builder_under(
    issuer: CertificateAuthority,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    subject: x509.Name,
    validity_days: int,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.CertificateBuilder:
    """Start a certificate issued by ``issuer``, with serial, validity and key identifiers.

    Without ``not_before``, the certificate starts ``BACKDATE`` ago. Without
    ``not_after``, it lasts ``validity_days`` from ``not_before``.
    """
    if not_before is None:
        not_before = _now() - BACKDATE
    if not_after is None:
        not_after = not_before + datetime.timedelta(days=validity_days)
    if not_after <= not_before:
        raise ValueError(f"not_after ({not_after.isoformat()}) must be later than not_before ({not_before.isoformat()})")
    # A certificate must not outlive its issuer, otherwise path validation
    # fails on the issuer long before the certificate itself expires.
    not_after = min(not_after, issuer.certificate.not_valid_after_utc)
    issuer_key_identifier = issuer.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value

    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        # random_serial_number() returns 159 random bits, the RFC 5280 maximum
        # of 20 octets with the sign bit clear.
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_key_identifier),
            critical=False,
        )
    )


def _ca_name(common_name: str, organization: str) -> x509.Name:
    if not common_name.strip():
        raise ValueError("CA common_name is empty")
    if not organization.strip():
        raise ValueError("CA organization is empty")
    return _build_name(
        [
            (NameOID.COUNTRY_NAME, "VN"),
            (NameOID.ORGANIZATION_NAME, organization),
            (NameOID.COMMON_NAME, common_name),
        ]
    )


def _build_name(attributes: list[tuple[ObjectIdentifier, str | None]]) -> x509.Name:
    """Build a name from the attributes that have a value, with strings in NFC.

    cryptography encodes every attribute used here as a UTF8String, except
    countryName, which RFC 5280 defines as a PrintableString.
    """
    name_attributes = [
        x509.NameAttribute(oid, unicodedata.normalize("NFC", value))
        for oid, value in attributes
        if value is not None
    ]
    return x509.Name(name_attributes)


def _key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    """Return a KeyUsage extension value with only the named bits set."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _add_revocation_urls(
    builder: x509.CertificateBuilder, urls: RevocationUrls | None
) -> x509.CertificateBuilder:
    if urls is None:
        return builder
    access = []
    if urls.ocsp_url is not None:
        access.append(x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp_url)
        ))
    if urls.ca_issuers_url is not None:
        access.append(x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(urls.ca_issuers_url)
        ))
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    if urls.crl_url is not None:
        distribution_point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(urls.crl_url)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([distribution_point]), critical=False)
    return builder


def _load_subject_public_key(public_key_der: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    try:
        public_key = serialization.load_der_public_key(public_key_der)
    except ValueError as exc:
        raise ValueError(
            f"public_key_der is not a valid DER SubjectPublicKeyInfo ({exc}). "
            "Export the key with PublicFormat.SubjectPublicKeyInfo"
        ) from exc
    if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise ValueError(
            f"public_key_der contains an unsupported {type(public_key).__name__}, expected an RSA or EC key"
        )
    return public_key


def _check_validity_days(validity_days: int) -> None:
    if validity_days <= 0:
        raise ValueError(f"validity_days must be positive, got {validity_days}")


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to a new file created with ``mode``, then rename it over ``path``."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
