"""The HTML viewer: file size, build time and time to interactive in headless Chromium.

For GPT-2 small (12 layers) and a 48-layer GPT-2 (XL widths), written with ``ncd.repeat``;
the same 48 layers chained with ``>>`` (folded into one drawn block); and, as the worst case,
that chain with folding turned off (every layer its own block, hence its own view).
"Interactive" is the moment the page's script has drawn the first view and wired its
handlers (``window.ncdViewer.ready``), measured from the start of navigation to a
``file://`` URL; "expand" is one click on the first collapsed block until its view is shown.

Run: ``.venv/bin/python benchmarks/bench_viewer.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import sync_playwright

import ncd
import ncd.zoo
from ncd.viewer import write_html

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


CASES: list[tuple[str, Callable[[], ncd.Diagram], dict]] = [
    ("GPT-2 small (repeat, N=12)", lambda: ncd.zoo.gpt2(), {}),
    ("GPT-2 48 layers (repeat, N=48, m=1600)", lambda: ncd.zoo.gpt2(N=48, m=1600, h=25), {}),
    ("48 layers chained with >> (folded)", lambda: chained(48), {}),
    ("48 layers chained, fold=False", lambda: chained(48), {"fold": False}),
]


def measure(context, path: Path) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    page = context.new_page()
    start = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_function("window.ncdViewer && window.ncdViewer.ready", timeout=120_000)
    ready = time.perf_counter() - start
    key = page.evaluate("document.querySelector('.ncd-comp[data-block]').getAttribute('data-block')")
    start = time.perf_counter()
    page.click(f'.ncd-comp[data-block="{key}"]')
    page.wait_for_function(f"ncdViewer.current() === {key!r}")
    expand = time.perf_counter() - start
    page.close()
    return ready, expand


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="page loads per case (the median is shown)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(Path(folder) / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=ARGS, viewport={"width": 1280, "height": 800})
        for k, (name, build, options) in enumerate(CASES):
            diagram = build()
            start = time.perf_counter()
            path = Path(write_html(diagram, Path(folder) / f"case{k}.html", **options))
            built = time.perf_counter() - start
            text = path.read_text(encoding="utf-8")
            data = re.search(r'<script type="application/json" id="ncd-data">(.*?)</script>', text, re.S)
            views = len(json.loads(data.group(1))["views"]) if data else 0
            loads = [measure(context, path) for _ in range(args.repeat)]
            rows.append((name, path.stat().st_size, views, built, statistics.median(r for r, _ in loads),
                         statistics.median(e for _, e in loads)))
        context.close()
    header = ("model", "file", "views", "build (Python)", "interactive", "expand")
    print(f"{header[0]:<42} {header[1]:>9} {header[2]:>6} {header[3]:>15} {header[4]:>12} {header[5]:>8}")
    for name, size, views, built, ready, expand in rows:
        print(f"{name:<42} {size / 1e3:>7.0f}kB {views:>6} {built:>14.2f}s {ready:>11.2f}s {expand * 1e3:>6.0f}ms")


if __name__ == "__main__":
    main()
