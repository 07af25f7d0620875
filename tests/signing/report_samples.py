"""Signed samples for the validation report tests, made by tools other than the service.

PDFs are signed with pyHanko's own SimpleSigner and HTTP time-stamper against
the certomancer PKI (tests/certomancer_pki.py), at each PAdES level. CMS
files are made by ``openssl cms -sign``. The tampering helpers change a
signed file the way an attacker or a careless tool would: a byte inside the
signed range, bytes appended after the last revision, a page added or a
form field filled in an incremental update.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.fields import MDPPerm, SigFieldSpec, SigSeedSubFilter, append_signature_field
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from tests.certomancer_pki import CertomancerPki

# Text that write_pdf (tests/signing/conftest.py) puts in every page's uncompressed content stream.
PAGE_TEXT = b"Test document, page 1"


def software_signer(pki: CertomancerPki, label: str) -> signers.SimpleSigner:
    """Return pyHanko's SimpleSigner for the certomancer key and certificate ``label``."""
    chain = pki.chain(label)
    return signers.SimpleSigner(
        signing_cert=pki.cert(label),
        signing_key=pki.private_key(label),
        cert_registry=SimpleCertificateStore.from_certs(chain[1:]),
    )


async def sign_with_pyhanko(
    pki: CertomancerPki,
    source: Path,
    target: Path,
    *,
    label: str = "signer",
    level: str = "B-T",
    field_name: str = "Signature1",
    subfilter: SigSeedSubFilter = SigSeedSubFilter.PADES,
    certify: bool = False,
    docmdp: MDPPerm = MDPPerm.FILL_FORMS,
) -> Path:
    """Sign ``source`` into ``target`` at ``level`` (B-B, B-T, B-LT or B-LTA) with pyHanko alone.

    B-LT embeds the revocation data pyHanko fetches from certomancer in the
    DSS, and B-LTA adds a document time-stamp after it.
    """
    long_term = level in ("B-LT", "B-LTA")
    context = ValidationContext(trust_roots=[pki.root], allow_fetching=True) if long_term else None
    metadata = PdfSignatureMetadata(
        field_name=field_name,
        md_algorithm="sha256",
        subfilter=subfilter,
        certify=certify,
        docmdp_permissions=docmdp,
        embed_validation_info=long_term,
        use_pades_lta=level == "B-LTA",
        validation_context=context,
    )
    timestamper = HTTPTimeStamper(pki.tsa_url) if level != "B-B" else None
    try:
        with source.open("rb") as stream, target.open("wb") as output:
            writer = IncrementalPdfFileWriter(stream)
            await PdfSigner(metadata, software_signer(pki, label), timestamper=timestamper).async_sign_pdf(
                writer, output=output
            )
    finally:
        if context is not None:
            await context.aclose()
    return target


def flip_signed_byte(source: Path, target: Path) -> Path:
    """Copy ``source`` with one character of the page text changed, inside the first signed byte range."""
    data = source.read_bytes()
    position = data.index(PAGE_TEXT)
    changed = bytearray(data)
    # "Test" becomes "Tost": one byte, and the file still parses.
    changed[position + 1] = ord("o")
    target.write_bytes(bytes(changed))
    return target


def break_signed_trailer(source: Path, target: Path) -> Path:
    """Copy ``source`` with the first trailer keyword misspelt inside the signed range, so the file no longer parses."""
    data = source.read_bytes()
    position = data.index(b"trailer")
    target.write_bytes(data[:position] + b"trailor" + data[position + len(b"trailer"):])
    return target


def append_bytes(source: Path, target: Path, extra: bytes = b"\nThis text was appended after signing.\n") -> Path:
    """Copy ``source`` with ``extra`` appended after its last %%EOF, which is no incremental update."""
    target.write_bytes(source.read_bytes() + extra)
    return target


def add_page_incrementally(source: Path, target: Path) -> Path:
    """Append an incremental update that adds a page with its own text, as a PDF editor would."""
    with source.open("rb") as stream, target.open("wb") as output:
        writer = IncrementalPdfFileWriter(stream)
        content = generic.StreamObject(stream_data=b"BT /F1 14 Tf 72 760 Td (Page added after signing) Tj ET")
        font = generic.DictionaryObject({
            pdf_name("/Type"): pdf_name("/Font"),
            pdf_name("/Subtype"): pdf_name("/Type1"),
            pdf_name("/BaseFont"): pdf_name("/Helvetica"),
        })
        page = generic.DictionaryObject({
            pdf_name("/Type"): pdf_name("/Page"),
            pdf_name("/MediaBox"): generic.ArrayObject([generic.NumberObject(v) for v in (0, 0, 595, 842)]),
            pdf_name("/Contents"): writer.add_object(content),
            pdf_name("/Resources"): generic.DictionaryObject({
                pdf_name("/Font"): generic.DictionaryObject({pdf_name("/F1"): writer.add_object(font)}),
            }),
        })
        writer.insert_page(page)
        writer.write(output)
    return target


def add_empty_field_incrementally(source: Path, target: Path, field_name: str = "Signature2") -> Path:
    """Append an incremental update that adds an empty, invisible signature field (form filling level)."""
    with source.open("rb") as stream, target.open("wb") as output:
        writer = IncrementalPdfFileWriter(stream)
        append_signature_field(writer, SigFieldSpec(field_name))
        writer.write(output)
    return target


def openssl_cms_sign(
    pki: CertomancerPki,
    content: Path,
    target: Path,
    *,
    label: str = "signer",
    attached: bool = False,
    cades: bool = True,
    output_format: str = "DER",
) -> Path:
    """Sign ``content`` with ``openssl cms -sign`` (detached unless ``attached``) into ``target``.

    ``cades`` adds the ESS signing-certificate-v2 attribute (CAdES B-B); the
    issuing CA certificate goes into the SignedData.
    """
    directory = target.parent
    certificate = pki.write_pem(label, directory / f"{label}-cert.pem")
    issuer = pki.write_pem("interm", directory / "interm-cert.pem")
    command = [
        "openssl", "cms", "-sign", "-binary", "-md", "sha256",
        "-in", str(content), "-signer", str(certificate), "-inkey", str(pki.key_path(label)),
        "-certfile", str(issuer), "-outform", output_format, "-out", str(target),
    ]
    if attached:
        command.append("-nodetach")
    if cades:
        command.append("-cades")
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return target


def openssl_cms_verify(pki: CertomancerPki, signature: Path, *, content: Path | None, directory: Path) -> bool:
    """Verify a DER CMS signature with ``openssl cms -verify`` against the certomancer root."""
    root = pki.write_pem("root", directory / "root-cert.pem")
    command = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signature),
               "-CAfile", str(root), "-purpose", "any", "-out", "/dev/null"]
    if content is not None:
        command += ["-content", str(content)]
    result = subprocess.run(command, capture_output=True, timeout=60)
    return result.returncode == 0
