"""The stamp of a stored sign request: its box, found at submission, and its StampSpec at signing.

``resolve_stamp_box`` places the box by anchor text, over a signed field, or
sizes it as a seal. It runs at submission, after the PDF was opened and
checked, so the box stored with the request is the one the official reviews
and the one signed. ``stamp_from_placement`` reads that record back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signserver.signing.anchor import AnchorPlacement, box_below_anchor, find_anchor
from signserver.signing.appearance import seal_box_over_field, signed_field_box, square_centred_in
from signserver.signing.errors import AppearanceImageInvalid, PdfStampOutsidePage
from signserver.signing.pades import page_visible_box
from signserver.signing.pdf_inspect import open_pdf_reader, read_pdf_info
from signserver.signing.stamp import APPEARANCE_TEXT, StampSpec

__all__ = ["StampBox", "resolve_stamp_box", "stamp_from_placement", "appearance_image_name"]

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class StampBox:
    """The page and box of a stamp."""

    page: int  # 1-based
    box: Box
    # The box of the anchor text that was found, else None.
    anchor_box: Box | None = None


def resolve_stamp_box(
    path: Path,
    password: str | None,
    placed: StampBox,
    *,
    anchor: AnchorPlacement | None,
    anchor_page: int | None,
    over_field: str | None,
    seal_side: float | None,
    tolerance: float,
) -> StampBox:
    """Return the stamp's page and box found from the anchor, the signed field or the seal size.

    ``placed`` is the page and box the request gives, or the defaults.
    ``anchor_page`` limits the anchor search to one page. A seal's box is a
    square of ``seal_side`` points: over a field, at the left third of the
    field's box, else around the centre of the box found. The box may stick
    out of the page's visible box by ``tolerance`` points. Raises
    AnchorNotFound, PdfFieldNotFound and PdfStampOutsidePage.
    """
    anchor_box = None
    with path.open("rb") as stream:
        reader = open_pdf_reader(stream, password)

        if over_field is not None:
            if seal_side is None:
                raise ValueError("over_field places a seal, so seal_side is required")
            page, field_box = signed_field_box(reader, over_field, read_pdf_info(reader).page_count)
            box = seal_box_over_field(field_box, seal_side)
        elif anchor is not None:
            size = (seal_side, seal_side) if seal_side is not None else anchor.size
            if size is None:
                raise ValueError("an anchor placement needs a size, or seal_side for a seal")
            match = find_anchor(path, password, anchor.text, occurrence=anchor.occurrence, page=anchor_page)
            page, anchor_box = match.page, match.box
            box = box_below_anchor(match.box, size, anchor.offset)
        else:
            page, box = placed.page, placed.box
            if seal_side is not None:
                box = square_centred_in(box, seal_side)

        visible = page_visible_box(reader, page)

    if visible is not None:
        left, bottom, right, top = visible
        x1, y1, x2, y2 = box
        if x1 < left - tolerance or y1 < bottom - tolerance or x2 > right + tolerance or y2 > top + tolerance:
            raise PdfStampOutsidePage(page=page, rect=list(box), page_box=[round(v, 2) for v in visible])
    return StampBox(page=page, box=box, anchor_box=anchor_box)


def stamp_from_placement(
    placement: dict[str, Any], document_path: Path, *, signer_name: str, signer_title: str, agency: str
) -> StampSpec | None:
    """Build the StampSpec of a stored request from its placement JSON, or None for an invisible signature.

    The signature or seal image was copied beside the document at submission
    (see ``appearance_image_name``), and its SHA-256 stored as
    ``image_sha256``, so the signature shows the image that was current when
    the request was made. Raises AppearanceImageInvalid when the copy is
    missing or differs.
    """
    if not placement.get("visible", True):
        return None

    appearance = placement.get("appearance", APPEARANCE_TEXT)
    image_png = None
    if appearance != APPEARANCE_TEXT:
        image_png = _stored_image(document_path, placement, appearance)
    return StampSpec(
        page=int(placement["page"]),
        box=tuple(float(v) for v in placement["rect"]),  # type: ignore[arg-type]
        signer_name=signer_name,
        signer_title=signer_title,
        agency=agency,
        appearance=appearance,
        image_png=image_png,
        signature_text=bool(placement.get("signature_text", False)),
    )


def appearance_image_name(appearance: str) -> str:
    """Return the file name of the appearance image stored beside a request's document."""
    return f"appearance-{appearance}.png"


def _stored_image(document_path: Path, placement: dict[str, Any], appearance: str) -> bytes:
    image = f"{appearance}_image"
    try:
        data = (document_path.parent / appearance_image_name(appearance)).read_bytes()
    except FileNotFoundError:
        raise AppearanceImageInvalid(image=image, reason="the image stored with the request is missing") from None
    if hashlib.sha256(data).hexdigest() != placement.get("image_sha256"):
        raise AppearanceImageInvalid(image=image, reason="the image stored with the request differs from its digest")
    return data
