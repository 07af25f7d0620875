"""Builders for special input PDFs: encrypted, certified, or signed without a time-stamp."""

from __future__ import annotations

from pathlib import Path

from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.crypt.permissions import StandardPermissions
from pyhanko.pdf_utils.crypt.pubkey import RecipientEncryptionPolicy
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import copy_into_new_writer
from pyhanko.sign.fields import MDPPerm, SigFieldSpec, SigSeedSubFilter, append_signature_field
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner

from signserver.signing.keys import SigningKey, pyhanko_signer

RESERVED_BYTES = 32 * 1024


def write_encrypted_copy(
    source: Path,
    target: Path,
    *,
    owner_password: str,
    user_password: str,
    permissions: StandardPermissions | None = None,
) -> Path:
    """Write ``source`` as a new AES-256 encrypted file (PDF 2.0, with a PDF MAC)."""
    with source.open("rb") as stream:
        writer = copy_into_new_writer(PdfFileReader(stream))
        if permissions is None:
            writer.encrypt(owner_password, user_password)
        else:
            writer.encrypt(owner_password, user_password, perms=permissions)
        with target.open("wb") as output:
            writer.write(output)
    return target


def write_pubkey_encrypted_copy(source: Path, target: Path, recipient: asn1_x509.Certificate) -> Path:
    """Write ``source`` encrypted for ``recipient`` with the public-key security handler."""
    with source.open("rb") as stream:
        writer = copy_into_new_writer(PdfFileReader(stream))
        # The test certificates lack keyEncipherment, which pyHanko checks by default.
        writer.encrypt_pubkey([recipient], policy=RecipientEncryptionPolicy(ignore_key_usage=True))
        with target.open("wb") as output:
            writer.write(output)
    return target


async def write_pyhanko_signature(
    source: Path,
    target: Path,
    key: SigningKey,
    *,
    certify: bool = False,
    docmdp: MDPPerm = MDPPerm.FILL_FORMS,
    field_name: str = "Author",
) -> Path:
    """Sign ``source`` with pyHanko directly: no time-stamp, optionally a certification."""
    metadata = PdfSignatureMetadata(
        field_name=field_name,
        md_algorithm="sha256",
        subfilter=SigSeedSubFilter.PADES,
        certify=certify,
        docmdp_permissions=docmdp,
    )
    with source.open("rb") as stream, target.open("wb") as output:
        writer = IncrementalPdfFileWriter(stream)
        await PdfSigner(metadata, pyhanko_signer(key)).async_sign_pdf(
            writer, bytes_reserved=RESERVED_BYTES, output=output
        )
    return target


def write_with_empty_field(
    source: Path, target: Path, field_name: str, box: tuple[float, float, float, float]
) -> Path:
    """Add an empty visible signature field on the first page of ``source``."""
    with source.open("rb") as stream, target.open("wb") as output:
        writer = IncrementalPdfFileWriter(stream)
        append_signature_field(writer, SigFieldSpec(field_name, box=box))
        writer.write(output)
    return target
