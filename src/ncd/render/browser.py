"""Drawings measured in a real browser: Debian's Chromium through Playwright (an optional test dependency).

:func:`chromium` starts a headless Chromium either with the machine's fonts (``fonts=True``) or
with a fontconfig that holds one unrelated font (DejaVu Sans Mono), so that every glyph it draws
comes from the fonts the SVG embeds.  :func:`measure_texts` paints a drawing as SVG in a page and
measures every text run — its advance as laid out (``getComputedTextLength``) and its ink
(``measureText`` on a canvas with the same font); :func:`browser_problems` runs
:func:`ncd.render.check.problems` with the texts where the browser drew them (text–text,
text–box, separator–text, wire–text, glyph overflow).

    with chromium(fonts=False) as browser:
        assert browser_problems(browser, ncd.render.layout(ncd.zoo.attention())) == []
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ncd.render.check import problems
from ncd.render.model import Drawing, Text
from ncd.render.svg import paint_svg

__all__ = ["CHROMIUM", "chromium", "chromiums", "measure_texts", "ink_boxes", "browser_problems"]

CHROMIUM = "/usr/bin/chromium"

_MEASURE = """() => {
  const canvas = document.createElement('canvas').getContext('2d');
  return Array.from(document.querySelectorAll('svg text')).map(e => {
    const cs = getComputedStyle(e);
    canvas.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
    const m = canvas.measureText(e.textContent), x = +e.getAttribute('x'), y = +e.getAttribute('y');
    return [e.getComputedTextLength(), x - m.actualBoundingBoxLeft, y - m.actualBoundingBoxAscent,
            x + m.actualBoundingBoxRight, y + m.actualBoundingBoxDescent];
  });
}"""


@contextmanager
def chromium(fonts: bool = False) -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``); ``fonts=False``: none of the machine's fonts but one."""
    with chromiums(fonts) as (browser,):
        yield browser


@contextmanager
def chromiums(*fonts: bool) -> Iterator[tuple[Any, ...]]:
    """One headless Chromium per flag of ``fonts`` (as :func:`chromium`), from one Playwright."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as conf, sync_playwright() as p:
        env: dict[str, str | float | bool] = dict(os.environ)
        bare = dict(env)
        os.mkdir(os.path.join(conf, "only"))
        os.symlink("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", os.path.join(conf, "only", "mono.ttf"))
        with open(os.path.join(conf, "fonts.conf"), "w", encoding="utf-8") as f:
            f.write(f"<?xml version='1.0'?><fontconfig><dir>{conf}/only</dir><cachedir>{conf}/cache</cachedir>"
                    "<include ignore_missing='yes'>/etc/fonts/conf.d/10-hinting-slight.conf</include></fontconfig>")
        bare["FONTCONFIG_FILE"] = os.path.join(conf, "fonts.conf")
        browsers = []
        try:
            for installed in fonts:
                browsers.append(p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                  args=["--no-sandbox", "--disable-gpu"], env=env if installed else bare))
            yield tuple(browsers)
        finally:
            for b in browsers:
                b.close()


def measure_texts(browser: Any, drawing: Drawing, embed: bool = True) -> list[list[float]]:
    """Per ``<text>`` (one per run, in order): ``[advance, ink x0, y0, x1, y1]`` as the browser draws it."""
    page = browser.new_page()
    try:
        page.set_content("<html><body style='margin:0'>" + paint_svg(drawing, embed_fonts=embed) + "</body></html>")
        page.evaluate("document.fonts.ready.then(() => 1)")
        return page.evaluate(_MEASURE)  # type: ignore[no-any-return]
    finally:
        page.close()


def ink_boxes(drawing: Drawing, measured: list[list[float]]) -> list[tuple[float, float, float, float] | None]:
    """The ink box of each text (the union of its runs' measured ink), in ``drawing.of(Text)`` order."""
    out: list[tuple[float, float, float, float] | None] = []
    k = 0
    for t in drawing.of(Text):  # the painter writes one <text> per run, in order
        ink = [measured[k + j][1:] for j, r in enumerate(t.runs) if r.text.strip()]
        k += len(t.runs)
        out.append((min(b[0] for b in ink), min(b[1] for b in ink), max(b[2] for b in ink), max(b[3] for b in ink))
                   if ink else None)
    return out


def browser_problems(browser: Any, drawing: Drawing, measured: list[list[float]] | None = None) -> list[str]:
    """What :func:`ncd.render.check.problems` finds about texts (text–text, text–box, separator–text, wire–text,
    glyph overflow) with the texts where ``browser`` drew them."""
    measured = measure_texts(browser, drawing) if measured is None else measured
    return [p for p in problems(drawing, text_bounds=ink_boxes(drawing, measured)) if "text" in p]
