"""Appearance profiles of signing credentials, and the appearance a sign request gets.

A security officer sets a credential's profile: the official's signature
image, the agency seal image, the seal's real diameter, and the appearance
used when a request names none. Every change is an audit record that carries
the SHA-256 of each new image, never the image.

Without a default in the profile, a personal key signs with its signature
image and a seal key with its seal image, and either falls back to the
text-only box when the image is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from signserver.errors import InvalidInput, NotFound
from signserver.signing.appearance import DEFAULT_SEAL_DIAMETER_MM, SEAL_DIAMETER_RANGE_MM, check_png
from signserver.signing.errors import AppearanceImageMissing
from signserver.signing.stamp import APPEARANCE_SEAL, APPEARANCE_SIGNATURE, APPEARANCE_TEXT, APPEARANCES
from signserver.store.db import Transaction
from signserver.store.records import Credential, CredentialProfile

from .audit import append_audit

__all__ = ["AppearanceChange", "ResolvedAppearance", "set_credential_appearance", "resolve_appearance",
           "default_appearance"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AppearanceChange:
    """The profile fields to set; None leaves a field as it is."""

    signature_image: bytes | None = field(default=None, repr=False)
    seal_image: bytes | None = field(default=None, repr=False)
    seal_diameter_mm: float | None = None
    default_appearance: str | None = None


@dataclass(frozen=True)
class ResolvedAppearance:
    """The appearance of one sign request, with the image it draws."""

    kind: str
    image_png: bytes | None = field(default=None, repr=False)
    # Only for the seal appearance, else None.
    seal_diameter_mm: float | None = None


async def set_credential_appearance(
    tx: Transaction, credential_id: str, change: AppearanceChange, *, actor_type: str, actor_id: str,
    now: datetime,
) -> CredentialProfile:
    """Validate ``change``, store it in the credential's profile and append the audit record.

    Raises NotFound ``credential_not_found`` for an unknown or TSA credential,
    AppearanceImageInvalid for an image that is not a usable PNG, and
    InvalidInput ``field_invalid`` for the other fields.
    """
    credential = await tx.credential(credential_id)
    if credential is None or credential.kind == "tsa":
        raise NotFound("credential_not_found", credential_id=credential_id)

    values: dict[str, object] = {}
    details: dict[str, object] = {"credential_id": credential_id}

    for name, data in (("signature_image", change.signature_image), ("seal_image", change.seal_image)):
        if data is None:
            continue
        info = check_png(data, name)
        values[name] = data
        details[name] = {"sha256": info.sha256, "size": info.size, "width": info.width, "height": info.height}

    if change.seal_diameter_mm is not None:
        diameter = change.seal_diameter_mm
        low, high = SEAL_DIAMETER_RANGE_MM
        if isinstance(diameter, bool) or not isinstance(diameter, (int, float)) or not math.isfinite(diameter) \
                or not low <= diameter <= high:
            raise InvalidInput("field_invalid", field="seal_diameter_mm",
                               reason=f"must be a number of millimetres from {low:g} to {high:g}")
        values["seal_diameter_mm"] = float(diameter)
        details["seal_diameter_mm"] = float(diameter)

    if change.default_appearance is not None:
        if change.default_appearance not in APPEARANCES:
            raise InvalidInput("field_invalid", field="default_appearance",
                               reason=f"must be one of {', '.join(APPEARANCES)}")
        values["default_appearance"] = change.default_appearance
        details["default_appearance"] = change.default_appearance

    if not values:
        raise InvalidInput("field_missing", field="signature_image, seal_image, seal_diameter_mm or default_appearance")

    await tx.save_credential_profile(credential_id, updated_at=now, updated_by=f"{actor_type}:{actor_id}", **values)
    profile = await tx.credential_profile(credential_id)
    assert profile is not None
    _check_default_has_image(profile)

    await append_audit(
        tx, action="credential_appearance_set", actor_type=actor_type, actor_id=actor_id,
        key_id_hex=credential.key_id_hex, cert_serial_hex=credential.cert_serial_hex, details=details, now=now,
    )
    log.info("credential.appearance_set", credential_id=credential_id, actor_id=actor_id,
             fields=sorted(values))
    return profile


def _check_default_has_image(profile: CredentialProfile) -> None:
    """Reject a default appearance whose image the profile lacks, so requests without a choice still sign."""
    needed = {APPEARANCE_SIGNATURE: profile.signature_image, APPEARANCE_SEAL: profile.seal_image}
    if profile.default_appearance in needed and needed[profile.default_appearance] is None:
        raise AppearanceImageMissing(appearance=profile.default_appearance, credential_id=profile.credential_id)


def default_appearance(credential: Credential, profile: CredentialProfile | None) -> str:
    """Return the appearance of a request that names none."""
    if profile is None:
        return APPEARANCE_TEXT
    if profile.default_appearance is not None:
        return profile.default_appearance
    if credential.kind == "seal":
        return APPEARANCE_SEAL if profile.seal_image is not None else APPEARANCE_TEXT
    return APPEARANCE_SIGNATURE if profile.signature_image is not None else APPEARANCE_TEXT


async def resolve_appearance(tx: Transaction, credential: Credential, requested: str | None) -> ResolvedAppearance:
    """Return the appearance ``requested`` (or the credential's default) with its image.

    Raises AppearanceImageMissing when the profile has no image for it.
    """
    profile = await tx.credential_profile(credential.id)
    kind = requested or default_appearance(credential, profile)
    if kind == APPEARANCE_TEXT:
        return ResolvedAppearance(kind=kind)

    image = None
    if profile is not None:
        image = profile.signature_image if kind == APPEARANCE_SIGNATURE else profile.seal_image
    if image is None:
        raise AppearanceImageMissing(appearance=kind, credential_id=credential.id)
    if kind == APPEARANCE_SIGNATURE:
        return ResolvedAppearance(kind=kind, image_png=image)
    diameter = profile.seal_diameter_mm if profile is not None and profile.seal_diameter_mm else None
    return ResolvedAppearance(kind=kind, image_png=image, seal_diameter_mm=diameter or DEFAULT_SEAL_DIAMETER_MM)
