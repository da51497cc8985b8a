"""Fonts: widths come from the bundled font files, and every output carries the fonts it uses.

The widths are checked against Chromium's own text layout in ``tests/test_render_browser.py``.
"""

from __future__ import annotations

import base64
import io
import re
import struct

import pytest
from fontTools.ttLib import TTFont

import ncd
from ncd.render import to_pdf, to_png, to_svg
from ncd.render.fonts import FACES, FONT_DIR, _subset, advance
from ncd.render.raster import DrawingTooLargeWarning
from ncd.render.svg import faces_used


def test_advance_is_the_sum_of_the_fonts_advance_widths() -> None:
    font = TTFont(f"{FONT_DIR}/{FACES['sans'][0]}")
    cmap, hmtx, units = font.getBestCmap(), font["hmtx"].metrics, font["head"].unitsPerEm
    def plain(text: str) -> float:
        return sum(hmtx[cmap[ord(c)]][0] for c in text) * 12.0 / units

    assert advance("mmm", "sans", 12.0) == plain("mmm")  # no kerning pair: the font's advance widths
    kerned = advance("LayerNorm", "sans", 12.0)
    assert plain("LayerNorm") - 0.04 * kerned < kerned < plain("LayerNorm")  # kerning (L-a-y) tightens it a little
    assert advance("W", "sans", 10.0) > advance("i", "sans", 10.0) * 2  # real metrics, not a character class


def test_svg_embeds_subsets_with_exactly_the_characters_it_draws() -> None:
    svg = to_svg(ncd.zoo.attention())
    faces = dict(re.findall(r"font-family:'([^']+)';font-weight:(\w+)", svg))
    assert "NCD Sans" in faces and "NCD Symbols" in faces
    used = faces_used(svg)
    for face, chars in used.items():
        data = re.search(rf"font-family:'{FACES[face][1]}';font-weight:{FACES[face][2]};font-style:{FACES[face][3]};"
                         r"src:url\(data:font/ttf;base64,([A-Za-z0-9+/=]+)\)", svg)
        assert data, face
        cmap = TTFont(io.BytesIO(base64.b64decode(data.group(1)))).getBestCmap()
        assert {chr(c) for c in cmap} >= chars - {" "}
        assert len(cmap) <= len(chars) + 2  # a subset: what is drawn (and a space), nothing more


def test_svg_names_each_text_face_once_and_reads_back_the_faces_the_drawing_draws() -> None:
    from ncd.render import layout
    from ncd.render.fonts import face_for
    from ncd.render.model import Text
    from ncd.render.style import SERIF_STACK, SYMBOL_STACK

    d = ncd.zoo.attention()
    want: dict[str, set[str]] = {}  # the faces of the laid-out runs, as the layout typeset them
    for t in layout(d).of(Text):
        for run in t.runs:
            want.setdefault(face_for(run.bold, run.italic, run.serif, run.symbol), set()).update(run.text)
    for embed in (True, False):
        svg = to_svg(d, embed_fonts=embed)
        assert {face for face in faces_used(svg)} == set(want) and faces_used(svg) == want
        assert svg.count(f"font-family:{SERIF_STACK}}}") == svg.count(f"font-family:{SYMBOL_STACK}}}") == 1
        assert "font-family=\"&#x27;NCD Serif" not in svg  # the stack is named once, in the style block


def test_pdf_embeds_the_bundled_fonts() -> None:
    pdf = to_pdf(ncd.zoo.attention())
    names = set(re.findall(rb"/FontName\s*/[A-Z]{6}\+(\w+)", pdf))
    assert names and all(n.startswith(b"NCD") for n in names), names


def test_exports_of_any_size_scale_down_with_a_warning_instead_of_failing() -> None:
    d = ncd.Identity.of("b m")
    for k in range(300):  # wider than a PDF page may be (14,400 pt)
        d = d >> ncd.Linear("m -> m", name=f"W{k}")
    with pytest.warns(DrawingTooLargeWarning, match="scaled down"):
        png = to_png(d, page="none", scale=4)
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert 32000 < width <= 32767 and height > 10
    with pytest.warns(DrawingTooLargeWarning):
        pdf = to_pdf(d, page="none", scale=1)
    box = [float(v) for v in re.search(rb"/MediaBox \[\s*([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", pdf).groups()]
    assert 14000 < max(box[2], box[3]) <= 14400


def test_embedded_subsets_shape_text_as_the_whole_faces_do() -> None:
    """The subsets an SVG embeds keep each face's kerning: HarfBuzz shaping a word over the embedded subset gives the
    advance the layout measured over the whole bundled face (kerned pairs included: ``L-a-y``, ``T-o``, ``W-a``)."""
    import uharfbuzz as hb

    words = {"sans": "LayerNorm Token Wave", "sans-bold": "LayerNorm AVA", "serif-italic": "Tay Wo", "serif": "AV To"}
    for face, word in words.items():
        data = base64.b64decode(_subset(face, "".join(sorted(set(word)))))
        font = hb.Font(hb.Face(data))
        buf = hb.Buffer()
        buf.add_str(word)
        buf.guess_segment_properties()
        hb.shape(font, buf, {"kern": True, "liga": False})
        units = TTFont(io.BytesIO(data))["head"].unitsPerEm
        assert sum(p.x_advance for p in buf.glyph_positions) * 10.0 / units == pytest.approx(advance(word, face, 10.0))
        assert {chr(c) for c in TTFont(io.BytesIO(data)).getBestCmap()} == set(word) | {" "}


def test_bundled_metrics_table_is_what_the_font_files_say() -> None:
    """``metrics.json`` (read at run time instead of the font files) holds each face's units, character map, advance
    widths and ink boxes exactly as fontTools reads them from the bundled files now."""
    import json

    from ncd.render.fonts import METRICS, _metrics, read_metrics

    with open(METRICS, encoding="utf-8") as f:
        table = json.load(f)
    assert sorted(table) == sorted(file for file, *_ in FACES.values())
    for face, (file, *_) in FACES.items():
        font = TTFont(f"{FONT_DIR}/{file}")
        assert table[file] == json.loads(json.dumps(read_metrics(f"{FONT_DIR}/{file}")))
        m = _metrics(face)
        assert m.units == font["head"].unitsPerEm and m.cmap == dict(font.getBestCmap())
        assert m.widths == {name: adv for name, (adv, _) in font["hmtx"].metrics.items()}
        glyf = font["glyf"]
        for name in [".notdef", *list(m.cmap.values())[:40:3]]:
            g = glyf[name]
            want = (max(0, g.xMax - m.widths[name]), g.yMax, -g.yMin) if g.numberOfContours else None
            assert m.ink(name) == want


def test_ink_extent_and_advance_of_mixed_texts_read_each_glyph_from_the_font_files() -> None:
    """A text's ink reaches as high and as low as its highest and lowest glyph (a character the face lacks read
    from the symbols face, in that face's units), and its advance is HarfBuzz's over each run of one face: checked
    character by character against fontTools' glyph boxes and whole-run shaping, texts mixing both faces included."""
    import uharfbuzz as hb

    from ncd.render.fonts import ink_extent

    fonts = {face: TTFont(f"{FONT_DIR}/{file}") for face, (file, *_) in FACES.items()}

    def glyph(face: str, ch: str) -> tuple[str, TTFont]:
        own = fonts[face]
        font = own if ord(ch) in own.getBestCmap() else fonts["symbols"]
        return font.getBestCmap().get(ord(ch)), font

    def reach(face: str, text: str, size: float) -> tuple[float, float]:
        up = down = 0.0
        for ch in text:
            name, font = glyph(face, ch)
            g = font["glyf"][name] if name is not None else None
            if g is not None and g.numberOfContours:
                units = font["head"].unitsPerEm
                up, down = max(up, g.yMax * size / units), max(down, -g.yMin * size / units)
        return up, down

    def shaped(face: str, text: str) -> float:
        with open(f"{FONT_DIR}/{FACES[face][0]}", "rb") as fh:
            font = hb.Font(hb.Face(fh.read()))
        buf = hb.Buffer()
        buf.add_str(text)
        buf.guess_segment_properties()
        hb.shape(font, buf, {"kern": True, "liga": False})
        return float(sum(pos.x_advance for pos in buf.glyph_positions))

    texts = ["x/2", "LayerNorm", "(k h)", "q_proj", "√n", "x ∘ y", "★", "a→b", "", " ", "g_λ·8", "⊗⊕"]
    for face in FACES:
        for text in texts:
            for size in (5.6, 8.0, 11.0):
                assert ink_extent(text, face, size) == reach(face, text, size), (face, text, size)
            units, symbol_units = fonts[face]["head"].unitsPerEm, fonts["symbols"]["head"].unitsPerEm
            want = 0.0
            run = ""
            for ch in text + "\n":  # runs of the face's own characters; the others measured in the symbols face
                if ch != "\n" and (face == "symbols" or ord(ch) in fonts[face].getBestCmap()):
                    run += ch
                    continue
                want += shaped(face, run) if run else 0.0
                run = ""
                if ch != "\n":
                    want += shaped("symbols", ch) * units / symbol_units
            assert advance(text, face, 10.0) == want * 10.0 / units, (face, text)
