"""Generated images for the demo profiles: a handwritten-looking signature per official and a red agency seal.

``signserver init`` stores them as the demo credentials' appearance
profiles. Everything is drawn here with Pillow from the names, with a random
generator seeded by the name, so the same name always gives the same image.
Nothing is copied from a real signature or seal.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont

from signserver.core.appearance_profiles import AppearanceChange

__all__ = ["signature_png", "seal_png", "demo_appearance_changes"]

# Pillow draws lines without anti-aliasing, so the images are drawn at this
# multiple of their size and scaled down.
_SUPERSAMPLING = 4
_SIGNATURE_SIZE = (600, 240)
_SEAL_SIZE = 600
_INK_BLUE = (22, 38, 140)
# Seal ink: red, slightly translucent, so the signature under it stays legible.
_SEAL_RED = (205, 18, 36)
_SEAL_ALPHA = 225
_SEAL_FONT = Path("/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyretermes-bold.otf")
_FALLBACK_SEAL_FONT = Path("/usr/share/fonts/truetype/liberation2/LiberationSerif-Bold.ttf")


def _random_for(text: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big"))


def _png(image: Image.Image) -> bytes:
    output = io.BytesIO()
    image.save(output, format="PNG", optimize=True)
    return output.getvalue()


def signature_png(full_name: str) -> bytes:
    """Draw a cursive-looking scribble for ``full_name`` in blue ink on a transparent background.

    The stroke is a chain of loops, about one per letter of the given name
    (the last word), with heights that vary like handwriting. A flourish then
    swings back under them.
    """
    rng = _random_for(full_name)
    scale = _SUPERSAMPLING
    width, height = _SIGNATURE_SIZE[0] * scale, _SIGNATURE_SIZE[1] * scale
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)

    given_name = full_name.split()[-1] if full_name.split() else "x"
    loops = max(3, min(len(given_name) + 2, 9))
    points = _loop_chain(rng, loops, width, height)
    points += _flourish(rng, points[-1], width, height)

    pen = 5.5 * scale
    for index, (start, end) in enumerate(zip(points, points[1:])):
        # A pen presses harder in the middle of a stroke than at its ends.
        progress = index / max(len(points) - 2, 1)
        radius = pen * (0.55 + 0.45 * math.sin(math.pi * progress)) / 2
        draw.line([start, end], fill=_INK_BLUE + (255,), width=max(1, round(2 * radius)))
        draw.ellipse([end[0] - radius, end[1] - radius, end[0] + radius, end[1] + radius], fill=_INK_BLUE + (255,))

    return _png(image.resize(_SIGNATURE_SIZE, Image.Resampling.LANCZOS))


def _loop_chain(rng: random.Random, loops: int, width: float, height: float) -> list[tuple[float, float]]:
    """Return the points of a slanted prolate cycloid: forward motion plus circles, which draws cursive loops."""
    left, right = 0.08 * width, 0.74 * width
    baseline = 0.64 * height
    slant = 0.35  # forward lean of handwriting, dx per dy
    steps = [rng.uniform(0.7, 1.3) for _ in range(loops)]
    unit = (right - left) / sum(steps)
    heights = [rng.choice((0.14, 0.18, 0.22, 0.40, 0.48)) * height for _ in range(loops)]
    heights[0] = 0.56 * height  # a tall first letter, as a capital
    points = []
    samples_per_loop = 48
    position = left
    for loop in range(loops):
        step = steps[loop] * unit
        tightness = rng.uniform(0.35, 0.6)
        for sample in range(samples_per_loop):
            phase = 2 * math.pi * sample / samples_per_loop
            rise = heights[loop] * (1 - math.cos(phase)) / 2
            x = position + step * sample / samples_per_loop - tightness * step * math.sin(phase) + slant * rise
            y = baseline - rise + rng.uniform(-0.003, 0.003) * height
            points.append((x, y))
        position += step
    return points


def _flourish(rng: random.Random, start: tuple[float, float], width: float,
              height: float) -> list[tuple[float, float]]:
    """Return a quadratic Bézier stroke from ``start`` down and back left under the loops."""
    control = (0.95 * width, rng.uniform(0.80, 0.92) * height)
    end = (rng.uniform(0.05, 0.15) * width, rng.uniform(0.70, 0.80) * height)
    points = []
    for sample in range(1, 81):
        t = sample / 80
        x = (1 - t) ** 2 * start[0] + 2 * (1 - t) * t * control[0] + t ** 2 * end[0]
        y = (1 - t) ** 2 * start[1] + 2 * (1 - t) * t * control[1] + t ** 2 * end[1]
        points.append((x, y))
    return points


def seal_png(agency: str, locality: str = "") -> bytes:
    """Draw a round red seal: ``agency`` in capitals around the ring, ``locality`` at the bottom, a star inside.

    The image is square and the outer ring touches its edges, so its width
    is the seal's diameter.
    """
    rng = _random_for(agency + locality)
    scale = _SUPERSAMPLING
    size = _SEAL_SIZE * scale
    centre = size / 2
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    ink = _SEAL_RED + (255,)

    outer = size / 2 - 2 * scale
    _ring(draw, centre, outer, 13 * scale, ink)
    _ring(draw, centre, outer - 20 * scale, 3 * scale, ink)
    inner = 0.62 * size / 2
    _ring(draw, centre, inner, 4 * scale, ink)
    _star(draw, centre, 0.55 * inner, ink)

    font = ImageFont.truetype(str(_SEAL_FONT if _SEAL_FONT.is_file() else _FALLBACK_SEAL_FONT), round(40 * scale))
    text_radius = (outer - 20 * scale + inner) / 2
    _text_on_arc(image, agency.upper(), font, centre, text_radius, middle_degrees=90, clockwise=True, ink=ink)
    if locality:
        _text_on_arc(image, locality.upper(), font, centre, text_radius, middle_degrees=270, clockwise=False,
                     ink=ink)

    seal = image.resize((_SEAL_SIZE, _SEAL_SIZE), Image.Resampling.LANCZOS)
    return _png(_worn(seal, rng))


def _ring(draw: ImageDraw.ImageDraw, centre: float, radius: float, line_width: float, ink: tuple) -> None:
    draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius], outline=ink,
                 width=max(1, round(line_width)))


def _star(draw: ImageDraw.ImageDraw, centre: float, radius: float, ink: tuple) -> None:
    """Draw a five-pointed star with one point up."""
    points = []
    for index in range(10):
        angle = math.radians(90 + 36 * index)
        length = radius if index % 2 == 0 else radius * 0.382
        points.append((centre + length * math.cos(angle), centre - length * math.sin(angle)))
    draw.polygon(points, fill=ink)


def _text_on_arc(image: Image.Image, text: str, font: ImageFont.FreeTypeFont, centre: float, radius: float, *,
                 middle_degrees: float, clockwise: bool, ink: tuple) -> None:
    """Draw ``text`` along a circle, centred on the angle ``middle_degrees`` (counter-clockwise from 3 o'clock).

    Clockwise text runs over the top with its letters upright. Counter-clockwise
    text runs under the bottom and is upright too, so both read left to right.
    """
    spacing = 1.08
    widths = [font.getlength(character) * spacing for character in text]
    total_degrees = math.degrees(sum(widths) / radius)
    direction = -1 if clockwise else 1
    angle = middle_degrees - direction * total_degrees / 2
    for character, advance in zip(text, widths):
        middle = angle + direction * math.degrees(advance / 2 / radius)
        angle += direction * math.degrees(advance / radius)
        if character.isspace():
            continue
        glyph = _glyph_image(character, font, ink)
        # Over the top the letter's top points outwards, under the bottom inwards.
        rotation = middle - 90 if clockwise else middle + 90
        rotated = glyph.rotate(rotation, resample=Image.Resampling.BICUBIC, expand=True)
        x = centre + radius * math.cos(math.radians(middle)) - rotated.width / 2
        y = centre - radius * math.sin(math.radians(middle)) - rotated.height / 2
        image.alpha_composite(rotated, (round(x), round(y)))


def _glyph_image(character: str, font: ImageFont.FreeTypeFont, ink: tuple) -> Image.Image:
    """Return ``character`` drawn centred on a transparent square, by its ink box."""
    left, top, right, bottom = font.getbbox(character, anchor="mm")
    side = 2 * max(abs(left), abs(top), abs(right), abs(bottom)) + 4
    glyph = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(glyph).text((side / 2, side / 2), character, font=font, fill=ink, anchor="mm")
    return glyph


def _worn(seal: Image.Image, rng: random.Random) -> Image.Image:
    """Lower the alpha to the seal ink's and thin it in small spots, as a rubber stamp prints."""
    spots = Image.new("L", seal.size, 255)
    draw = ImageDraw.Draw(spots)
    for _ in range(90):
        x, y = rng.uniform(0, seal.width), rng.uniform(0, seal.height)
        radius = rng.uniform(1.0, 4.0)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=rng.randint(90, 190))
    alpha = seal.getchannel("A").point(lambda value: value * _SEAL_ALPHA // 255)
    seal.putalpha(ImageChops.multiply(alpha, spots))
    return seal


def demo_appearance_changes(
    officials: list[tuple[str, str]], seal_credential_id: str, agency: str, locality: str
) -> dict[str, AppearanceChange]:
    """Return the demo profiles by credential id: a signature per (credential id, full name), and the seal.

    The seal is drawn at the default diameter (36 mm), and each key signs
    with its image unless a request names another appearance.
    """
    changes = {credential_id: AppearanceChange(signature_image=signature_png(full_name))
               for credential_id, full_name in officials}
    changes[seal_credential_id] = AppearanceChange(seal_image=seal_png(agency, locality))
    return changes
