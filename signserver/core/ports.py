"""Small interfaces through which the core reaches the HSM and the signature formats.

The core depends on these protocols only; ``signserver.app`` wires the real
implementations (PKCS#11 key wrapping, pyHanko PAdES) in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from signserver.signing.anchor import AnchorPlacement
from signserver.store.records import Credential, SignRequest

__all__ = ["SecretBox", "DocumentSigner", "SignedDocument", "PdfChecker", "CheckedPdf", "AnchorPlacement", "KeyVault"]


class SecretBox(Protocol):
    """Encrypts small secrets (TOTP seeds, PDF passwords) with a key that never leaves the HSM."""

    async def seal(self, plaintext: bytes) -> bytes: ...

    async def open(self, blob: bytes) -> bytes: ...


@dataclass(frozen=True)
class SignedDocument:
    sha256: str
    signing_time: datetime
    level: str


class DocumentSigner(Protocol):
    async def sign(
        self, request: SignRequest, credential: Credential, output_path: Path, pdf_password: str | None
    ) -> SignedDocument: ...

    async def check_signer_certificate(self, credential: Credential, *, revocation_required: bool) -> None:
        """Raise a certificate or revocation error unless the credential's certificate may sign now.

        ``sign`` runs this check first; other signing paths call it before the HSM.
        """
        ...


@dataclass(frozen=True)
class CheckedPdf:
    page_count: int
    # The page the stamp goes on (the last page unless one was asked for) and a box that fits it.
    stamp_page: int
    default_stamp_box: tuple[float, float, float, float]
    # The box found from an anchor text, a signed field or a seal's size, else None.
    stamp_box: tuple[float, float, float, float] | None = None
    # The box of the anchor text that was found, else None.
    anchor_box: tuple[float, float, float, float] | None = None
    # The PDF already contains a signature, so it can no longer take a certification signature.
    has_signatures: bool = False
    # DocMDP P value (2 or 3) of the PDF's certification signature, None if it is not certified.
    certification_level: int | None = None


class PdfChecker(Protocol):
    async def check(self, path: Path, password: str | None, stamp_page: int | None,
                    stamp_box: tuple[float, float, float, float] | None, *,
                    anchor: AnchorPlacement | None = None, over_field: str | None = None,
                    seal_side: float | None = None) -> CheckedPdf:
        """Open the PDF as the signer will; ``stamp_page`` None means the last page.

        A given ``stamp_box`` must lie inside that page's visible area. With
        ``anchor`` the box goes under that text (on ``stamp_page`` only, if
        given). With ``over_field`` a seal covers the left third of that
        signed field. With ``seal_side`` the box becomes a square of that many
        points with the same centre. The resulting box is
        ``CheckedPdf.stamp_box`` and must lie inside its page too.
        """
        ...


class KeyVault(Protocol):
    """Key pairs inside the HSM, for the security officer's key lifecycle (see ``core.keys``).

    Private keys are generated sensitive and non-extractable and are found by CKA_ID.
    """

    async def generate(self, key_id: bytes, label: str, key_type: str, key_size: int) -> bytes:
        """Generate a key pair ("RSA" 2048/3072/4096 or "EC" 256/384) and return its SubjectPublicKeyInfo DER."""
        ...

    async def sign_digest(self, key_id: bytes, key_type: str, digest: bytes, digest_algorithm: str) -> bytes:
        """Sign a digest: RSA PKCS#1 v1.5 over its DigestInfo, or ECDSA returned as a DER ECDSA-Sig-Value."""
        ...

    async def destroy(self, key_id: bytes) -> int:
        """Destroy the private and public key objects with this CKA_ID; return how many were destroyed."""
        ...
