"""Small interfaces through which the core reaches the HSM and the signature formats.

The core depends on these protocols only; ``signserver.app`` wires the real
implementations (PKCS#11 key wrapping, pyHanko PAdES) in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from signserver.store.records import Credential, SignRequest

__all__ = ["SecretBox", "DocumentSigner", "SignedDocument", "PdfChecker", "CheckedPdf"]


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


@dataclass(frozen=True)
class CheckedPdf:
    page_count: int
    # The page the stamp goes on (the last page unless one was asked for) and a box that fits it.
    stamp_page: int
    default_stamp_box: tuple[float, float, float, float]


class PdfChecker(Protocol):
    async def check(self, path: Path, password: str | None, stamp_page: int | None,
                    stamp_box: tuple[float, float, float, float] | None) -> CheckedPdf:
        """Open the PDF as the signer will; ``stamp_page`` None means the last page.

        A given ``stamp_box`` must lie inside that page's visible area.
        """
        ...
