"""Hunt axis names given by size, not by role: trace each corpus model at its usual sizes and at sizes where its roles
collide (``import_corpus.py --collide``: ``heads`` makes heads = tokens = 8, head features = experts = 4, key/value heads =
batch = 2, width = ffn = positions = 32), pair the two diagrams' wires box by box (kind, label, ranks; boxes only one
diagram has are left out) and print, per model, the names of the collided trace that stand for two roles of the usual
trace (a role merged: ``h <- {h, t}``), then lower the collided diagram at b=3, t=5 and compare it with the model
(``equal``; ``refused`` by ncd is fine; ``WRONG`` is not).

    PYTHONPATH=src python benchmarks/role_hunt.py [--modes heads,width] [--out hunt.json] MODEL ...

Merges the mode makes on purpose are not printed: the width and the feed-forward width (``m``, ``f``) in both modes, and
in ``width`` mode the key/value heads and the heads (``g``, ``h``: no grouping), the key/value projection and the width.
Sizes of one role that differ in the usual trace too (multi-head latent attention's rotary, plain and value head
features, all 8) are not roles the usual trace tells apart: look at its names before reading a merge as a collision.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import import_corpus as ic  # noqa: E402
import torch  # noqa: E402

#: the letters of roles (batch, tokens, heads, key/value heads, head features, width, feed-forward width, experts,
#: positions, top-k slots, groups, windows): a name of the collided trace standing for one of them and another name
ROLES = frozenset("bthgkmfensrw")
#: merges each mode makes on purpose
EXPECTED = {"heads": [{"m", "f"}], "width": [{"m", "f"}, {"h", "g"}]}


def _traced(entry: ic.Entry) -> tuple[Any, dict[str, Any], Any]:
    import ncd

    model, inputs, _ = entry.build()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, inputs, ncd.trace(model, **inputs)


def _wires(d: Any) -> list[tuple[tuple[Any, ...], list[list[tuple[str, str]]]]]:
    out = []
    for b in d.boxes():
        segs = [*b.dom, *b.cod]
        out.append(((type(b.prim).__name__, b.label, tuple(len(s.axes) for s in segs)),
                    [[(a.name.rstrip("\u02b9"), str(a.size)) for a in s.axes] for s in segs]))
    return out


def merges(usual: Any, collided: Any, mode: str) -> dict[str, dict[str, str]]:
    """Names of ``collided`` that stand for several names of ``usual`` (each with its usual size), on the wires of the
    boxes the two diagrams pair up."""
    a, c = _wires(usual), _wires(collided)
    matcher = difflib.SequenceMatcher(None, [k for k, _ in a], [k for k, _ in c], autojunk=False)
    found: dict[str, dict[str, str]] = {}
    for block in matcher.get_matching_blocks():
        for i in range(block.size):
            for x, y in zip(a[block.a + i][1], c[block.b + i][1]):
                for (n, size), (o, _) in zip(x, y):
                    if n != "1" and o != "1":
                        found.setdefault(o, {}).setdefault(n, size)
    return {o: ns for o, ns in found.items() if len(ns) > 1 and set(ns) & ROLES
            and not any(set(ns) <= e for e in EXPECTED.get(mode, []))}


def other_sizes(model: Any, inputs: dict[str, Any], d: Any, b: int = 3, t: int = 5) -> str:
    """The collided diagram lowered at ``b``, ``t`` against the model on inputs of those sizes."""
    from ncd.errors import NCDError

    leaves = [(k, v) for k, v in inputs.items() if isinstance(v, torch.Tensor)]
    if len(leaves) != len(d.dom.segments):
        return "inputs not plain tensors"
    g = torch.Generator().manual_seed(7)
    new = dict(inputs)
    for (k, v), seg in zip(leaves, d.dom.segments):
        shape = [b if n.rstrip("\u02b9") == "b" else t if n.rstrip("\u02b9") == "t" else s for n, s in zip(seg.names, v.shape)]
        if v.dtype == torch.bool or k.endswith("mask"):
            new[k] = torch.ones(shape, dtype=v.dtype)
        elif v.is_floating_point():
            new[k] = torch.randn(shape, generator=g, dtype=v.dtype)
        else:
            new[k] = torch.randint(0, int(v.max()) + 1, shape, generator=g, dtype=v.dtype)
    try:
        with torch.no_grad():
            want = model(**new)
    except Exception as error:  # noqa: BLE001 - the model itself takes no other sizes
        return f"the model refuses ({type(error).__name__})"
    try:
        lowered = d.to_torch(b=b, t=t)
        with torch.no_grad():
            got = lowered(*ic._leaves([new[k] for k, _ in leaves]))
    except NCDError as error:
        return f"refused ({type(error).__name__})"
    except Exception as error:  # noqa: BLE001
        return f"CRASHED {type(error).__name__}: {str(error)[:120]}"
    _, equal = ic._max_diff(got, want)
    return "equal" if equal else "WRONG"


def main() -> None:
    args = sys.argv[1:]
    modes, out = ["heads"], None
    while args and args[0].startswith("--"):
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--modes":
            modes = value.split(",")
        elif flag == "--out":
            out = value
    torch.set_num_threads(1)
    entries = {mode: {e.name: e for e in ic.all_entries(mode)} for mode in ["", *modes]}
    results: dict[str, Any] = {}
    print("| model | mode | names for two roles (collided <- usual:size) | at b=3, t=5 |")
    print("|---|---|---|---|")
    for name in args:
        try:
            _, _, usual = _traced(entries[""][name])
        except Exception as error:  # noqa: BLE001
            print(f"| {name} | | not traced: {type(error).__name__} | |", flush=True)
            continue
        for mode in modes:
            try:
                model, inputs, collided = _traced(entries[mode][name])
            except Exception as error:  # noqa: BLE001
                print(f"| {name} | {mode} | not traced: {type(error).__name__} | |", flush=True)
                continue
            found = merges(usual, collided, mode)
            lowered = other_sizes(model, inputs, collided)
            results.setdefault(name, {})[mode] = {"merged": found, "other_sizes": lowered}
            text = "; ".join(f"{o} <- " + ", ".join(f"{n}:{s}" for n, s in sorted(ns.items())) for o, ns in found.items())
            print(f"| {name} | {mode} | {text or '-'} | {lowered} |", flush=True)
        if out:
            with open(out, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
