"""Fixtures for the signing tests: a throwaway PKI, software keys, a TSA and input PDFs.

Keys are software keys behind a test RawSigner, so these tests need no HSM.
The PKI comes from ``signserver.demo_pki``: root CA, issuing CA, signer
certificates for "Trần Thị Bích Ngọc" (RSA-2048 and EC P-256) and TSA
certificates (RSA-2048 and EC P-256) with a critical id-kp-timeStamping
extended key usage.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from signserver import demo_pki
from signserver.demo_pki import SubjectSpec
from signserver.signing.keys import SigningKey
from signserver.signing.tsa import InProcessTimeStamper, TimeStampAuthority

SIGNER_NAME = "Trần Thị Bích Ngọc"
SIGNER_TITLE = "Phó Chủ tịch"
AGENCY = "Ủy ban nhân dân huyện Mẫu Sơn"
TSA_POLICY_OID = "1.3.6.1.4.1.99999.1.1"
DEFAULT_CORPUS_DIR = Path("/work/shared/corpus")

_HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


class SoftwareRawSigner:
    """Test-only RawSigner over a ``cryptography`` private key."""

    def __init__(self, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
        self.private_key = private_key
        self.calls = 0

    async def sign_digest(self, digest: bytes, digest_algorithm: str) -> bytes:
        self.calls += 1
        prehashed = utils.Prehashed(_HASHES[digest_algorithm])
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return self.private_key.sign(digest, padding.PKCS1v15(), prehashed)
        return self.private_key.sign(digest, ec.ECDSA(prehashed))


@dataclass(frozen=True)
class SigningPki:
    root: asn1_x509.Certificate
    issuing: asn1_x509.Certificate
    rsa_signer: SigningKey
    ec_signer: SigningKey
    tsa: SigningKey
    ec_tsa: SigningKey
    root_pem: Path
    chain_pem: Path
    tsa_pem: Path
    ec_tsa_pem: Path


def to_asn1(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def _public_key_der(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SigningPki:
    root_ca = demo_pki.create_root_ca("CA gốc thử nghiệm", "Tổ chức chứng thực thử nghiệm")
    issuing_ca = demo_pki.create_issuing_ca(root_ca, "CA cấp dưới thử nghiệm", "Tổ chức chứng thực thử nghiệm")
    chain = (to_asn1(issuing_ca.certificate), to_asn1(root_ca.certificate))
    official = SubjectSpec(common_name=SIGNER_NAME, organization=AGENCY, title=SIGNER_TITLE)

    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_certificate = demo_pki.issue_signing_certificate(issuing_ca, _public_key_der(rsa_private), official)
    ec_private = ec.generate_private_key(ec.SECP256R1())
    ec_certificate = demo_pki.issue_signing_certificate(issuing_ca, _public_key_der(ec_private), official)
    tsa_subject = SubjectSpec(common_name="Dịch vụ cấp dấu thời gian thử nghiệm", organization="Ban Cơ yếu thử nghiệm")
    tsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tsa_certificate = demo_pki.issue_tsa_certificate(issuing_ca, _public_key_der(tsa_private), tsa_subject)
    ec_tsa_private = ec.generate_private_key(ec.SECP256R1())
    ec_tsa_certificate = demo_pki.issue_tsa_certificate(issuing_ca, _public_key_der(ec_tsa_private), tsa_subject)

    directory = tmp_path_factory.mktemp("pki")
    demo_pki.write_pem(directory / "root.pem", root_ca.certificate)
    demo_pki.write_pem(directory / "chain.pem", issuing_ca.certificate, root_ca.certificate)
    demo_pki.write_pem(directory / "tsa.pem", tsa_certificate)
    demo_pki.write_pem(directory / "ec-tsa.pem", ec_tsa_certificate)

    return SigningPki(
        root=to_asn1(root_ca.certificate),
        issuing=to_asn1(issuing_ca.certificate),
        rsa_signer=SigningKey(to_asn1(rsa_certificate), chain, "RSA", SoftwareRawSigner(rsa_private)),
        ec_signer=SigningKey(to_asn1(ec_certificate), chain, "EC", SoftwareRawSigner(ec_private)),
        tsa=SigningKey(to_asn1(tsa_certificate), chain, "RSA", SoftwareRawSigner(tsa_private)),
        ec_tsa=SigningKey(to_asn1(ec_tsa_certificate), chain, "EC", SoftwareRawSigner(ec_tsa_private)),
        root_pem=directory / "root.pem",
        chain_pem=directory / "chain.pem",
        tsa_pem=directory / "tsa.pem",
        ec_tsa_pem=directory / "ec-tsa.pem",
    )


@pytest.fixture
def authority(pki: SigningPki) -> TimeStampAuthority:
    serials = itertools.count(1)

    async def next_serial() -> int:
        return next(serials)

    return TimeStampAuthority(pki.tsa, policy_oid=TSA_POLICY_OID, serial_source=next_serial)


@pytest.fixture
def timestamper(authority: TimeStampAuthority) -> InProcessTimeStamper:
    return InProcessTimeStamper(authority)


def write_pdf(path: Path, page_count: int) -> Path:
    """Write an A4 PDF with ``page_count`` pages of ASCII text, made with reportlab."""
    # Uncompressed content streams let tests find and alter the page text.
    document = canvas.Canvas(str(path), pagesize=A4, pageCompression=0)
    for number in range(1, page_count + 1):
        document.setFont("Times-Roman", 14)
        document.drawString(72, 760, f"Test document, page {number} of {page_count}")
        document.showPage()
    document.save()
    return path


@pytest.fixture(scope="session")
def one_page_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdf(tmp_path_factory.mktemp("input") / "one-page.pdf", 1)


@pytest.fixture(scope="session")
def three_page_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdf(tmp_path_factory.mktemp("input") / "three-pages.pdf", 3)


@pytest.fixture(scope="session")
def nss_dir(pki: SigningPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An NSS database for pdfsig that trusts the test root CA."""
    directory = tmp_path_factory.mktemp("nss")
    subprocess.run(["certutil", "-N", "--empty-password", "-d", f"sql:{directory}"], check=True)
    subprocess.run(
        ["certutil", "-A", "-n", "root", "-t", ",C,", "-i", str(pki.root_pem), "-d", f"sql:{directory}"],
        check=True,
    )
    return directory


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared corpus of real PDFs, overridable with SIGNSERVER_CORPUS."""
    directory = Path(os.environ.get("SIGNSERVER_CORPUS", DEFAULT_CORPUS_DIR))
    if not directory.is_dir():
        pytest.skip(f"PDF corpus not found at {directory}, set SIGNSERVER_CORPUS to its directory")
    return directory


@pytest.fixture
def corpus_file(corpus_dir: Path):
    """Return a function that finds a corpus file by name or skips the test."""

    def find(name: str) -> Path:
        path = corpus_dir / name
        if not path.is_file():
            pytest.skip(f"corpus file {name} not found in {corpus_dir}")
        return path

    return find
