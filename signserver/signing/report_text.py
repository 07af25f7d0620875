"""Bilingual texts of the validation report: the summary of each signature and of the document.

Vietnamese comes first and uses the administrative terms of the service
(chữ ký số, chứng thư số, dấu thời gian, thu hồi). Times are shown in
Vietnam time (UTC+07:00).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from signserver.signing.report import Bilingual, CoverageInfo, ModificationsInfo, SignatureReport, ValidationReport
from signserver.signing.report_indication import INDETERMINATE, NO_SIGNATURE, TOTAL_FAILED, TOTAL_PASSED
from signserver.signing.stamp import VIETNAM_TIME_ZONE

__all__ = ["EMPTY", "format_time", "with_summary", "signature_warnings", "document_summary", "render_report"]

EMPTY = Bilingual("", "")

# CRLReason values (RFC 5280 section 5.3.1) as asn1crypto names them.
_REVOCATION_REASONS = {
    "unspecified": ("không nêu lý do", "unspecified"),
    "key_compromise": ("lộ khóa bí mật", "key compromise"),
    "ca_compromise": ("lộ khóa của tổ chức chứng thực", "CA compromise"),
    "affiliation_changed": ("thay đổi thông tin", "affiliation changed"),
    "superseded": ("đã được thay thế", "superseded"),
    "cessation_of_operation": ("ngừng hoạt động", "cessation of operation"),
    "certificate_hold": ("tạm dừng", "certificate hold"),
    "remove_from_crl": ("gỡ khỏi danh sách thu hồi", "removed from CRL"),
    "privilege_withdrawn": ("bị rút quyền", "privilege withdrawn"),
    "aa_compromise": ("lộ khóa của tổ chức cấp thuộc tính", "AA compromise"),
}

_LEVEL_PREFIX = {"PAdES": "PAdES", "CAdES": "CAdES"}


def format_time(moment: datetime) -> tuple[str, str]:
    """Return ``moment`` in Vietnam time, as Vietnamese and English readers write it."""
    local = moment.astimezone(VIETNAM_TIME_ZONE)
    return local.strftime("%H:%M:%S ngày %d/%m/%Y (+07:00)"), local.strftime("%Y-%m-%d %H:%M:%S +07:00")


# Vietnamese labels of the attribute names in asn1crypto's human_friendly distinguished names.
_NAME_LABELS_VI = {
    "Common Name": "Tên",
    "Organization": "Tổ chức",
    "Organizational Unit": "Đơn vị",
    "Locality": "Địa phương",
    "State/Province": "Tỉnh/Thành phố",
    "Country": "Quốc gia",
    "Title": "Chức danh",
    "User ID": "Mã định danh",
    "Serial Number": "Số hiệu",
    "Email Address": "Thư điện tử",
}


def name_text(name: str, language: str) -> str:
    """Return a distinguished name in asn1crypto's human_friendly form with its labels in ``language``."""
    if language != "vi":
        return name
    parts = []
    for part in name.split(", "):
        label, separator, value = part.partition(": ")
        parts.append(f"{_NAME_LABELS_VI[label]}: {value}" if separator and label in _NAME_LABELS_VI else part)
    return ", ".join(parts)


def with_summary(report: SignatureReport) -> SignatureReport:
    return dataclasses.replace(report, summary=_signature_summary(report))


def signature_warnings(timestamp, coverage: CoverageInfo) -> list[Bilingual]:  # noqa: ANN001 - TimestampSignatureStatus
    """Return the facts a reader should notice even when the signature passes."""
    warnings = []
    if timestamp is not None and not (timestamp.intact and timestamp.valid):
        warnings.append(Bilingual(
            "Dấu thời gian của chữ ký không hợp lệ nên không được dùng làm bằng chứng thời điểm ký.",
            "The signature time-stamp is invalid, so it does not prove the signing time.",
        ))
    elif timestamp is not None and not timestamp.trusted:
        warnings.append(Bilingual(
            "Dấu thời gian do đơn vị cấp dấu thời gian không được tin cậy cấp, nên không được dùng làm bằng chứng.",
            "The signature time-stamp comes from an untrusted time-stamping authority, so it proves nothing.",
        ))
    if coverage.unsigned_trailing_bytes and coverage.scope != "revision_with_appended_data":
        warnings.append(Bilingual(
            f"Có {coverage.unsigned_trailing_bytes} byte dữ liệu không được ký nối sau phiên bản cuối của tài liệu.",
            f"{coverage.unsigned_trailing_bytes} unsigned bytes follow the document's newest revision.",
        ))
    return warnings


def document_summary(indication: str, counts: dict[str, int]) -> Bilingual:
    total = counts["total"]
    if indication == NO_SIGNATURE:
        return Bilingual("Tài liệu không có chữ ký số nào.", "The document contains no digital signature.")
    if indication == TOTAL_PASSED:
        return Bilingual(
            f"Hợp lệ: cả {total}/{total} chữ ký số đều hợp lệ.",
            f"Valid: all {total} of {total} digital signatures are valid.",
        )
    if indication == TOTAL_FAILED:
        return Bilingual(
            f"Không hợp lệ: {counts['failed']}/{total} chữ ký số không hợp lệ, "
            f"{counts['indeterminate']} chưa xác định được, {counts['passed']} hợp lệ.",
            f"Invalid: {counts['failed']} of {total} digital signatures are invalid, "
            f"{counts['indeterminate']} indeterminate, {counts['passed']} valid.",
        )
    return Bilingual(
        f"Chưa xác định được: {counts['indeterminate']}/{total} chữ ký số chưa xác định được tính hợp lệ, "
        f"{counts['passed']} hợp lệ.",
        f"Indeterminate: {counts['indeterminate']} of {total} digital signatures could not be confirmed, "
        f"{counts['passed']} valid.",
    )


def _signature_summary(report: SignatureReport) -> Bilingual:
    signer = report.signer.common_name or report.signer.subject if report.signer else "không rõ / unknown"
    if report.indication == TOTAL_PASSED:
        return _passed_summary(report, signer)
    reason = _reason(report, signer)
    if report.indication == TOTAL_FAILED:
        return Bilingual(f"Chữ ký không hợp lệ ({signer}): {reason.vi}",
                         f"Invalid signature ({signer}): {reason.en}")
    if report.indication == INDETERMINATE:
        return Bilingual(f"Chưa xác định được tính hợp lệ của chữ ký ({signer}): {reason.vi}",
                         f"Indeterminate signature ({signer}): {reason.en}")
    return Bilingual(reason.vi, reason.en)


def _passed_summary(report: SignatureReport, signer: str) -> Bilingual:
    if report.timestamp is not None and report.timestamp.trusted and report.timestamp.valid:
        when_vi, when_en = format_time(report.timestamp.time)
        when = Bilingual(f"lúc {when_vi} (theo dấu thời gian)", f"at {when_en} (time-stamped)")
    elif report.signing_time is not None:
        when_vi, when_en = format_time(report.signing_time)
        when = Bilingual(f"lúc {when_vi} (thời điểm do người ký khai)", f"at {when_en} (time claimed by the signer)")
    else:
        when = Bilingual("(không rõ thời điểm ký)", "(signing time unknown)")

    prefix = _LEVEL_PREFIX.get(report.format, report.format)
    level = (Bilingual(f"mức {prefix} {report.level}", f"level {prefix} {report.level}") if report.level != "none"
             else Bilingual(f"định dạng {report.subfilter or report.format}, không thuộc mức ETSI nào",
                            f"format {report.subfilter or report.format}, no ETSI baseline level"))
    coverage = _coverage_text(report.coverage)
    return Bilingual(
        f"Chữ ký hợp lệ: {signer} ký {when.vi}; {level.vi}; {coverage.vi}.",
        f"Valid signature: {signer} signed {when.en}; {level.en}; {coverage.en}.",
    )


def _coverage_text(coverage: CoverageInfo) -> Bilingual:
    if coverage.scope == "entire_document":
        return Bilingual("bao phủ toàn bộ tài liệu", "covers the entire document")
    if coverage.scope == "earlier_revision":
        return Bilingual(
            f"bao phủ phiên bản {coverage.signed_revision}/{coverage.total_revisions} của tài liệu, "
            f"các thay đổi sau đó được phép",
            f"covers revision {coverage.signed_revision} of {coverage.total_revisions}; the later changes are allowed",
        )
    if coverage.scope == "attached_content":
        return Bilingual("bao phủ nội dung đính kèm trong chữ ký", "covers the content embedded in the signature")
    if coverage.scope == "detached_content":
        return Bilingual("bao phủ tệp gốc đã gửi kèm", "covers the original file sent with it")
    return Bilingual("không bao phủ toàn bộ tài liệu", "does not cover the entire document")


def _reason(report: SignatureReport, signer: str) -> Bilingual:
    sub = report.sub_indication
    detail = report.detail or ""
    if sub == "HASH_FAILURE":
        return Bilingual("nội dung đã ký bị thay đổi sau khi ký (giá trị băm không khớp).",
                         "the signed content was altered after signing (the digest does not match).")
    if sub == "SIG_CRYPTO_FAILURE":
        return Bilingual("giá trị chữ ký không khớp với khóa công khai trong chứng thư số của người ký.",
                         "the signature value does not verify with the public key of the signer's certificate.")

    if sub == "FORMAT_FAILURE" and report.modifications is not None and not report.modifications.allowed:
        return _modification_reason(report.modifications)
    if sub == "FORMAT_FAILURE" and report.coverage.scope == "partial" and report.integrity.signature_verifies:
        return Bilingual("vùng dữ liệu được ký không bao phủ trọn phiên bản tài liệu chứa chữ ký.",
                         "the signed byte range does not cover the whole revision that contains the signature.")
    if sub == "FORMAT_FAILURE" and report.coverage.scope == "unknown" and report.integrity.signature_verifies:
        return Bilingual("cấu trúc tệp PDF bị hỏng ngoài vùng dữ liệu được ký, nên không kiểm tra được phạm vi ký "
                         "và các thay đổi sau khi ký.",
                         "the PDF structure is damaged outside the signed bytes, so what the signature covers and "
                         "the changes after it cannot be checked.")
    if sub == "FORMAT_FAILURE":
        return Bilingual(f"không đọc được cấu trúc chữ ký (chi tiết kỹ thuật: {detail}).",
                         f"the signature structure cannot be processed (technical detail: {detail}).")

    if sub in ("REVOKED", "REVOKED_NO_POE"):
        revocation = report.revocation
        when_vi, when_en = format_time(revocation.revoked_at) if revocation.revoked_at else ("?", "?")
        reason_vi, reason_en = _REVOCATION_REASONS.get(revocation.reason or "", (revocation.reason, revocation.reason))
        if sub == "REVOKED":
            return Bilingual(
                f"chứng thư số của {signer} đã bị thu hồi lúc {when_vi} (lý do: {reason_vi}), trước thời điểm ký.",
                f"the certificate of {signer} was revoked at {when_en} (reason: {reason_en}), before the signing time.",
            )
        return Bilingual(
            f"chứng thư số đã bị thu hồi lúc {when_vi} (lý do: {reason_vi}) và không có dấu thời gian chứng minh "
            f"chữ ký được tạo trước đó.",
            f"the certificate was revoked at {when_en} (reason: {reason_en}) and no time-stamp proves the signature "
            f"existed before.",
        )
    if sub == "REVOKED_CA_NO_POE":
        return Bilingual("một chứng thư số của tổ chức chứng thực trong chuỗi đã bị thu hồi.",
                         "a CA certificate of the chain has been revoked.")

    if sub == "NO_CERTIFICATE_CHAIN_FOUND":
        return Bilingual("chứng thư số của người ký không dẫn tới chứng thư gốc tin cậy nào được cấu hình.",
                         "the signer's certificate does not chain to any configured trust anchor.")
    if sub in ("OUT_OF_BOUNDS_NO_POE", "EXPIRED", "NOT_YET_VALID"):
        return _validity_reason(report, sub)

    if sub == "TRY_LATER":
        return Bilingual("không có hoặc không lấy được thông tin thu hồi (OCSP, CRL) cho chuỗi chứng thư số; "
                         "hãy kiểm tra lại sau.",
                         "revocation information (OCSP, CRL) for the certificate chain is missing and could not be "
                         "fetched; check again later.")
    if sub == "CHAIN_CONSTRAINTS_FAILURE":
        return Bilingual(f"chứng thư số không đáp ứng ràng buộc của chuỗi chứng thư hoặc không được phép dùng để ký "
                         f"({detail}).",
                         f"the certificate breaks a chain constraint or may not be used for signing ({detail}).")
    if sub == "SIG_CONSTRAINTS_FAILURE":
        return Bilingual("có dữ liệu không được ký nối thêm sau phiên bản tài liệu đã ký.",
                         "unsigned data was appended after the signed revision of the document.")

    if sub == "SIGNED_DATA_NOT_FOUND":
        return Bilingual("chữ ký tách rời được gửi mà không kèm tệp gốc hoặc giá trị băm của tệp gốc.",
                         "the detached signature was sent without the original file or its digest.")
    if sub == "NO_SIGNING_CERTIFICATE_FOUND":
        return Bilingual("không tìm thấy chứng thư số của người ký trong chữ ký.",
                         "the signer's certificate is not in the signature.")
    if sub is not None and sub.startswith("CRYPTO_CONSTRAINTS_FAILURE"):
        return Bilingual("chữ ký dùng thuật toán không còn được chấp nhận.",
                         "the signature uses an algorithm that is no longer accepted.")
    return Bilingual(f"{sub}: {detail}", f"{sub}: {detail}")


def _modification_reason(modifications: ModificationsInfo) -> Bilingual:
    if modifications.level == "other":
        return Bilingual("tài liệu bị sửa đổi sau khi ký (ví dụ thêm trang hoặc sửa nội dung), điều chữ ký không cho "
                         "phép.",
                         "the document was modified after signing (for example a page added or content edited), "
                         "which the signature does not allow.")
    permission_vi = {"no_changes": "không cho phép thay đổi nào", "fill_forms": "chỉ cho phép điền biểu mẫu và ký",
                     "annotate": "chỉ cho phép điền biểu mẫu, ký và thêm chú thích"}
    permission_en = {"no_changes": "allows no changes", "fill_forms": "allows only form filling and signing",
                     "annotate": "allows only form filling, signing and annotations"}
    permission = modifications.permission or ""
    return Bilingual(
        f"tài liệu bị sửa đổi sau khi ký ({modifications.level}) trong khi chữ ký "
        f"{permission_vi.get(permission, 'không cho phép thay đổi đó')}.",
        f"the document was modified after signing ({modifications.level}) while the signature "
        f"{permission_en.get(permission, 'does not allow that change')}.",
    )


def _validity_reason(report: SignatureReport, sub: str) -> Bilingual:
    signer = report.signer
    valid_from_vi, valid_from_en = format_time(signer.valid_from) if signer else ("?", "?")
    valid_to_vi, valid_to_en = format_time(signer.valid_to) if signer else ("?", "?")
    period_vi = f"từ {valid_from_vi} đến {valid_to_vi}"
    period_en = f"from {valid_from_en} to {valid_to_en}"
    if sub == "EXPIRED":
        return Bilingual(f"dấu thời gian cho thấy chữ ký được tạo sau khi chứng thư số hết hạn (hiệu lực {period_vi}).",
                         f"the time-stamp shows the signature was made after the certificate expired "
                         f"(valid {period_en}).")
    if sub == "NOT_YET_VALID":
        return Bilingual(f"chữ ký được tạo khi chứng thư số chưa có hiệu lực (hiệu lực {period_vi}).",
                         f"the signature was made before the certificate became valid (valid {period_en}).")
    return Bilingual(f"chứng thư số không còn hiệu lực (hiệu lực {period_vi}) và không có dấu thời gian chứng minh "
                     f"chữ ký được tạo trong thời hạn đó.",
                     f"the certificate is outside its validity period (valid {period_en}) and no time-stamp proves "
                     f"the signature was made within it.")


# Labels of the plain-text report, by language.
_LABELS = {
    "vi": {
        "title": "BÁO CÁO KIỂM TRA CHỮ KÝ SỐ",
        "file": "Tệp",
        "kind_pdf": "PDF, {revisions} phiên bản",
        "kind_cms": "chữ ký CMS, nội dung: {content}",
        "validated_at": "Thời điểm kiểm tra",
        "anchors": "Chứng thư gốc tin cậy",
        "verdict": "Kết luận",
        "signature": "Chữ ký {number}",
        "field": "trường {field}",
        "kinds": {"approval": "chữ ký phê duyệt", "certification": "chữ ký chứng nhận", "cms": "chữ ký CMS"},
        "result": "Kết quả",
        "summary": "Tóm tắt",
        "signer": "Người ký",
        "serial": "số hiệu",
        "issuer": "cấp bởi",
        "validity": "hiệu lực từ {start} đến {end}",
        "chain": "Chuỗi chứng thư số",
        "anchor": "gốc tin cậy",
        "no_anchor": "không dẫn tới chứng thư gốc tin cậy nào",
        "claimed_time": "Thời điểm ký do người ký khai",
        "timestamp": "Dấu thời gian",
        "timestamp_state": {True: "hợp lệ, đáng tin cậy", False: "không hợp lệ hoặc không đáng tin cậy"},
        "none": "không có",
        "integrity": "Toàn vẹn",
        "digest": {True: "giá trị băm khớp", False: "giá trị băm KHÔNG khớp",
                   None: "chưa kiểm tra được (thiếu nội dung gốc)"},
        "signature_value": {True: "giá trị chữ ký đúng", False: "giá trị chữ ký SAI"},
        "revocation": "Tình trạng thu hồi",
        "revocation_status": {"good": "chưa bị thu hồi", "revoked": "ĐÃ BỊ THU HỒI", "unknown": "không xác định được",
                              "not_applicable": "chứng thư số không nêu nơi tra cứu thu hồi"},
        "revocation_source": {"embedded": "theo dữ liệu nhúng trong chữ ký/tài liệu",
                              "fetched": "theo OCSP/CRL tra cứu trực tuyến"},
        "at": "tại thời điểm",
        "revoked_at": "thu hồi lúc {time}, lý do: {reason}",
        "level": "Mức chữ ký",
        "no_level": "không thuộc mức ETSI nào (định dạng {subfilter})",
        "coverage": "Phạm vi ký",
        "modifications": "Sửa đổi sau khi ký",
        "modification_levels": {"none": "không có", "lta_updates": "chỉ bổ sung dữ liệu kiểm tra dài hạn",
                                "form_filling": "điền biểu mẫu, thêm chữ ký", "annotations": "thêm chú thích",
                                "other": "sửa đổi khác (thêm trang, sửa nội dung...)"},
        "allowed": {True: "được phép", False: "KHÔNG được phép"},
        "warning": "Lưu ý",
        "timestamps": "Dấu thời gian tài liệu",
    },
    "en": {
        "title": "DIGITAL SIGNATURE VALIDATION REPORT",
        "file": "File",
        "kind_pdf": "PDF, {revisions} revision(s)",
        "kind_cms": "CMS signature, content: {content}",
        "validated_at": "Validated at",
        "anchors": "Trust anchors",
        "verdict": "Verdict",
        "signature": "Signature {number}",
        "field": "field {field}",
        "kinds": {"approval": "approval signature", "certification": "certification signature", "cms": "CMS signature"},
        "result": "Result",
        "summary": "Summary",
        "signer": "Signer",
        "serial": "serial",
        "issuer": "issued by",
        "validity": "valid from {start} to {end}",
        "chain": "Certificate chain",
        "anchor": "trust anchor",
        "no_anchor": "does not reach any trust anchor",
        "claimed_time": "Signing time claimed by the signer",
        "timestamp": "Time-stamp",
        "timestamp_state": {True: "valid and trusted", False: "invalid or untrusted"},
        "none": "none",
        "integrity": "Integrity",
        "digest": {True: "digest matches", False: "digest does NOT match",
                   None: "not checked (original content missing)"},
        "signature_value": {True: "signature value verifies", False: "signature value does NOT verify"},
        "revocation": "Revocation status",
        "revocation_status": {"good": "not revoked", "revoked": "REVOKED", "unknown": "unknown",
                              "not_applicable": "the certificate names no revocation service"},
        "revocation_source": {"embedded": "from data embedded in the signature or document",
                              "fetched": "from OCSP/CRL fetched online"},
        "at": "at",
        "revoked_at": "revoked at {time}, reason: {reason}",
        "level": "Level",
        "no_level": "no ETSI baseline level (format {subfilter})",
        "coverage": "Coverage",
        "modifications": "Changes after signing",
        "modification_levels": {"none": "none", "lta_updates": "long-term validation data only",
                                "form_filling": "form filling, added signatures", "annotations": "annotations",
                                "other": "other changes (pages added, content edited...)"},
        "allowed": {True: "allowed", False: "NOT allowed"},
        "warning": "Note",
        "timestamps": "Document time-stamps",
    },
}


def render_report(report: ValidationReport, language: str, source: str | None = None) -> str:
    """Render the report as plain text in ``language`` ("vi" or "en"), for the command line.

    ``source`` names the file in the heading.
    """
    labels = _LABELS[language]
    lines = [labels["title"], ""]
    document = report.document
    kind = (labels["kind_pdf"].format(revisions=document.revisions) if document.kind == "pdf"
            else labels["kind_cms"].format(content=document.content))
    name = f"{source} " if source else ""
    size_unit = "byte" if language == "vi" else "bytes"
    lines.append(f"{labels['file']}: {name}({kind}; {document.size} {size_unit}; SHA-256 {document.sha256})")
    lines.append(f"{labels['validated_at']}: {_time(report.validated_at, language)}")
    anchors = "; ".join(name_text(anchor, language) for anchor in report.trust_anchors)
    lines.append(f"{labels['anchors']}: {anchors or labels['none']}")
    lines.append(f"{labels['verdict']}: {report.indication} — {getattr(report.summary, language)}")

    for number, signature in enumerate(report.signatures, start=1):
        lines.append("")
        lines.extend(_render_signature(signature, number, labels, language))

    if report.document_timestamps:
        lines.append("")
        lines.append(f"{labels['timestamps']}:")
        for timestamp in report.document_timestamps:
            when = _time(timestamp.time, language) if timestamp.time else "?"
            state = labels["timestamp_state"][timestamp.intact and timestamp.valid and timestamp.trusted]
            lines.append(f"  {timestamp.field_name}: {when}, {timestamp.tsa or '?'} ({state}), "
                         f"{timestamp.signed_revision}/{timestamp.total_revisions}")
    return "\n".join(lines)


def _render_signature(signature: SignatureReport, number: int, labels: dict, language: str) -> list[str]:
    heading = labels["signature"].format(number=number)
    if signature.field_name:
        heading += f" ({labels['field'].format(field=signature.field_name)})"
    heading += f" — {labels['kinds'].get(signature.kind, signature.kind)}, {signature.format}"
    lines = [heading]
    sub = f" / {signature.sub_indication}" if signature.sub_indication else ""
    lines.append(f"  {labels['result']}: {signature.indication}{sub}")
    lines.append(f"  {labels['summary']}: {getattr(signature.summary, language)}")

    signer = signature.signer
    if signer is not None:
        validity = labels["validity"].format(start=_time(signer.valid_from, language),
                                             end=_time(signer.valid_to, language))
        lines.append(f"  {labels['signer']}: {signer.common_name or signer.subject}")
        lines.append(f"    {name_text(signer.subject, language)}; {labels['serial']} {signer.serial_number}; "
                     f"{labels['issuer']} {name_text(signer.issuer, language)}; {validity}")
    chain = " → ".join(certificate.common_name or certificate.subject for certificate in signature.chain.certificates)
    anchor = (f"{labels['anchor']}: {name_text(signature.chain.trust_anchor, language)}"
              if signature.chain.trust_anchor
              else labels["no_anchor"])
    lines.append(f"  {labels['chain']}: {chain or labels['none']} ({anchor})")
    if signature.signing_time is not None:
        lines.append(f"  {labels['claimed_time']}: {_time(signature.signing_time, language)}")
    if signature.timestamp is not None:
        timestamp = signature.timestamp
        state = labels["timestamp_state"][timestamp.intact and timestamp.valid and timestamp.trusted]
        lines.append(f"  {labels['timestamp']}: {_time(timestamp.time, language)}, {timestamp.tsa} ({state})")
    else:
        lines.append(f"  {labels['timestamp']}: {labels['none']}")

    integrity = signature.integrity
    lines.append(f"  {labels['integrity']}: {labels['digest'][integrity.digest_matches]}; "
                 f"{labels['signature_value'][integrity.signature_verifies]}")
    lines.append(f"  {labels['revocation']}: {_revocation_text(signature, labels, language)}")
    level = signature.level if signature.level != "none" else labels["no_level"].format(
        subfilter=signature.subfilter or signature.format)
    lines.append(f"  {labels['level']}: {level}")
    lines.append(f"  {labels['coverage']}: {getattr(_coverage_text(signature.coverage), language)}")
    if signature.modifications is not None:
        modifications = signature.modifications
        level_text = labels["modification_levels"].get(modifications.level or "", modifications.level or "?")
        lines.append(f"  {labels['modifications']}: {level_text} ({labels['allowed'][modifications.allowed]})")
    for warning in signature.warnings:
        lines.append(f"  {labels['warning']}: {getattr(warning, language)}")
    return lines


def _revocation_text(signature: SignatureReport, labels: dict, language: str) -> str:
    revocation = signature.revocation
    parts = [labels["revocation_status"].get(revocation.status, revocation.status)]
    if revocation.revoked_at is not None:
        reason = _REVOCATION_REASONS.get(revocation.reason or "", (revocation.reason, revocation.reason))
        parts.append(labels["revoked_at"].format(time=_time(revocation.revoked_at, language),
                                                 reason=reason[0] if language == "vi" else reason[1]))
    if revocation.source is not None:
        parts.append(labels["revocation_source"].get(revocation.source, revocation.source))
    if revocation.checked_at is not None:
        parts.append(f"{labels['at']} {_time(revocation.checked_at, language)}")
    return ", ".join(parts)


def _time(moment: datetime, language: str) -> str:
    vietnamese, english = format_time(moment)
    return vietnamese if language == "vi" else english
