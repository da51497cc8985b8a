"""TikZ writes what users name things with, not ``?``: Greek, accented Latin, primes, scripts, mathematical symbols
and every printable ASCII character are typeset by pdflatex at the width the layout measured from the bundled fonts
(HarfBuzz); a character with no LaTeX form (CJK, emoji, Hebrew) is an empty box in its room, as in PNG and PDF, with
a warning naming it, and the document still compiles."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import ncd
from ncd.render import layout, to_tikz
from ncd.render.fonts import advance, face_for
from ncd.render.model import Text
from ncd.render.raster import MissingGlyphWarning
from ncd.render.tikz import _FONTS, latex_text, run_body, run_font, unwritten
from ncd.render.tikz_chars import GLYPH_HOOK

NAMES = ["◺−1 ◹1 FFT⁻¹ ⊻ ⤨ ∿", "Δφ_κΩ", "naïve café",
         "Straße ÆØÅ łœ", "x² y₁ ᵢⁿ", "≤∑⇒∂∇∞±", "𝔼 θ̂", "注意力层", "ש😀", "ΑΒΓ αβγ ωψ"]
ASCII = "".join(chr(c) for c in range(33, 127))
FACES = {"sans": "\\fontfamily{ncdss}\\fontseries{m}\\fontshape{n}",
         "sans-bold": "\\fontfamily{ncdss}\\fontseries{bx}\\fontshape{n}",
         "serif-italic": "\\fontfamily{ncdrm}\\fontseries{m}\\fontshape{it}"}


def _tex_widths(boxes: list[str], tmp_path: Path) -> tuple[list[float], str]:
    """pdflatex's widths of ``boxes`` (horizontal-mode material) and its log."""
    assert shutil.which("pdflatex"), "pdflatex is needed (scripts/setup.sh installs Debian's texlive packages)"
    lines = ["\\documentclass{article}\\usepackage{amssymb}\\begin{document}", *_FONTS, GLYPH_HOOK]
    lines += [f"\\setbox0\\hbox{{{b}}}\\typeout{{W:{i}:\\the\\wd0}}" for i, b in enumerate(boxes)]
    lines.append("x\\end{document}")
    (tmp_path / "w.tex").write_text("\n".join(lines), encoding="ascii")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "w.tex"], cwd=tmp_path,
                   capture_output=True, timeout=120, check=True)
    log = (tmp_path / "w.log").read_text(errors="replace")
    found = {int(i): float(v) for i, v in re.findall(r"W:(\d+):([\d.]+)pt", log)}
    assert len(found) == len(boxes)
    return [found[i] for i in range(len(boxes))], log


def test_every_run_of_unicode_names_is_typeset_at_the_layouts_width(tmp_path: Path) -> None:
    runs = {}
    for name in NAMES:
        d = (ncd.Identity.of("b m") >> ncd.Linear("m -> n", name=name)).block(name)
        for t in layout(d).of(Text):
            for r in t.runs:
                runs.setdefault((r.text, r.size, r.italic, r.bold, r.serif, r.symbol), r)
    rs = list(runs.values())
    assert any(any(ord(c) > 0x3000 for c in r.text) for r in rs)  # the CJK runs are among them
    widths, log = _tex_widths([f"{run_font(r)} {run_body(r)}" for r in rs], tmp_path)
    assert "Missing character" not in log  # (pdflatex drops a glyph its font lacks with only this note)
    for r, tex in zip(rs, widths):
        assert "?" not in run_body(r)  # was: every character beyond the symbol table
        ours = advance(r.text.replace("\u00a0", " "), face_for(r.bold, r.italic, r.serif, r.symbol), r.size)
        assert abs(tex - ours) <= 0.5, (r.text, r.size, tex, ours, run_body(r))


@pytest.mark.parametrize("face", list(FACES))
def test_each_ascii_character_has_the_fonts_width_in_tex(face: str, tmp_path: Path) -> None:
    # TeX's \_ is a 0.36 em rule where CMU's underscore is 0.78 em; ^ ~ ` were narrower too: each is boxed
    boxes = [f"\\fontsize{{10}}{{12}}\\fontencoding{{OT1}}{FACES[face]}\\selectfont {latex_text(ch, face, 10.0)}"
             for ch in ASCII]
    widths, _ = _tex_widths(boxes, tmp_path)
    off = [(ch, round(w, 2), round(advance(ch, face, 10.0), 2)) for ch, w in zip(ASCII, widths)
           if abs(w - advance(ch, face, 10.0)) > 0.3]
    assert not off


def test_a_cjk_name_compiles_as_an_empty_box_with_a_warning(tmp_path: Path) -> None:
    d = ncd.Identity.of("b 長さ") >> ncd.Linear("長さ -> n", name="注意")
    with pytest.warns(MissingGlyphWarning, match="TikZ: 4 character.*注意"):
        tex = to_tikz(d)
    assert tex.isascii() and "?" not in tex
    assert tex.count("\\ncdglyph{6CE8}") == 1 and "\\ncdglyph{9577}" in tex  # 注, 長 by code point
    (tmp_path / "d.tex").write_text(tex, encoding="ascii")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "d.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "d.pdf").read_bytes()[:4] == b"%PDF"


def test_what_has_a_latex_form_is_not_an_empty_box() -> None:
    assert unwritten("Δé ʹ₂ ≤ 𝔼 ß") == ""
    assert unwritten("a注b注😀") == "注😀"
    tex = to_tikz(ncd.Identity.of("t tʹ") >> ncd.ReLU())  # a second copy of an axis: t, t′ (was 't?')
    assert "?" not in tex and "$'$" in tex and "ncdglyph" not in tex


@pytest.mark.parametrize("name", ["transformer", "gpt2", "unet", "vit", "resnet"])
def test_the_gallerys_glyphs_all_have_a_latex_form(name: str) -> None:
    drawing = layout(getattr(ncd.zoo, name)(), depth=1)
    assert unwritten("".join(r.text for t in drawing.of(Text) for r in t.runs)) == ""  # (∿ was '?')


def test_a_drawing_taller_than_tex_can_measure_is_scaled_to_a_pdf_page(tmp_path: Path) -> None:
    # 1,000 wires are 16,017 pt tall: TeX's largest length is 16,384 pt and pdflatex stopped with 'Dimension too
    # large' on such pictures (a traced MarkupLM, 22,250 pt); scaled to 14,400 pt (200 in), as the PDF export is
    from ncd.render.raster import MAX_PDF_POINTS, DrawingTooLargeWarning

    d = ncd.Identity(ncd.parse_type(" ".join(f"a{i}" for i in range(1000))))
    drawing = layout(d)
    assert drawing.height > MAX_PDF_POINTS
    with pytest.warns(DrawingTooLargeWarning, match="TikZ.*scaled by 0.899"):
        picture = to_tikz(d, standalone=False)
    (tmp_path / "d.tex").write_text("\\documentclass{article}\\usepackage{tikz}\\usepackage{amssymb}"
                                    "\\usetikzlibrary{arrows.meta}\\begin{document}\\setbox0\\hbox{" + picture
                                    + "}\\typeout{SIZE:\\the\\wd0:\\the\\ht0:\\the\\dp0}\\end{document}\n", encoding="ascii")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "d.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:]
    size = re.search(r"SIZE:([\d.]+)pt:([\d.]+)pt:([\d.]+)pt", (tmp_path / "d.log").read_text(errors="replace"))
    assert size is not None
    w, h = float(size.group(1)), float(size.group(2)) + float(size.group(3))
    assert abs(h - MAX_PDF_POINTS) < 0.5 and abs(w / h - drawing.width / drawing.height) < 1e-3, (w, h)
