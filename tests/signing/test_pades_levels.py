"""PAdES levels B-B to B-LTA, several signers and certification, signed with SoftHSM keys.

The signers' certificates come from a certomancer PKI (tests/certomancer_pki.py)
that serves OCSP and CRLs on loopback, so B-LT and B-LTA embed real
revocation data. Results are checked with pdfsig, OpenSSL and pyHanko's
AdES validation (ETSI EN 319 102-1), which share no code with the levels
check in ``signserver.signing.validate``.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from asn1crypto import cms
from asn1crypto import ocsp as asn1_ocsp
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESStatus
from pyhanko.sign.fields import MDPPerm, SigFieldSpec, SigSeedSubFilter
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.validation import read_certification_data
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from hsm import Hsm
from signserver.hsm_bridge import HsmRawSigner
from signserver.signing.errors import (
    CertificateRevoked,
    PadesLevelNotReached,
    PdfCertificationNotFirst,
    PdfCertifiedNoChanges,
    RevocationUnavailable,
    SignatureValidationFailed,
)
from signserver.signing.keys import SigningKey, pyhanko_signer
from signserver.signing.pades import StampSpec, sign_pdf
from signserver.signing.pdf_inspect import inspect_pdf
from signserver.signing.tsa import InProcessTimeStamper, TimeStampAuthority
from signserver.signing.validate import ensure_signed_pdf_valid, validate_pdf
from tests.ades_checks import ades_lta_result, ades_with_time_result, dss_contents
from tests.certomancer_pki import CertomancerPki, start_certomancer_pki
from tests.hsm.conftest import SoftHsmTokens, softhsm_tokens  # noqa: F401 - the fixture creates the SoftHSM token
from tests.signing.conftest import SoftwareRawSigner, write_pdf
from tests.verifiers import make_nss_trust_db, openssl_ts_verify, pdfsig_signatures

LEVELS = ["B-B", "B-T", "B-LT", "B-LTA"]
TSA_POLICY_OID = "1.3.6.1.4.1.99999.1.2"
# Officials by certomancer label: the key type in the HSM and the stamp's name and title.
OFFICIALS = {
    "specialist": ("RSA", "Nguyễn Thị Lan", "Chuyên viên"),
    "leader": ("EC", "Trần Văn Minh", "Phó Chủ tịch"),
    "seal": ("RSA", "Ủy ban nhân dân huyện Mẫu Sơn", ""),
    "revoked-official": ("RSA", "Phạm Văn Khoa", "Chuyên viên"),
}
AGENCY = "Ủy ban nhân dân huyện Mẫu Sơn"
STAMP_BOXES = {
    "specialist": (40.0, 60.0, 200.0, 140.0),
    "leader": (215.0, 60.0, 375.0, 140.0),
    "seal": (390.0, 60.0, 550.0, 140.0),
}


class CountingRawSigner:
    """Passes digests to an HSM signer and counts the calls, to show when the key was not used."""

    def __init__(self, inner: HsmRawSigner) -> None:
        self.inner = inner
        self.calls = 0

    async def sign_digest(self, digest: bytes, digest_algorithm: str) -> bytes:
        self.calls += 1
        return await self.inner.sign_digest(digest, digest_algorithm)


@pytest.fixture(scope="module")
def token(softhsm_tokens: SoftHsmTokens) -> Iterator[Hsm]:  # noqa: F811 - the imported fixture
    with Hsm(softhsm_tokens.config(softhsm_tokens.main_label)) as opened:
        yield opened


@pytest.fixture(scope="module")
def hsm_key_ids(token: Hsm) -> dict[str, tuple[bytes, bytes]]:
    """Generate one key per official in the HSM; label -> (CKA_ID, SubjectPublicKeyInfo DER)."""
    keys = {}
    for label, (key_type, _, _) in OFFICIALS.items():
        key_id = secrets.token_bytes(8)
        if key_type == "RSA":
            spki = token.generate_rsa_key(key_id, f"{label}-{key_id.hex()}", 2048)
        else:
            spki = token.generate_ec_key(key_id, f"{label}-{key_id.hex()}", "P-256")
        keys[label] = (key_id, spki)
    return keys


def _start_pki(directory: Path, hsm_key_ids: dict[str, tuple[bytes, bytes]]) -> CertomancerPki:
    return start_certomancer_pki(directory, {label: spki for label, (_, spki) in hsm_key_ids.items()},
                                 hsm_revoked={"revoked-official"})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, hsm_key_ids) -> Iterator[CertomancerPki]:
    running = _start_pki(tmp_path_factory.mktemp("certomancer-levels"), hsm_key_ids)
    yield running
    running.stop()


@pytest.fixture
def offline_pki(tmp_path: Path, hsm_key_ids) -> Iterator[CertomancerPki]:
    """A PKI of its own that the test may switch off with ``stop()``."""
    running = _start_pki(tmp_path / "certomancer", hsm_key_ids)
    yield running
    running.stop()


def _signing_key(pki: CertomancerPki, token: Hsm, hsm_key_ids, label: str) -> SigningKey:
    key_type = OFFICIALS[label][0]
    key_id = hsm_key_ids[label][0]
    return SigningKey(pki.cert(label), tuple(pki.chain(label)[1:]), key_type,
                      CountingRawSigner(HsmRawSigner(token, key_id, key_type)))


def _software_key(pki: CertomancerPki, label: str, key_type: str) -> SigningKey:
    private_key = serialization.load_pem_private_key(pki.key_path(label).read_bytes(), None)
    return SigningKey(pki.cert(label), tuple(pki.chain(label)[1:]), key_type, SoftwareRawSigner(private_key))


def _timestamper(pki: CertomancerPki) -> InProcessTimeStamper:
    """The service's own TSA code, signing with certomancer's TSA key and certificate."""
    serials = itertools.count(1)

    async def next_serial() -> int:
        return next(serials)

    authority = TimeStampAuthority(_software_key(pki, "tsa", "RSA"), policy_oid=TSA_POLICY_OID,
                                   serial_source=next_serial)
    return InProcessTimeStamper(authority)


def _fetching_context(pki: CertomancerPki) -> ValidationContext:
    return ValidationContext(trust_roots=[pki.root], allow_fetching=True, revocation_mode="require")


@pytest.fixture
async def fetching_context(pki: CertomancerPki) -> AsyncIterator[ValidationContext]:
    context = _fetching_context(pki)
    yield context
    await context.aclose()


@pytest.fixture(scope="module")
def root_pem(pki: CertomancerPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pki.write_pem("root", tmp_path_factory.mktemp("certomancer-root") / "root.pem")


@pytest.fixture(scope="module")
def nss_dir(root_pem: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_nss_trust_db(tmp_path_factory.mktemp("nss-levels"), root_pem)


@pytest.fixture(scope="module")
def input_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdf(tmp_path_factory.mktemp("levels-input") / "to-b.pdf", 2)


def _stamp(label: str) -> StampSpec:
    _, name, title = OFFICIALS[label]
    return StampSpec(page=1, box=STAMP_BOXES[label], signer_name=name, signer_title=title, agency=AGENCY)


async def _sign(source: Path, output: Path, key: SigningKey, pki: CertomancerPki, level: str,
                context: ValidationContext | None, **options):
    options.setdefault("stamp", None)
    return await sign_pdf(source, output, key=key, timestamper=_timestamper(pki), reason="Phê duyệt hồ sơ",
                          location="Mẫu Sơn", level=level, validation_context=context, **options)


def _ocsp_serials(responses: list[asn1_ocsp.OCSPResponse]) -> set[int]:
    serials = set()
    for response in responses:
        basic = response["response_bytes"]["response"].parsed
        for single in basic["tbs_response_data"]["responses"]:
            serials.add(single["cert_id"]["serial_number"].native)
    return serials


@pytest.mark.parametrize("level", LEVELS)
async def test_level_verified_by_pdfsig(pki, token, hsm_key_ids, fetching_context, input_pdf, nss_dir, tmp_path,
                                        level):
    output = tmp_path / "signed.pdf"

    result = await _sign(input_pdf, output, _signing_key(pki, token, hsm_key_ids, "specialist"), pki, level,
                         fetching_context, stamp=_stamp("specialist"))

    assert result.level == level
    signatures = [found for found in pdfsig_signatures(output, nss_dir)
                  if found.signature_type == "ETSI.CAdES.detached"]
    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw


@pytest.mark.parametrize("level", LEVELS)
async def test_level_reported_by_validate_pdf(pki, token, hsm_key_ids, fetching_context, input_pdf, tmp_path,
                                              level):
    output = tmp_path / "signed.pdf"
    await _sign(input_pdf, output, _signing_key(pki, token, hsm_key_ids, "leader"), pki, level, fetching_context)

    [report] = await ensure_signed_pdf_valid(output, [pki.root], level=level, original_path=input_pdf)

    assert report.level == level
    assert report.trusted


@pytest.mark.parametrize(("level", "passes"), [("B-T", False), ("B-LT", True), ("B-LTA", True)])
async def test_long_term_data_checked_by_pyhanko_ades(pki, token, hsm_key_ids, fetching_context, input_pdf,
                                                      tmp_path, level, passes):
    output = tmp_path / "signed.pdf"
    await _sign(input_pdf, output, _signing_key(pki, token, hsm_key_ids, "specialist"), pki, level,
                fetching_context)

    result = await ades_with_time_result(output, [pki.root])

    assert (result.ades_subindic.status == AdESStatus.PASSED) is passes, result.failure_msg


@pytest.mark.parametrize(("level", "passes"), [("B-LT", False), ("B-LTA", True)])
async def test_archival_checked_by_pyhanko_ades_lta(pki, token, hsm_key_ids, fetching_context, input_pdf,
                                                    tmp_path, level, passes):
    output = tmp_path / "signed.pdf"
    await _sign(input_pdf, output, _signing_key(pki, token, hsm_key_ids, "specialist"), pki, level,
                fetching_context)

    result = await ades_lta_result(output, [pki.root])

    assert (result.ades_subindic.status == AdESStatus.PASSED) is passes, result.failure_msg
    assert (result.oldest_evidence_record_timestamp is not None) is passes


async def test_lta_document_timestamp_verified_by_openssl(pki, token, hsm_key_ids, fetching_context, input_pdf,
                                                          root_pem, tmp_path):
    output = tmp_path / "signed.pdf"
    await _sign(input_pdf, output, _signing_key(pki, token, hsm_key_ids, "specialist"), pki, "B-LTA",
                fetching_context)

    with output.open("rb") as stream:
        reader = PdfFileReader(stream)
        [document_timestamp] = reader.embedded_timestamp_signatures
        token_der = cms.ContentInfo({"content_type": "signed_data",
                                     "content": document_timestamp.signed_data}).dump()
        byte_range = [int(value) for value in document_timestamp.sig_object["/ByteRange"]]
    data = output.read_bytes()
    signed_bytes = b"".join(data[start:start + length] for start, length in zip(byte_range[::2], byte_range[1::2]))
    (tmp_path / "token.der").write_bytes(token_der)
    (tmp_path / "signed-bytes.bin").write_bytes(signed_bytes)
    pki.write_pem("interm", tmp_path / "interm.pem")

    ok, report = openssl_ts_verify(tmp_path / "token.der", root_pem, data=tmp_path / "signed-bytes.bin",
                                   untrusted=tmp_path / "interm.pem", token_only=True)

    assert ok, report
    assert byte_range[0] == 0


async def test_b_lt_dss_holds_signer_and_tsa_revocation(pki, token, hsm_key_ids, fetching_context, input_pdf,
                                                        tmp_path):
    output = tmp_path / "signed.pdf"
    await _sign(input_pdf, output, _signing_key(pki, token, hsm_key_ids, "specialist"), pki, "B-LT",
                fetching_context)

    certificates, ocsps, crls = dss_contents(output)

    serials = _ocsp_serials(ocsps)
    assert pki.cert("specialist").serial_number in serials
    assert pki.cert("tsa").serial_number in serials
    stored = {certificate.sha256 for certificate in certificates}
    assert {pki.cert(label).sha256 for label in ("specialist", "tsa", "interm")} <= stored
    # The issuing CA's status comes from the root's CRL.
    assert len(crls) == 1


async def test_b_lt_dss_leaves_out_other_signers(pki, token, hsm_key_ids, fetching_context, input_pdf, tmp_path):
    # The context first checks the leader's certificate, as a context shared between documents would.
    leader = _signing_key(pki, token, hsm_key_ids, "leader")
    await _sign(input_pdf, tmp_path / "leader.pdf", leader, pki, "B-LT", fetching_context)
    output = tmp_path / "specialist.pdf"

    await _sign(input_pdf, output, _signing_key(pki, token, hsm_key_ids, "specialist"), pki, "B-LT",
                fetching_context)

    _, ocsps, _ = dss_contents(output)
    assert pki.cert("leader").serial_number not in _ocsp_serials(ocsps)
    assert pki.cert("specialist").serial_number in _ocsp_serials(ocsps)


async def test_b_lt_validates_with_endpoints_off(offline_pki, token, hsm_key_ids, input_pdf, tmp_path):
    output = tmp_path / "signed.pdf"
    context = _fetching_context(offline_pki)
    try:
        await _sign(input_pdf, output, _signing_key(offline_pki, token, hsm_key_ids, "specialist"), offline_pki,
                    "B-LT", context)
    finally:
        await context.aclose()
    offline_pki.stop()
    requests_after_stop = sum(offline_pki.requests.values())

    [report] = await ensure_signed_pdf_valid(output, [offline_pki.root], level="B-LT")
    ades = await ades_with_time_result(output, [offline_pki.root])

    assert report.level == "B-LT"
    assert ades.ades_subindic.status == AdESStatus.PASSED, ades.failure_msg
    assert sum(offline_pki.requests.values()) == requests_after_stop


@pytest.mark.parametrize("level", ["B-LT", "B-LTA"])
async def test_long_term_level_with_endpoints_off_rejected(offline_pki, token, hsm_key_ids, input_pdf, tmp_path,
                                                           level):
    offline_pki.stop()
    output_dir = tmp_path / "output"
    output_dir.mkdir()
    output = output_dir / "signed.pdf"
    key = _signing_key(offline_pki, token, hsm_key_ids, "specialist")
    context = _fetching_context(offline_pki)

    try:
        with pytest.raises(RevocationUnavailable) as caught:
            await _sign(input_pdf, output, key, offline_pki, level, context)
    finally:
        await context.aclose()

    assert caught.value.code == "revocation_unavailable"
    assert key.raw_signer.calls == 0
    assert list(output_dir.iterdir()) == []


async def test_b_t_with_endpoints_off_signed(offline_pki, token, hsm_key_ids, input_pdf, tmp_path):
    offline_pki.stop()
    output = tmp_path / "signed.pdf"

    result = await _sign(input_pdf, output, _signing_key(offline_pki, token, hsm_key_ids, "specialist"),
                         offline_pki, "B-T", None)

    assert result.level == "B-T"


async def test_b_lt_revoked_signer_rejected(pki, token, hsm_key_ids, fetching_context, input_pdf, tmp_path):
    key = _signing_key(pki, token, hsm_key_ids, "revoked-official")

    with pytest.raises(CertificateRevoked) as caught:
        await _sign(input_pdf, tmp_path / "signed.pdf", key, pki, "B-LT", fetching_context)

    assert caught.value.params["reason"] == "key_compromise"
    assert key.raw_signer.calls == 0


async def test_b_t_file_fails_b_lt_check(pki, token, hsm_key_ids, input_pdf, tmp_path):
    output = tmp_path / "signed.pdf"
    await _sign(input_pdf, output, _signing_key(pki, token, hsm_key_ids, "specialist"), pki, "B-T", None)

    with pytest.raises(PadesLevelNotReached) as caught:
        await ensure_signed_pdf_valid(output, [pki.root], level="B-LT")

    assert caught.value.params["level"] == "B-LT"


async def test_long_term_level_needs_validation_context(pki, token, hsm_key_ids, input_pdf, tmp_path):
    key = _signing_key(pki, token, hsm_key_ids, "specialist")

    with pytest.raises(ValueError, match="validation_context"):
        await _sign(input_pdf, tmp_path / "signed.pdf", key, pki, "B-LT", None)

    assert key.raw_signer.calls == 0


async def test_three_signers_keep_earlier_signatures(pki, token, hsm_key_ids, input_pdf, nss_dir, tmp_path):
    steps = [("specialist", "B-LT"), ("leader", "B-LT"), ("seal", "B-LTA")]
    source = input_pdf
    for label, level in steps:
        output = tmp_path / f"after-{label}.pdf"
        context = _fetching_context(pki)
        try:
            result = await _sign(source, output, _signing_key(pki, token, hsm_key_ids, label), pki, level, context,
                                 stamp=_stamp(label))
        finally:
            await context.aclose()
        await ensure_signed_pdf_valid(output, [pki.root], level=level, original_path=source)
        assert result.level == level
        source = output

    signatures = [found for found in pdfsig_signatures(source, nss_dir)
                  if found.signature_type == "ETSI.CAdES.detached"]
    reports = await validate_pdf(source, [pki.root])
    file_size = source.stat().st_size

    assert [found.signer_common_name for found in signatures] == ["HSM specialist", "HSM leader", "HSM seal"]
    assert all(found.signature_valid and found.certificate_trusted for found in signatures), signatures
    # The seal's document time-stamp covers a DSS with the earlier signers' data too, so all reach B-LTA.
    assert [report.level for report in reports] == ["B-LTA", "B-LTA", "B-LTA"]
    assert all(report.intact and report.trusted and report.modifications_allowed for report in reports)
    assert reports[0].coverage == SignatureCoverageLevel.ENTIRE_REVISION.name.lower()
    assert signatures[0].signed_ranges[-1][1] < file_size
    assert not signatures[0].total_document_signed


async def test_certification_then_approvals(pki, token, hsm_key_ids, input_pdf, nss_dir, tmp_path):
    certified = tmp_path / "certified.pdf"
    result = await _sign(input_pdf, certified, _signing_key(pki, token, hsm_key_ids, "seal"), pki, "B-T", None,
                         stamp=_stamp("seal"), certify=True)
    # Later approvals go without a stamp: pyHanko 0.38 counts a new visible field as a change that breaks P=2.
    approved = tmp_path / "approved.pdf"
    await _sign(certified, approved, _signing_key(pki, token, hsm_key_ids, "specialist"), pki, "B-T", None)
    await ensure_signed_pdf_valid(approved, [pki.root], original_path=certified)

    reports = await validate_pdf(approved, [pki.root])
    signatures = pdfsig_signatures(approved, nss_dir)
    with approved.open("rb") as stream:
        certification = read_certification_data(PdfFileReader(stream))

    assert result.level == "B-T"
    assert inspect_pdf(certified, None).certification_level == 2
    assert certification is not None
    assert certification.permission == MDPPerm.FILL_FORMS
    assert all(report.intact and report.trusted and report.modifications_allowed for report in reports)
    assert all(found.signature_valid and found.certificate_trusted for found in signatures)


async def test_certification_of_signed_document_rejected(pki, token, hsm_key_ids, input_pdf, tmp_path):
    approved = tmp_path / "approved.pdf"
    await _sign(input_pdf, approved, _signing_key(pki, token, hsm_key_ids, "specialist"), pki, "B-T", None,
                stamp=_stamp("specialist"))
    seal = _signing_key(pki, token, hsm_key_ids, "seal")

    with pytest.raises(PdfCertificationNotFirst) as caught:
        await _sign(approved, tmp_path / "certified.pdf", seal, pki, "B-T", None, stamp=_stamp("seal"), certify=True)

    assert caught.value.code == "pdf_certification_not_first"
    assert seal.raw_signer.calls == 0


async def test_certified_no_changes_rejected_before_hsm(pki, token, hsm_key_ids, input_pdf, tmp_path):
    certified = tmp_path / "certified-p1.pdf"
    await _pyhanko_sign(input_pdf, certified, _software_key(pki, "signer", "EC"), certify=True,
                        docmdp=MDPPerm.NO_CHANGES)
    key = _signing_key(pki, token, hsm_key_ids, "leader")

    with pytest.raises(PdfCertifiedNoChanges) as caught:
        await _sign(certified, tmp_path / "signed.pdf", key, pki, "B-T", None)

    assert caught.value.code == "pdf_certified_no_changes"
    assert key.raw_signer.calls == 0


async def test_broken_earlier_signature_detected(pki, input_pdf, tmp_path):
    certified = tmp_path / "certified.pdf"
    await _pyhanko_sign(input_pdf, certified, _software_key(pki, "signer", "EC"), certify=True,
                        docmdp=MDPPerm.FILL_FORMS)
    # A new visible field after a P=2 certification, which pyHanko's difference policy rejects.
    broken = tmp_path / "broken.pdf"
    await _pyhanko_sign(certified, broken, _software_key(pki, "signer", "EC"), field_name="Visible",
                        box=(40.0, 60.0, 200.0, 140.0))

    with pytest.raises(SignatureValidationFailed) as caught:
        await ensure_signed_pdf_valid(broken, [pki.root], level="B-B", original_path=certified)

    assert caught.value.params["field_name"] == "Author"
    assert "breaks an earlier signature" in caught.value.params["reason"]


async def _pyhanko_sign(source: Path, target: Path, key: SigningKey, *, certify: bool = False,
                        docmdp: MDPPerm = MDPPerm.FILL_FORMS, field_name: str = "Author",
                        box: tuple[float, float, float, float] | None = None) -> Path:
    """Sign with pyHanko directly, as another tool would: B-B, optionally certifying or in a new visible field."""
    metadata = PdfSignatureMetadata(field_name=field_name, md_algorithm="sha256", certify=certify,
                                    docmdp_permissions=docmdp, subfilter=SigSeedSubFilter.PADES)
    field_spec = SigFieldSpec(field_name, box=box) if box is not None else None
    with source.open("rb") as stream, target.open("wb") as output:
        signer = PdfSigner(metadata, pyhanko_signer(key), new_field_spec=field_spec)
        await signer.async_sign_pdf(IncrementalPdfFileWriter(stream), output=output)
    return target
