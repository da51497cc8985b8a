"""Notation details the paper fixes: overlines kept through boxes built from plain names, constants shown symbolically."""

from __future__ import annotations

from pathlib import Path as FsPath

import ncd
from ncd.render import layout
from ncd.render.model import Path, Text


def _overlined(drawing: ncd.render.model.Drawing, text: Text) -> bool:
    """Whether an overline is drawn over ``text`` (a short stroke above its glyphs, within its width)."""
    x0, top, x1, _ = text.bounds
    return any(p.role == "text" and len(p.commands) == 2 and x0 - 1 <= p.commands[0][1] and p.commands[1][1] <= x1 + 1
               and top - 2 <= p.commands[0][2] <= text.y for p in drawing.of(Path))


def test_item_overline_is_kept_across_a_causal_mask() -> None:
    # CausalMask("y", "x") is built from plain names: its output wires are feature axes, yet they are the
    # same ȳ and x̄ the scores carry, and the paper overlines them on both sides of the mask.
    d = ncd.zoo.attention(mask="causal")
    drawing = layout(d, page="none")
    labels = [t for t in drawing.of(Text) if t.role == "label" and t.string in ("x", "y")]
    assert len(labels) >= 8
    assert all(_overlined(drawing, t) for t in labels), [t.string for t in labels if not _overlined(drawing, t)]
    # a feature axis named like nothing that is an item stays plain
    plain = [t for t in drawing.of(Text) if t.role == "label" and t.string == "k"]
    assert plain and not any(_overlined(drawing, t) for t in plain)


def _scale_label(drawing: ncd.render.model.Drawing) -> str:
    return next(t.string for t in drawing.of(Text) if t.string.startswith("∗"))


def test_a_constant_scale_is_written_with_its_size_symbol() -> None:
    # 8^{-1/2} is the scale of attention over an axis of size 8: the paper writes k^{-1/2}
    d = ncd.Einsum("~y k:8, ~x k:8 -> ~y ~x") >> ncd.Scale(8 ** -0.5) >> ncd.Softmax("x")
    assert _scale_label(layout(d, page="none")).startswith("∗k−1/2")
    # two axes of size 8: which one is meant is not known, the number stays
    d2 = ncd.Einsum("~y k:8 h:8, ~x k:8 h:8 -> ~y ~x h") >> ncd.Scale(8 ** -0.5)
    assert _scale_label(layout(d2, page="none")).startswith("∗8−1/2")
    # no axis of that size: 4 significant digits
    d3 = ncd.Einsum("~y k:8, ~x k:8 -> ~y ~x") >> ncd.Scale(0.123456)
    assert _scale_label(layout(d3, page="none")).startswith("∗0.1235")


def test_check_finds_a_wire_drawn_through_a_label() -> None:
    from ncd.render.check import problems
    from ncd.render.model import Drawing

    label = Text.plain(10.0, 20.0, "x/2", 9.0)
    through = Path.through([(0.0, 17.0), (60.0, 17.0)])  # across the label's middle
    below = Path.through([(0.0, 23.0 + label.descent), (60.0, 23.0 + label.descent)])  # clear of its descent
    diagonal = Path.through([(5.0, 0.0), (40.0, 40.0)])
    found = problems(Drawing(60.0, 40.0, [label, through]))
    assert [p for p in found if "runs through text 'x/2'" in p], found
    assert not [p for p in problems(Drawing(60.0, 40.0, [label, below])) if "runs through" in p]
    assert [p for p in problems(Drawing(60.0, 40.0, [label, diagonal])) if "runs through" in p]


def test_a_labels_descent_clears_its_wire() -> None:
    # the slash of x/2 and a subscript (n₁) reach below the baseline; the label is raised so their ink stays
    # at least 1 pt above the wire (measured from the font's glyph boxes)
    from ncd.render.fonts import face_for, ink_extent

    drawing = layout(ncd.zoo.resnet(), depth=1)
    runs = []  # the straight horizontal runs of the wires: (x0, x1, y)
    for p in drawing.of(Path):
        if p.role == "wire":
            for a, b in zip(p.commands, p.commands[1:]):
                if b[0] == "L" and abs(a[-1] - b[2]) < 1e-9:
                    runs.append((min(a[-2], b[1]), max(a[-2], b[1]), b[2]))
    labels = [t for t in drawing.of(Text) if t.role == "label" and ("/" in t.string or t.string.startswith("n"))]
    assert labels
    for t in labels:
        ink = max(ink_extent(r.text, face_for(r.bold, r.italic, r.serif, r.symbol), r.size)[1] + r.dy for r in t.runs)
        gaps = [y - (t.y + ink) for x0, x1, y in runs if x0 <= t.x and t.x + t.width <= x1 and 0 <= y - t.y <= 8]
        assert gaps and min(gaps) >= 1.0 - 1e-6, (t.string, gaps)


def test_tikz_typesets_every_run_at_the_layouts_width(tmp_path: FsPath) -> None:
    # pdflatex measures each run exactly as the TikZ painter writes it (its font commands and body); the widths
    # must be the layout's, which come from the bundled font files through HarfBuzz
    import re
    import shutil
    import subprocess

    from ncd.render.fonts import advance, face_for
    from ncd.render.tikz import _FONTS, run_body, run_font

    assert shutil.which("pdflatex"), "pdflatex is needed (scripts/setup.sh installs Debian's texlive packages)"
    runs = {}
    for d, options in [(ncd.zoo.transformer(), {}), (ncd.zoo.resnet(), {"depth": 1}), (ncd.zoo.unet(), {"depth": 1})]:
        for t in layout(d, **options).of(Text):
            for r in t.runs:
                runs.setdefault((r.text, r.size, r.italic, r.bold, r.serif, r.symbol), r)
    keys = list(runs)
    lines = ["\\documentclass{article}\\usepackage{amssymb}\\begin{document}", *_FONTS]
    lines += [f"\\setbox0\\hbox{{{run_font(runs[k])} {run_body(runs[k])}}}\\typeout{{W:{i}:\\the\\wd0}}"
              for i, k in enumerate(keys)]
    lines.append("x\\end{document}")
    out = tmp_path
    (out / "w.tex").write_text("\n".join(lines), encoding="utf-8")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "w.tex"], cwd=out, capture_output=True,
                   timeout=120, check=True)
    tex = {int(i): float(v) for i, v in re.findall(r"W:(\d+):([\d.]+)pt", (out / "w.log").read_text(errors="replace"))}
    assert len(tex) == len(keys) > 60
    for i, k in enumerate(keys):
        r = runs[k]
        ours = advance(r.text.replace("\u00a0", " "), face_for(r.bold, r.italic, r.serif, r.symbol), r.size)
        assert abs(tex[i] - ours) <= 0.5, (r.text, r.size, tex[i], ours)


def test_notation_page_is_the_scripts_output() -> None:
    """#12 item 8: ``docs/notation.md`` is generated by ``docs/notation/make_notation.py`` and current — each
    paper figure ncd reproduces beside ncd's drawing, its measured figures and its departures with reasons
    (regenerate with ``.venv/bin/python docs/notation/make_notation.py``)."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("make_notation", root / "docs" / "notation" / "make_notation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        text = module.page(png=None)
    finally:
        del sys.modules[spec.name]
    assert text == (root / "docs" / "notation.md").read_text(encoding="utf-8")
    for fig in module.FIGURES:  # every figure's drawing is in the folder the page shows
        assert (root / "docs" / "notation" / f"{fig.name}.png").exists()
        assert f"(notation/{fig.name}.png)" in text
    assert text.count("*why:*") >= len(module.COMMON)
