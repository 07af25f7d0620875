"""Independent verifiers that tests use to check the service's output.

Each helper runs a tool that shares no code with the service. poppler's
pdfsig (with NSS) checks PDF signatures, qpdf checks file structure,
pdftotext extracts the text of a page area, and OpenSSL checks CMS
signatures and RFC 3161 time-stamp tokens. pyHanko's validator reports the PAdES details that poppler
does not. The helpers start no services and keep no state, so any test may
call them.

Versions checked: poppler 22.12, qpdf 11.3, OpenSSL 3.0, pyHanko 0.38.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import re
import subprocess
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature, validate_pdf_timestamp
from pyhanko_certvalidator import ValidationContext

__all__ = [
    "PdfsigSignature",
    "make_nss_trust_db",
    "pdfsig_signatures",
    "qpdf_check",
    "pdftotext_area",
    "pyhanko_validate",
    "openssl_cms_verify",
    "openssl_cms_print",
    "openssl_ts_verify",
]

# Verdicts as pdfsig of poppler 22.12 prints them.
PDFSIG_SIGNATURE_VALID = "Signature is Valid."
PDFSIG_CERTIFICATE_TRUSTED = "Certificate is Trusted."

# qpdf exits with 0 on success, 2 on errors and 3 when it found only warnings.
QPDF_EXIT_OK = 0
QPDF_EXIT_WARNINGS = 3

_SIGNATURE_HEADER = re.compile(r"^Signature #(\d+):$", re.MULTILINE)
_PDFSIG_FIELD = re.compile(r"^\s+- ([^:]+): (.*)$")
_SIGNED_RANGE = re.compile(r"\[(\d+) - (\d+)\]")
_PDFINFO_BOX = re.compile(
    r"^Page\s+(\d+) MediaBox:\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)$", re.MULTILINE
)
_PDFINFO_ROTATION = re.compile(r"^Page\s+(\d+) rot:\s+(\d+)$", re.MULTILINE)


@dataclass
class PdfsigSignature:
    """One "Signature #N" block of pdfsig's output."""

    index: int
    signer_common_name: str
    signature_valid: bool
    certificate_trusted: bool
    raw: str
    field_name: str | None = None
    signature_validation: str | None = None
    # pdfsig prints no "Certificate Validation" line when the digest does not
    # match, so this stays None and certificate_trusted is False.
    certificate_validation: str | None = None
    signature_type: str | None = None
    # Each range as pdfsig prints it: (first byte, end byte exclusive).
    signed_ranges: list[tuple[int, int]] = field(default_factory=list)
    total_document_signed: bool = False


def make_nss_trust_db(directory: Path, root_pem: Path) -> Path:
    """Create an NSS database in ``directory`` that trusts the certificates in ``root_pem``.

    Every certificate of the PEM file becomes a trust anchor for signing
    (S/MIME trust flag ``C``). poppler checks signer certificates for the
    NSS usage certificateUsageEmailSigner, so a root imported with ``-t "C,,"``
    (TLS only) makes pdfsig report "Certificate issuer isn't Trusted.".
    Pass the returned directory to pdfsig as ``sql:DIR``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    database = f"sql:{directory}"
    _run_checked(["certutil", "-N", "-d", database, "--empty-password"])

    roots = _pem_certificates(Path(root_pem))
    for number, der in enumerate(roots):
        nickname = f"trusted-root-{number}"
        _run_checked(
            ["certutil", "-A", "-d", database, "-n", nickname, "-t", ",C,"],
            input_bytes=der,
        )
    return directory


def pdfsig_signatures(pdf: Path, nss_dir: Path, password: str | None = None) -> list[PdfsigSignature]:
    """Verify every signature of ``pdf`` with pdfsig against the NSS database in ``nss_dir``.

    Returns an empty list for a PDF without signatures.
    """
    # NOTE: pdfsig checks OCSP for certificates whose AIA names a responder.
    # The demo certificates name none. "-no-ocsp" is not passed because with
    # it poppler 22.12 reports "Unknown issue with Certificate or corrupted
    # data." for a chain that it otherwise reports as trusted.
    command = ["pdfsig", "-nssdir", f"sql:{nss_dir}"]
    command += _poppler_password_options(password)
    command.append(str(pdf))
    result = subprocess.run(command, capture_output=True, text=True)

    # pdfsig exits with 2 and this message when the file has no signature
    # fields, and with 1 when it cannot open or decrypt the file.
    if result.returncode == 2 and "does not contain any signatures" in result.stdout + result.stderr:
        return []
    if result.returncode != 0:
        raise RuntimeError(
            f"pdfsig failed on {pdf} with exit code {result.returncode}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return _parse_pdfsig_output(result.stdout)


def qpdf_check(pdf: Path, password: str | None = None, *, allow_warnings: bool = False) -> tuple[bool, str]:
    """Check the structure of ``pdf`` with ``qpdf --check`` and return (ok, output).

    Exit code 0 is ok and exit code 2 (errors) is a failure. Exit code 3 means
    qpdf found only warnings, usually after repairing a damaged cross-reference
    table. That counts as a failure unless ``allow_warnings`` is set, because
    the service's own output must not need repair, while real-world input
    documents often do.
    """
    command = ["qpdf", "--check"]
    if password is not None:
        command.append(f"--password={password}")
    command.append(str(pdf))
    result = subprocess.run(command, capture_output=True, text=True)

    output = result.stdout + result.stderr
    if result.returncode == QPDF_EXIT_OK:
        return True, output
    if result.returncode == QPDF_EXIT_WARNINGS:
        return allow_warnings, output
    return False, output


def pdftotext_area(
    pdf: Path,
    page: int,
    box: tuple[float, float, float, float],
    password: str | None = None,
) -> str:
    """Extract the NFC text inside ``box`` on ``page`` (1-based) with pdftotext.

    ``box`` is (x1, y1, x2, y2) in PDF points in the page's default user
    space, origin bottom left. pdftotext crops in pixels from the top left of
    the displayed MediaBox, so at 72 dpi one pixel is one point, and the box is
    moved by the MediaBox origin, flipped, and turned by the page's /Rotate.
    The crop is widened to whole points. pdftotext decides per character, so
    a box edge that crosses a word cuts the word.
    """
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box must be (x1, y1, x2, y2) with x1 < x2 and y1 < y2, got {box}")

    media_box, rotation = _page_geometry(pdf, page, password)
    left, top, right, bottom = _box_to_display(box, media_box, rotation)
    x = math.floor(left)
    y = math.floor(top)
    width = math.ceil(right) - x
    height = math.ceil(bottom) - y

    command = ["pdftotext", "-r", "72", "-f", str(page), "-l", str(page)]
    command += ["-x", str(x), "-y", str(y), "-W", str(width), "-H", str(height)]
    command += _poppler_password_options(password)
    command += [str(pdf), "-"]
    output = _run_checked(command).decode("utf-8")
    return unicodedata.normalize("NFC", output.replace("\f", "")).strip()


def pyhanko_validate(pdf: Path, root_pem: Path, password: str | None = None) -> list[dict]:
    """Validate every signature and document timestamp of ``pdf`` with pyHanko.

    The certificates in ``root_pem`` are the only trust anchors. Revocation
    checking is soft-fail and nothing is fetched from the network, so a
    missing OCSP response or CRL does not make a signature untrusted.
    Returns one dict per signature in file order, with the keys ``field``,
    ``kind`` ("signature" or "doc_timestamp"), ``intact``, ``valid``,
    ``trusted``, ``timestamp_valid`` (None without a signature timestamp),
    ``coverage``, ``docmdp_ok``, ``modification_level``, ``bottom_line``,
    ``signer_common_name``, ``signing_time``, ``timestamp_time`` and ``summary``.
    """
    # pyHanko's synchronous API calls asyncio.run(), which fails inside a
    # running event loop, so async tests get the work done on another thread.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _pyhanko_validate(Path(pdf), Path(root_pem), password)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(_pyhanko_validate, Path(pdf), Path(root_pem), password).result()


def openssl_cms_verify(
    signature: Path, ca_file: Path, content: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Verify a DER CMS signature with ``openssl cms -verify`` against the certificates in ``ca_file``.

    ``content`` is the original file of a detached signature. Any key purpose
    is accepted. OpenSSL exits with 0 and prints "Verification successful"
    to stderr when the signature verifies.
    """
    command = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signature),
               "-CAfile", str(ca_file), "-purpose", "any", "-out", "/dev/null"]
    if content is not None:
        command += ["-content", str(content)]
    return subprocess.run(command, capture_output=True, text=True)


def openssl_cms_print(signature: Path) -> str:
    """Return the structure of a DER CMS signature as ``openssl cms -cmsout -print`` prints it."""
    return subprocess.run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(signature)],
                          capture_output=True, text=True, check=True).stdout


def openssl_ts_verify(
    response: Path,
    ca_file: Path,
    *,
    data: Path | None = None,
    digest_hex: str | None = None,
    untrusted: Path | None = None,
    token_only: bool = False,
) -> tuple[bool, str]:
    """Verify an RFC 3161 time-stamp response (or bare token) with ``openssl ts -verify``.

    Give either ``data`` (the time-stamped file) or ``digest_hex`` (its
    message imprint in hex). ``token_only`` reads ``response`` as a DER
    TimeStampToken instead of a TimeStampResp. OpenSSL also checks that the
    TSA certificate has a critical extended key usage of timeStamping only.
    Returns (ok, output).
    """
    if (data is None) == (digest_hex is None):
        raise ValueError("give exactly one of data and digest_hex")

    command = ["openssl", "ts", "-verify", "-in", str(response), "-CAfile", str(ca_file)]
    if token_only:
        command.append("-token_in")
    if data is not None:
        command += ["-data", str(data)]
    else:
        command += ["-digest", digest_hex]
    if untrusted is not None:
        command += ["-untrusted", str(untrusted)]
    result = subprocess.run(command, capture_output=True, text=True)

    output = result.stdout + result.stderr
    return result.returncode == 0 and "Verification: OK" in output, output


def _parse_pdfsig_output(output: str) -> list[PdfsigSignature]:
    headers = list(_SIGNATURE_HEADER.finditer(output))
    signatures = []
    for position, header in enumerate(headers):
        end = headers[position + 1].start() if position + 1 < len(headers) else len(output)
        block = output[header.start():end]
        signatures.append(_parse_pdfsig_block(int(header.group(1)), block))
    return signatures


def _parse_pdfsig_block(index: int, block: str) -> PdfsigSignature:
    fields: dict[str, str] = {}
    total_document_signed = False
    for line in block.splitlines()[1:]:
        stripped = line.strip()
        # The coverage line has no colon: "- Total document signed" or
        # "- Not total document signed".
        if stripped == "- Total document signed":
            total_document_signed = True
            continue
        match = _PDFSIG_FIELD.match(line)
        if match:
            fields[match.group(1)] = match.group(2).strip()

    signature_validation = fields.get("Signature Validation")
    certificate_validation = fields.get("Certificate Validation")
    signed_ranges = [
        (int(start), int(end)) for start, end in _SIGNED_RANGE.findall(fields.get("Signed Ranges", ""))
    ]
    return PdfsigSignature(
        index=index,
        signer_common_name=unicodedata.normalize("NFC", fields.get("Signer Certificate Common Name", "")),
        signature_valid=signature_validation == PDFSIG_SIGNATURE_VALID,
        certificate_trusted=certificate_validation == PDFSIG_CERTIFICATE_TRUSTED,
        raw=block,
        field_name=fields.get("Signature Field Name"),
        signature_validation=signature_validation,
        certificate_validation=certificate_validation,
        signature_type=fields.get("Signature Type"),
        signed_ranges=signed_ranges,
        total_document_signed=total_document_signed,
    )


def _page_geometry(
    pdf: Path, page: int, password: str | None
) -> tuple[tuple[float, float, float, float], int]:
    """Return the MediaBox and the /Rotate angle of ``page`` as pdfinfo reports them."""
    command = ["pdfinfo", "-f", str(page), "-l", str(page), "-box"]
    command += _poppler_password_options(password)
    command.append(str(pdf))
    output = _run_checked(command).decode("utf-8", errors="replace")

    boxes = {int(match.group(1)): match for match in _PDFINFO_BOX.finditer(output)}
    rotations = {int(match.group(1)): int(match.group(2)) for match in _PDFINFO_ROTATION.finditer(output)}
    if page not in boxes:
        raise ValueError(f"page {page} not found in {pdf} (pdfinfo reports no MediaBox for it)")
    media_box = tuple(float(boxes[page].group(number)) for number in range(2, 6))
    return media_box, rotations.get(page, 0) % 360


def _box_to_display(
    box: tuple[float, float, float, float],
    media_box: tuple[float, float, float, float],
    rotation: int,
) -> tuple[float, float, float, float]:
    """Map a user-space box to (left, top, right, bottom) on the displayed page, origin top left."""
    media_x1, media_y1, media_x2, media_y2 = media_box
    media_width = media_x2 - media_x1
    media_height = media_y2 - media_y1

    def to_display(x: float, y: float) -> tuple[float, float]:
        # Coordinates relative to the MediaBox corner, origin bottom left.
        u = x - media_x1
        v = y - media_y1
        # /Rotate turns the displayed page clockwise by the given angle.
        if rotation == 0:
            return u, media_height - v
        if rotation == 90:
            return v, u
        if rotation == 180:
            return media_width - u, v
        if rotation == 270:
            return media_height - v, media_width - u
        raise ValueError(f"page /Rotate {rotation} is not a multiple of 90")

    x1, y1, x2, y2 = box
    corners = [to_display(x1, y1), to_display(x2, y2)]
    xs = [corner[0] for corner in corners]
    ys = [corner[1] for corner in corners]
    return min(xs), min(ys), max(xs), max(ys)


def _pyhanko_validate(pdf: Path, root_pem: Path, password: str | None) -> list[dict]:
    roots = [asn1_x509.Certificate.load(der) for der in _pem_certificates(root_pem)]
    results = []
    with pdf.open("rb") as file:
        reader = PdfFileReader(file, strict=False)
        if reader.encrypted:
            if password is None:
                raise ValueError(f"{pdf} is encrypted; pass its password")
            reader.decrypt(password.encode("utf-8"))

        for embedded in reader.embedded_signatures:
            # A fresh context per signature, because each synchronous pyHanko
            # call closes the context it was given when it returns.
            context = ValidationContext(
                trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail"
            )
            if embedded.sig_object_type == "/DocTimeStamp":
                results.append(_document_timestamp_result(embedded, context))
            else:
                results.append(_signature_result(embedded, context))
    return results


def _signature_result(embedded, context: ValidationContext) -> dict:
    status = validate_pdf_signature(embedded, context)
    timestamp = status.timestamp_validity
    timestamp_valid = None
    if timestamp is not None:
        timestamp_valid = timestamp.intact and timestamp.valid and timestamp.trusted
    return {
        "field": embedded.field_name,
        "kind": "signature",
        "intact": status.intact,
        "valid": status.valid,
        "trusted": status.trusted,
        "timestamp_valid": timestamp_valid,
        "coverage": status.coverage.name if status.coverage is not None else None,
        "docmdp_ok": status.docmdp_ok,
        "modification_level": _enum_name(status.modification_level),
        "bottom_line": status.bottom_line,
        "signer_common_name": status.signing_cert.subject.native.get("common_name"),
        "signing_time": status.signer_reported_dt,
        "timestamp_time": timestamp.timestamp if timestamp is not None else None,
        "summary": status.summary(),
    }


def _document_timestamp_result(embedded, context: ValidationContext) -> dict:
    status = validate_pdf_timestamp(embedded, context)
    timestamp_valid = status.intact and status.valid and status.trusted
    return {
        "field": embedded.field_name,
        "kind": "doc_timestamp",
        "intact": status.intact,
        "valid": status.valid,
        "trusted": status.trusted,
        "timestamp_valid": timestamp_valid,
        "coverage": status.coverage.name if status.coverage is not None else None,
        "docmdp_ok": status.docmdp_ok,
        "modification_level": _enum_name(status.modification_level),
        "bottom_line": status.bottom_line,
        "signer_common_name": status.signing_cert.subject.native.get("common_name"),
        "signing_time": None,
        "timestamp_time": status.timestamp,
        "summary": status.summary(),
    }


def _enum_name(value) -> str | None:
    return value.name if value is not None else None


def _pem_certificates(path: Path) -> list[bytes]:
    """Return the DER bytes of every certificate in a PEM file, or of a DER file."""
    data = path.read_bytes()
    if not pem.detect(data):
        return [data]
    certificates = [der for kind, _, der in pem.unarmor(data, multiple=True) if kind == "CERTIFICATE"]
    if not certificates:
        raise ValueError(f"no certificate found in {path}")
    return certificates


def _poppler_password_options(password: str | None) -> list[str]:
    # poppler tries -opw as the owner password and -upw as the user password,
    # so passing both opens the file with either kind.
    if password is None:
        return []
    return ["-opw", password, "-upw", password]


def _run_checked(command: list[str], input_bytes: bytes | None = None) -> bytes:
    result = subprocess.run(command, input=input_bytes, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{command[0]} failed with exit code {result.returncode}: "
            f"{result.stderr.decode('utf-8', errors='replace').strip()}"
        )
    return result.stdout
