"""Labels nobody chose draw on a sensible page: a 300-character box label, block name or axis name is elided in the
middle (its whole text kept as a ``<title>`` tooltip) instead of making the page 1,800 pt wide; characters no bundled
font has (CJK, emoji, Hebrew, Arabic) are measured as wide as a browser's fallback font draws them, and PNG/PDF,
which can only draw the bundled faces, say so; markup characters are escaped."""

from __future__ import annotations

import re
import unicodedata
import warnings
import xml.etree.ElementTree as ET

import pytest

import ncd
from ncd import Block, Linear, Softmax
from ncd.errors import ParseError
from ncd.render import layout, to_pdf, to_png, to_svg
from ncd.render.check import problems
from ncd.render.model import Text
from ncd.render.raster import MissingGlyphWarning
from ncd.render.style import PAGES, Style

_SVG = "{http://www.w3.org/2000/svg}"
_LONG = ("a very long label " * 17).strip()  # 305 characters


def _width(svg: str) -> float:
    match = re.search(r'<svg[^>]*\swidth="([\d.]+)"', svg)
    assert match
    return float(match.group(1))


def _titles(svg: str) -> set[str]:
    return {t.text or "" for t in ET.fromstring(svg).iter(f"{_SVG}title")}


def _drawn(svg: str) -> str:
    """The characters the SVG draws (its texts' bodies, not their tooltips), in order."""
    return "".join("".join(t.itertext()) if t.find(f"{_SVG}title") is None else (t.find(f"{_SVG}title").tail or "")
                   for t in ET.fromstring(svg).iter(f"{_SVG}text")).replace("\u00a0", " ")


@pytest.mark.parametrize("diagram", [
    Linear("m -> k", name=_LONG),  # a box's name (L^name)
    Block(Linear("m -> k") >> Softmax("k"), _LONG),  # a block's title
    Linear("m -> " + "k" * 300),  # an axis's name
], ids=["box", "block", "axis"])
def test_a_300_character_label_is_elided_within_a_column_page_and_kept_whole_as_a_tooltip(diagram: ncd.Diagram) -> None:
    svg = to_svg(diagram)
    assert _width(svg) <= PAGES["column"][0]  # drawn in full on one line it was 1,547-1,843 pt wide
    whole = _LONG if _LONG in svg else "k" * 300
    assert whole in _titles(svg)  # nothing is lost: the whole text is the tooltip
    drawn = _drawn(svg)
    assert whole not in drawn and "…" in drawn
    cut = re.search(r"(\w[\w ]{5})…([\w ]{5}\w)", drawn)  # the head and the tail of the text are drawn
    assert cut and cut.group(1) in whole and cut.group(2) in whole
    drawing = layout(diagram, Style.from_options())
    assert not problems(drawing)  # no overlap, nothing out of its box
    assert max(t.width for t in drawing.of(Text)) <= 500.0
    png = to_png(diagram)  # cairosvg does not draw the <title>
    assert png[:4] == b"\x89PNG"


def test_short_labels_are_not_elided() -> None:
    name = "encoder_transformer: PocketTTSAudioTokenizerTransformerModel"  # (a corpus block title, 339 pt)
    svg = to_svg(Block(Linear("m -> k"), name))
    assert "<title>" not in svg and name in _drawn(svg)


@pytest.mark.parametrize("label", ["注意力层", "😀🔥", "注意 block 😀"])
def test_a_wide_character_no_bundled_font_has_is_measured_one_em_as_a_browser_draws_it(label: str) -> None:
    # (East Asian Width W/F characters are one em wide in every CJK and emoji font; the bundled .notdef is 0.6 em)
    from ncd.render.fonts import advance

    wide = sum(unicodedata.east_asian_width(c) in "WF" for c in label)
    narrow = advance("".join(c for c in label if unicodedata.east_asian_width(c) not in "WF"), "sans", 10.0)
    assert advance(label, "sans", 10.0) == pytest.approx(10.0 * wide + narrow, abs=0.05)
    drawing = layout(Block(Linear("m -> k"), label), Style.from_options())
    title = next(t for t in drawing.of(Text) if t.string == label)
    assert title.width >= 11.0 * wide * 0.99  # (block titles at 11 pt)
    assert not problems(drawing)


def test_png_and_pdf_say_which_characters_print_as_empty_boxes() -> None:
    diagram = Block(Linear("m -> k", name="注意"), "שלום 😀")
    for export in (to_png, to_pdf):
        with pytest.warns(MissingGlyphWarning, match=r"7 character\(s\) .* no glyph in ncd's bundled fonts") as caught:
            export(diagram)
        message = str(caught[0].message)
        assert all(c in message for c in "注意שלום😀") and "λ" not in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingGlyphWarning)
        to_png(Block(Linear("m -> k", name="Q"), "attention ★ ⊙ λ"))  # every character has a bundled glyph


def test_markup_quotes_and_rtl_text_are_escaped_and_kept_in_order() -> None:
    box, block = "<b>&\"'x", "a<&>\"'b שלום مرحبا"
    svg = to_svg(Block(Linear("m -> k", name=box), block))
    drawn = _drawn(svg)  # (ElementTree parses it: the markup is escaped)
    assert box in drawn and block in drawn  # in logical order: the browser lays out the right-to-left runs
    assert to_png(Block(Linear("m -> k", name=box), "a<&>\"'b"))[:4] == b"\x89PNG"


@pytest.mark.parametrize("text", ["line one\nline two", "tab\there", "bidi \u202eoverride"])
def test_control_characters_in_a_label_are_refused_naming_it(text: str) -> None:
    with pytest.raises(ParseError, match="control characters"):
        Block(Linear("m -> k"), text)
