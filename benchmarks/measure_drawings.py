"""Measure the drawings issue #12 asks about: aspect ratio, smallest label, crossings, legend and collisions.

For every gallery model (default and ``depth=1``), small traced GPT-2, Llama and ViT models and
EVERY model of the import corpus that traces (``benchmarks/import_corpus.py``'s entries: every
``transformers`` model type built from a tiny config, the heads and masks it adds, plain PyTorch),
drawn with default options: width:height, the smallest text in points once the drawing is scaled to
a 6.5-inch column (468 pt; a narrower drawing is printed at its own size), the crossings of wires no
box draws (:func:`ncd.render.measure.crossings`, ``free=True``), the problems ``ncd.render.check``
finds with the layout's own text boxes (every class: overlaps, separators and wires through text,
glyph overflow, loose wires, the legend) and, with ``--browser``, the text collisions measured in
Chromium with the machine's fonts installed and with none (fonts embedded).  Targets: aspect at
most 3, smallest label at least 6 pt, no crossing, no problem.  Also reported (``pages``): how many pages tall each
prints in a column (a letter page holds ncd.render.measure.PAGE_PT = 648 pt of it); a drawing over one page says
why in the summary's count: a traced model at depth=None draws every block, by request (depth=1: its overview).

    .venv/bin/python benchmarks/measure_drawings.py                        # gallery + 40 corpus models
    .venv/bin/python benchmarks/measure_drawings.py --only corpus --corpus all --browser \\
        --chunk 1/4 --out /tmp/drawings.jsonl                              # a quarter of the corpus, appended
    .venv/bin/python benchmarks/measure_drawings.py --report /tmp/drawings.jsonl   # the table of what was measured

``--corpus N`` samples N model types evenly (plus GPT-2, Llama, BERT, T5, ViT and Mixtral); ``all``
takes every entry.  Each model is built, traced and drawn in a forked child with a time limit;
``--chunk K/N`` measures every N-th entry from the K-th, so chunks can run in parallel or in turn and
``--out`` collects their rows (one JSON object per line) for ``--report``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import sys
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import ncd
from ncd.render.check import problems
from ncd.render.measure import PAGE_PT, crossings, drawing_figures

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ASPECT, MIN_PT = 3.0, 6.0
ALWAYS = ("gpt2", "llama", "bert", "t5", "vit", "mixtral")


@dataclass
class Row:
    name: str
    width: float = 0.0
    height: float = 0.0
    aspect: float = 0.0
    min_pt: float = 0.0
    crossings: int = 0
    problems: int = 0
    #: text collisions measured in Chromium with the machine's fonts / with no fonts installed (-1: not measured)
    browser_fonts: int = -1
    browser_bare: int = -1
    seconds: float = 0.0
    check_seconds: float = 0.0
    browser_seconds: float = 0.0
    items: int = 0
    error: str = ""
    examples: list[str] = field(default_factory=list)
    #: with ``--formats``: each written file's bytes and CPU seconds by extension (a failed write: its error)
    files: dict[str, Any] = field(default_factory=dict)
    #: how many pages tall it prints in a column (ncd.render.measure.PAGE_PT a page; 0: not measured, older rows)
    pages: float = 0.0

    @property
    def fits(self) -> bool:
        return not self.error and self.aspect <= ASPECT and self.min_pt >= MIN_PT

    @property
    def clean(self) -> bool:
        return self.fits and not self.crossings and not self.problems and self.browser_fonts <= 0 and self.browser_bare <= 0


def measure(name: str, diagram: ncd.Diagram, options: dict, browsers: dict[str, Any] | None = None) -> Row:
    row, drawing = _measured(name, diagram, options)
    if browsers:
        in_browsers(row, drawing, browsers)
    return row


def _measured(name: str, diagram: ncd.Diagram, options: dict) -> tuple[Row, Any]:
    start = time.perf_counter()
    drawing = ncd.render.layout(diagram, **options)
    seconds = time.perf_counter() - start
    fig = drawing_figures(drawing)
    start = time.perf_counter()
    found = problems(drawing)
    check_seconds = time.perf_counter() - start
    row = Row(name, drawing.width, drawing.height, fig.aspect, fig.min_label_pt, crossings(drawing, free=True),
              len(found), seconds=seconds, check_seconds=check_seconds, items=len(drawing.items), examples=found[:3],
              pages=round(fig.pages, 3))
    return row, drawing


def write_formats(row: Row, diagram: ncd.Diagram, options: dict, formats: list[str]) -> None:
    """Write ``diagram`` with ``options`` to each format (``.svg``, ``.png``, ...) in a fresh directory: bytes and
    CPU seconds per file, or the error; a PNG or PDF scaled down to cairo's limits is noted."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for ext in formats:
            path = os.path.join(tmp, "drawing" + ext)
            start = time.process_time()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    ncd.draw(diagram, path, **options)
                scaled = [str(w.message)[:60] for w in caught if "DrawingTooLarge" in type(w.message).__name__]
                row.files[ext] = {"bytes": os.path.getsize(path), "seconds": round(time.process_time() - start, 3),
                                  **({"scaled": scaled[0]} if scaled else {})}
            except Exception as error:  # noqa: BLE001 - the table records it
                text = str(error).strip().splitlines()[0][:100] if str(error).strip() else ""
                row.files[ext] = {"error": f"{type(error).__name__}: {text}"}
                if not row.error:
                    row.error = f"DRAWING FAILED {ext} {type(error).__name__}: {text}"


def in_browsers(row: Row, drawing: Any, browsers: dict[str, Any]) -> None:
    """Count the text collisions of ``drawing`` as each browser draws it (one page per browser, one script call)."""
    from ncd.render.browser import browser_problems

    start = time.perf_counter()
    for key, browser in browsers.items():
        seen = browser_problems(browser, drawing)
        setattr(row, key, len(seen))
        row.examples += [f"{key}: {p}" for p in seen[:2]]
    row.browser_seconds = time.perf_counter() - start


def traced() -> dict[str, ncd.Diagram]:
    import torch
    import transformers as T

    torch.manual_seed(0)
    out = {}
    gpt2 = T.GPT2Model(T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=16, use_cache=False))
    out["traced gpt2"] = ncd.trace(gpt2.eval(), torch.randint(0, 50, (2, 6)))
    llama = T.LlamaModel(T.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                       intermediate_size=64, vocab_size=50, max_position_embeddings=16, use_cache=False))
    out["traced llama"] = ncd.trace(llama.eval(), torch.randint(0, 50, (2, 6)))
    vit = T.ViTModel(T.ViTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                 image_size=16, patch_size=4, num_channels=3))
    out["traced vit"] = ncd.trace(vit.eval(), torch.randn(2, 3, 16, 16))
    return out


def corpus_names(n: int | None) -> list[str]:
    """Every corpus entry (``n=None``), or ``n`` model types spread evenly over the sorted names and the ones
    always measured."""
    from import_corpus import all_entries

    names = [e.name for e in all_entries()]
    if n is None:
        return names
    base = sorted(x for x in names if "." not in x and "+" not in x)
    step = max(1, len(base) // max(n, 1))
    return list(dict.fromkeys([t for t in ALWAYS if t in base] + base[::step][:n]))


def _saved(directory: str, name: str) -> str:
    return os.path.join(directory, name.replace("/", "_") + ".pickle")


def _corpus_child(entry: Any, options: dict, browser: bool, conn: Any, save: str | None = None,
                  load: str | None = None, depths: list[int | None] | None = None,
                  formats: list[str] | None = None) -> None:
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    name = entry.name
    try:
        if load:
            if not os.path.exists(_saved(load, name)):
                raise _Skip("not built or not traced (nothing saved)")
            with open(_saved(load, name), "rb") as f:
                diagram = pickle.load(f)
        else:
            try:
                model, inputs, _ = entry.build()
            except Exception as error:  # noqa: BLE001 - the table records why
                raise _Skip(f"not built: {type(error).__name__}") from error
            try:
                diagram = ncd.trace(model, **inputs)
            except Exception as error:  # noqa: BLE001
                raise _Skip(f"not traced: {type(error).__name__}") from error
        if save:
            with open(_saved(save, name), "wb") as f:
                pickle.dump(diagram.as_block() if hasattr(diagram, "as_block") else diagram, f)
            raise _Skip("saved")
        sent = []
        for depth in depths or [options.get("depth")]:
            at = {**options, "depth": depth} if depth is not None else options
            label = name if depths is None else f"{name} depth={depth}"
            try:
                row, drawing = _measured(label, diagram, at)
            except Exception as error:  # noqa: BLE001 - the table records why
                sent.append((_failed(label, error), None))
                continue
            if formats:
                write_formats(row, diagram, at, formats)
            # the parent measures the drawing in its browsers (started once for the whole run)
            sent.append((row, drawing if browser else None))
        conn.send(sent)
        return
    except _Skip as skip:
        row = Row(name, error=str(skip))
    except Exception as error:  # noqa: BLE001 - the table records why
        row = _failed(name, error)
    conn.send([(row, None)])


def _failed(name: str, error: Exception) -> Row:
    text = str(error).strip()
    return Row(name, error=f"DRAWING FAILED {type(error).__name__}: {text.splitlines()[0][:80] if text else ''}")


class _Skip(Exception):
    """The model is not drawn because it does not build or trace (the import corpus reports why)."""


def corpus_rows(names: list[str], options: dict, jobs: int, timeout: float, browsers: dict[str, Any] | None = None,
                out: str | None = None, save: str | None = None, load: str | None = None,
                depths: list[int | None] | None = None, formats: list[str] | None = None) -> list[Row]:
    from import_corpus import _warm_up, all_entries

    entries = {e.name: e for e in all_entries()}
    if not load:
        _warm_up(False)  # imports and first-use costs paid once, before the children fork
    ctx = multiprocessing.get_context("fork")
    rows: dict[str, list[Row]] = {}
    pending = list(names)
    running: list[tuple[str, Any, Any, float]] = []
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_corpus_child, daemon=False,
                               args=(entries[name], options, bool(browsers), child, save, load, depths, formats))
            proc.start()
            running.append((name, proc, parent, time.monotonic()))
        time.sleep(0.2)
        for item in list(running):
            name, proc, parent, started = item
            got: list[Row] = []
            if parent.poll():
                for row, drawing in parent.recv():
                    got.append(row)
                    if browsers and drawing is not None:
                        try:
                            in_browsers(row, drawing, browsers)
                        except Exception as error:  # noqa: BLE001 - the table records it; the run goes on
                            row.error = f"BROWSER FAILED {type(error).__name__}: {str(error).splitlines()[0][:80]}"
            elif proc.is_alive() and time.monotonic() - started < timeout:
                continue
            elif proc.is_alive():
                proc.kill()
                got = [Row(name, error=f"DRAWING TIMED OUT after {timeout:.0f} s")]
            else:
                got = [Row(name, error="DRAWING FAILED: child died")]
            proc.join()
            running.remove(item)
            rows[name] = got
            for row in got:
                if out:
                    with open(out, "a", encoding="utf-8") as f:
                        f.write(json.dumps(asdict(row)) + "\n")
                print(_line(row), flush=True)
    return [row for t in names for row in rows[t]]


def _line(r: Row) -> str:
    if r.error:
        return f"{r.name:34} {'-':>14} {'':7} {'':7} {'':5} {'':5} {'':9} {'':6}  {r.error}"
    browser = f"{r.browser_fonts}/{r.browser_bare}" if r.browser_fonts >= 0 else "-"
    flag = "" if r.clean else "  <- " + "; ".join(r.examples[:2])[:160]
    if r.files:
        flag = "  " + " ".join(f"{ext[1:]} {f['bytes'] / 1024:.0f}K/{f['seconds']:.1f}s" + ("*" if "scaled" in f else "")
                               for ext, f in r.files.items() if "bytes" in f) + flag
    return (f"{r.name:34} {r.width:6.0f}×{r.height:<7.0f} {r.aspect:7.2f} {r.min_pt:7.2f} {r.pages:6.2f} {r.crossings:5d}"
            f" {r.problems:5d} {browser:>9} {r.seconds:6.2f}{flag}")


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print(f"{'drawing':34} {'w×h pt':>14} {'aspect':>7} {'min pt':>7} {'pages':>6} {'cross':>5} {'probl':>5} {'browser':>9}"
          f" {'s':>6}")
    for r in rows:
        print(_line(r))
    print(summary(rows))


def summary(rows: list[Row]) -> str:
    drawn = [r for r in rows if not r.error]
    failed = [r for r in rows if r.error.startswith("DRAWING")]
    if not drawn:
        return "nothing drawn"
    measured = [r for r in drawn if r.browser_fonts >= 0]
    text = (f"{len(drawn)} drawings ({len(rows) - len(drawn) - len(failed)} models not built or not traced, "
            f"{len(failed)} drawings failed or timed out): worst aspect {max(r.aspect for r in drawn):.2f}, "
            f"{sum(r.aspect > ASPECT for r in drawn)} wider than {ASPECT:g}:1, smallest label "
            f"{min(r.min_pt for r in drawn):.2f} pt, {sum(r.min_pt < MIN_PT for r in drawn)} under {MIN_PT:g} pt, "
            f"{sum(r.crossings for r in drawn)} free crossings, {sum(r.problems for r in drawn)} check problems "
            f"(in {sum(r.problems > 0 for r in drawn)} drawings), tallest {max(r.height for r in drawn):.0f} pt; "
            f"{sum(r.pages > 1 for r in drawn)} taller than a page when printed in a column (over {PAGE_PT:g} pt), "
            f"the tallest {max(r.pages for r in drawn):.1f} pages")
    if measured:
        text += (f"; in Chromium ({len(measured)} drawings): {sum(r.browser_fonts for r in measured)} text collisions "
                 f"with the fonts installed, {sum(r.browser_bare for r in measured)} without")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--wide", action="store_true", help="draw for a slide (page='slide')")
    parser.add_argument("--corpus", default="40", help="how many corpus model types to sample (0: none; all: every entry)")
    parser.add_argument("--only", choices=("gallery", "corpus"), default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per corpus model")
    parser.add_argument("--browser", action="store_true", help="also measure text collisions in Chromium")
    parser.add_argument("--chunk", default="1/1", help="K/N: every N-th corpus entry from the K-th")
    parser.add_argument("--names", nargs="*", help="these corpus entries only")
    parser.add_argument("--out", help="append each corpus row to this JSON-lines file")
    parser.add_argument("--report", nargs="*", help="print the table of rows in these JSON-lines files and stop")
    parser.add_argument("--save", metavar="DIR", help="only trace the corpus entries and save each diagram (pickle) in DIR")
    parser.add_argument("--load", metavar="DIR", help="draw the corpus diagrams saved in DIR by --save (no tracing)")
    parser.add_argument("--depths", nargs="*", help="draw each corpus model at these depths ('none': every block drawn)")
    parser.add_argument("--formats", nargs="*", help="also write each corpus drawing to these formats (.svg .png .pdf "
                        ".tex .html): bytes and CPU seconds each; * marks a raster scaled down to cairo's limits")
    args = parser.parse_args()
    if args.report:
        rows: dict[str, Row] = {}
        for path in args.report:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    row = Row(**json.loads(line))
                    rows[row.name] = row
        print_table(f"traced corpus ({len(rows)} entries measured)", sorted(rows.values(), key=lambda r: r.name))
        return
    options = {"page": "slide"} if args.wide else {}
    if args.save:
        os.makedirs(args.save, exist_ok=True)
    with ExitStack() as stack:
        browsers: dict[str, Any] = {}
        if args.browser and not args.save:
            from ncd.render.browser import chromiums

            fonts, bare = stack.enter_context(chromiums(True, False))
            browsers = {"browser_fonts": fonts, "browser_bare": bare}
        if args.only != "corpus" and not args.save:
            gallery = []
            for name, factory in ncd.zoo.MODELS.items():
                d = factory()
                gallery.append(measure(name, d, options, browsers))
                gallery.append(measure(f"{name} depth=1", d, {"depth": 1, **options}, browsers))
            gallery += [measure(name, d, options, browsers) for name, d in traced().items()]
            print_table("gallery (default and depth=1) and small traced GPT-2, Llama, ViT", gallery)
        if args.only != "gallery" and args.corpus != "0":
            names = args.names or corpus_names(None if args.corpus == "all" else int(args.corpus))
            k, n = (int(x) for x in args.chunk.split("/"))
            names = names[k - 1::n]
            print_table(f"traced corpus ({len(names)} entries, chunk {args.chunk}, tiny configs)",
                        corpus_rows(names, options, args.jobs, args.timeout, browsers, args.out, args.save, args.load,
                                    [None if d == "none" else int(d) for d in args.depths] if args.depths else None,
                                    args.formats))


if __name__ == "__main__":
    main()
