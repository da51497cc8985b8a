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

import json
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

#: One call measures every text of the page.  A run's advance and ink depend only on its font and its string, so
#: each (font, string) pair is measured once (the first element drawing it; ``getComputedStyle`` and setting the
#: canvas font are what is slow) and placed at each element's own ``x``, ``y``.  The result comes back as one JSON
#: string: Playwright serialises nested arrays value by value, which took seconds on a drawing of 27k texts.
_MEASURE = """() => {
  const canvas = document.createElement('canvas').getContext('2d');
  const fonts = new Map(), seen = new Map();
  let current = '';
  return JSON.stringify(Array.from(document.querySelectorAll('svg text')).map(e => {
    const key = [e.getAttribute('font-size'), e.getAttribute('class'), e.getAttribute('font-style'),
                 e.getAttribute('font-weight')].join('|');
    let font = fonts.get(key);
    if (font === undefined) {
      const cs = getComputedStyle(e);
      font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
      fonts.set(key, font);
    }
    const text = e.textContent, id = font + '\u0000' + text;
    let m = seen.get(id);
    if (m === undefined) {
      if (font !== current) { canvas.font = font; current = font; }
      const ink = canvas.measureText(text);
      m = [e.getComputedTextLength(), ink.actualBoundingBoxLeft, ink.actualBoundingBoxAscent,
           ink.actualBoundingBoxRight, ink.actualBoundingBoxDescent];
      seen.set(id, m);
    }
    const x = +e.getAttribute('x'), y = +e.getAttribute('y');
    return [m[0], x - m[1], y - m[2], x + m[3], y + m[4]];
  }));
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
                _PAGES.pop(id(b), None)
                b.close()


def measure_texts(browser: Any, drawing: Drawing, embed: bool = True) -> list[list[float]]:
    """Per ``<text>`` (one per run, in order): ``[advance, ink x0, y0, x1, y1]`` as the browser draws it.

    The browser's one page is reused from drawing to drawing (opening a page per drawing cost more than
    measuring a small one); every text is measured in one script call."""
    page = _PAGES.get(id(browser))
    if page is None or page.is_closed():
        page = _PAGES[id(browser)] = browser.new_page()
    svg = paint_svg(drawing, embed_fonts=embed)
    page.set_content("<html><body style='margin:0'>" + svg + "</body></html>", wait_until="domcontentloaded",
                     timeout=0)  # a drawing of 150k items takes longer than the default 30 s
    page.evaluate("document.fonts.ready.then(() => 1)")
    measured = json.loads(page.evaluate(_MEASURE))
    page.set_content("<html></html>")  # a large drawing is not kept alive until the next one
    return measured  # type: ignore[no-any-return]


#: the page each browser measures in (by the browser's id; dropped when the browser closes)
_PAGES: dict[int, Any] = {}


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
