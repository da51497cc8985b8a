"""The import corpus's report (``docs/import-coverage.md``) and its one-line-per-model log, from its results.

A result is any object with the fields of ``import_corpus.Result`` (name, kind, status, equal, diff, opaque, boxes, …):
this module reads them and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from corpus_shrink import DEPTH


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
    ratios = sorted((r.trace_s + r.draw_s) / r.torchview_s for r in traced
                    if r.torchview_s == r.torchview_s and r.draw_s == r.draw_s)
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
    warm = sorted(r.warm_s / r.torchview_warm_s for r in traced if r.warm_s == r.warm_s and r.torchview_warm_s > 0)
    for what, values in (("trace+draw time / torchview time (first call)", ratios),
                         ("the same, second call of each tool", warm)):
        if values:
            lines.append(f"- {what}: median {values[len(values) // 2]:.2f}×, max {values[-1]:.2f}× over {len(values)}"
                         f" models; at most 1.5×: {_pct(sum(v <= 1.5 for v in values), len(values))}")
    deep = sorted(((r.trace_s + r.draw_s) / r.torchview_s, r.name) for r in traced
                  if r.layers >= DEPTH and r.torchview_s == r.torchview_s and r.draw_s == r.draw_s)
    if deep:
        worst = ", ".join(f"{name} {v:.2f}×" for v, name in deep[::-1] if v > 1.0)
        lines.append(f"- models with {DEPTH} or more layers, trace+draw time / torchview time (first call): at most 1×:"
                     f" {_pct(sum(v <= 1.0 for v, _ in deep), len(deep))}" + (f"; above: {worst}" if worst else ""))
    return lines


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
TIMING = ("Times are CPU seconds (the process's own, plus Graphviz's `dot` for torchview), each tool's first call on the"
          " model: after one small warm-up of both tools before the children fork (imports, first use of each tool),"
          " the child builds the model and runs its forward on both inputs (kernels loaded, lazy parts built); then"
          " ncd and torchview each run in a process forked from that child, from the same state: the child's heap"
          " frozen out of the garbage collector's sight; each repeats its part of the warm-up there (a forked process"
          " pays again for its first write to each page it shares), and a collection runs just before each timed"
          " step.  Each tool is then called a second time on the model (ncd's second trace+draw is the determinism"
          " check's).")
