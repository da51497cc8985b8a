"""PNG and PDF from the SVG, through cairosvg (a real SVG renderer; fonts come from fontconfig, which is
given the bundled fonts first, so the PDF embeds subsets of the same fonts the SVG uses).

Exports never fail on size: cairo cannot make an image wider or taller than 32,767 pixels, an image
of more than :data:`MAX_AREA` pixels would take gigabytes of memory, and PDF viewers do not show
pages over 14,400 points (200 inches), so a larger drawing is scaled down to the limit with a
:class:`DrawingTooLargeWarning` saying by how much (``page="column"``, the default, keeps drawings
far smaller).

>>> svg = '<svg xmlns="http://www.w3.org/2000/svg" width="40000" height="10" viewBox="0 0 40000 10"/>'
>>> import warnings
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     png = svg_to_png(svg, 2.0)
>>> png[:4] == b"\\x89PNG" and "scaled down" in str(caught[0].message)
True
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

from ncd.errors import InputError

__all__ = ["svg_to_png", "svg_to_pdf", "DrawingTooLargeWarning", "MissingGlyphWarning", "MAX_PIXELS", "MAX_AREA", "MAX_PDF_POINTS"]

#: cairo's largest image side, in pixels.
MAX_PIXELS = 32767
#: The most pixels a PNG gets (2**27: half a gibibyte of RGBA while cairo draws it).
MAX_AREA = 2**27
#: The largest PDF page side viewers accept, in points (200 inches).
MAX_PDF_POINTS = 14400.0


class DrawingTooLargeWarning(UserWarning):
    """A PNG or PDF was scaled down to fit the format's largest size."""


class MissingGlyphWarning(UserWarning):
    """A PNG or PDF has text with characters no bundled font has (CJK, emoji, Hebrew, ...): they print as empty boxes.

    PNG and PDF are drawn by cairo from the bundled faces only (it takes the first family an SVG names, with no
    fallback per character), so such a character is an empty box there, in the room a browser's fallback font would
    give it (:func:`ncd.render.fonts.advance`); the SVG and HTML outputs name fallback families after the bundled
    ones, so a browser with a font for the characters draws them."""


def _warn_missing(svg: str, what: str) -> None:
    from ncd.render.fonts import missing_characters
    from ncd.render.svg import faces_used

    missing = "".join(sorted(missing_characters("".join("".join(chars) for chars in faces_used(svg).values()))))
    if missing:
        shown = missing if len(missing) <= 12 else missing[:12] + "…"
        warnings.warn(f"{what}: {len(missing)} character(s) of the drawing's text have no glyph in ncd's bundled fonts"
                      f" ({shown}) and print as empty boxes; the SVG and HTML outputs name fallback fonts, so a"
                      " browser with a font for them draws them", MissingGlyphWarning, stacklevel=3)


def _cairosvg() -> Any:
    from ncd.render.fonts import register_with_fontconfig

    register_with_fontconfig()  # the bundled fonts, so cairo draws (and the PDF embeds) the same glyphs everywhere
    try:
        import cairosvg
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise InputError("drawing PNG or PDF needs cairosvg: pip install cairosvg") from error
    return cairosvg


def _size(svg: str) -> tuple[float, float]:
    head = re.search(r"<svg\b[^>]*>", svg)
    found = {k: float(v) for k, v in re.findall(r'\b(width|height)="([\d.]+)"', head.group(0))} if head else {}
    return found.get("width", 0.0), found.get("height", 0.0)


def _fit(svg: str, scale: float, limit: float, unit: str, what: str, area: float = math.inf) -> float:
    w, h = _size(svg)
    fitted = min(scale, scale * limit / max(w * scale, h * scale, 1e-9),
                 scale * math.sqrt(area / max(w * scale * h * scale, 1e-9)))
    if fitted >= scale:
        return scale
    fitted *= 0.999
    bound = f"{limit:.0f} {unit} a side" + (f", {area / 1e6:.0f} million {unit}" if math.isfinite(area) else "")
    warnings.warn(f"{what}: a {w * scale:.0f}×{h * scale:.0f} {unit} drawing is larger than the format allows "
                  f"({bound}); scaled down by {scale / fitted:.2f}× (scale {fitted:.3g})",
                  DrawingTooLargeWarning, stacklevel=3)
    return fitted


def svg_to_png(svg: str, scale: float = 2.0) -> bytes:
    """Rasterise SVG text at ``scale`` pixels per point (less, with a warning, if that exceeds 32,767 pixels a side
    or :data:`MAX_AREA` pixels)."""
    scale = _fit(svg, scale, MAX_PIXELS, "px", "PNG", MAX_AREA)
    _warn_missing(svg, "PNG")
    return bytes(_cairosvg().svg2png(bytestring=svg.encode("utf-8"), scale=scale))


def svg_to_pdf(svg: str) -> bytes:
    """Vector PDF of SVG text (scaled down, with a warning, to pages of at most 200 inches a side)."""
    scale = _fit(svg, 0.75, MAX_PDF_POINTS, "pt", "PDF") / 0.75  # cairosvg: one SVG unit is 0.75 pt
    _warn_missing(svg, "PDF")
    return bytes(_cairosvg().svg2pdf(bytestring=svg.encode("utf-8"), scale=scale))
