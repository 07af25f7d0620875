"""The security officer's ``signserver credentials set-appearance`` command, run on the server.

It reads the PNG files, stores them in the credential's appearance profile
through the core (which validates them and appends the audit record) as the
signed-in security officer, and returns a summary for the command's output.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from signserver.core.appearance_profiles import AppearanceChange, default_appearance, set_credential_appearance
from signserver.core.context import CoreContext, utc_now
from signserver.core.roles import SECURITY_OFFICER, require_role
from signserver.signing.appearance import DEFAULT_SEAL_DIAMETER_MM, MAX_IMAGE_BYTES
from signserver.signing.errors import AppearanceImageInvalid
from signserver.store.db import Store
from signserver.store.records import Official

__all__ = ["AppearanceSummary", "appearance_change", "set_appearance"]


@dataclass(frozen=True)
class AppearanceSummary:
    """The credential's profile after the change, without the images."""

    credential_id: str
    signature_image_sha256: str | None
    seal_image_sha256: str | None
    seal_diameter_mm: float
    # The appearance of requests that name none, after the profile's rules.
    default_appearance: str
    default_is_explicit: bool


def appearance_change(
    *,
    signature_image: Path | None = None,
    seal_image: Path | None = None,
    seal_diameter_mm: float | None = None,
    default: str | None = None,
) -> AppearanceChange:
    """Read the given images; raises AppearanceImageInvalid for a file that cannot be read or is too large."""
    return AppearanceChange(
        signature_image=_read_image(signature_image, "signature_image") if signature_image else None,
        seal_image=_read_image(seal_image, "seal_image") if seal_image else None,
        seal_diameter_mm=seal_diameter_mm,
        default_appearance=default,
    )


async def set_appearance(ctx: CoreContext, officer: Official, credential_id: str,
                         change: AppearanceChange) -> AppearanceSummary:
    """Store the change in the credential's profile as ``officer`` (a security officer)."""
    require_role(officer, SECURITY_OFFICER)
    return await _store(ctx.store, credential_id, change, officer.id)


def _read_image(path: Path, image: str) -> bytes:
    """Read at most one byte more than the limit, so a huge file is rejected without loading it whole."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise AppearanceImageInvalid(image=image, reason=f"{path} cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise AppearanceImageInvalid(image=image, reason=f"{path} is larger than {MAX_IMAGE_BYTES} bytes")
    return data


async def _store(store: Store, credential_id: str, change: AppearanceChange, actor_id: str) -> AppearanceSummary:
    async with store.transaction() as tx:
        profile = await set_credential_appearance(tx, credential_id, change, actor_type="security_officer",
                                                  actor_id=actor_id, now=utc_now())
        credential = await tx.credential(credential_id)

    assert credential is not None
    return AppearanceSummary(
        credential_id=credential_id,
        signature_image_sha256=_sha256(profile.signature_image),
        seal_image_sha256=_sha256(profile.seal_image),
        seal_diameter_mm=profile.seal_diameter_mm or DEFAULT_SEAL_DIAMETER_MM,
        default_appearance=default_appearance(credential, profile),
        default_is_explicit=profile.default_appearance is not None,
    )


def _sha256(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None
