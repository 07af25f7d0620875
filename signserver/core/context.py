"""The dependencies of every core operation: the store, settings and the ports to the HSM and formats."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from signserver.config import Settings
from signserver.store.db import Store

from .otp import OtpPolicy
from .policy import PolicySet
from .ports import DocumentSigner, KeyVault, PdfChecker, SecretBox

__all__ = ["CoreContext", "utc_now", "new_id"]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass
class CoreContext:
    store: Store
    settings: Settings
    policies: PolicySet
    secret_box: SecretBox
    pdf_checker: PdfChecker
    document_signer: DocumentSigner
    clock: Callable[[], datetime] = field(default=utc_now)
    # The HSM's key lifecycle operations; None where a context only signs (tests of the signing core).
    key_vault: KeyVault | None = None
    # The roots an imported certificate must chain to: the demo root and SIGNSERVER_TRUST_ANCHORS (asn1crypto).
    trust_roots: list[Any] = field(default_factory=list)

    @property
    def otp_policy(self) -> OtpPolicy:
        return OtpPolicy(self.settings.otp_lockout_threshold, self.settings.otp_lockout_period)
