"""The signature validation report on PDFs and CMS files made by other tools.

The samples are signed by pyHanko's own signer and by ``openssl cms``
against the certomancer PKI, whose OCSP responder, CRLs and TSA run on
loopback. Verdicts about integrity are checked against poppler's pdfsig and
``openssl cms -verify``, which share no code with the report.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from asn1crypto import x509
from pyhanko.sign.fields import MDPPerm, SigSeedSubFilter
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko_certvalidator import ValidationContext

from signserver.errors import SignserverError
from signserver.signing.pdf_inspect import open_pdf_reader
from signserver.signing.report import ValidationReport, validate_document
from signserver.signing.report_text import format_time, name_text
from signserver.signing.report_trust import TrustSetup, fetching_context_factory
from tests.certomancer_pki import CertomancerPki
from tests.signing import report_samples
from tests.signing.conftest import write_pdf
from tests.verifiers import make_nss_trust_db, pdfsig_signatures

CORPUS_SIGNED = {
    "pyhanko-minimal-signed-twice-both-created.pdf": ["Lord Testerino", "Lord Testerino"],
    "qpdf-digitally-signed.pdf": ["John Doe"],
    "qpdf-minimal-signed-restricted.pdf": ["Adobe Acrobat Sign"],
}


@dataclass(frozen=True)
class Samples:
    directory: Path
    source: Path
    pdfs: dict[str, Path]
    content: Path
    cms: dict[str, Path]


def _sign_all(pki: CertomancerPki, directory: Path) -> Samples:
    source = write_pdf(directory / "source.pdf", 1)
    pdfs: dict[str, Path] = {}

    async def sign(name: str, base: Path | None = None, **options) -> Path:
        pdfs[name] = await report_samples.sign_with_pyhanko(pki, base or source, directory / f"{name}.pdf", **options)
        return pdfs[name]

    async def make() -> None:
        for level in ("B-B", "B-T", "B-LT", "B-LTA"):
            await sign(level, level=level)
        await sign("pkcs7", subfilter=SigSeedSubFilter.ADOBE_PKCS7_DETACHED, level="B-B")
        await sign("revoked", label="signer-revoked")
        await sign("revoked-b-b", label="signer-revoked", level="B-B")
        await sign("expired", label="signer-expired")
        await sign("expired-b-b", label="signer-expired", level="B-B")
        await sign("two-signers", pdfs["B-T"], field_name="Signature2", level="B-LT")
        await sign("certified-p1", certify=True, docmdp=MDPPerm.NO_CHANGES, field_name="Certification")
        certified_p2 = await sign("certified-p2", certify=True, docmdp=MDPPerm.FILL_FORMS, field_name="Certification")
        await sign("certified-p2-signed", certified_p2, field_name="Approval")

    asyncio.run(make())
    pdfs["byte-changed"] = report_samples.flip_signed_byte(pdfs["B-T"], directory / "byte-changed.pdf")
    pdfs["appended"] = report_samples.append_bytes(pdfs["B-T"], directory / "appended.pdf")
    pdfs["trailer-broken"] = report_samples.break_signed_trailer(pdfs["B-T"], directory / "trailer-broken.pdf")
    pdfs["page-added"] = report_samples.add_page_incrementally(pdfs["B-T"], directory / "page-added.pdf")
    pdfs["field-added"] = report_samples.add_empty_field_incrementally(pdfs["B-T"], directory / "field-added.pdf")
    pdfs["certified-p2-page-added"] = report_samples.add_page_incrementally(
        pdfs["certified-p2"], directory / "certified-p2-page-added.pdf")
    # pyHanko refuses to sign a document certified with P=1, so the later change is a page.
    pdfs["certified-p1-page-added"] = report_samples.add_page_incrementally(
        pdfs["certified-p1"], directory / "certified-p1-page-added.pdf")

    content = directory / "to-khai.xml"
    content.write_text("<HoSo><MaHoSo>000.00.01.H01-261204-0099</MaHoSo></HoSo>\n", encoding="utf-8")
    cms = {
        "detached": report_samples.openssl_cms_sign(pki, content, directory / "detached.p7s"),
        "attached": report_samples.openssl_cms_sign(pki, content, directory / "attached.p7m", attached=True),
        "pem": report_samples.openssl_cms_sign(pki, content, directory / "detached.pem", output_format="PEM"),
        "plain-cms": report_samples.openssl_cms_sign(pki, content, directory / "plain.p7s", cades=False),
        "revoked": report_samples.openssl_cms_sign(pki, content, directory / "revoked.p7s", label="signer-revoked"),
        "attached-pdf": report_samples.openssl_cms_sign(pki, source, directory / "source.pdf.p7m", attached=True),
    }
    cms["cades-b-t"] = asyncio.run(_pyhanko_cades_b_t(pki, content, directory / "cades-b-t.p7s"))
    return Samples(directory, source, pdfs, content, cms)


async def _pyhanko_cades_b_t(pki: CertomancerPki, content: Path, target: Path) -> Path:
    signer = report_samples.software_signer(pki, "signer")
    signed = await signer.async_sign_general_data(
        content.read_bytes(), "sha256", detached=True, use_cades=True, timestamper=HTTPTimeStamper(pki.tsa_url),
    )
    target.write_bytes(signed.dump())
    return target


@pytest.fixture(scope="module")
def samples(certomancer_pki: CertomancerPki, tmp_path_factory: pytest.TempPathFactory) -> Samples:
    return _sign_all(certomancer_pki, tmp_path_factory.mktemp("report-samples"))


@pytest.fixture(scope="module")
def trust(certomancer_pki: CertomancerPki) -> TrustSetup:
    return TrustSetup((certomancer_pki.root,), fetching_context_factory(timeout_seconds=5))


@pytest.fixture(scope="module")
def certomancer_nss(certomancer_pki: CertomancerPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certomancer-nss")
    root_pem = certomancer_pki.write_pem("root", directory / "root.pem")
    return make_nss_trust_db(directory / "db", root_pem)


def _offline_factory(trust_roots: Sequence[x509.Certificate], *, revocation_required: bool,
                     moment: datetime | None = None, other_certs: Iterable[x509.Certificate] = ()) -> ValidationContext:
    """Return a context whose revocation sources never respond."""
    return ValidationContext(trust_roots=list(trust_roots), other_certs=list(other_certs), moment=moment,
                             allow_fetching=False, ocsps=[], crls=[],
                             revocation_mode="hard-fail" if revocation_required else "soft-fail")


def _only(report: ValidationReport):
    assert len(report.signatures) == 1, [s.field_name for s in report.signatures]
    return report.signatures[0]


@pytest.mark.parametrize("level", ["B-B", "B-T", "B-LT", "B-LTA"])
async def test_report_level_of_pyhanko_signature(samples: Samples, trust: TrustSetup, certomancer_nss: Path,
                                                 level: str) -> None:
    report = await validate_document(samples.pdfs[level], trust=trust)

    signature = _only(report)
    assert signature.level == level
    assert signature.indication == "TOTAL-PASSED"
    assert signature.sub_indication is None
    assert report.indication == "TOTAL-PASSED"
    assert signature.format == "PAdES"
    assert signature.signer.common_name == "Lê Văn Hùng"
    assert signature.chain.trusted is True
    assert signature.chain.trust_anchor is not None
    assert "Test Root CA" in signature.chain.trust_anchor
    assert [c.common_name for c in signature.chain.certificates][-1].startswith("Test Root CA")
    assert signature.revocation.status == "good"
    assert signature.summary.vi.startswith("Chữ ký hợp lệ")
    assert signature.summary.en.startswith("Valid signature")
    # pdfsig lists a B-LTA document time-stamp as a second signature.
    pdfsig = pdfsig_signatures(samples.pdfs[level], certomancer_nss)[0]
    assert pdfsig.signature_valid is True
    assert pdfsig.certificate_trusted is True


async def test_report_timestamp_time_and_tsa(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.pdfs["B-T"], trust=trust))

    assert signature.timestamp is not None
    assert signature.timestamp.trusted is True
    assert signature.timestamp.tsa == "Test TSA - Dấu thời gian kiểm thử"
    assert abs(signature.timestamp.time - signature.signing_time) < timedelta(minutes=5)
    assert signature.revocation.checked_at == signature.timestamp.time


async def test_report_b_lt_revocation_from_dss(samples: Samples, trust: TrustSetup,
                                               certomancer_pki: CertomancerPki) -> None:
    ocsp_requests_before = certomancer_pki.requests["ocsp/interm"]

    signature = _only(await validate_document(samples.pdfs["B-LT"], trust=trust))

    assert signature.revocation.source == "embedded"
    assert certomancer_pki.requests["ocsp/interm"] == ocsp_requests_before


async def test_report_b_t_revocation_fetched(samples: Samples, trust: TrustSetup,
                                             certomancer_pki: CertomancerPki) -> None:
    ocsp_requests_before = certomancer_pki.requests["ocsp/interm"]

    signature = _only(await validate_document(samples.pdfs["B-T"], trust=trust))

    assert signature.revocation.source == "fetched"
    assert certomancer_pki.requests["ocsp/interm"] > ocsp_requests_before


async def test_report_b_lta_document_timestamp(samples: Samples, trust: TrustSetup) -> None:
    report = await validate_document(samples.pdfs["B-LTA"], trust=trust)

    assert len(report.document_timestamps) == 1
    timestamp = report.document_timestamps[0]
    assert timestamp.trusted is True
    assert timestamp.intact is True
    assert timestamp.signed_revision > _only(report).coverage.signed_revision
    assert _only(report).coverage.scope == "earlier_revision"
    assert _only(report).modifications.level == "lta_updates"
    assert _only(report).modifications.allowed is True


async def test_report_pkcs7_subfilter_has_no_level(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.pdfs["pkcs7"], trust=trust))

    assert signature.level == "none"
    assert signature.subfilter == "adbe.pkcs7.detached"
    assert signature.format == "PDF PKCS#7"
    assert signature.indication == "TOTAL-PASSED"


async def test_report_revoked_signer_time_stamped(samples: Samples, trust: TrustSetup,
                                                  certomancer_pki: CertomancerPki) -> None:
    report = await validate_document(samples.pdfs["revoked"], trust=trust)

    signature = _only(report)
    assert signature.indication == "TOTAL-FAILED"
    assert signature.sub_indication == "REVOKED"
    assert signature.revocation.status == "revoked"
    assert signature.revocation.reason == "key_compromise"
    assert signature.revocation.source == "fetched"
    assert signature.revocation.revoked_at < signature.timestamp.time
    assert report.indication == "TOTAL-FAILED"
    assert "thu hồi" in signature.summary.vi
    assert "revoked" in signature.summary.en


async def test_report_revoked_signer_without_timestamp(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.pdfs["revoked-b-b"], trust=trust))

    assert signature.indication == "INDETERMINATE"
    assert signature.sub_indication == "REVOKED_NO_POE"
    assert signature.revocation.status == "revoked"


async def test_report_expired_signer_time_stamped(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.pdfs["expired"], trust=trust))

    assert signature.indication == "INDETERMINATE"
    assert signature.sub_indication == "EXPIRED"
    assert signature.signer.valid_to.year == 2021
    assert signature.chain.trusted is False


async def test_report_expired_signer_without_timestamp(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.pdfs["expired-b-b"], trust=trust))

    assert signature.indication == "INDETERMINATE"
    assert signature.sub_indication == "OUT_OF_BOUNDS_NO_POE"


async def test_report_revocation_unavailable_try_later(samples: Samples, certomancer_pki: CertomancerPki) -> None:
    offline = TrustSetup((certomancer_pki.root,), _offline_factory)

    signature = _only(await validate_document(samples.pdfs["B-T"], trust=offline))

    assert signature.indication == "INDETERMINATE"
    assert signature.sub_indication == "TRY_LATER"
    assert signature.revocation.status == "unknown"


async def test_report_other_trust_anchor_no_chain(samples: Samples, pki, certomancer_pki: CertomancerPki) -> None:
    other = TrustSetup((pki.root,), fetching_context_factory(timeout_seconds=5))
    requests_before = sum(certomancer_pki.requests.values())

    signature = _only(await validate_document(samples.pdfs["B-T"], trust=other))

    # Nothing is fetched for a chain that reaches no trust anchor.
    assert sum(certomancer_pki.requests.values()) == requests_before
    assert signature.indication == "INDETERMINATE"
    assert signature.sub_indication == "NO_CERTIFICATE_CHAIN_FOUND"
    assert signature.chain.trust_anchor is None
    assert signature.chain.trusted is False
    assert signature.chain.certificates[0].common_name == "Lê Văn Hùng"


async def test_report_byte_changed_hash_failure(samples: Samples, trust: TrustSetup, certomancer_nss: Path) -> None:
    report = await validate_document(samples.pdfs["byte-changed"], trust=trust)

    signature = _only(report)
    assert signature.indication == "TOTAL-FAILED"
    assert signature.sub_indication == "HASH_FAILURE"
    assert signature.integrity.digest_matches is False
    assert report.indication == "TOTAL-FAILED"
    [pdfsig] = pdfsig_signatures(samples.pdfs["byte-changed"], certomancer_nss)
    assert pdfsig.signature_valid is False


async def test_report_unparseable_pdf_hash_failure(samples: Samples, trust: TrustSetup,
                                                    certomancer_nss: Path) -> None:
    path = samples.pdfs["trailer-broken"]
    with path.open("rb") as stream, pytest.raises(SignserverError) as opening:
        open_pdf_reader(stream, None, require_signing_permission=False)
    assert opening.value.code == "pdf_invalid"

    report = await validate_document(path, trust=trust)

    signature = _only(report)
    assert signature.indication == "TOTAL-FAILED"
    assert signature.sub_indication == "HASH_FAILURE"
    assert signature.signer.common_name == "Lê Văn Hùng"
    assert report.document.revisions is None
    [pdfsig] = pdfsig_signatures(path, certomancer_nss)
    assert pdfsig.signature_valid is False


async def test_report_appended_bytes_not_entire_document(samples: Samples, trust: TrustSetup,
                                                         certomancer_nss: Path) -> None:
    signature = _only(await validate_document(samples.pdfs["appended"], trust=trust))

    assert signature.coverage.scope == "revision_with_appended_data"
    assert signature.coverage.unsigned_trailing_bytes > 0
    assert signature.indication == "INDETERMINATE"
    assert signature.sub_indication == "SIG_CONSTRAINTS_FAILURE"
    assert signature.integrity.digest_matches is True
    [pdfsig] = pdfsig_signatures(samples.pdfs["appended"], certomancer_nss)
    assert pdfsig.signature_valid is True
    assert pdfsig.total_document_signed is False


async def test_report_page_added_not_allowed(samples: Samples, trust: TrustSetup, certomancer_nss: Path) -> None:
    report = await validate_document(samples.pdfs["page-added"], trust=trust)

    signature = _only(report)
    assert signature.coverage.scope == "earlier_revision"
    assert signature.coverage.signed_revision == 2
    assert signature.coverage.total_revisions == 3
    assert signature.modifications.level == "other"
    assert signature.modifications.allowed is False
    assert signature.indication == "TOTAL-FAILED"
    assert signature.sub_indication == "FORMAT_FAILURE"
    assert signature.integrity.digest_matches is True
    assert "thêm trang" in signature.summary.vi
    [pdfsig] = pdfsig_signatures(samples.pdfs["page-added"], certomancer_nss)
    assert pdfsig.signature_valid is True
    assert pdfsig.total_document_signed is False


async def test_report_empty_field_added_allowed(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.pdfs["field-added"], trust=trust))

    assert signature.coverage.scope == "earlier_revision"
    assert signature.modifications.allowed is True
    assert signature.indication == "TOTAL-PASSED"


async def test_report_two_signers(samples: Samples, trust: TrustSetup, certomancer_nss: Path) -> None:
    report = await validate_document(samples.pdfs["two-signers"], trust=trust)

    assert [s.field_name for s in report.signatures] == ["Signature1", "Signature2"]
    first, second = report.signatures
    assert first.coverage.scope == "earlier_revision"
    assert first.modifications.level == "form_filling"
    # The second signature's DSS contains the same signer's and TSA's validation
    # data, which lifts the first signature from B-T to B-LT.
    assert first.level == "B-LT"
    # The DSS that B-LT adds is a revision after the second signature.
    assert second.coverage.scope == "earlier_revision"
    assert second.modifications.level == "lta_updates"
    assert second.level == "B-LT"
    assert report.indication == "TOTAL-PASSED"
    assert report.counts == {"total": 2, "passed": 2, "indeterminate": 0, "failed": 0}
    assert [s.signature_valid for s in pdfsig_signatures(samples.pdfs["two-signers"], certomancer_nss)] == [True, True]


async def test_report_certified_no_changes_alone(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.pdfs["certified-p1"], trust=trust))

    assert signature.kind == "certification"
    assert signature.modifications.permission == "no_changes"
    assert signature.indication == "TOTAL-PASSED"


async def test_report_certified_no_changes_then_page_added(samples: Samples, trust: TrustSetup) -> None:
    report = await validate_document(samples.pdfs["certified-p1-page-added"], trust=trust)

    signature = _only(report)
    assert signature.kind == "certification"
    assert signature.modifications.allowed is False
    assert signature.indication == "TOTAL-FAILED"
    assert report.indication == "TOTAL-FAILED"


async def test_report_certified_fill_forms_then_signed(samples: Samples, trust: TrustSetup) -> None:
    report = await validate_document(samples.pdfs["certified-p2-signed"], trust=trust)

    certification, approval = report.signatures
    assert certification.kind == "certification"
    assert certification.modifications.permission == "fill_forms"
    assert certification.modifications.allowed is True
    assert certification.indication == "TOTAL-PASSED"
    assert approval.indication == "TOTAL-PASSED"


async def test_report_certified_fill_forms_then_page_added(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.pdfs["certified-p2-page-added"], trust=trust))

    assert signature.kind == "certification"
    assert signature.modifications.allowed is False
    assert signature.indication == "TOTAL-FAILED"


async def test_report_json_round_trip(samples: Samples, trust: TrustSetup) -> None:
    report = await validate_document(samples.pdfs["two-signers"], trust=trust)

    encoded = json.loads(json.dumps(report.to_json(), ensure_ascii=False))
    assert encoded["indication"] == "TOTAL-PASSED"
    assert encoded["validated_at"].endswith("Z")
    assert encoded["signatures"][0]["summary"]["vi"].startswith("Chữ ký hợp lệ")
    assert encoded["signatures"][1]["timestamp"]["time"].endswith("Z")
    assert encoded["document"]["sha256"] == hashlib.sha256(samples.pdfs["two-signers"].read_bytes()).hexdigest()


async def test_report_unsigned_pdf_no_signature(samples: Samples, trust: TrustSetup) -> None:
    report = await validate_document(samples.source, trust=trust)

    assert report.signatures == []
    assert report.indication == "NO_SIGNATURE"
    assert report.summary.vi == "Tài liệu không có chữ ký số nào."


async def test_report_not_pdf_nor_cms_rejected(samples: Samples, trust: TrustSetup) -> None:
    with pytest.raises(SignserverError) as caught:
        await validate_document(samples.content, trust=trust)

    assert caught.value.code == "validation_document_unrecognized"


async def test_report_cms_detached_with_content(samples: Samples, trust: TrustSetup,
                                                certomancer_pki: CertomancerPki) -> None:
    report = await validate_document(samples.cms["detached"], trust=trust, content_path=samples.content)

    signature = _only(report)
    assert signature.indication == "TOTAL-PASSED"
    assert signature.format == "CAdES"
    assert signature.level == "B-B"
    assert signature.coverage.scope == "detached_content"
    assert signature.signer.common_name == "Lê Văn Hùng"
    assert report.document.content == "detached_file"
    assert report_samples.openssl_cms_verify(certomancer_pki, samples.cms["detached"], content=samples.content,
                                             directory=samples.directory) is True


async def test_report_cms_detached_with_digest(samples: Samples, trust: TrustSetup) -> None:
    digest = hashlib.sha256(samples.content.read_bytes()).digest()

    report = await validate_document(samples.cms["detached"], trust=trust, digest=digest, digest_algorithm="sha256")

    assert _only(report).indication == "TOTAL-PASSED"
    assert report.document.content == "detached_digest"


async def test_report_cms_detached_wrong_content(samples: Samples, trust: TrustSetup,
                                                 certomancer_pki: CertomancerPki) -> None:
    other = samples.directory / "other.xml"
    other.write_bytes(samples.content.read_bytes().replace(b"0099", b"0100"))

    signature = _only(await validate_document(samples.cms["detached"], trust=trust, content_path=other))

    assert signature.indication == "TOTAL-FAILED"
    assert signature.sub_indication == "HASH_FAILURE"
    assert report_samples.openssl_cms_verify(certomancer_pki, samples.cms["detached"], content=other,
                                             directory=samples.directory) is False


async def test_report_cms_detached_without_content(samples: Samples, trust: TrustSetup) -> None:
    report = await validate_document(samples.cms["detached"], trust=trust)

    signature = _only(report)
    assert signature.indication == "INDETERMINATE"
    assert signature.sub_indication == "SIGNED_DATA_NOT_FOUND"
    assert signature.integrity.digest_matches is None
    assert signature.integrity.signature_verifies is True
    assert report.document.content == "missing"


async def test_report_cms_attached(samples: Samples, trust: TrustSetup, certomancer_pki: CertomancerPki) -> None:
    report = await validate_document(samples.cms["attached"], trust=trust)

    signature = _only(report)
    assert signature.indication == "TOTAL-PASSED"
    assert signature.coverage.scope == "attached_content"
    assert report.document.content == "attached"
    assert report_samples.openssl_cms_verify(certomancer_pki, samples.cms["attached"], content=None,
                                             directory=samples.directory) is True


async def test_report_cms_attached_pdf_read_as_cms(samples: Samples, trust: TrustSetup) -> None:
    assert b"%PDF-" in samples.cms["attached-pdf"].read_bytes()[:1024]

    report = await validate_document(samples.cms["attached-pdf"], trust=trust)

    assert report.document.kind == "cms"
    assert _only(report).indication == "TOTAL-PASSED"


async def test_report_cms_pem(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.cms["pem"], trust=trust, content_path=samples.content))

    assert signature.indication == "TOTAL-PASSED"


async def test_report_cms_without_signing_certificate_attribute(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.cms["plain-cms"], trust=trust, content_path=samples.content))

    assert signature.format == "CMS"
    assert signature.level == "none"
    assert signature.indication == "TOTAL-PASSED"


async def test_report_cms_revoked_signer(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.cms["revoked"], trust=trust, content_path=samples.content))

    assert signature.indication == "INDETERMINATE"
    assert signature.sub_indication == "REVOKED_NO_POE"


async def test_report_cades_b_t_by_pyhanko(samples: Samples, trust: TrustSetup) -> None:
    signature = _only(await validate_document(samples.cms["cades-b-t"], trust=trust, content_path=samples.content))

    assert signature.level == "B-T"
    assert signature.timestamp is not None
    assert signature.timestamp.trusted is True
    assert signature.indication == "TOTAL-PASSED"


async def test_report_cms_digest_algorithm_mismatch(samples: Samples, trust: TrustSetup) -> None:
    digest = hashlib.sha512(samples.content.read_bytes()).digest()

    with pytest.raises(SignserverError) as caught:
        await validate_document(samples.cms["detached"], trust=trust, digest=digest, digest_algorithm="sha512")

    assert caught.value.code == "validation_digest_invalid"


async def test_report_cms_digest_wrong_length(samples: Samples, trust: TrustSetup) -> None:
    with pytest.raises(SignserverError) as caught:
        await validate_document(samples.cms["detached"], trust=trust, digest=b"\x01" * 20, digest_algorithm="sha256")

    assert caught.value.code == "validation_digest_invalid"


async def test_report_cms_attached_with_content_rejected(samples: Samples, trust: TrustSetup) -> None:
    with pytest.raises(SignserverError) as caught:
        await validate_document(samples.cms["attached"], trust=trust, content_path=samples.content)

    assert caught.value.code == "validation_content_unexpected"


async def test_report_pdf_with_content_rejected(samples: Samples, trust: TrustSetup) -> None:
    with pytest.raises(SignserverError) as caught:
        await validate_document(samples.pdfs["B-T"], trust=trust, content_path=samples.content)

    assert caught.value.code == "validation_content_unexpected"


@pytest.mark.corpus
@pytest.mark.parametrize("name", sorted(CORPUS_SIGNED))
async def test_report_corpus_signed_pdf(corpus_file, trust: TrustSetup, certomancer_nss: Path, name: str) -> None:
    path = corpus_file(name)

    report = await validate_document(path, trust=trust)

    assert [s.signer.common_name for s in report.signatures] == CORPUS_SIGNED[name]
    for signature in report.signatures:
        assert signature.integrity.digest_matches is True
        assert signature.integrity.signature_verifies is True
        assert signature.indication == "INDETERMINATE"
        assert signature.sub_indication == "NO_CERTIFICATE_CHAIN_FOUND"
    assert report.indication == "INDETERMINATE"
    pdfsig = pdfsig_signatures(path, certomancer_nss)
    assert [s.signature_valid for s in pdfsig] == [True] * len(CORPUS_SIGNED[name])
    # pdfsig and the report agree that the last signature covers the whole file, linearized ones included.
    assert "Total document signed" in pdfsig[-1].raw
    assert report.signatures[-1].coverage.scope == "entire_document"
    assert report.signatures[-1].coverage.unsigned_trailing_bytes == 0


@pytest.mark.corpus
async def test_report_corpus_unsigned_pdf(corpus_file, trust: TrustSetup) -> None:
    report = await validate_document(corpus_file("pyhanko-minimal.pdf"), trust=trust)

    assert report.indication == "NO_SIGNATURE"


@pytest.mark.corpus
async def test_report_corpus_encrypted_needs_password(corpus_file, trust: TrustSetup) -> None:
    path = corpus_file("pyhanko-minimal-aes256.pdf")

    with pytest.raises(SignserverError) as caught:
        await validate_document(path, trust=trust)
    assert caught.value.code == "pdf_password_required"

    report = await validate_document(path, trust=trust, password="usersecret")
    assert report.indication == "NO_SIGNATURE"


def test_report_time_in_vietnam_time() -> None:
    vietnamese, english = format_time(datetime(2026, 12, 4, 23, 30, tzinfo=timezone.utc))

    assert vietnamese == "06:30:00 ngày 05/12/2026 (+07:00)"
    assert english == "2026-12-05 06:30:00 +07:00"


def test_report_name_labels_in_vietnamese() -> None:
    name = "Common Name: Lê Văn Hùng, Organizational Unit: Văn phòng UBND, Country: VN, Pseudonym: LVH"

    assert name_text(name, "vi") == "Tên: Lê Văn Hùng, Đơn vị: Văn phòng UBND, Quốc gia: VN, Pseudonym: LVH"
    assert name_text(name, "en") == name
