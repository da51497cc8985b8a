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

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

import ncd
from ncd.render import layout
from ncd.render.browser import browser_problems, chromiums, measure_texts
from ncd.render.fonts import advance, face_for
from ncd.render.model import Drawing, Text


@pytest.fixture(scope="module")
def both() -> Iterator[tuple[Browser, Browser]]:
    """Chromium with the machine's fonts and Chromium with none (one Playwright: a second one cannot run beside it)."""
    with chromiums(True, False) as pair:
        yield pair  # type: ignore[misc]


@pytest.fixture(scope="module")
def browser(both: tuple[Browser, Browser]) -> Browser:
    return both[1]


def _measure(browser: Browser, drawing: Drawing, embed: bool = True) -> list[list[float]]:
    return measure_texts(browser, drawing, embed)


def _collisions(drawing: Drawing, measured: list[list[float]]) -> list[str]:
    """What ``ncd.render.check`` finds with the texts where the browser drew them (text–text, text–box,
    separator–text, wire–text, glyph overflow)."""
    return browser_problems(None, drawing, measured)


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


#: a representative subset of the traced corpus (``benchmarks/measure_drawings.py --corpus all --browser`` measures
#: every drawing): ConvNeXt's stages (a family of numbered blocks sharing one definition, sizes in closed form), CvT
#: (a page first too wide for its smallest text), Mixtral (experts) and T5 (encoder–decoder)
CORPUS = ["convnext", "cvt", "mixtral", "t5"]


@pytest.mark.parametrize("name", CORPUS)
def test_corpus_drawings_fit_and_do_not_collide_with_or_without_fonts(both: tuple[Browser, Browser], name: str) -> None:
    import warnings

    import torch

    from ncd.render.check import problems
    from ncd.render.measure import drawing_figures
    from tests.test_import_corpus import corpus

    entry = next(e for e in corpus.all_entries() if e.name == name)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inputs, _ = entry.build()
        drawing = layout(ncd.trace(model, **inputs))
    fig = drawing_figures(drawing)
    assert fig.aspect <= 3.0 and fig.min_label_pt >= 6.0, (name, drawing.width, drawing.height, fig.min_label_pt)
    assert problems(drawing) == []
    fonts, bare = both
    assert browser_problems(fonts, drawing) == [] and browser_problems(bare, drawing) == []


def test_gallery_with_the_fonts_installed_does_not_collide(both: tuple[Browser, Browser]) -> None:
    fonts, _ = both
    report = [f"{name} {options}: {p}" for name, options in CASES
              for p in browser_problems(fonts, layout(ncd.zoo.MODELS[name](), **options))]
    assert report == [], "\n".join(report[:20])
