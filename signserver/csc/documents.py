"""PAdES signatures, levels B-B to B-LTA, of whole PDF documents for the CSC API's signatures/signDoc.

The document is signed as the native API signs it. pyHanko signs with the
HSM key and the service's signature timestamper (the built-in TSA or the
configured external ones), embeds OCSP responses and CRLs for B-LT and
B-LTA, and puts a visible stamp in the default box of the last page. The
result is validated against the trust roots and the level before it is
returned, and a level that cannot be reached fails the call.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hsm
from signserver.hsm_bridge import signing_key_for
from signserver.pades_backend import PadesChecker, DocumentSigner
from signserver.signing.pades import StampSpec, sign_pdf
from signserver.signing.revocation import revocation_required_for
from signserver.signing.validate import ensure_signed_pdf_valid
from signserver.store.records import Credential

__all__ = ["PadesDocuments"]


class PadesDocuments:
    """The ``DocumentFormat`` of signDoc for signature_format "P", at one PAdES level (B-B to B-LTA)."""

    def __init__(self, token: hsm.Hsm, document_signer: DocumentSigner, work_dir: Path,
                 digest_algorithm: str = "sha256", level: str = "B-T") -> None:
        self.token = token
        self.document_signer = document_signer
        self.work_dir = work_dir
        # The hash of the document and of the signed attributes: sha256, sha384 or sha512.
        self.digest_algorithm = digest_algorithm
        self.level = level
        self.revocation_required = revocation_required_for(level)
        self.checker = PadesChecker()

    async def check(self, document: bytes) -> None:
        with self._scratch() as scratch:
            path = scratch / "document.pdf"
            path.write_bytes(document)
            await self.checker.check(path, None, None, None)

    async def sign(self, credential: Credential, document: bytes) -> bytes:
        with self._scratch() as scratch:
            input_path = scratch / "document.pdf"
            output_path = scratch / "signed.pdf"
            input_path.write_bytes(document)
            checked = await self.checker.check(input_path, None, None, None)
            stamp = StampSpec(page=checked.stamp_page, box=checked.default_stamp_box,
                              signer_name=credential.display_name, signer_title=credential.signer_title,
                              agency=credential.agency)
            context = None
            # sign_documents has checked the certificate, with revocation data for B-LT and B-LTA, before
            # spending the SAD. sign_pdf fetches that data again through the cache to embed it.
            if self.revocation_required:
                context = self.document_signer.revocation.validation_context(
                    self.document_signer.trust_roots, revocation_required=True)
            await sign_pdf(input_path, output_path, key=signing_key_for(self.token, credential),
                           timestamper=self.document_signer.timestamper,  # type: ignore[arg-type]
                           reason="", location="", stamp=stamp, digest_algorithm=self.digest_algorithm,
                           level=self.level, validation_context=context)
            await ensure_signed_pdf_valid(output_path, self.document_signer.trust_roots, level=self.level,
                                          original_path=input_path)
            return output_path.read_bytes()

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        """Yield a private directory under the data directory, removed with its files afterwards."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix="csc-") as name:
            yield Path(name)
