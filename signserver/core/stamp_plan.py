"""The visible signature of a PAdES sign request, decided at submission: its appearance, page and box.

A request chooses its appearance with the metadata field ``appearance``:
"signature", "seal" or "text", by default the one of the credential's
profile. It chooses the position with ``placement``: a page and a rect, an
``anchor`` text to place the box under, or for a seal ``over_field``. That is
an existing signed signature field whose left third the seal covers.

Everything is resolved before the request is stored: the box found from the
anchor or the field, the seal's box from its real diameter, and a copy of the
image beside the document. The stored placement is what the signer draws, so
the document the official reviews and the signature agree even if the
profile changes before approval.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signserver.errors import InvalidInput
from signserver.signing.anchor import MAX_ANCHOR_LENGTH, AnchorPlacement, normalise_anchor
from signserver.signing.appearance import mm_to_points
from signserver.signing.placement import appearance_image_name
from signserver.signing.stamp import APPEARANCE_SEAL, APPEARANCE_SIGNATURE, APPEARANCE_TEXT, APPEARANCES
from signserver.store.records import Credential

from .appearance_profiles import ResolvedAppearance, resolve_appearance
from .context import CoreContext
from .ports import CheckedPdf

if TYPE_CHECKING:
    from .submission import Placement

__all__ = ["StampPlan", "plan_stamp", "parse_appearance", "parse_stamp_position", "DEFAULT_ANCHOR_BOX_SIZES"]

# Box (width, height) in points placed under an anchor when the request gives
# no size. A seal's box is always its real diameter.
DEFAULT_ANCHOR_BOX_SIZES = {APPEARANCE_SIGNATURE: (200.0, 110.0), APPEARANCE_TEXT: (250.0, 100.0)}
# The smallest box in which the text lines stay readable, as for placement.rect.
MIN_BOX_SIZE = (120.0, 50.0)
MAX_COORDINATE = 14400.0
MAX_ANCHOR_OCCURRENCE = 1000
MAX_FIELD_NAME_LENGTH = 127


@dataclass(frozen=True)
class StampPlan:
    """The checked PDF with the resolved stamp position, and the appearance drawn there."""

    checked: CheckedPdf
    # None for an invisible signature.
    appearance: ResolvedAppearance | None = None
    anchor: AnchorPlacement | None = None
    over_field: str | None = None
    image_sha256: str | None = None
    signature_text: bool = False

    def placement_fields(self) -> dict[str, Any]:
        """Return the fields this plan adds to the stored placement JSON."""
        if self.appearance is None:
            return {}
        fields: dict[str, Any] = {"appearance": self.appearance.kind}
        if self.image_sha256 is not None:
            fields["image_sha256"] = self.image_sha256
        if self.appearance.seal_diameter_mm is not None:
            fields["seal_diameter_mm"] = self.appearance.seal_diameter_mm
        if self.anchor is not None:
            fields["anchor"] = {"text": self.anchor.text, "occurrence": self.anchor.occurrence,
                                "rect": list(self.checked.anchor_box or ())}
        if self.over_field is not None:
            fields["over_field"] = self.over_field
        if self.signature_text:
            fields["signature_text"] = True
        return fields

    def write_image(self, request_dir: Path) -> None:
        """Copy the appearance image into the request's directory, where the signer reads it."""
        if self.appearance is not None and self.appearance.image_png is not None:
            (request_dir / appearance_image_name(self.appearance.kind)).write_bytes(self.appearance.image_png)


async def plan_stamp(
    ctx: CoreContext, credential: Credential, placement: Placement, requested_appearance: str | None, path: Path,
    password: str | None,
) -> StampPlan:
    """Check the PDF and resolve the request's appearance and stamp box.

    Raises the PDF checker's errors, AppearanceImageMissing, and InvalidInput
    ``field_invalid`` for ``over_field`` with an appearance other than the seal.
    """
    if not placement.visible:
        checked = await ctx.pdf_checker.check(path, password, placement.page, None)
        return StampPlan(checked=checked)

    async with ctx.store.transaction() as tx:
        appearance = await resolve_appearance(tx, credential, requested_appearance)
    if placement.over_field is not None and appearance.kind != APPEARANCE_SEAL:
        raise InvalidInput("field_invalid", field="placement.over_field",
                           reason=f'only applies to the seal appearance, and this request has "{appearance.kind}"')
    if placement.signature_text and appearance.kind != APPEARANCE_SIGNATURE:
        raise InvalidInput("field_invalid", field="placement.signature_text",
                           reason=f'only applies to the signature appearance, and this request has "{appearance.kind}"')

    seal_side = None
    if appearance.seal_diameter_mm is not None:
        seal_side = mm_to_points(appearance.seal_diameter_mm)
    anchor = placement.anchor
    if anchor is not None and anchor.size is None and seal_side is None:
        anchor = replace(anchor, size=DEFAULT_ANCHOR_BOX_SIZES[appearance.kind])

    checked = await ctx.pdf_checker.check(path, password, placement.page, placement.box, anchor=anchor,
                                          over_field=placement.over_field, seal_side=seal_side)
    image_sha256 = hashlib.sha256(appearance.image_png).hexdigest() if appearance.image_png else None
    return StampPlan(checked=checked, appearance=appearance, anchor=anchor, over_field=placement.over_field,
                     image_sha256=image_sha256, signature_text=placement.signature_text)


def parse_appearance(value: Any) -> str | None:
    """Return the ``appearance`` metadata field in lower case, or None when absent."""
    if value is None:
        return None
    if not isinstance(value, str) or value.strip().lower() not in APPEARANCES:
        raise InvalidInput("field_invalid", field="appearance", reason=f"must be one of {', '.join(APPEARANCES)}")
    return value.strip().lower()


def parse_stamp_position(value: dict[str, Any]) -> tuple[AnchorPlacement | None, str | None]:
    """Return the anchor and the over_field of a placement object, each None when absent.

    A placement gives at most one of ``rect``, ``anchor`` and ``over_field``.
    ``anchor_offset``, ``anchor_occurrence`` and ``size`` apply only with
    ``anchor``, and ``page`` not with ``over_field`` (the seal goes on that
    field's page).
    """
    anchor_text = value.get("anchor")
    over_field = value.get("over_field")
    positions = [name for name in ("rect", "anchor", "over_field") if value.get(name) is not None]
    if len(positions) > 1:
        raise InvalidInput("field_invalid", field=f"placement.{positions[1]}",
                           reason=f"give only one of rect, anchor and over_field, got {' and '.join(positions)}")
    for name in ("anchor_offset", "anchor_occurrence", "size"):
        if value.get(name) is not None and anchor_text is None:
            raise InvalidInput("field_invalid", field=f"placement.{name}", reason="only applies with placement.anchor")

    if over_field is not None:
        if value.get("page") is not None:
            raise InvalidInput("field_invalid", field="placement.page",
                               reason="the seal goes on the page of over_field, so leave out page")
        if not isinstance(over_field, str) or not 1 <= len(over_field) <= MAX_FIELD_NAME_LENGTH:
            raise InvalidInput("field_invalid", field="placement.over_field",
                               reason=f"must be a signature field name of 1 to {MAX_FIELD_NAME_LENGTH} characters")
        return None, unicodedata.normalize("NFC", over_field)

    if anchor_text is None:
        return None, None
    if not isinstance(anchor_text, str) or not 1 <= len(normalise_anchor(anchor_text)) <= MAX_ANCHOR_LENGTH:
        raise InvalidInput("field_invalid", field="placement.anchor",
                           reason=f"must be a text of 1 to {MAX_ANCHOR_LENGTH} characters besides spaces")
    occurrence = value.get("anchor_occurrence", -1)
    if (not isinstance(occurrence, int) or isinstance(occurrence, bool) or occurrence == 0
            or abs(occurrence) > MAX_ANCHOR_OCCURRENCE):
        raise InvalidInput("field_invalid", field="placement.anchor_occurrence",
                           reason=f"must be a non-zero integer from -{MAX_ANCHOR_OCCURRENCE} to "
                                  f"{MAX_ANCHOR_OCCURRENCE}: 1 is the first occurrence, -1 the last")
    offset = _number_pair(value.get("anchor_offset", [0, 0]), "placement.anchor_offset", "[dx, dy] in points")
    if max(abs(offset[0]), abs(offset[1])) > MAX_COORDINATE:
        raise InvalidInput("field_invalid", field="placement.anchor_offset",
                           reason=f"each value must be within {MAX_COORDINATE:g} points")
    size = None
    if value.get("size") is not None:
        size = _number_pair(value["size"], "placement.size", "[width, height] in points")
        if not (MIN_BOX_SIZE[0] <= size[0] <= MAX_COORDINATE and MIN_BOX_SIZE[1] <= size[1] <= MAX_COORDINATE):
            raise InvalidInput("field_invalid", field="placement.size",
                               reason=f"needs at least {MIN_BOX_SIZE[0]:g} x {MIN_BOX_SIZE[1]:g} points, "
                                      f"within {MAX_COORDINATE:g} points")
    text = unicodedata.normalize("NFC", anchor_text.strip())
    return AnchorPlacement(text=text, occurrence=occurrence, offset=offset, size=size), None


def _number_pair(value: Any, name: str, shape: str) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise InvalidInput("field_invalid", field=name, reason=f"must be {shape}")
    return float(value[0]), float(value[1])
