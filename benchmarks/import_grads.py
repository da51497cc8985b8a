"""Gradients of lowered modules: ``ncd.trace(model).to_torch()`` backpropagated against the model itself.

The import corpus (``benchmarks/import_corpus.py``) checks the forward round trip only; users train lowered modules.
For each corpus entry (its models, inputs and forked children with a time limit are the corpus's), this script
traces the model, lowers it, runs the model and the lowered module in eval mode on the same inputs with gradients
on, backpropagates the same random cotangent of every floating-point output through both, and compares

* every model parameter's gradient with the lowered module's, and
* every floating-point input's gradient.

The lowered module holds copies of the model's parameters under its own names, some laid out as its kernels read
them (transposed, rows reordered, fused or split), so parameters are matched by *value*, element by element: the
corpus perturbs every weight with noise, so nearly every value is one element of one parameter; elements sharing a
value are compared through the sum of their gradients (every lowered element of one value against every model
element of it: an exact match, whatever the layout).  A model parameter whose gradient is not zero but no lowered
parameter holds its values (a weight lowered as a constant) differs.

Verdicts, per model: ``equal``; ``differs`` (the worst parameter or input, its max |difference| relative to that
parameter's largest gradient, at least :data:`FLOOR` of the model's largest); ``warned`` (differs, and the trace
warned: a detach, ``no_grad``, a backward hook...); ``padding`` (differs only on an ``nn.Embedding``'s
``padding_idx`` row, a known difference); ``not comparable`` (why: not traced, the forward differs, no gradient
flows, the model's backward fails).

    .venv/bin/python benchmarks/import_grads.py torch. gpt2 bert -v      # names are substrings, as the corpus's
    .venv/bin/python benchmarks/import_grads.py --exact gpt2 -o out/grads.md
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import os
import sys
import traceback
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import import_corpus as corpus  # noqa: E402 - the corpus's entries, builds and forked children

#: a gradient equals when max |difference| <= TOLERANCE x the largest |gradient| of its parameter (or input)
TOLERANCE = 1e-3
#: ... where that largest |gradient| counts as at least FLOOR x the largest |gradient| of any parameter or input
FLOOR = 1e-3


@dataclass
class Grads:
    name: str
    verdict: str = ""  # "equal", "differs", "warned", "padding", "not comparable"
    why: str = ""  # the worst parameter / input, or why not comparable
    rel: float = math.nan  # its max |difference| / its largest |gradient|
    params: int = 0  # model parameters (tensors) with a gradient compared
    inputs: int = 0  # float inputs compared
    warnings: str = ""  # the trace's warnings (first lines)


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of an output, in order, autograd history kept (``import_corpus._leaves`` detaches them)."""
    out: list[torch.Tensor] = []
    for leaf in torch.utils._pytree.tree_leaves(value):
        if isinstance(leaf, torch.Tensor):
            out.append(leaf)
        elif dataclasses.is_dataclass(leaf) and not isinstance(leaf, type):
            out.extend(_tensors([getattr(leaf, f.name) for f in dataclasses.fields(leaf)]))
    return out


def _float(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def _loss(outputs: list[torch.Tensor], cotangents: list[torch.Tensor]) -> torch.Tensor:
    """<cotangent, output> summed over the floating-point outputs that carry a gradient."""
    total = torch.zeros((), dtype=torch.float64)
    for out, cot in zip(outputs, cotangents):
        if _float(out) and out.requires_grad:
            total = total + (out * cot.to(out.dtype)).real.sum().to(torch.float64)
    return total


def _grads(loss: torch.Tensor, wrt: list[torch.Tensor]) -> list[torch.Tensor]:
    needs = [t for t in wrt if t.requires_grad]
    got = iter(torch.autograd.grad(loss, needs, allow_unused=True)) if loss.requires_grad and needs else iter(())
    out = []
    for t in wrt:
        g = next(got, None) if t.requires_grad else None
        out.append(torch.zeros_like(t) if g is None else g.detach())
    return out


def _pool(params: list[torch.Tensor], grads: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Values, gradients and owner (index into ``params``) of every element, flattened, in float64."""
    if not params:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, empty, torch.zeros(0, dtype=torch.long)
    values = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in params])
    grad = torch.cat([g.reshape(-1).to(torch.float64) for g in grads])
    owner = torch.cat([torch.full((p.numel(),), i, dtype=torch.long) for i, p in enumerate(params)])
    return values, grad, owner


def _padding_rows(model: nn.Module) -> dict[int, int]:
    """id of each ``nn.Embedding`` weight with a ``padding_idx`` -> that row."""
    return {id(m.weight): int(m.padding_idx) for m in model.modules()
            if isinstance(m, nn.Embedding) and m.padding_idx is not None}


def compare(model: nn.Module, inputs: dict[str, Any], lowered: nn.Module, seed: int = 0) -> Grads:
    """The model's and the lowered module's gradients of one random cotangent of their float outputs (the verdict
    only: ``name`` and ``warnings`` are the caller's).  Both in eval mode as they are; ``inputs`` as the model takes
    them (keywords), the lowered module takes their tensors in order."""
    result = Grads("")
    float_in = [t for t in _tensors(list(inputs.values())) if t.is_floating_point()]
    copies = {id(t): t.detach().clone().requires_grad_(True) for t in float_in}
    ours = torch.utils._pytree.tree_map(lambda t: copies.get(id(t), t) if isinstance(t, torch.Tensor) else t, inputs)
    theirs = torch.utils._pytree.tree_map(lambda t: copies.get(id(t), t) if isinstance(t, torch.Tensor) else t, inputs)
    leaves_in = list(copies.values())
    m_params = [p for p in dict.fromkeys(model.parameters()) if p.is_floating_point()]
    l_params = [p for p in dict.fromkeys(lowered.parameters()) if p.is_floating_point()]
    with torch.enable_grad():
        try:
            want = _tensors(model(**ours))
        except Exception as error:  # noqa: BLE001
            return dataclasses.replace(result, verdict="not comparable", why=f"model forward: {corpus._line(error)}")
        g = torch.Generator().manual_seed(seed)
        cot = [torch.randn(t.shape, generator=g, dtype=torch.float64) if _float(t) else t for t in want]
        loss_m = _loss(want, cot)
        if not loss_m.requires_grad:
            return dataclasses.replace(result, verdict="not comparable", why="no gradient flows to the model's outputs")
        try:
            gm = _grads(loss_m, m_params + leaves_in)
        except Exception as error:  # noqa: BLE001
            return dataclasses.replace(result, verdict="not comparable", why=f"model backward: {corpus._line(error)}")
        got = _tensors(lowered(*[t for t in _tensors(list(theirs.values()))]))
        if len(got) != len(want) or any(a.shape != b.shape for a, b in zip(got, want)):
            return dataclasses.replace(result, verdict="not comparable", why="the lowered outputs differ in shape")
        forward, same = corpus._max_diff(got, want)
        if not same:
            return dataclasses.replace(result, verdict="not comparable", why=f"forward differs ({forward:.1e})")
        try:
            gl = _grads(_loss(got, cot), l_params + leaves_in)
        except Exception as error:  # noqa: BLE001
            frame = traceback.extract_tb(error.__traceback__)[-1]
            return dataclasses.replace(result, verdict="differs", why=f"lowered backward: {type(error).__name__}:"
                                       f" {corpus._line(error)} ({os.path.basename(frame.filename)}:{frame.lineno})")
    names = {id(p): n for n, p in model.named_parameters()}
    worst: tuple[float, str] = (0.0, "")
    # a gradient zero in exact arithmetic (a bias a later norm removes) is float32 noise in both: scales have a floor
    floor = FLOOR * max((float(g.abs().max()) for g in gm if g.numel() and not g.is_complex()), default=0.0)
    # inputs: one to one
    in_names = [n for n, v in inputs.items() for t in _tensors([v]) if t.is_floating_point()]
    for name, a, b in zip(in_names, gm[len(m_params):], gl[len(l_params):]):
        worst = max(worst, (_rel(a, b, floor), f"input {name}"))
    # parameters: element by element, matched by value
    mv, mg, mo = _pool(m_params, gm[:len(m_params)])
    lv, lg, _ = _pool(l_params, gl[:len(l_params)])
    values, inverse = torch.unique(torch.cat([mv, lv]), return_inverse=True)
    im, il = inverse[:len(mv)], inverse[len(mv):]
    sum_m = torch.zeros(len(values), dtype=torch.float64).index_add_(0, im, mg)
    sum_l = torch.zeros(len(values), dtype=torch.float64).index_add_(0, il, lg)
    held = torch.zeros(len(values), dtype=torch.bool)
    held[il] = True
    in_model = torch.zeros(len(values), dtype=torch.bool)
    in_model[im] = True
    strange = int((~in_model[il]).sum())
    diff = (sum_m - sum_l).abs()
    pads = _padding_rows(model)
    padded: tuple[float, str] = (0.0, "")  # the worst of the parameters differing on a padding row only
    for i, p in enumerate(m_params):
        mine = mo == i
        if not mine.any():
            continue
        scale = float(mg[mine].abs().max())
        d = diff[im[mine]]
        scale = max(scale, float(sum_m[im[mine]].abs().max()), floor, 1e-30)
        rel = float(d.max()) / scale if d.numel() else 0.0
        lost = bool((~held[im[mine]]).any() and mg[mine][~held[im[mine]]].abs().max() > TOLERANCE * scale)
        if lost:
            rel = max(rel, 1.0)
        what = f"{names.get(id(p), '?')}{' (lowered holds it as no parameter)' if lost else ''}"
        row = pads.get(id(p))
        if rel > TOLERANCE and row is not None and not lost:
            bad = (d > TOLERANCE * scale).reshape(p.shape)
            if not bad[torch.arange(p.shape[0]) != row].any():
                padded = max(padded, (rel, f"{what} row {row} (padding_idx)"))
                continue
        worst = max(worst, (rel, what))
    result.params, result.inputs = len(m_params), len(leaves_in)
    result.rel, result.why = worst
    if worst[0] > TOLERANCE:
        result.verdict = "differs"
    elif padded[0] > TOLERANCE:
        result.verdict, (result.rel, result.why) = "padding", padded
    else:
        result.verdict = "equal"
        if strange:
            result.why = f"{strange} lowered parameter values the model has not"
    return result


def _rel(a: torch.Tensor, b: torch.Tensor, floor: float) -> float:
    a, b = a.to(torch.complex128 if a.is_complex() else torch.float64), b.to(torch.complex128 if b.is_complex() else torch.float64)
    if not torch.equal(torch.isfinite(a), torch.isfinite(b)):
        return math.inf
    fin = torch.isfinite(a)
    if not fin.any():
        return 0.0
    scale = max(float(a[fin].abs().max()), floor, 1e-30)
    return float((a[fin] - b[fin]).abs().max()) / scale


def check_entry(entry: corpus.Entry) -> Grads:
    """Builds, traces and lowers ``entry``'s model and compares its gradients (in this process)."""
    import ncd

    result, built = corpus.build_one(entry)
    if built is None:
        return Grads(entry.name, "not comparable", f"not built: {result.reason}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d = ncd.trace(built.model, **built.inputs)
            lowered = d.to_torch()
    except Exception as error:  # noqa: BLE001
        return Grads(entry.name, "not comparable", f"not traced: {type(error).__name__}: {corpus._line(error)}")
    said = [str(w.message).split("\n")[0][:160] for w in caught if issubclass(w.category, RuntimeWarning)]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grads = compare(built.model, built.inputs, lowered)
    grads.name, grads.warnings = entry.name, " | ".join(dict.fromkeys(said))
    if grads.verdict == "differs" and said:
        grads.verdict = "warned"
    return grads


def _child(entry: corpus.Entry, conn: Any) -> None:
    torch.set_num_threads(1)
    try:
        conn.send(asdict(check_entry(entry)))
    except BaseException as error:  # noqa: BLE001 - the parent records it
        conn.send(asdict(Grads(entry.name, "not comparable", f"harness: {type(error).__name__}: {corpus._line(error)}")))


def run(entries: list[corpus.Entry], timeout: float, verbose: bool) -> list[Grads]:
    """Each entry in a forked child, killed after ``timeout`` seconds."""
    ctx = multiprocessing.get_context("fork")
    results = []
    for entry in entries:
        recv, send = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_child, args=(entry, send))
        process.start()
        send.close()
        r = Grads(entry.name, "not comparable", f"timeout ({timeout:.0f} s)")
        if recv.poll(timeout):
            try:
                r = Grads(**recv.recv())
            except EOFError:
                r = Grads(entry.name, "not comparable", f"the child died (exit code {process.exitcode})")
        process.kill()
        process.join(5)
        results.append(r)
        print(line(r) if verbose else ".", end="\n" if verbose else "", flush=True)
    if not verbose:
        print()
    return results


def line(r: Grads) -> str:
    rel = f"{r.rel:.1e}" if r.rel == r.rel else "-"
    said = f"  [{r.warnings[:200]}]" if r.verdict in ("warned", "differs", "padding") and r.warnings else ""
    return f"{r.name:36} {r.verdict:15} {rel:8} {r.why[:160]}{said}"


VERDICTS = ("equal", "differs", "warned", "padding", "not comparable")


def summary(results: list[Grads]) -> str:
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    return f"{len(results)} models: " + ", ".join(f"{n} {v}" for v, n in counts.items())


def report(results: list[Grads]) -> str:
    rows = ["| model | verdict | max rel. diff | worst / why |", "|---|---|---|---|"]
    for r in results:
        rel = f"{r.rel:.1e}" if r.rel == r.rel else ""
        rows.append(f"| {r.name} | {r.verdict} | {rel} | {r.why.replace('|', '/')} |")
    return "\n".join([f"# Gradients of lowered modules\n\n{summary(results)}\n", *rows, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="only these entries (substrings)")
    parser.add_argument("--exact", action="store_true", help="names are whole entry names, not substrings")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per model")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-o", "--output", default=None, help="a markdown table of the results")
    args = parser.parse_args()
    import importlib
    import pkgutil

    import transformers  # noqa: F401 - imported once, before the children fork

    import ncd

    for info in pkgutil.walk_packages(ncd.__path__, "ncd."):  # the children run the code as it was at the start
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    entries = corpus.all_entries()
    if args.names:
        entries = [e for e in entries if any(n == e.name or (n in e.name and not args.exact) for n in args.names)]
    torch.set_num_threads(1)
    results = run(entries, args.timeout, args.verbose)
    print(summary(results))
    if args.output:
        with open(args.output, "w") as f:
            f.write(report(results))


if __name__ == "__main__":
    main()
