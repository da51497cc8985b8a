"""The HTML viewer: build time (costs on and off), file size, and what the page does in headless Chromium.

Cases: GPT-2 small (12 layers) and a 48-layer GPT-2 (XL widths), written with ``ncd.repeat``;
the same 48 layers chained with ``>>`` (folded into one drawn block); that chain with folding
turned off (every layer its own block, hence its own panel); and a GPT-2 of 48 layers traced
from ``transformers`` (random weights, small widths).

"build" is ``ncd.viewer.to_html`` in this process (CPU seconds, median of ``--repeat`` runs, after one
warm-up build of a small model), without and with costs; "ncd.cost" is one ``ncd.cost`` of the whole model (CPU),
side by side: the old page ran that (and one per nested block) for its records. "interactive" is the
moment the page's script has drawn the first view and wired its handlers
(``window.ncdViewer.ready``), from the start of navigation to a ``file://`` URL; "expand" is one
click on the first collapsed block until its panel is shown. "on screen" and "text" are measured
from the browser's bounding boxes after every step of a walk — expand every block one after another
(all open at once), then Esc until none is: the smallest share of the drawing inside the window, and
the smallest height of the wire labels relative to the first paint (1.00 = as large as at first
paint); "label px" is the wire labels' height at first paint.

Run: ``.venv/bin/python benchmarks/bench_viewer.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import sync_playwright

import ncd
import ncd.zoo
from ncd.viewer import to_html
from ncd.viewer.script import MEASURE

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
def chained(layers: int) -> ncd.Diagram:
    """GPT-2's body with its layers written out one after another (``>>``) instead of ``ncd.repeat``."""
    model = ncd.zoo.gpt2(N=layers, m=1600, h=25)
    body = model.body
    repeat = next(node for node in body.walk() if isinstance(node, ncd.Repeat))
    layer = repeat.body
    chain = ncd.Identity.of(repeat.dom)
    for _ in range(layers):
        chain = chain >> layer
    return chain.block("GPT2-chained", defaults=model.get("defaults"))


def traced(layers: int) -> ncd.Diagram:
    """A GPT-2 of ``layers`` layers from ``transformers`` (random weights), through ``ncd.trace``."""
    import torch
    import transformers

    warnings.filterwarnings("ignore", message=".*token_id.*")
    config = transformers.GPT2Config(n_layer=layers, n_embd=32, n_head=4, vocab_size=50, n_positions=16,
                                     use_cache=False, bos_token_id=0, eos_token_id=0)
    return ncd.trace(transformers.GPT2Model(config).eval(), torch.randint(0, 50, (1, 8)))


CASES: list[tuple[str, Callable[[], ncd.Diagram], dict]] = [
    ("GPT-2 small (repeat, N=12)", lambda: ncd.zoo.gpt2(), {}),
    ("GPT-2 48 layers (repeat, N=48, m=1600)", lambda: ncd.zoo.gpt2(N=48, m=1600, h=25), {}),
    ("48 layers chained with >> (folded)", lambda: chained(48), {}),
    ("48 layers chained, fold=False", lambda: chained(48), {"fold": False}),
    ("GPT-2 48 layers traced (transformers)", lambda: traced(48), {}),
]


def build_time(diagram: ncd.Diagram, repeat: int, **options: object) -> float:
    """The median CPU seconds of building the page (``time.process_time``: what it costs, whatever else the
    machine runs; the browser columns are wall-clock)."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        to_html(diagram, **options)  # type: ignore[arg-type]
        times.append(time.process_time() - start)
    return statistics.median(times)


def measure(context, path: Path) -> tuple[float, float, float, float, int, float]:  # type: ignore[no-untyped-def]
    page = context.new_page()
    start = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_function("window.ncdViewer && window.ncdViewer.ready", timeout=120_000)
    ready = time.perf_counter() - start
    shown = page.evaluate(MEASURE)
    worst, first = [shown["on_screen"], 1.0], shown["text"]
    key = page.evaluate("document.querySelector('.ncd-comp[data-block]').getAttribute('data-block')")
    start = time.perf_counter()
    page.click(f'.ncd-comp[data-block="{key}"]')
    page.wait_for_function(f"ncdViewer.expanded().indexOf({key!r}) >= 0")
    expand = time.perf_counter() - start
    steps = 0
    while steps < 40:  # expand every collapsed block drawn, one click at a time
        closed = page.evaluate("[...document.querySelectorAll('.ncd-comp[data-block]:not(.ncd-open)')]"
                               ".map(e => e.getAttribute('data-block')).filter(k => ncdViewer.views.includes(k))")
        if not closed:
            break
        page.click(f'.ncd-comp[data-block="{closed[0]}"]')
        steps += 1
        shown = page.evaluate(MEASURE)
        worst = [min(worst[0], shown["on_screen"]), min(worst[1], shown["text"] / first)]
    while page.evaluate("ncdViewer.expanded().length"):
        page.keyboard.press("Escape")
        shown = page.evaluate(MEASURE)
        worst = [min(worst[0], shown["on_screen"]), min(worst[1], shown["text"] / first)]
    page.close()
    return ready, expand, worst[0], worst[1], steps + 1, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="builds and page loads per case (the median is shown)")
    args = parser.parse_args()
    to_html(ncd.zoo.gpt2(N=2))  # warm-up: imports and caches
    rows = []
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(Path(folder) / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=ARGS, viewport={"width": 1280, "height": 800})
        for k, (name, build, options) in enumerate(CASES):
            diagram = build()
            off = build_time(diagram, args.repeat, costs=False, **options)
            on = build_time(diagram, args.repeat, costs=True, **options)
            start = time.process_time()
            ncd.cost(diagram)  # the baseline: one walk of the whole model (the old page did this per block)
            whole = time.process_time() - start
            path = Path(folder) / f"case{k}.html"
            path.write_text(to_html(diagram, **options), encoding="utf-8")  # type: ignore[arg-type]
            views = len(ncd.viewer.explore(diagram, ncd.render.Style.from_options(**options), costs=False).views)
            loads = [measure(context, path) for _ in range(args.repeat)]
            rows.append((name, path.stat().st_size, views, off, on, whole, statistics.median(r[0] for r in loads),
                         statistics.median(r[1] for r in loads), min(r[2] for r in loads), min(r[3] for r in loads),
                         loads[0][4], loads[0][5]))
        context.close()
    print(f"{'model':<40} {'file':>8} {'views':>5} {'build':>7} {'+costs':>7} {'ncd.cost':>8} {'ready':>6} {'expand':>7} "
          f"{'open':>5} {'label px':>8} {'on screen':>9} {'text':>5}")
    for name, size, views, off, on, whole, ready, expand, seen, text, opened, first in rows:
        print(f"{name:<40} {size / 1e3:>6.0f}kB {views:>5} {off:>6.2f}s {on:>6.2f}s {whole:>7.2f}s {ready:>5.2f}s "
              f"{expand * 1e3:>5.0f}ms {opened:>5} {first:>8.1f} {seen:>9.0%} {text:>5.2f}")


if __name__ == "__main__":
    main()
