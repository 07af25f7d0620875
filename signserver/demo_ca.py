"""The demo CA's revocation services: CRLs (RFC 5280 section 5), OCSP responses (RFC 6960) and CA certificates.

Demo only. The demo root and issuing CA stand in for the Government CA, and
their software keys live under ``SIGNSERVER_HOME/pki/``. ``create_demo_ca``
builds them at ``signserver init`` with a base URL that every certificate
names: the issuing CA points at the root's CRL, end-entity certificates at
the issuing CA's OCSP responder and CRL. The service then serves them at that URL
(``signserver.api.demo_ca``), and ``signserver demo-ca`` revokes or reissues
certificates. Files under ``pki/``:

- ``demo-ca.json``: the base URL fixed at init;
- ``issued.json``: the serial numbers the issuing CA issued, so that OCSP
  reports the status unknown for any other serial;
- ``revoked.json``: the revoked certificates, read on every request, so a
  revocation made by the command line shows at once;
- ``ocsp-responder.key`` and ``.pem``: the delegated OCSP responder, a
  software EC key with id-kp-OCSPSigning and id-pkix-ocsp-nocheck.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from signserver import demo_pki

__all__ = [
    "DemoCa",
    "DemoCaUrls",
    "RevokedCertificate",
    "REVOCATION_REASONS",
    "create_demo_ca",
    "has_demo_ca",
    "read_base_url",
]

ROOT_KEY_FILE = "root-ca.key"
ROOT_CERTIFICATE_FILE = "root.pem"
ISSUING_KEY_FILE = "issuing-ca.key"
ISSUING_CERTIFICATE_FILE = "issuing-ca.pem"
RESPONDER_KEY_FILE = "ocsp-responder.key"
RESPONDER_CERTIFICATE_FILE = "ocsp-responder.pem"
BASE_URL_FILE = "demo-ca.json"
ISSUED_FILE = "issued.json"
REVOKED_FILE = "revoked.json"

ROOT = "root"
ISSUING = "issuing"
CA_NAMES = (ROOT, ISSUING)

# A CRL is valid for a day. An OCSP response only for ten minutes, so that a
# revocation reaches relying parties that cache until nextUpdate soon.
CRL_VALIDITY = datetime.timedelta(days=1)
OCSP_VALIDITY = datetime.timedelta(minutes=10)

# RFC 5280 section 5.3.1 reason names. certificateHold is left out because the demo CA never suspends.
REVOCATION_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
}


@dataclass(frozen=True)
class DemoCaUrls:
    """The URLs of the demo CA's services under one base URL."""

    base_url: str

    def __post_init__(self) -> None:
        if not self.base_url.lower().startswith(("http://", "https://")):
            raise ValueError(f"the demo CA base URL must start with http:// or https://, got {self.base_url!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @property
    def ocsp_url(self) -> str:
        return f"{self.base_url}/ocsp"

    def crl_url(self, ca_name: str) -> str:
        return f"{self.base_url}/crl/{ca_name}.crl"

    def certificate_url(self, ca_name: str) -> str:
        return f"{self.base_url}/certs/{ca_name}.cer"

    def for_issuing_ca(self) -> demo_pki.RevocationUrls:
        """Return the root's services, which the issuing CA's certificate names."""
        return demo_pki.RevocationUrls(crl_url=self.crl_url(ROOT), ca_issuers_url=self.certificate_url(ROOT))

    def for_end_entity(self) -> demo_pki.RevocationUrls:
        """Return the issuing CA's services, which officials', seal and TSA certificates name."""
        return demo_pki.RevocationUrls(
            ocsp_url=self.ocsp_url, crl_url=self.crl_url(ISSUING), ca_issuers_url=self.certificate_url(ISSUING)
        )


@dataclass(frozen=True)
class RevokedCertificate:
    """One entry of ``revoked.json``."""

    issuer: str  # "root" or "issuing"
    serial_number: int
    revoked_at: datetime.datetime
    reason: str  # a key of REVOCATION_REASONS
    subject: str

    def to_json(self) -> dict[str, str]:
        return {"issuer": self.issuer, "serial_hex": format(self.serial_number, "x"),
                "revoked_at": self.revoked_at.isoformat(), "reason": self.reason, "subject": self.subject}

    @classmethod
    def from_json(cls, value: dict[str, str]) -> "RevokedCertificate":
        return cls(issuer=value["issuer"], serial_number=int(value["serial_hex"], 16),
                   revoked_at=datetime.datetime.fromisoformat(value["revoked_at"]), reason=value["reason"],
                   subject=value.get("subject", ""))


def has_demo_ca(pki_dir: Path) -> bool:
    """Tell whether ``pki_dir`` contains the demo CA's keys, as a home made by ``signserver init`` does."""
    return all((pki_dir / name).is_file() for name in (
        ROOT_KEY_FILE, ISSUING_KEY_FILE, RESPONDER_KEY_FILE, RESPONDER_CERTIFICATE_FILE, BASE_URL_FILE))


def read_base_url(pki_dir: Path) -> str:
    """Return the base URL that ``signserver init`` wrote into the demo CA's certificates."""
    return str(json.loads((pki_dir / BASE_URL_FILE).read_text(encoding="utf-8"))["base_url"])


def create_demo_ca(pki_dir: Path, base_url: str) -> "DemoCa":
    """Create the root CA, issuing CA and OCSP responder under ``pki_dir``, with services at ``base_url``."""
    urls = DemoCaUrls(base_url)
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    root = demo_pki.create_root_ca("Demo Root CA - Chứng thư số gốc thử nghiệm", "Signserver Demo PKI")
    issuing = demo_pki.create_issuing_ca(
        root, "Demo Government CA - CA cấp chứng thư thử nghiệm", "Signserver Demo PKI",
        revocation_urls=urls.for_issuing_ca(),
    )
    responder_key = ec.generate_private_key(ec.SECP256R1())
    responder_public_key = responder_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # NOTE: the responder certificate is never renewed. After its two years, OCSP responses
    # stop validating and relying parties fall back to the CRL.
    responder = demo_pki.issue_ocsp_responder_certificate(
        issuing, responder_public_key,
        demo_pki.SubjectSpec(common_name="Demo OCSP Responder - Dịch vụ OCSP thử nghiệm",
                             organization="Signserver Demo PKI"),
    )

    demo_pki.write_private_key(pki_dir / ROOT_KEY_FILE, root.private_key)
    demo_pki.write_private_key(pki_dir / ISSUING_KEY_FILE, issuing.private_key)
    demo_pki.write_private_key(pki_dir / RESPONDER_KEY_FILE, responder_key)
    demo_pki.write_pem(pki_dir / ROOT_CERTIFICATE_FILE, root.certificate)
    demo_pki.write_pem(pki_dir / ISSUING_CERTIFICATE_FILE, issuing.certificate)
    demo_pki.write_pem(pki_dir / RESPONDER_CERTIFICATE_FILE, responder)
    _write_json(pki_dir / BASE_URL_FILE, {"base_url": urls.base_url})
    _write_json(pki_dir / REVOKED_FILE, {"revoked": []})
    _write_json(pki_dir / ISSUED_FILE, {"issued": []})

    demo_ca = DemoCa.load(pki_dir)
    demo_ca.record_issued(responder)
    return demo_ca


class DemoCa:
    """The demo CA loaded from ``pki_dir``: its two CAs, the OCSP responder, and the issued and revoked lists."""

    def __init__(self, pki_dir: Path, root: demo_pki.CertificateAuthority, issuing: demo_pki.CertificateAuthority,
                 responder_certificate: x509.Certificate, responder_key: ec.EllipticCurvePrivateKey,
                 urls: DemoCaUrls) -> None:
        self.pki_dir = pki_dir
        self.root = root
        self.issuing = issuing
        self.responder_certificate = responder_certificate
        self.responder_key = responder_key
        self.urls = urls

    @classmethod
    def load(cls, pki_dir: Path) -> "DemoCa":
        """Load the demo CA. Raises FileNotFoundError when ``pki_dir`` has none (see ``has_demo_ca``)."""
        def authority(certificate_file: str, key_file: str) -> demo_pki.CertificateAuthority:
            key = demo_pki.load_private_key(pki_dir / key_file)
            return demo_pki.CertificateAuthority(demo_pki.load_certificate(pki_dir / certificate_file), key)  # type: ignore[arg-type]

        responder_key = demo_pki.load_private_key(pki_dir / RESPONDER_KEY_FILE)
        if not isinstance(responder_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{pki_dir / RESPONDER_KEY_FILE} must hold an EC key")
        return cls(
            pki_dir,
            root=authority(ROOT_CERTIFICATE_FILE, ROOT_KEY_FILE),
            issuing=authority(ISSUING_CERTIFICATE_FILE, ISSUING_KEY_FILE),
            responder_certificate=demo_pki.load_certificate(pki_dir / RESPONDER_CERTIFICATE_FILE),
            responder_key=responder_key,
            urls=DemoCaUrls(read_base_url(pki_dir)),
        )

    def authority(self, ca_name: str) -> demo_pki.CertificateAuthority:
        if ca_name not in CA_NAMES:
            raise KeyError(f"unknown demo CA {ca_name!r}, expected one of {', '.join(CA_NAMES)}")
        return self.root if ca_name == ROOT else self.issuing

    def certificate_der(self, ca_name: str) -> bytes:
        return self.authority(ca_name).certificate.public_bytes(serialization.Encoding.DER)

    # Issued and revoked certificates

    def issued_serials(self) -> set[int]:
        entries = _read_json(self.pki_dir / ISSUED_FILE, "issued")
        return {int(entry["serial_hex"], 16) for entry in entries}

    def record_issued(self, *certificates: x509.Certificate) -> None:
        """Record certificates the issuing CA issued, so that OCSP reports them as good."""
        entries = _read_json(self.pki_dir / ISSUED_FILE, "issued")
        for certificate in certificates:
            entries.append({"serial_hex": format(certificate.serial_number, "x"),
                            "subject": certificate.subject.rfc4514_string(),
                            "not_after": certificate.not_valid_after_utc.isoformat()})
        _write_json(self.pki_dir / ISSUED_FILE, {"issued": entries})

    def revoked(self, ca_name: str = ISSUING) -> list[RevokedCertificate]:
        entries = [RevokedCertificate.from_json(entry) for entry in _read_json(self.pki_dir / REVOKED_FILE, "revoked")]
        return [entry for entry in entries if entry.issuer == ca_name]

    def revoke(self, certificate: x509.Certificate, reason: str,
               now: datetime.datetime | None = None) -> tuple[RevokedCertificate, bool]:
        """Revoke a certificate of the issuing CA, and return the entry and whether it is new.

        A certificate already revoked keeps its first entry.
        """
        if reason not in REVOCATION_REASONS:
            raise ValueError(f"unknown revocation reason {reason!r}, expected one of {', '.join(REVOCATION_REASONS)}")
        if certificate.issuer != self.issuing.certificate.subject:
            raise ValueError("the certificate was not issued by the demo issuing CA")
        for entry in self.revoked(ISSUING):
            if entry.serial_number == certificate.serial_number:
                return entry, False

        entry = RevokedCertificate(issuer=ISSUING, serial_number=certificate.serial_number,
                                   revoked_at=(now or _now()).replace(microsecond=0), reason=reason,
                                   subject=certificate.subject.rfc4514_string())
        entries = _read_json(self.pki_dir / REVOKED_FILE, "revoked")
        entries.append(entry.to_json())
        _write_json(self.pki_dir / REVOKED_FILE, {"revoked": entries})
        return entry, True

    # CRLs and OCSP

    def crl_der(self, ca_name: str, now: datetime.datetime | None = None) -> bytes:
        """Build and sign a fresh CRL of ``ca_name`` ("root" or "issuing"), valid for ``CRL_VALIDITY``."""
        authority = self.authority(ca_name)
        now = (now or _now()).replace(microsecond=0)
        key_identifier = authority.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(authority.certificate.subject)
            .last_update(now)
            .next_update(now + CRL_VALIDITY)
            # Milliseconds since the epoch increase with every CRL, as RFC 5280 section 5.2.3 requires.
            .add_extension(x509.CRLNumber(time.time_ns() // 1_000_000), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_identifier),
                           critical=False)
        )
        for entry in self.revoked(ca_name):
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(entry.serial_number)
                .revocation_date(entry.revoked_at)
            )
            # RFC 5280 section 5.3.1: the reason code unspecified should be left out.
            if entry.reason != "unspecified":
                revoked = revoked.add_extension(x509.CRLReason(REVOCATION_REASONS[entry.reason]), critical=False)
            builder = builder.add_revoked_certificate(revoked.build())
        return builder.sign(authority.private_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def ocsp_response_der(self, request_der: bytes, now: datetime.datetime | None = None) -> bytes:
        """Build and sign the OCSPResponse to a DER OCSPRequest about one certificate of the issuing CA.

        The status is revoked for a serial in ``revoked.json``, good for one in
        ``issued.json``, and unknown otherwise. A request about another CA gets
        the "unauthorized" response status, and one that cannot be parsed or
        that names several certificates gets "malformedRequest". A nonce
        (RFC 8954) is echoed.
        """
        try:
            request = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if not self._is_issuing_ca(request):
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)

        now = (now or _now()).replace(microsecond=0)
        revoked = {entry.serial_number: entry for entry in self.revoked(ISSUING)}
        entry = revoked.get(request.serial_number)
        if entry is not None:
            status = ocsp.OCSPCertStatus.REVOKED
        elif request.serial_number in self.issued_serials():
            status = ocsp.OCSPCertStatus.GOOD
        else:
            status = ocsp.OCSPCertStatus.UNKNOWN

        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial_number=request.serial_number,
            algorithm=request.hash_algorithm,
            cert_status=status,
            this_update=now,
            next_update=now + OCSP_VALIDITY,
            revocation_time=entry.revoked_at if entry is not None else None,
            revocation_reason=_reason_flag(entry) if entry is not None else None,
        )
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.responder_certificate)
        builder = builder.certificates([self.responder_certificate])
        for extension in request.extensions:
            if isinstance(extension.value, x509.OCSPNonce):
                builder = builder.add_extension(extension.value, critical=False)
        response = builder.sign(self.responder_key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)

    def _is_issuing_ca(self, request: ocsp.OCSPRequest) -> bool:
        """Compare the request's CertID issuer hashes with the issuing CA's (RFC 6960 section 4.1.1)."""
        algorithm = request.hash_algorithm.name
        if algorithm not in hashlib.algorithms_available:
            return False
        issuer = asn1_x509.Certificate.load(self.issuing.certificate.public_bytes(serialization.Encoding.DER))
        name_hash = hashlib.new(algorithm, issuer.subject.dump()).digest()
        key_hash = hashlib.new(algorithm, issuer.public_key["public_key"].contents[1:]).digest()
        return request.issuer_name_hash == name_hash and request.issuer_key_hash == key_hash


def _reason_flag(entry: RevokedCertificate) -> x509.ReasonFlags | None:
    # As in the CRL, the reason unspecified is left out.
    return None if entry.reason == "unspecified" else REVOCATION_REASONS[entry.reason]


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


def _read_json(path: Path, list_name: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return list(json.loads(path.read_text(encoding="utf-8"))[list_name])


def _write_json(path: Path, value: dict[str, Any]) -> None:
    data = (json.dumps(value, ensure_ascii=False, indent=2) + "\n").encode()
    demo_pki.write_file_atomically(path, data, mode=0o644)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
