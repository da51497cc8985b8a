"""Drawings measured in a real browser (Debian's Chromium through Playwright), fonts not installed.

Chromium runs with a fontconfig that has one unrelated font (DejaVu Sans Mono), so every glyph it
draws comes from the fonts embedded in the SVG.  For every gallery drawing (default and ``depth=1``)
it measures each text run — its advance as laid out
(``getComputedTextLength``) and its ink (``measureText`` on a canvas with the same font) — and checks

* the widths the layout used (from the font files) are the browser's, run by run;
* no collision between the *measured* texts: text–text, text–box (a box the text is not drawn in),
  dashed separator–text, wire–text (a wire drawn through a label's ink) and glyph overflow (text drawn
  in a box stays inside it).

The same is measured over traced GPT-2, Llama, BERT and ViT models built from configs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

import ncd
from ncd.render import layout
from ncd.render.check import problems
from ncd.render.fonts import advance, face_for
from ncd.render.model import Drawing, Text
from ncd.render.svg import paint_svg

CHROMIUM = "/usr/bin/chromium"
EPS = 0.6

MEASURE = """() => {
  const canvas = document.createElement('canvas').getContext('2d');
  return Array.from(document.querySelectorAll('svg text')).map(e => {
    const cs = getComputedStyle(e);
    canvas.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
    const m = canvas.measureText(e.textContent), x = +e.getAttribute('x'), y = +e.getAttribute('y');
    return [e.getComputedTextLength(), x - m.actualBoundingBoxLeft, y - m.actualBoundingBoxAscent,
            x + m.actualBoundingBoxRight, y + m.actualBoundingBoxDescent];
  });
}"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    conf = tmp_path_factory.mktemp("fontconfig")
    (conf / "only").mkdir()
    os.symlink("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", conf / "only" / "mono.ttf")
    (conf / "fonts.conf").write_text(
        f"<?xml version='1.0'?><fontconfig><dir>{conf / 'only'}</dir><cachedir>{conf / 'cache'}</cachedir>"
        "<include ignore_missing='yes'>/etc/fonts/conf.d/10-hinting-slight.conf</include></fontconfig>")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"],
                              env={**os.environ, "FONTCONFIG_FILE": str(conf / "fonts.conf")})
        yield b
        b.close()


def _measure(browser: Browser, drawing: Drawing, embed: bool = True) -> list[list[float]]:
    page = browser.new_page()
    try:
        page.set_content("<html><body style='margin:0'>" + paint_svg(drawing, embed_fonts=embed) + "</body></html>")
        page.evaluate("document.fonts.ready.then(() => 1)")
        return page.evaluate(MEASURE)
    finally:
        page.close()


def _ink(drawing: Drawing, measured: list[list[float]]) -> list[tuple[float, float, float, float] | None]:
    """The ink box of each text (the union of its runs' measured ink), in ``drawing.of(Text)`` order."""
    out: list[tuple[float, float, float, float] | None] = []
    k = 0
    for t in drawing.of(Text):  # the painter writes one <text> per run, in order
        ink = [measured[k + j][1:] for j, r in enumerate(t.runs) if r.text.strip()]
        k += len(t.runs)
        out.append((min(b[0] for b in ink), min(b[1] for b in ink), max(b[2] for b in ink), max(b[3] for b in ink))
                   if ink else None)
    return out


def _collisions(drawing: Drawing, measured: list[list[float]]) -> list[str]:
    """What ``ncd.render.check`` finds with the texts where the browser drew them (text–text, text–box,
    separator–text, wire–text, glyph overflow)."""
    return [p for p in problems(drawing, text_bounds=_ink(drawing, measured)) if "text" in p]


CASES = [(n, {}) for n in ncd.zoo.MODELS] + [(n, {"depth": 1}) for n in ncd.zoo.MODELS]


def test_measured_text_matches_the_layout_and_nothing_collides(browser: Browser, tmp_path: Path) -> None:
    report = []
    worst = 0.0
    started = time.perf_counter()
    for name, options in CASES:
        drawing = layout(ncd.zoo.MODELS[name](), **options)
        measured = _measure(browser, drawing)
        runs = [r for t in drawing.visible if isinstance(t, Text) for r in t.runs]
        assert len(runs) == len(measured), name
        for r, m in zip(runs, measured):
            ours = advance(r.text.replace("\u00a0", " "), face_for(r.bold, r.italic, r.serif, r.symbol), r.size)
            worst = max(worst, abs(m[0] - ours))
            assert abs(m[0] - ours) <= 0.5 + 0.01 * ours, (name, r.text, m[0], ours)
        report.extend(f"{name} {options}: {p}" for p in _collisions(drawing, measured))
        print(f"{name} {options}: {time.perf_counter() - started:.1f}s")
    assert report == [], "\n".join(report[:20])
    assert worst < 0.5


def test_without_embedded_fonts_the_browser_would_draw_other_widths(browser: Browser) -> None:
    drawing = layout(ncd.zoo.attention())
    runs = [r for t in drawing.visible if isinstance(t, Text) for r in t.runs]
    embedded = _measure(browser, drawing)
    bare = _measure(browser, drawing, embed=False)
    ours = [advance(r.text.replace("\u00a0", " "), face_for(r.bold, r.italic, r.serif, r.symbol), r.size) for r in runs]
    text_runs = [(o, e[0], b[0]) for o, e, b, r in zip(ours, embedded, bare, runs) if r.text.strip()]
    assert all(abs(o - e) <= 0.5 + 0.01 * o for o, e, _ in text_runs)
    assert sum(abs(o - b) for o, _, b in text_runs) > 0.2 * sum(o for o, _, _ in text_runs)  # the fallback differs


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "vit"])
def test_traced_models_measured_in_the_browser_do_not_collide(browser: Browser, name: str) -> None:
    from tests.test_render_page import _traced

    drawing = layout(_traced(name))
    assert _collisions(drawing, _measure(browser, drawing)) == []
