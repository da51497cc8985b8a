"""Audit: are the inputs' batch and token axes symbols, and is an attention scale a size, on corpus models?

Issue 11 item 5: the inputs' ``b`` and ``t`` are symbols wherever the diagram holds them (so ``to_torch(b=..., t=...)``
lowers at other sizes) and a constant that is a size is that size's symbol (``k**-0.5``, not 0.353553390593274).  For
each entry of :mod:`import_corpus` (built as the corpus builds it, traced in a child process of its own), one JSON
line: whether every input axis named ``b`` (``t``) has a symbol for its size (None: no such axis), the scale boxes whose
factor is ``n**-0.5`` for a whole ``n`` as a float, and why :func:`ncd.trace.symbolic.symbolize` gave up (its error)::

    .venv/bin/python benchmarks/roles_symbols.py --out /tmp/roles.jsonl                  # every corpus entry
    .venv/bin/python benchmarks/roles_symbols.py --out /tmp/roles.jsonl mamba clip funnel
    .venv/bin/python benchmarks/roles_symbols.py --from-jsonl docs/import-coverage.jsonl --out /tmp/roles.jsonl

``--from-jsonl``: only the entries an ``import_corpus`` results file says traced.  An existing ``--out`` is resumed.
The totals (models whose ``b``/``t`` is no symbol, with a float scale) and each such model are printed at the end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import sys
import time
import traceback
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore")


def inverse_square(factor: float) -> int | None:
    """``n`` when ``factor`` is ``n**-0.5`` for a whole ``n >= 2`` and not a number as a user writes one (0.5)."""
    if not 0 < factor < 1:
        return None
    n = 1.0 / (factor * factor)
    whole = round(n)
    return whole if whole >= 2 and abs(n - whole) < 1e-6 * n and float(f"{factor:.6g}") != factor else None


def measure(entry: Any) -> dict[str, Any]:
    import sympy
    import torch

    import ncd
    from ncd.ir.diagram import Box

    torch.set_num_threads(1)
    symbolic = importlib.import_module("ncd.trace.symbolic")
    errors: list[str] = []
    symbolize = symbolic.symbolize

    def watched(body: Any, sizes: dict[str, int], merges: Any = None, found: Any = None, where: Any = None) -> Any:
        try:
            return symbolize(body, sizes, merges, found, where)
        except Exception as error:
            errors.append(f"{type(error).__name__}: {str(error)[:300]}")
            raise

    setattr(symbolic, "symbolize", watched)  # noqa: B010 - the module is imported by name (ncd.trace is a function)
    out: dict[str, Any] = {"name": entry.name}
    try:
        model, inputs, _ = entry.build()
    except Exception:  # noqa: BLE001 - not built: nothing to measure
        out["status"] = "not built"
        return out
    try:
        d = ncd.trace(model, **inputs)
    except Exception as error:  # noqa: BLE001
        out["status"] = "refused" if isinstance(error, ncd.TraceError) else "crashed"
        out["reason"] = str(error)[:200]
        return out
    out["status"] = "traced"
    held: dict[str, list[bool]] = {}
    for seg in d.dom.segments:
        for a in seg.axes:
            held.setdefault(a.name, []).append(bool(a.size.free_symbols))
    out["inputs"] = [" ".join(f"{a.name}:{a.size}" for a in seg.axes) for seg in d.dom.segments]
    out["b"] = None if "b" not in held else all(held["b"])
    out["t"] = None if "t" not in held else all(held["t"])
    floats = set()
    for box in d.walk():
        if isinstance(box, Box) and box.prim.op == "scale":
            f = getattr(box.prim, "factor", None)
            if isinstance(f, sympy.Float) and (n := inverse_square(float(f))):
                floats.add(n)
    out["float_scales"] = sorted(floats)
    out["sym_errors"] = errors[:2]
    return out


def _child(entry: Any, queue: Any) -> None:
    try:
        queue.put(measure(entry))
    except Exception:  # noqa: BLE001
        queue.put({"name": entry.name, "status": "crashed", "reason": traceback.format_exc()[-400:]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="only these entries (whole names)")
    parser.add_argument("--out", required=True, help="the JSON-lines results (resumed when it exists)")
    parser.add_argument("--from-jsonl", default="", help="only the entries this import_corpus results file traced")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per model")
    args = parser.parse_args()
    import import_corpus
    import transformers  # noqa: F401 - imported once, before the children fork

    entries = import_corpus.all_entries()
    if args.names:
        entries = [e for e in entries if e.name in args.names]
    elif args.from_jsonl:
        with open(args.from_jsonl) as f:
            rows = [json.loads(line) for line in f]
        traced = {r["name"] for r in rows if r["status"] == "traced"}
        entries = [e for e in entries if e.name in traced]
    done: set[str] = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {json.loads(line)["name"] for line in f}
    context = mp.get_context("fork")
    for entry in entries:
        if entry.name in done:
            continue
        queue = context.Queue()
        child = context.Process(target=_child, args=(entry, queue))
        start = time.time()
        child.start()
        try:
            result = queue.get(timeout=args.timeout)
        except Exception:  # noqa: BLE001 - the child hung or died
            result = {"name": entry.name, "status": "timeout"}
        child.join(5)
        if child.is_alive():
            child.kill()
        result["wall"] = round(time.time() - start, 1)
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
        print(result["name"], result.get("status"), result.get("b"), result.get("t"), result.get("float_scales"),
              (result.get("sym_errors") or [""])[0][:120], flush=True)
    with open(args.out) as f:
        rows = [r for r in (json.loads(line) for line in f) if r["status"] == "traced"]
    left = [r for r in rows if r["b"] is False or r["t"] is False or r["float_scales"]]
    print(f"\n{len(rows)} traced: b no symbol {sum(r['b'] is False for r in rows)}, t no symbol"
          f" {sum(r['t'] is False for r in rows)}, a scale n**-0.5 as a float {sum(bool(r['float_scales']) for r in rows)}")
    for r in left:
        print(f"  {r['name']}: b {r['b']} t {r['t']} floats {r['float_scales']} {(r['sym_errors'] or [''])[0][:150]}")


if __name__ == "__main__":
    main()
