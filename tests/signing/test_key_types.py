"""Every HSM key type signs CAdES, PAdES and raw signatures with SHA-256, SHA-384 and SHA-512.

The keys (RSA 2048, 3072 and 4096, EC P-256 and P-384) are generated once for
the module in a SoftHSM token, because RSA-4096 generation takes seconds, and
certified by a throwaway CA. OpenSSL and pdfsig, which share no code with the
service, check every output against that CA's root.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import pem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hsm import Hsm
from signserver import demo_pki
from signserver.core.raw_signing import sign_digests_with_key
from signserver.demo_pki import SubjectSpec
from signserver.hsm_bridge import HsmRawSigner
from signserver.signing.cades import ensure_cades_digest_valid, sign_cades, sign_cades_digest
from signserver.signing.errors import SignatureValidationFailed
from signserver.signing.keys import SigningKey
from signserver.signing.pades import sign_pdf
from signserver.signing.raw import (
    SIGNATURE_ALGORITHMS,
    SignatureAlgorithmKeyMismatch,
    ensure_signer_certificate_trusted,
    raw_signature_scheme,
    verify_raw_signature,
)
from signserver.signing.tsa import InProcessTimeStamper, TimeStampAuthority
from tests.hsm.conftest import softhsm_tokens  # noqa: F401 - the SoftHSM token fixture, used by ``matrix``
from tests.signing.conftest import (
    AGENCY,
    SIGNER_NAME,
    SIGNER_TITLE,
    TSA_POLICY_OID,
    SoftwareRawSigner,
    to_asn1,
    write_pdf,
)
from tests.verifiers import make_nss_trust_db, openssl_cms_print, openssl_cms_verify, pdfsig_signatures

# name: (key type, RSA modulus bits or EC curve)
KEY_SPECS: dict[str, tuple[str, int | str]] = {
    "rsa-2048": ("RSA", 2048),
    "rsa-3072": ("RSA", 3072),
    "rsa-4096": ("RSA", 4096),
    "ec-p256": ("EC", "P-256"),
    "ec-p384": ("EC", "P-384"),
}
DIGEST_ALGORITHMS = ("sha256", "sha384", "sha512")
# One PAdES signature per key type, and each digest algorithm at least once.
PADES_DIGESTS = {"rsa-2048": "sha256", "rsa-3072": "sha384", "rsa-4096": "sha512", "ec-p256": "sha512",
                 "ec-p384": "sha384"}
# Names as pdfsig (poppler 22.12) prints them after "Signing Hash Algorithm:".
PDFSIG_HASH_NAMES = {"sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}

RECORD = "<HoSo><MaHoSo>000.00.01.H01-261204-0001</MaHoSo><TrichYeu>Giấy xác nhận</TrichYeu></HoSo>\n"
CONTENT = RECORD.encode() * 200


@dataclass(frozen=True)
class HsmKey:
    key: SigningKey
    key_id: bytes
    # SubjectPublicKeyInfo in PEM, for openssl dgst -verify.
    public_pem: Path


@dataclass(frozen=True)
class KeyMatrix:
    token: Hsm
    keys: dict[str, HsmKey]
    root_pem: Path
    trust_roots: list
    timestamper: InProcessTimeStamper
    nss_dir: Path
    original: Path
    pdf: Path


@pytest.fixture(scope="module")
def matrix(softhsm_tokens, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyMatrix]:  # noqa: F811
    directory = tmp_path_factory.mktemp("key-types")
    root_ca = demo_pki.create_root_ca("CA gốc thử nghiệm khóa", "Tổ chức chứng thực thử nghiệm")
    issuing_ca = demo_pki.create_issuing_ca(root_ca, "CA cấp dưới thử nghiệm khóa",
                                            "Tổ chức chứng thực thử nghiệm")
    chain = (to_asn1(issuing_ca.certificate), to_asn1(root_ca.certificate))
    demo_pki.write_pem(directory / "root.pem", root_ca.certificate)
    official = SubjectSpec(common_name=SIGNER_NAME, organization=AGENCY, title=SIGNER_TITLE)

    with Hsm(softhsm_tokens.config(softhsm_tokens.main_label)) as token:
        keys = {}
        for name, (key_type, size) in KEY_SPECS.items():
            key_id = secrets.token_bytes(8)
            label = f"key-types-{name}-{key_id.hex()}"
            if key_type == "RSA":
                public_key_der = token.generate_rsa_key(key_id, label, int(size))
            else:
                public_key_der = token.generate_ec_key(key_id, label, str(size))
            certificate = demo_pki.issue_signing_certificate(issuing_ca, public_key_der, official)
            public_pem = directory / f"{name}.pub.pem"
            public_pem.write_bytes(pem.armor("PUBLIC KEY", public_key_der))
            key = SigningKey(to_asn1(certificate), chain, key_type, HsmRawSigner(token, key_id, key_type))
            keys[name] = HsmKey(key=key, key_id=key_id, public_pem=public_pem)

        tsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tsa_certificate = demo_pki.issue_tsa_certificate(
            issuing_ca, _public_key_der(tsa_private),
            SubjectSpec(common_name="Dịch vụ cấp dấu thời gian thử nghiệm",
                        organization="Ban Cơ yếu thử nghiệm"),
        )
        serials = itertools.count(1)

        async def next_serial() -> int:
            return next(serials)

        authority = TimeStampAuthority(
            SigningKey(to_asn1(tsa_certificate), chain, "RSA", SoftwareRawSigner(tsa_private)),
            policy_oid=TSA_POLICY_OID, serial_source=next_serial,
        )
        original = directory / "to-khai.xml"
        original.write_bytes(CONTENT)

        yield KeyMatrix(
            token=token,
            keys=keys,
            root_pem=directory / "root.pem",
            trust_roots=[chain[1]],
            timestamper=InProcessTimeStamper(authority),
            nss_dir=make_nss_trust_db(directory / "nss", directory / "root.pem"),
            original=original,
            pdf=write_pdf(directory / "one-page.pdf", 1),
        )


def _public_key_der(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _openssl_signer_digest(signature: Path) -> str:
    """Return the SignerInfo digestAlgorithm as ``openssl cms -cmsout -print`` names it."""
    printed = openssl_cms_print(signature)
    signer_info = printed.split("signerInfos:", 1)[1]
    digest_line = signer_info.split("digestAlgorithm:", 1)[1].split("algorithm:", 1)[1]
    return digest_line.split()[0]


def _openssl_dgst_verify(public_pem: Path, digest_algorithm: str, data: Path, signature: Path,
                         pss: bool) -> subprocess.CompletedProcess[str]:
    command = ["openssl", "dgst", f"-{digest_algorithm}", "-verify", str(public_pem), "-signature", str(signature)]
    if pss:
        # rsa_pss_saltlen:digest makes OpenSSL require a salt exactly as long as the hash.
        command += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
    return subprocess.run([*command, str(data)], capture_output=True, text=True)


def _raw_cases() -> list[tuple[str, str, str]]:
    cases = []
    for name, (key_type, _size) in KEY_SPECS.items():
        for algorithm, needed_key_type in SIGNATURE_ALGORITHMS.items():
            if needed_key_type == key_type:
                cases.extend((name, digest, algorithm) for digest in DIGEST_ALGORITHMS)
    return cases


@pytest.mark.parametrize("digest_algorithm", DIGEST_ALGORITHMS)
@pytest.mark.parametrize("key_name", list(KEY_SPECS))
async def test_cades_detached_verified_by_openssl(matrix: KeyMatrix, tmp_path: Path, key_name: str,
                                                  digest_algorithm: str) -> None:
    output = tmp_path / "signed.p7s"

    await sign_cades(matrix.original, output, key=matrix.keys[key_name].key, timestamper=None, attached=False,
                     digest_algorithm=digest_algorithm)

    verified = openssl_cms_verify(output, matrix.root_pem, matrix.original)
    assert verified.returncode == 0, verified.stderr
    assert "Verification successful" in verified.stderr
    assert _openssl_signer_digest(output) == digest_algorithm


@pytest.mark.parametrize("digest_algorithm", DIGEST_ALGORITHMS)
@pytest.mark.parametrize("key_name", ["rsa-3072", "ec-p384"])
async def test_cades_digest_b_t_verified_by_openssl(matrix: KeyMatrix, tmp_path: Path, key_name: str,
                                                    digest_algorithm: str) -> None:
    output = tmp_path / "signed.p7s"
    digest = hashlib.new(digest_algorithm, CONTENT).digest()

    result = await sign_cades_digest(digest, output, key=matrix.keys[key_name].key, timestamper=matrix.timestamper,
                                     digest_algorithm=digest_algorithm)

    # The service never saw the file, yet OpenSSL verifies the signature over it.
    verified = openssl_cms_verify(output, matrix.root_pem, matrix.original)
    assert verified.returncode == 0, verified.stderr
    assert result.level == "B-T"
    await ensure_cades_digest_valid(output, digest, matrix.trust_roots, level="B-T")


async def test_cades_digest_of_other_file_rejected(matrix: KeyMatrix, tmp_path: Path) -> None:
    output = tmp_path / "signed.p7s"
    digest = hashlib.sha256(CONTENT).digest()
    await sign_cades_digest(digest, output, key=matrix.keys["ec-p256"].key, timestamper=None,
                            digest_algorithm="sha256")
    other = tmp_path / "other.xml"
    other.write_bytes(CONTENT + b"<!-- changed -->")

    verified = openssl_cms_verify(output, matrix.root_pem, other)
    assert verified.returncode != 0
    with pytest.raises(SignatureValidationFailed):
        await ensure_cades_digest_valid(output, hashlib.sha256(other.read_bytes()).digest(), matrix.trust_roots,
                                        level="B-B")


async def test_cades_digest_b_t_check_rejects_b_b(matrix: KeyMatrix, tmp_path: Path) -> None:
    output = tmp_path / "signed.p7s"
    digest = hashlib.sha384(CONTENT).digest()
    await sign_cades_digest(digest, output, key=matrix.keys["rsa-2048"].key, timestamper=None,
                            digest_algorithm="sha384")

    with pytest.raises(SignatureValidationFailed):
        await ensure_cades_digest_valid(output, digest, matrix.trust_roots, level="B-T")


async def test_cades_digest_wrong_length_rejected(matrix: KeyMatrix, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha384 digest has 48 bytes"):
        await sign_cades_digest(hashlib.sha256(CONTENT).digest(), tmp_path / "signed.p7s",
                                key=matrix.keys["rsa-2048"].key, timestamper=None, digest_algorithm="sha384")


@pytest.mark.parametrize("key_name", list(KEY_SPECS))
async def test_pades_verified_by_pdfsig(matrix: KeyMatrix, tmp_path: Path, key_name: str) -> None:
    output = tmp_path / "signed.pdf"
    digest_algorithm = PADES_DIGESTS[key_name]

    result = await sign_pdf(matrix.pdf, output, key=matrix.keys[key_name].key, timestamper=matrix.timestamper,
                            reason="Phê duyệt", location="Huyện Mẫu Sơn", stamp=None,
                            digest_algorithm=digest_algorithm)

    signatures = pdfsig_signatures(output, matrix.nss_dir)
    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw
    assert signatures[0].total_document_signed, signatures[0].raw
    assert f"Signing Hash Algorithm: {PDFSIG_HASH_NAMES[digest_algorithm]}" in signatures[0].raw
    assert result.level == "B-T"


@pytest.mark.parametrize(("key_name", "digest_algorithm", "signature_algorithm"), _raw_cases())
async def test_raw_signature_verified_by_openssl(matrix: KeyMatrix, tmp_path: Path, key_name: str,
                                                 digest_algorithm: str, signature_algorithm: str) -> None:
    hsm_key = matrix.keys[key_name]
    scheme = raw_signature_scheme(signature_algorithm, hsm_key.key.key_type, digest_algorithm)
    digest = hashlib.new(digest_algorithm, CONTENT).digest()

    (signature,) = await sign_digests_with_key(matrix.token, hsm_key.key_id, hsm_key.key.key_type, scheme, [digest])

    signature_path = tmp_path / "signature.bin"
    signature_path.write_bytes(signature)
    verified = _openssl_dgst_verify(hsm_key.public_pem, digest_algorithm, matrix.original, signature_path,
                                    pss=signature_algorithm == "rsa_pss")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verified OK" in verified.stdout
    verify_raw_signature(hsm_key.key.certificate, scheme, digest, signature)


@pytest.mark.parametrize("key_name", ["rsa-4096", "ec-p384"])
async def test_raw_signature_over_other_data_fails_openssl(matrix: KeyMatrix, tmp_path: Path, key_name: str) -> None:
    hsm_key = matrix.keys[key_name]
    algorithm = "rsa_pkcs1v15" if hsm_key.key.key_type == "RSA" else "ecdsa"
    scheme = raw_signature_scheme(algorithm, hsm_key.key.key_type, "sha384")
    (signature,) = await sign_digests_with_key(matrix.token, hsm_key.key_id, hsm_key.key.key_type, scheme,
                                               [hashlib.sha384(CONTENT).digest()])
    signature_path = tmp_path / "signature.bin"
    signature_path.write_bytes(signature)
    other = tmp_path / "other.xml"
    other.write_bytes(CONTENT + b" ")

    verified = _openssl_dgst_verify(hsm_key.public_pem, "sha384", other, signature_path, pss=False)

    assert verified.returncode != 0
    assert "Verification failure" in verified.stdout + verified.stderr
    with pytest.raises(SignatureValidationFailed):
        verify_raw_signature(hsm_key.key.certificate, scheme, hashlib.sha384(other.read_bytes()).digest(), signature)


@pytest.mark.parametrize(("algorithm", "key_type"), [("ecdsa", "RSA"), ("rsa_pss", "EC"), ("rsa_pkcs1v15", "EC")])
def test_raw_scheme_key_mismatch_rejected(algorithm: str, key_type: str) -> None:
    with pytest.raises(SignatureAlgorithmKeyMismatch):
        raw_signature_scheme(algorithm, key_type, "sha256")


def test_raw_scheme_pss_salt_is_hash_length() -> None:
    scheme = raw_signature_scheme("rsa_pss", "RSA", "sha384")

    assert scheme.mechanism == "RSA_PKCS_PSS"
    assert scheme.pss_salt_length == 48


async def test_signer_certificate_of_other_root_untrusted(matrix: KeyMatrix, pki) -> None:
    with pytest.raises(SignatureValidationFailed):
        await ensure_signer_certificate_trusted(matrix.keys["rsa-2048"].key, [pki.root])


async def test_signer_certificate_trusted(matrix: KeyMatrix) -> None:
    await ensure_signer_certificate_trusted(matrix.keys["ec-p384"].key, matrix.trust_roots)
