"""The import corpus's report (``docs/import-coverage.md``) and its one-line-per-model log, from its results.

A result is any object with the fields of ``import_corpus.Result`` (name, kind, status, equal, diff, opaque, boxes, …):
this module reads them and nothing else.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from corpus_shrink import DEPTH
from corpus_timing import FIRST_BUDGET, MOST, NEAR, NEAR_BUDGET, SECOND_CALL_UP_TO, spread

#: the layers of issue 11's toys (the corpus's tiny configs)
TOYS = 2


def _line_of(r: Any) -> str:
    if r.status != "traced":
        return f"{r.name:32} {r.status:10} {r.reason}"
    eq = "equal" if r.equal else ("WRONG" if r.silently_wrong else "f64 eq" if r.equal_f64 else "differs")
    return (f"{r.name:32} {r.method:8} {eq:7} diff {r.diff:.1e}/{r.diff_fresh:.1e} opaque {r.opaque}/{r.boxes}"
            f" params {r.params_lowered}/{r.params} trace {r.trace_s:.2f}s draw {r.draw_s:.2f}s torchview {r.torchview_s:.2f}s"
            f" det {r.deterministic} {r.lowered} {r.opaque_ops} {r.failed}")


# -- the summary ------------------------------------------------------------------------------------------------------------
def _pct(a: int, b: int) -> str:
    """``a`` of ``b`` and its percentage, as the summary prints counts.

    >>> _pct(675, 700)
    '675/700 (96.4 %)'
    """
    return f"{a}/{b} ({100 * a / b:.1f} %)" if b else "0/0"


def summary(results: Sequence[Any]) -> list[str]:
    built = [r for r in results if r.status != "not built"]
    traced = [r for r in built if r.status == "traced"]
    equal = [r for r in traced if r.equal]
    boxes, opaque = sum(r.boxes for r in traced), sum(r.opaque for r in traced)
    crashed = [r for r in built if r.status in ("crashed", "timeout") or r.lowered]
    wrong = [r for r in traced if r.silently_wrong]
    unstable = [r for r in traced if not r.equal and r.equal_f64 and not r.lowered]
    shared = [r for r in traced if r.params_lowered and r.params_lowered == r.params]
    lowered = [r for r in traced if r.params_lowered]
    det = [r for r in traced if r.deterministic is not None]
    lines = [
        f"- models in the corpus: {len(results)} ({sum(r.kind == 'base' for r in results)} `transformers` model types,"
        f" {sum(r.kind in ('head', 'mask') for r in results)} heads and masked variants,"
        f" {sum(r.kind == 'deep' for r in results)} at {DEPTH} layers,"
        f" {sum(r.kind == 'torch' for r in results)} plain PyTorch)",
        f"- build from a tiny config and run: {len(built)}",
        f"- traced: {_pct(len(traced), len(built))}; refused by design (TraceError): {sum(r.status == 'refused' for r in built)}",
        f"- **crashed or timed out (tracing, drawing or running the lowered module): {len(crashed)}**",
        f"- **round-trip equal (atol 1e-4, traced and fresh input): {_pct(len(equal), len(built))}**",
        f"- **silently wrong (no warning, not equal in float32 nor in float64): {len(wrong)}**"
        + (f" — {', '.join(r.name for r in wrong)}" if wrong else ""),
        f"- not equal in float32 but equal with model and lowered module both run in float64 (the model's own float32"
        f" result is unstable there): {len(unstable)}"
        + (" — " + ", ".join(f"{r.name} ({r.diff:.1e}; float64 {r.diff_f64:.1e})" for r in unstable) if unstable else ""),
        f"- **opaque boxes: {_pct(opaque, boxes)} of drawn boxes**",
        f"- parameter count equal to the original's: {_pct(len(shared), len(lowered))}",
        f"- deterministic (second trace, same SVG bytes): {_pct(sum(bool(r.deterministic) for r in det), len(det))}",
        f"- captured by the default (dispatch) path: {_pct(sum(r.method == 'dispatch' for r in traced), len(traced))}",
    ]
    return lines + speed(traced)


def _ratio(r: Any) -> float:
    """trace+draw / torchview, each tool's median run (``nan`` when either was not timed)."""
    ours = r.trace_s + r.draw_s
    return ours / r.torchview_s if ours == ours and r.torchview_s == r.torchview_s and r.torchview_s > 0 else math.nan


def speed(traced: Sequence[Any]) -> list[str]:
    """The summary's lines on time: how many runs, how far they moved, and the ratios against issue 11's targets."""
    timed = [r for r in traced if _ratio(r) == _ratio(r)]
    if not timed:
        return []
    runs = Counter(max(1, len(r.torchview_runs)) for r in timed)
    spent = sum(getattr(r, "repeats_s", 0.0) for r in timed)
    lines = [f"- timing: each tool's first call on a model, taken several times alternately and counted by its median run"
             f" (the method above); runs of each tool: {_runs(runs)} (the runs after the first: {_cpu(spent)}"
             " summed over the models)"]
    for tool, field in (("torchview's own time", "torchview_runs"), ("ncd's trace+draw time", "")):
        spreads = ((spread(getattr(r, field) if field else [t + d for t, d in zip(r.trace_runs, r.draw_runs)]), r.name)
                   for r in timed)
        moved = sorted((v, name) for v, name in spreads if v == v)  # one-run models (nan) out first: nan breaks sort
        if moved:
            lines.append(f"- {tool} between the runs of one model (slowest / fastest − 1): median"
                         f" {100 * moved[len(moved) // 2][0]:.0f} %, max {100 * moved[-1][0]:.0f} % ({moved[-1][1]}),"
                         f" over {len(moved)} model{'s' if len(moved) > 1 else ''}")
    ratios = sorted(_ratio(r) for r in timed)
    warm = sorted(r.warm_s / r.torchview_warm_s for r in traced if r.warm_s == r.warm_s and r.torchview_warm_s > 0)
    for what, values in (("trace+draw time / torchview time (first call, median runs)", ratios),
                         ("the same, second call of each tool (one run)", warm)):
        if values:
            lines.append(f"- {what}: median {values[len(values) // 2]:.2f}×, max {values[-1]:.2f}× over {len(values)}"
                         f" models; at most 1.5×: {_pct(sum(v <= 1.5 for v in values), len(values))}")
    for what, bound, low, high in ((f"models with {TOYS} layers (issue 11's toys)", 1.5, TOYS, TOYS),
                                   (f"models with {DEPTH} or more layers", 1.0, DEPTH, math.inf)):
        group = sorted(((_ratio(r), r.name, max(1, len(r.torchview_runs))) for r in timed if low <= r.layers <= high),
                       reverse=True)
        if group:
            above = ", ".join(f"{name} {v:.2f}× ({k} run{'s' if k > 1 else ''})" for v, name, k in group if v > bound)
            lines.append(f"- {what}, trace+draw time / torchview time (first call, median runs): at most {bound:g}×:"
                         f" {_pct(sum(v <= bound for v, _, _ in group), len(group))}" + (f"; above: {above}" if above else ""))
    return lines


def _cpu(seconds: float) -> str:
    """CPU time, in minutes from one minute up.

    >>> _cpu(1.54), _cpu(660.0)
    ('1.5 CPU s', '11.0 CPU min')
    """
    return f"{seconds / 60:.1f} CPU min" if seconds >= 60 else f"{seconds:.1f} CPU s"


def _runs(counts: Counter[int]) -> str:
    """How many models took how many runs.

    >>> _runs(Counter({3: 400, 1: 50, 7: 120})), _runs(Counter({5: 1}))
    ('1 on 50 models, 3 on 400, 7 on 120', '5 on 1 model')
    """
    parts = [f"{k} on {n}" for k, n in sorted(counts.items())]
    return parts[0] + (" model" if counts[min(counts)] == 1 else " models") + "".join(f", {p}" for p in parts[1:])


def _minutes(results: Sequence[Any]) -> str:
    walls = [r.wall_s for r in results if r.wall_s == r.wall_s]
    return f"{sum(walls) / 60:.0f} min of model time, summed over the models" if walls else "model times not recorded"


def report(results: Sequence[Any], sample: str = "") -> str:
    import transformers

    rows = ["| model | status | capture | equal | max diff (traced / fresh) | opaque / boxes | params (lowered / original) |"
            " trace + draw | torchview | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.status == "not built":
            continue
        if r.status != "traced":
            rows.append(f"| {r.name} | **{r.status}** | | | | | | | | {r.reason.replace('|', '/')} |")
            continue
        eq = ("yes" if r.equal else "**silently wrong**" if r.silently_wrong
              else f"in float64 only ({r.diff_f64:.0e})" if r.equal_f64 else "no (warned)")
        det = "" if r.deterministic in (None, True) else "not deterministic"
        notes = "; ".join(x for x in (r.lowered, r.opaque_ops, r.failed, det) if x)
        rows.append(f"| {r.name} | traced | {r.method} | {eq} | {r.diff:.1e} / {r.diff_fresh:.1e} | {r.opaque} / {r.boxes} |"
                    f" {r.params_lowered:,} / {r.params:,} | {r.trace_s + r.draw_s:.2f} s | {r.torchview_s:.2f} s |"
                    f" {notes.replace('|', '/')} |")
    skipped = [f"- {r.name}: {r.reason.replace('|', '/')}" for r in results if r.status == "not built"]
    return "\n".join([
        "# Import coverage", "",
        f"`ncd.trace` on every model type of `transformers` {transformers.__version__} (torch {torch.__version__}) that builds"
        " from a tiny config with random weights, plus heads and plain-PyTorch models.  Generated by"
        f" `benchmarks/import_corpus.py` ({_minutes(results)}); do not edit by hand."
        + (f"  This report covers a part of the corpus: {sample}." if sample else ""), "", TIMING, "",
        "## Summary", "", *summary(results), "",
        "## Models", "", *rows, "",
        "## Model types that do not build from a tiny config (with the generated inputs)", "",
        *skipped, "",
    ])


#: how the time columns are measured (also said in the report)
TIMING = ("Times are CPU seconds (the process's own, plus Graphviz's `dot` for torchview) of each tool's first call on"
          " the model, the median of several runs of each (how many: the summary; `benchmarks/corpus_timing.py`). After"
          " one small warm-up of both tools before the children fork (imports, first use of each tool), the child builds"
          " the model and runs its forward on both inputs (kernels loaded, lazy parts built); then every run of either"
          " tool is a process of its own, forked from that child, so every run starts from the same state: a copy of"
          " the same model as built and run, which the tool has not seen in that process, the child's heap frozen out"
          " of the garbage collector's sight. Each run repeats its tool's part of the warm-up there (a forked process"
          " pays again for its first write to each page it shares), and a collection runs just before each timed step;"
          " what a run leaves behind (hooks, caches) ends with its process. The runs alternate: ncd's first (the checks"
          " follow it), torchview's first, then rounds of one run of each, in turn torchview first and ncd first."
          " Runs of each tool (unless `--repeats k` asks for k): 3 when two more rounds are estimated to cost at most"
          f" {FIRST_BUDGET:g} CPU s (from the first runs); while the model's median ratio is within {NEAR[0]:g}–"
          f"{NEAR[1]:g}× its target (1.5×, or 1× from {DEPTH} layers up), two more at a time as long as all its repeats"
          f" stay within {NEAR_BUDGET:g} CPU s, up to {MOST}; 1 on a model whose first runs cost more. The trace + draw"
          " column is ncd's median run (the run whose trace+draw is the median), the torchview column torchview's;"
          " every run is kept in the results file (`trace_runs`, `draw_runs`, `torchview_runs`; the first is the single"
          " run the corpus took until stop 47). torchview's own time on one model moved by up to 30 % between two"
          " single-run corpus runs: one run cannot decide a ratio near a target. Each tool is also called a second time"
          " on the model, in its first run's process (ncd's second trace+draw is the determinism check's; torchview's"
          f" is skipped when its first call took more than {SECOND_CALL_UP_TO:g} s).")
