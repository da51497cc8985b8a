"""Measure the drawings issue #12 asks about: aspect ratio, smallest label, crossings, layout problems.

For every gallery model (default and ``depth=1``), small traced GPT-2, Llama and ViT models and a
sample of the traced import corpus (``transformers`` model types built from tiny configs, as
``benchmarks/import_corpus.py`` builds them): width:height, the smallest text in points once the
drawing is scaled to a 6.5-inch column (468 pt; a narrower drawing is printed at its own size),
the crossings of wires no box draws (:func:`ncd.render.measure.crossings`, ``free=True``) and the
count of problems ``ncd.render.check`` finds.  Targets: aspect at most 3, smallest label at least 6 pt.

    .venv/bin/python benchmarks/measure_drawings.py [--wide] [--corpus N] [--only gallery|corpus] [--jobs J]

``--corpus N`` samples N model types evenly over the sorted ``MODEL_MAPPING_NAMES`` (plus GPT-2,
Llama, BERT, T5, ViT and Mixtral); each is traced and drawn in a forked child with a time limit.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import warnings
from dataclasses import dataclass

import ncd
from ncd.render.check import problems
from ncd.render.measure import crossings, drawing_figures

warnings.filterwarnings("ignore")

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
    seconds: float = 0.0
    error: str = ""

    @property
    def fits(self) -> bool:
        return not self.error and self.aspect <= ASPECT and self.min_pt >= MIN_PT


def measure(name: str, diagram: ncd.Diagram, options: dict) -> Row:
    start = time.perf_counter()
    drawing = ncd.render.layout(diagram, **options)
    seconds = time.perf_counter() - start
    fig = drawing_figures(drawing)
    return Row(name, drawing.width, drawing.height, fig.aspect, fig.min_label_pt, crossings(drawing, free=True),
               len(problems(drawing)), seconds)


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


def corpus_sample(n: int) -> list[str]:
    """``n`` model types spread evenly over the sorted names, and the ones always measured."""
    from transformers.models.auto import modeling_auto

    names = sorted(modeling_auto.MODEL_MAPPING_NAMES)
    step = max(1, len(names) // max(n, 1))
    picked = names[::step][:n]
    return list(dict.fromkeys([t for t in ALWAYS if t in names] + picked))


def _corpus_child(model_type: str, options: dict, conn: object) -> None:
    import torch

    sys.path.insert(0, os.path.dirname(__file__))
    from import_corpus import _hf_build

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    try:
        model, inputs, _ = _hf_build(model_type, "MODEL_MAPPING_NAMES")()
        diagram = ncd.trace(model, **inputs)
        row = measure(model_type, diagram, options)
    except Exception as error:  # noqa: BLE001 - the table records why
        text = str(error).strip()
        row = Row(model_type, error=f"{type(error).__name__}: {text.splitlines()[0][:80] if text else ''}")
    conn.send(row)  # type: ignore[attr-defined]


def corpus_rows(types: list[str], options: dict, jobs: int, timeout: float) -> list[Row]:
    ctx = multiprocessing.get_context("fork")
    rows: dict[str, Row] = {}
    pending = list(types)
    running: list[tuple[str, object, object, float]] = []
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_corpus_child, args=(name, options, child), daemon=True)
            proc.start()
            running.append((name, proc, parent, time.monotonic()))
        time.sleep(0.2)
        for item in list(running):
            name, proc, parent, started = item
            if parent.poll():  # type: ignore[attr-defined]
                rows[name] = parent.recv()  # type: ignore[attr-defined]
            elif proc.is_alive() and time.monotonic() - started < timeout:  # type: ignore[attr-defined]
                continue
            elif proc.is_alive():  # type: ignore[attr-defined]
                proc.kill()  # type: ignore[attr-defined]
                rows[name] = Row(name, error=f"timed out after {timeout:.0f} s")
            else:
                rows.setdefault(name, Row(name, error="child died"))
            proc.join()  # type: ignore[attr-defined]
            running.remove(item)
    return [rows[t] for t in types]


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print(f"{'drawing':34} {'w×h pt':>14} {'aspect':>7} {'min pt':>7} {'cross':>5} {'probl':>5} {'s':>6}")
    for r in rows:
        if r.error:
            print(f"{r.name:34} {'-':>14} {'':7} {'':7} {'':5} {'':5} {'':6}  {r.error}")
            continue
        flag = "" if r.fits else "  <- exceeds"
        print(f"{r.name:34} {r.width:6.0f}×{r.height:<7.0f} {r.aspect:7.2f} {r.min_pt:7.2f} {r.crossings:5d} {r.problems:5d}"
              f" {r.seconds:6.2f}{flag}")
    drawn = [r for r in rows if not r.error]
    if drawn:
        print(f"{len(drawn)} drawings ({len(rows) - len(drawn)} not built or not traced): worst aspect "
              f"{max(r.aspect for r in drawn):.2f}, {sum(r.aspect > ASPECT for r in drawn)} wider than {ASPECT:g}:1, "
              f"smallest label {min(r.min_pt for r in drawn):.2f} pt, {sum(r.min_pt < MIN_PT for r in drawn)} under "
              f"{MIN_PT:g} pt, {sum(r.crossings for r in drawn)} free crossings, {sum(r.problems for r in drawn)} problems")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wide", action="store_true", help="draw for a slide (page='slide')")
    parser.add_argument("--corpus", type=int, default=40, help="how many corpus model types to sample (0: none)")
    parser.add_argument("--only", choices=("gallery", "corpus"), default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per corpus model")
    args = parser.parse_args()
    options = {"page": "slide"} if args.wide else {}
    if args.only != "corpus":
        rows = []
        for name, factory in ncd.zoo.MODELS.items():
            d = factory()
            rows.append(measure(name, d, options))
            rows.append(measure(f"{name} depth=1", d, {"depth": 1, **options}))
        rows += [measure(name, d, options) for name, d in traced().items()]
        print_table("gallery (default and depth=1) and small traced GPT-2, Llama, ViT", rows)
    if args.only != "gallery" and args.corpus:
        types = corpus_sample(args.corpus)
        print_table(f"traced corpus sample ({len(types)} model types, tiny configs)",
                    corpus_rows(types, options, args.jobs, args.timeout))


if __name__ == "__main__":
    main()
