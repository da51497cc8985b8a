"""The fonts drawings use, bundled with ncd, and text widths measured from their own metrics.

Five faces (subsets of Computer Modern Unicode and DejaVu Sans, renamed ``NCD …``; see
``README.md`` here): ``sans``, ``sans-bold``, ``serif``, ``serif-italic`` and ``symbols``.
:func:`advance` shapes text with HarfBuzz over the font files (advance widths and kerning, as
browsers and cairo do);
:func:`font_face_css` embeds subsets of the faces in an SVG (cut by HarfBuzz's subsetter); :func:`register_with_fontconfig`
makes them known to cairo, so PNG and PDF output (which embeds subset fonts) looks the same
on a machine without them installed.

>>> round(advance("m", "sans", 10.0), 3), round(advance("mm", "sans", 10.0), 3)
(7.94, 15.88)
>>> advance("★", "symbols", 10.0) > advance("i", "sans", 10.0)
True
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import functools
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["FACES", "FAMILIES", "FONT_DIR", "METRICS", "advance", "ink_extent", "italic_overhang", "face_for", "font_face_css",
           "missing_characters", "read_metrics", "register_with_fontconfig", "text_face_characters"]

FONT_DIR = os.path.dirname(os.path.abspath(__file__))

#: Face key -> (file, CSS family, weight, style).
FACES: dict[str, tuple[str, str, str, str]] = {
    "sans": ("ncd-sans.ttf", "NCD Sans", "normal", "normal"),
    "sans-bold": ("ncd-sans-bold.ttf", "NCD Sans", "bold", "normal"),
    "serif": ("ncd-serif.ttf", "NCD Serif", "normal", "normal"),
    "serif-italic": ("ncd-serif-italic.ttf", "NCD Serif", "normal", "italic"),
    "symbols": ("ncd-symbols.ttf", "NCD Symbols", "normal", "normal"),
}
#: CSS families of the faces (the bundled font first, then the originals and fallbacks).
FAMILIES = {
    "sans": "'NCD Sans', 'CMU Sans Serif', 'Latin Modern Sans', 'DejaVu Sans', sans-serif",
    "serif": "'NCD Serif', 'CMU Serif', 'Latin Modern Roman', 'DejaVu Serif', serif",
    "symbols": "'NCD Symbols', 'DejaVu Sans', 'Noto Sans Symbols', sans-serif",
}


#: the faces' metrics, read from the font files by ``scripts/make_fonts.py`` (:func:`read_metrics`): reading them
#: here with fontTools took a twentieth of a second of a process's first drawing, and every glyph's box read on first
#: use a few milliseconds of each new model's
METRICS = os.path.join(FONT_DIR, "metrics.json")


@dataclass(frozen=True)
class _Metrics:
    units: int
    cmap: dict[int, str]
    widths: dict[str, int]
    missing: int
    inks: dict[str, tuple[int, int, int] | None]
    #: the ink of each character's glyph, by code point (the characters of ``cmap``; ``None``: no outline)
    ink_of: dict[int, tuple[int, int, int] | None]

    def ink(self, name: str) -> tuple[int, int, int] | None:
        """How far a glyph's ink reaches past its advance (an italic's overhang), above and below the baseline
        (``None`` for a glyph without outline)."""
        return self.inks.get(name)


def read_metrics(path: str) -> dict[str, Any]:
    """A font file's metrics as :data:`METRICS` holds them (fontTools): units per em, the character map, each glyph's
    advance width and its ink box (past the advance, above and below the baseline; none without outline)."""
    from fontTools.ttLib import TTFont

    font = TTFont(path)
    widths = {name: adv for name, (adv, _) in font["hmtx"].metrics.items()}
    glyf: Any = font["glyf"] if "glyf" in font else None
    inks: dict[str, list[int] | None] = {}
    for name in widths:
        g = glyf[name] if glyf is not None else None
        inks[name] = ([max(0, g.xMax - widths[name]), g.yMax, -g.yMin]
                      if g is not None and g.numberOfContours and hasattr(g, "xMax") else None)
    cmap = {str(code): name for code, name in sorted(font.getBestCmap().items())}
    return {"units": font["head"].unitsPerEm, "cmap": cmap, "widths": widths, "inks": inks}


@functools.cache
def _all_metrics() -> dict[str, Any]:
    import json

    with open(METRICS, encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


@functools.cache
def _metrics(face: str) -> _Metrics:
    data = _all_metrics()[FACES[face][0]]
    widths: dict[str, int] = data["widths"]
    inks: dict[str, tuple[int, int, int] | None] = {
        name: (ink[0], ink[1], ink[2]) if ink is not None else None for name, ink in data["inks"].items()}
    cmap = {int(code): name for code, name in data["cmap"].items()}
    return _Metrics(data["units"], cmap, widths, widths.get(".notdef", 0), inks,
                    {code: inks.get(name) for code, name in cmap.items()})


@functools.lru_cache(maxsize=1)
def text_face_characters() -> frozenset[int]:
    """The code points the text face (sans) has; everything else is drawn from the symbols face."""
    return frozenset(_metrics("sans").cmap)


def face_for(bold: bool = False, italic: bool = False, serif: bool = False, symbol: bool = False) -> str:
    """The face key a run of text is drawn in."""
    if symbol:
        return "symbols"
    if italic or serif:
        return "serif-italic" if italic else "serif"
    return "sans-bold" if bold else "sans"


@functools.cache
def _hb_face(face: str):  # type: ignore[no-untyped-def]
    import uharfbuzz as hb  # type: ignore[import-untyped]

    with open(os.path.join(FONT_DIR, FACES[face][0]), "rb") as fh:
        return hb.Face(fh.read())


@functools.cache
def _hb_font(face: str):  # type: ignore[no-untyped-def]
    import uharfbuzz as hb

    return hb.Font(_hb_face(face))


@functools.lru_cache(maxsize=65536)
def _shaped_units(text: str, face: str) -> float:
    """The advance of ``text`` in font units, shaped by HarfBuzz (kerning as Chromium and cairo apply it)."""
    m = _metrics(face)
    if "\0" not in text and all(map(m.cmap.__contains__, map(ord, text))):
        return _shaped_run(text, face) if text else 0.0  # one run (most texts)
    total = 0.0
    run = ""
    for ch in text + "\0":
        if ch != "\0" and ord(ch) in m.cmap:
            run += ch
            continue
        if run:
            total += _shaped_run(run, face)
            run = ""
        if ch == "\0":
            continue
        if face != "symbols":  # drawn from the symbols face; measured there (in this face's units)
            total += _shaped_units(ch, "symbols") * m.units / _metrics("symbols").units
        else:  # no bundled face has it: as wide as a browser's fallback font draws it
            total += m.units * _missing_em(ch)
    return total


def missing_characters(text: str) -> str:
    """The characters of ``text`` that no bundled face has, in order, each once (spaces, combining marks and joiners
    aside): browsers draw them from a fallback font, PNG and PDF as empty boxes.

    >>> missing_characters("L^注意 ★ x"), missing_characters("x = 2")
    ('注意', '')
    """
    sans, symbols = _metrics("sans").cmap, _metrics("symbols").cmap
    out: dict[str, None] = {}
    for ch in text:
        code = ord(ch)
        if code not in sans and code not in symbols and not ch.isspace() and _missing_em(ch):
            out[ch] = None
    return "".join(out)


def _missing_em(ch: str) -> float:
    """The advance (in ems) of a character no bundled face has, as a browser draws it from a fallback font:
    nothing for a combining mark or a format character (a joiner), a full em for a wide character (CJK, most emoji,
    East Asian Width W or F), else 0.6 em (the bundled ``.notdef``'s width: Hebrew, Arabic, Devanagari ...).
    PNG and PDF, which draw only the bundled faces, show such a character as an empty box in that room.

    >>> _missing_em("中"), _missing_em("😀"), _missing_em("\u0301"), round(_missing_em("ש"), 2)
    (1.0, 1.0, 0.0, 0.6)
    """
    import unicodedata

    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0.0
    if unicodedata.east_asian_width(ch) in ("W", "F"):
        return 1.0
    return _metrics("symbols").missing / _metrics("symbols").units


def _shaped_run(text: str, face: str) -> float:
    """The advance of ``text``, every character in ``face``, in its units (HarfBuzz)."""
    import uharfbuzz as hb

    buf = hb.Buffer()
    buf.add_str(text)
    buf.guess_segment_properties()
    hb.shape(_hb_font(face), buf, {"kern": True, "liga": False})
    total: float = 0.0 + sum(pos.x_advance for pos in buf.glyph_positions)
    return total


def advance(text: str, face: str, size: float) -> float:
    """The advance width of ``text`` at ``size`` points in ``face``: shaped with the font's own metrics and kerning.

    A character the face lacks is measured in the symbols face (where the renderer draws it)."""
    return _shaped_units(text, face) * size / _metrics(face).units


@functools.lru_cache(maxsize=65536)
def ink_extent(text: str, face: str, size: float) -> tuple[float, float]:
    """How far the ink of ``text`` reaches above and below the baseline at ``size`` points (from the glyphs' boxes;
    a character the face lacks is measured in the symbols face).

    >>> [round(v, 2) for v in ink_extent("x/2", "serif-italic", 10.0)]
    [7.48, 2.48]
    """
    own = _metrics(face)
    inks = own.ink_of
    tops: list[int] = []  # the glyphs' reaches in this face's units, and in the symbols face's
    bottoms: list[int] = []
    symbol_tops: list[int] = []
    symbol_bottoms: list[int] = []
    for code in map(ord, text):
        if code in inks:
            ink = inks[code]
            if ink is not None:
                tops.append(ink[1])
                bottoms.append(ink[2])
        else:  # drawn from the symbols face
            ink = _metrics("symbols").ink_of.get(code)
            if ink is not None:
                symbol_tops.append(ink[1])
                symbol_bottoms.append(ink[2])
    # each glyph's reach scaled (v * size / units) is monotonic in v: the highest glyph's scaled reach is the highest
    up = down = 0.0
    if tops:
        up, down = max(up, max(tops) * size / own.units), max(down, max(bottoms) * size / own.units)
    if symbol_tops:
        units = _metrics("symbols").units
        up, down = max(up, max(symbol_tops) * size / units), max(down, max(symbol_bottoms) * size / units)
    return up, down


def italic_overhang(text: str, face: str, size: float) -> float:
    """How far the ink of the last character of ``text`` reaches past its advance (TeX's italic correction)."""
    if not text:
        return 0.0
    m = _metrics(face)
    name = m.cmap.get(ord(text[-1]))
    ink = m.ink(name) if name else None
    return ink[0] * size / m.units if ink is not None else 0.0


@functools.lru_cache(maxsize=64)
def _subset(face: str, chars: str) -> str:
    """The face cut down to ``chars`` (and a space), base64: HarfBuzz's subsetter, which keeps the kerning
    (the only layout feature the widths use) and the outline of ``.notdef``.  It takes well under a millisecond
    where fontTools' subsetter took tens (it decompiled the whole kerning table for every new set of characters)."""
    import uharfbuzz as hb

    request = hb.SubsetInput()
    request.flags = hb.SubsetFlags.NOTDEF_OUTLINE
    for ch in chars + " ":
        request.unicode_set.add(ord(ch))
    features = request.layout_feature_tag_set
    features.clear()
    features.add(int.from_bytes(b"kern", "big"))
    result = hb.subset(_hb_face(face), request)
    if result is None:  # pragma: no cover - HarfBuzz refuses only a broken font file
        raise RuntimeError(f"HarfBuzz could not subset the bundled face {face!r}")
    return base64.b64encode(result.blob.data).decode()


def font_face_css(used: dict[str, set[str]]) -> str:
    """``@font-face`` rules embedding, for each face, a subset with just the characters ``used`` in it."""
    rules = []
    for face, chars in sorted(used.items()):
        if not chars:
            continue
        _, family, weight, style = FACES[face]
        data = _subset(face, "".join(sorted(chars)))
        rules.append(f"@font-face{{font-family:'{family}';font-weight:{weight};font-style:{style};"
                     f"src:url(data:font/ttf;base64,{data}) format('truetype');}}")
    return "".join(rules)


@functools.lru_cache(maxsize=1)
def register_with_fontconfig() -> bool:
    """Add the bundled fonts to this process's fontconfig (what cairo draws PNG and PDF text with)."""
    name = ctypes.util.find_library("fontconfig") or "libfontconfig.so.1"
    try:
        lib = ctypes.CDLL(name)
        lib.FcConfigAppFontAddDir.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        return bool(lib.FcConfigAppFontAddDir(None, FONT_DIR.encode()))
    except (OSError, AttributeError):  # pragma: no cover - no fontconfig: cairo uses what it has
        return False
