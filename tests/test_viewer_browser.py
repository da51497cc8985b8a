"""The HTML viewer in a real browser: Debian's Chromium driven by Playwright, headless, offline.

Each page is a file opened from disk (``file://``); every request the page makes is recorded
and must be that file.  Screenshots go to ``$NCD_VIEWER_SHOTS`` (or a temporary folder) —
look at them after changing the viewer.
"""

from __future__ import annotations

import io
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

import ncd
import ncd.zoo
from ncd.render import to_png, to_svg
from ncd.viewer import write_html
from ncd.viewer.script import MEASURE
from tests.test_viewer import EVIL, SIZES, gpt2_like, hybrid

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SVG_NS = "{http://www.w3.org/2000/svg}"

#: The middle of an SVG path on screen (its bounding box is flat for straight wires, so hover by point).
POINT = """(el) => { const n = el.getTotalLength(), q = el.getPointAtLength(n / 2), m = el.getScreenCTM();
  return [q.x * m.a + q.y * m.c + m.e, q.x * m.b + q.y * m.d + m.f]; }"""


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data dir
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=ARGS, viewport={"width": 1200, "height": 760},
            accept_downloads=True,
        )
        yield ctx
        ctx.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("NCD_VIEWER_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("viewer-shots")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(write_html(gpt2_like(), tmp_path_factory.mktemp("viewer") / "gpt2_like.html"))


class Opened:
    """A page with the viewer loaded, the requests it made, its errors and the seconds it took."""

    def __init__(self, context: BrowserContext, path: Path) -> None:
        self.page: Page = context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        start = time.perf_counter()
        self.page.goto(path.as_uri())
        self.page.wait_for_function("window.ncdViewer && window.ncdViewer.ready", timeout=30_000)
        self.seconds = time.perf_counter() - start
        self.url = path.as_uri()

    def expanded(self) -> list[str]:
        return self.page.evaluate("ncdViewer.expanded()")

    def shown(self) -> list[str]:
        return sorted(self.page.evaluate("ncdViewer.shown()"))

    def measure(self) -> dict[str, float]:
        return self.page.evaluate(MEASURE)

    def key(self, name: str) -> str:
        return self.page.evaluate("(n) => Object.keys(ncdViewer.blocks).find(k => ncdViewer.blocks[k].name === n)", name)

    def hover_info(self, selector: str) -> str:
        """Move the mouse onto the hit region ``selector`` (checking nothing covers it) and read the tooltip."""
        element = self.page.locator(selector).first
        if element.evaluate("e => e.tagName") == "path":
            x, y = element.evaluate(POINT)
        else:
            box = element.bounding_box()
            assert box
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        same = element.evaluate("(e, [x, y]) => document.elementFromPoint(x, y) === e", [x, y])
        assert same, f"{selector} is covered at ({x:.0f}, {y:.0f})"
        self.page.mouse.move(x, y)
        self.page.wait_for_selector("#ncd-tip:not([hidden])")
        return self.page.inner_text("#ncd-tip")

    def close(self) -> None:
        assert not self.errors, self.errors
        assert all(url == self.url or url.startswith(("data:", "blob:")) for url in self.requests), self.requests
        self.page.close()


def test_expand_several_blocks_keeping_the_drawing_on_screen(context: BrowserContext, model_file: Path,
                                                              shots: Path) -> None:
    """Open blocks on several paths at once; after every expand, collapse and Esc the whole drawing is on
    screen (at least 90 %) and no text is smaller than at first paint — measured from real bounding boxes."""
    view = Opened(context, model_file)
    page = view.page
    first = view.measure()
    assert view.expanded() == [] and view.shown() == [""] and first["on_screen"] > 0.99
    page.screenshot(path=shots / "1-top.png")
    layer, attention, mlp = view.key("Layer"), view.key("Attention"), view.key("MLP")
    projections, product = view.key("Projections"), view.key("ScaledDotProduct")
    seen = []

    def check(step: str) -> None:
        now = view.measure()
        seen.append((step, now))
        assert now["on_screen"] >= 0.9, (step, now)
        assert now["text"] >= first["text"] - 0.01, (step, now, first)

    page.click(f'.ncd-comp[data-block="{layer}"]')
    assert view.shown() == sorted(["", layer])
    check("expand Layer")
    page.click(f'.ncd-comp[data-block="{attention}"]')
    check("expand Attention")
    page.click(f'.ncd-comp[data-block="{mlp}"]')  # a second block, beside the first
    check("expand MLP")
    assert sorted(view.expanded()) == sorted([layer, attention, mlp])  # two sibling panels and their parent
    page.click(f'.ncd-comp[data-block="{product}"]')
    check("expand ScaledDotProduct")
    # all four fit at the first paint's text size, or the block opened longest ago that does not enclose
    # ScaledDotProduct (MLP) was closed to keep the text that size
    opened = [layer, attention, mlp, product] if mlp in view.expanded() else [layer, attention, product]
    assert sorted(view.expanded()) == sorted(opened)
    assert view.shown() == sorted(["", *opened])
    assert page.locator(".ncd-comp.ncd-open").count() == len(opened)  # each open block is marked where it is drawn
    names = ["top", "Layer", "Attention", "ScaledDotProduct"] + (["MLP"] if mlp in opened else [])
    assert page.locator("#ncd-crumbs button").all_inner_texts() == names
    page.screenshot(path=shots / "2-four-open.png")
    if mlp not in opened:
        page.click(f'.ncd-comp[data-block="{mlp}"]')
    # collapse Attention by clicking its fence on the title strip: its sub-block closes with it
    box = page.locator(f'.ncd-fence[data-block="{attention}"]').bounding_box()
    assert box
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + 3)
    assert sorted(view.expanded()) == sorted([layer, mlp])
    check("collapse Attention")
    page.click(f'.ncd-comp[data-block="{mlp}"]')  # clicking an open block's box collapses it too
    assert view.expanded() == [layer]
    check("collapse MLP")
    page.click(f'.ncd-comp[data-block="{attention}"]')
    page.click(f'.ncd-comp[data-block="{projections}"]')
    check("expand Projections")
    page.keyboard.press("Escape")
    assert view.expanded() == [layer, attention]
    check("Esc")
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")
    assert view.expanded() == [] and view.shown() == [""]
    check("Esc to the top")
    assert view.measure() == pytest.approx(first)
    page.screenshot(path=shots / "3-after-esc.png")
    print("\n" + "\n".join(f"{step:<26} on screen {m['on_screen']:.0%}, covers {m['cover']:.0%} of the stage, "
                            f"smallest text {m['text']:.1f} px (first paint {first['text']:.1f} px)" for step, m in seen))
    view.close()


def test_a_panel_made_from_an_earlier_one_expands_as_its_own_block(context: BrowserContext, tmp_path: Path) -> None:
    """The second of two equal blocks not in a row travels as the first's panel with its own keys put in:
    expanding it and its sub-block shows their own fences and records; Esc closes them in turn."""
    view = Opened(context, Path(write_html(hybrid(), tmp_path / "hybrid.html")))
    page = view.page
    page.click('.ncd-comp[data-block="0/2"]')
    assert view.expanded() == ["0/2"] and view.shown() == ["", "0/2"]
    panel = 'svg.ncd-view[data-view="0/2"]'
    blocks = page.eval_on_selector_all(f"{panel} .ncd-hit [data-block]", "els => els.map(e => e.dataset.block)")
    assert sorted(blocks) == ["0/2", "0/2/0"]
    page.click(f'{panel} .ncd-comp[data-block="0/2/0"]')
    assert view.shown() == ["", "0/2", "0/2/0"]
    fence = 'svg.ncd-view[data-view="0/2/0"] .ncd-fence'
    assert page.get_attribute(fence, "data-block") == "0/2/0"
    index = int(page.get_attribute(fence, "data-i") or -1)
    records = page.evaluate("() => JSON.parse(document.getElementById('ncd-data').textContent).infos")
    assert records[index]["key"] == "0/2/0" and records[index]["title"] == "Inner"
    assert "linear" in view.hover_info('svg.ncd-view[data-view="0/2/0"] .ncd-box')
    page.keyboard.press("Escape")
    assert view.expanded() == ["0/2"] and view.shown() == ["", "0/2"]
    page.keyboard.press("Escape")
    assert view.expanded() == [] and view.shown() == [""]
    view.close()


def test_hover_a_wire_for_its_axis_and_size(context: BrowserContext, model_file: Path) -> None:
    view = Opened(context, model_file)
    index = view.page.evaluate("() => JSON.parse(document.getElementById('ncd-data').textContent)"
                               ".infos.findIndex(r => r.title === 'axis v')")
    text = view.hover_info(f'.ncd-wire[data-i="{index}"]')
    assert text.splitlines()[0] == "axis v"
    assert f"v = {SIZES['v']}" in text and "feature axis" in text
    view.close()


def test_hover_a_box_for_primitive_types_and_costs(context: BrowserContext, model_file: Path, shots: Path) -> None:
    view = Opened(context, model_file)
    index = view.page.evaluate("() => JSON.parse(document.getElementById('ncd-data').textContent)"
                               ".infos.findIndex(r => r.title === 'L^U')")
    text = view.hover_info(f'.ncd-box[data-i="{index}"]')
    lines = dict(line.split("\t", 1) for line in text.splitlines()[1:] if "\t" in line)
    assert lines["primitive"].startswith("linear")
    assert lines["input"].startswith("m") and lines["output"].startswith("v")
    assert lines["forward"] == f"{2 * SIZES['t'] * SIZES['m'] * SIZES['v'] / 1e9:.3g} GFLOP"
    view.page.screenshot(path=shots / "3-box-tooltip.png")
    # a collapsed block's tooltip offers to expand it
    text = view.hover_info(f'.ncd-comp[data-block="{view.key("Layer")}"]')
    assert text.splitlines()[0] == "Layer" and "click to expand" in text and "N = 12 times" in text
    view.close()


def test_search_finds_a_block_and_shows_it(context: BrowserContext, model_file: Path, shots: Path) -> None:
    view = Opened(context, model_file)
    page = view.page
    page.fill("#ncd-search", "scaled")
    items = page.locator("#ncd-results li")
    assert items.count() == 1
    assert items.first.inner_text().split("\n")[0].strip().startswith("ScaledDotProduct")
    assert "GPT2 › Layer › Attention" in items.first.inner_text()
    page.keyboard.press("Enter")
    target = view.key("ScaledDotProduct")
    assert view.expanded() == [view.key("Attention"), view.key("Layer")]  # the panels it is drawn in
    # the found block stays highlighted until the next search or click: wait for that, however slow the machine
    page.wait_for_selector(f'.ncd-comp.ncd-flash[data-block="{target}"]', state="attached", timeout=10_000)
    hit = page.locator(f'.ncd-comp[data-block="{target}"]')
    box, stage = hit.bounding_box(), page.locator("#ncd-stage").bounding_box()
    assert box and stage
    assert stage["x"] <= box["x"] and box["x"] + box["width"] <= stage["x"] + stage["width"]
    assert stage["y"] <= box["y"] and box["y"] + box["height"] <= stage["y"] + stage["height"]
    page.screenshot(path=shots / "4-search.png")
    page.fill("#ncd-search", "no such block")
    assert page.inner_text("#ncd-results") == "nothing drawn is named like that"
    view.close()


@pytest.mark.parametrize(("query", "title", "kind", "inside"), [
    ("gelu", "GELU", "box", "MLP"),
    ("softmax", None, "box", "ScaledDotProduct"),
    ("projection", "L₊^Q", "box", "Projections"),
    ("f", "axis f", "axis", "MLP"),
])
def test_search_finds_boxes_primitives_and_axes(context: BrowserContext, model_file: Path, shots: Path, query: str,
                                                title: str | None, kind: str, inside: str) -> None:
    """Search goes past block names: a primitive (GELU, softmax), what people call a box (a projection), an axis."""
    view = Opened(context, model_file)
    page = view.page
    page.fill("#ncd-search", query)
    items = page.locator("#ncd-results li")
    texts = [items.nth(k).inner_text() for k in range(items.count())]
    pick = next(k for k, t in enumerate(texts) if t.split("\n")[0].startswith(title or "") and kind in t and inside in t)
    data = "() => JSON.parse(document.getElementById('ncd-data').textContent).infos"
    for _ in range(pick):
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    assert view.key(inside) in view.expanded()  # the panel where it is drawn is open
    # a condition, not a delay: the highlight stays until the next search
    page.wait_for_selector(".ncd-hit .ncd-flash", state="attached", timeout=10_000)
    flashed = page.locator(".ncd-hit .ncd-flash")
    assert flashed.count() >= 1
    records = page.evaluate(data)
    for k in range(flashed.count()):
        record = records[int(flashed.nth(k).get_attribute("data-i") or -1)]
        assert record["kind"] == ("wire" if kind == "axis" else "box")
        assert query in " ".join(record["find"])
        panel = flashed.nth(k).evaluate("e => e.closest('svg.ncd-view').getAttribute('data-view')")
        assert panel == view.key(inside)
    box, stage = flashed.first.bounding_box(), page.locator("#ncd-stage").bounding_box()
    assert box and stage and stage["x"] <= box["x"] + box["width"] / 2 <= stage["x"] + stage["width"]
    assert view.measure()["on_screen"] >= 0.9
    page.screenshot(path=shots / f"4-search-{query}.png")
    view.close()


def test_wheel_zooms_and_drag_pans_without_toggling(context: BrowserContext, model_file: Path) -> None:
    view = Opened(context, model_file)
    page = view.page
    matrix = "() => new DOMMatrix(getComputedStyle(document.getElementById('ncd-canvas')).transform)"
    before = page.evaluate(matrix)
    page.mouse.move(600, 400)
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"({matrix})().a > {before['a'] * 1.2}")
    comp = page.locator(f'.ncd-comp[data-block="{view.key("Layer")}"]').bounding_box()
    assert comp
    start = page.evaluate(matrix)
    page.mouse.move(comp["x"] + 5, comp["y"] + 5)
    page.mouse.down()
    page.mouse.move(comp["x"] + 85, comp["y"] + 45, steps=5)
    page.mouse.up()
    after = page.evaluate(matrix)
    assert (after["e"] - start["e"], after["f"] - start["f"]) == pytest.approx((80, 40), abs=1)
    assert view.expanded() == []  # a drag that starts on a block does not expand it
    view.close()


def test_export_the_current_view_as_svg_and_png(context: BrowserContext, model_file: Path, tmp_path: Path) -> None:
    from PIL import Image

    model = gpt2_like()
    view = Opened(context, model_file)
    page = view.page
    with page.expect_download() as got:
        page.click("#ncd-export-svg")
    svg_path = tmp_path / got.value.suggested_filename
    got.value.save_as(svg_path)
    assert svg_path.name == "GPT2.svg"
    exported = ET.parse(svg_path).getroot()
    reference = ET.fromstring(to_svg(model, depth=1))  # the renderer's own drawing of the same view
    assert not exported.findall(f".//{SVG_NS}g[@class='ncd-hit']")
    assert "@font-face" in (exported.find(f"{SVG_NS}style").text or "")  # the fonts travel with the file
    texts = [t.text for t in exported.iter(f"{SVG_NS}text")]
    assert texts == [t.text for t in reference.iter(f"{SVG_NS}text")]
    assert len(list(exported.iter(f"{SVG_NS}path"))) == len(list(reference.iter(f"{SVG_NS}path")))

    # with a block open, the export is the sheet: the top view and the block's panel, each the renderer's drawing
    from tests.test_viewer import explore

    layer = view.key("Layer")
    page.click(f'.ncd-comp[data-block="{layer}"]')
    with page.expect_download() as got:
        page.click("#ncd-export-svg")
    sheet = ET.fromstring(got.value.path().read_text(encoding="utf-8"))
    panels = [el for el in sheet if el.tag == f"{SVG_NS}svg"]
    assert len(panels) == 2 and not sheet.findall(f".//{SVG_NS}g[@class='ncd-hit']")
    views = {v.key: v for v in explore(model).views}
    for panel, key in zip(panels, ["", layer]):
        painted = ET.fromstring(views[key].svg)
        assert [t.text for t in panel.iter(f"{SVG_NS}text")] == [t.text for t in painted.iter(f"{SVG_NS}text")]
    page.keyboard.press("Escape")

    with page.expect_download() as got:
        page.click("#ncd-export-png")
    png_path = tmp_path / "view.png"
    got.value.save_as(png_path)
    shown = Image.open(png_path).convert("L")
    cairo = Image.open(io.BytesIO(to_png(model, depth=1, scale=2))).convert("L")
    assert abs(shown.width - cairo.width) <= 1 and abs(shown.height - cairo.height) <= 1
    ink = [sum(img.histogram()[:128]) / (img.width * img.height) for img in (shown, cairo)]
    assert ink[0] > 0.005 and ink[0] == pytest.approx(ink[1], rel=0.35)  # same drawing, fonts rasterised differently
    view.close()


def test_labels_from_user_models_run_nothing(context: BrowserContext, tmp_path: Path, shots: Path) -> None:
    evil = (ncd.Identity.of("~t m") >> ncd.Linear("m -> n", name=EVIL)).block(EVIL)
    model = (ncd.Identity.of("~t m") >> evil >> ncd.ReLU()).block(EVIL)
    view = Opened(context, Path(write_html(model, tmp_path / "evil.html")))
    page = view.page
    key = "0/0"  # the inner block (the outer one, also called EVIL, is the top level)
    assert page.evaluate("(k) => ncdViewer.blocks[k].name", key) == EVIL
    text = view.hover_info(f'.ncd-comp[data-block="{key}"]')
    assert text.splitlines()[0] == EVIL
    page.click(f'.ncd-comp[data-block="{key}"]')
    assert view.expanded() == [key]
    index = page.evaluate("(t) => JSON.parse(document.getElementById('ncd-data').textContent).infos.findIndex(r => r.title === t)",
                          "L^" + EVIL)
    assert EVIL in view.hover_info(f'.ncd-box[data-i="{index}"]')
    page.fill("#ncd-search", "<script>")
    assert EVIL in page.inner_text("#ncd-results")
    assert page.inner_text("#ncd-name") == EVIL
    page.screenshot(path=shots / "5-escaped-labels.png")
    assert page.evaluate("window.__pwned") is None and not view.dialogs
    assert page.locator("img").count() == 0 and page.locator("svg script").count() == 0
    view.close()


def test_notebook_display_works_offline(context: BrowserContext, shots: Path) -> None:
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.set_content("<h3>a notebook cell</h3>" + gpt2_like(2)._repr_html_())
    frame = page.frames[1]
    frame.wait_for_function("window.ncdViewer && window.ncdViewer.ready", timeout=30_000)
    key = frame.evaluate("Object.keys(ncdViewer.blocks).find(k => ncdViewer.blocks[k].name === 'Layer')")
    frame.click(f'.ncd-comp[data-block="{key}"]')
    assert frame.evaluate("ncdViewer.expanded()") == [key]
    page.screenshot(path=shots / "6-notebook.png")
    assert all(not url.startswith(("http:", "https:")) for url in requests), requests
    page.close()


@pytest.mark.parametrize("layers", [12, 48])
def test_gpt2_opens_and_becomes_interactive(context: BrowserContext, tmp_path: Path, shots: Path, layers: int) -> None:
    path = Path(ncd.draw(ncd.zoo.gpt2(N=layers), tmp_path / f"gpt2-{layers}.html"))
    view = Opened(context, path)
    page = view.page
    start = time.perf_counter()
    key = view.key("Block")
    page.click(f'.ncd-comp[data-block="{key}"]')
    assert view.expanded() == [key]
    expand = time.perf_counter() - start
    assert view.measure()["on_screen"] >= 0.9
    print(f"\nGPT-2 ({layers} layers): {path.stat().st_size / 1e3:.0f} kB, interactive after {view.seconds:.2f} s, "
          f"first expansion {expand * 1e3:.0f} ms")
    page.screenshot(path=shots / f"7-gpt2-{layers}.png")
    view.close()
