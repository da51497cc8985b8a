"""Optimal tile sizes: the closed forms of the paper, and a search for everything else.

Closed forms (IO_MODEL.md §3), with ``M`` the capacity in elements:

* tiled matmul, ``s_b → 1``: ``g_a = g_c = ⌊√M⌋``, ``H ≈ 2abc/√M + ac``;
* attention with queries grouped: ``g_y ≤ ⌊M/2k⌋``, ``H ≈ 4ȳx̄k²/M + 2ȳk``.

The canonical form ``H* = α M^(−β)`` (β = ½ matmul, β = 1 attention) makes bytes scale as
``q^(1+β)``: fp16 → fp8 divides the ``M``-dependent bytes by 2^(1+β).

>>> import ncd
>>> M = ncd.Hierarchy.preset("h100").capacity("smem", "float16")
>>> M, matmul_tile(M), attention_query_group(M, 128)
(116224, 340, 454)
>>> round(fp8_ratio("attention"), 2), round(fp8_ratio("matmul"), 2)
(4.0, 2.83)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sympy

from ncd.errors import SizeError
from ncd.iomodel.hierarchy import Hierarchy, element_bytes
from ncd.iomodel.report import io
from ncd.ir.diagram import Diagram

__all__ = ["matmul_tile", "attention_query_group", "canonical_bytes", "fp8_ratio", "Candidate", "search"]


def matmul_tile(capacity: int) -> int:
    """The tiled-matmul group ``g = ⌊√M⌋`` (``M`` in elements)."""
    return math.isqrt(capacity)


def attention_query_group(capacity: int, k: int) -> int:
    """The largest attention query group ``g_y = ⌊M / 2k⌋`` (``M`` in elements, head depth ``k``)."""
    return capacity // (2 * k)


def canonical_bytes(kind: str, capacity_bytes: int, q: int, **sizes: int) -> float:
    """The ``M``-dependent bytes of the optimum: ``q · α (M/q)^(−β)``.

    ``kind="matmul"`` (sizes ``a, b, c``): ``α = 2abc``, β = ½; ``kind="attention"`` (sizes
    ``y, x, k``): ``α = 4ȳx̄k²``, β = 1.
    """
    m = capacity_bytes / q
    if kind == "matmul":
        return q * 2 * sizes.get("a", 1) * sizes.get("b", 1) * sizes.get("c", 1) / math.sqrt(m)
    if kind == "attention":
        return q * 4 * sizes.get("y", 1) * sizes.get("x", 1) * sizes.get("k", 1) ** 2 / m
    raise SizeError(f"canonical form known for 'matmul' and 'attention', not {kind!r}")


def fp8_ratio(kind: str, capacity_bytes: int = 227 * 1024) -> float:
    """fp16 bytes / fp8 bytes of the ``M``-dependent term: 4 (attention), 2^1.5 ≈ 2.83 (matmul)."""
    return canonical_bytes(kind, capacity_bytes, element_bytes("float16")) / canonical_bytes(
        kind, capacity_bytes, element_bytes("float8"))


@dataclass(frozen=True)
class Candidate:
    """The best tiling found by :func:`search`: its group and stream sizes, transfers, memory and time."""

    group: dict[str, int]
    stream: dict[str, int]
    transfers: int
    memory: int
    time: float


def _choices(n: int, multiple: int, limit: int) -> list[int]:
    divs = [d for d in range(1, n + 1) if n % d == 0 and (d % multiple == 0 or d == n)]
    if len(divs) > limit:  # keep powers of two and the ends
        divs = sorted({d for d in divs if d & (d - 1) == 0} | {divs[0], divs[-1]})
    return divs


def search(diagram: Diagram, hierarchy: Hierarchy, level: str, *, group: Sequence[str] = (),
           stream: Sequence[str] = (), dtype: str = "float16", limit: int = 24,
           **sizes: int) -> Candidate:
    """The feasible tiling at ``level`` with the least time, then the fewest transfers there.

    The report is computed once with symbolic tile sizes; each candidate substitutes
    divisors of each axis that meet the level's tile constraints (their LCM), keeping powers
    of two when an axis has more than ``limit`` divisors.  Raises when none fits.

    >>> import ncd
    >>> h = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
    >>> best = search(ncd.Einsum("a b, b c -> a c"), h, "smem", group=("a", "c"), stream=("b",), a=1024, b=1024, c=1024)
    >>> best.group, best.memory <= h.capacity("smem")
    ({'a': 256, 'c': 256}, True)
    """
    names = list(group) + list(stream)
    syms = {n: sympy.Symbol(f"_tile_{n}", positive=True) for n in names}
    report = io(diagram, hierarchy, group={level: {n: syms[n] for n in group}} if group else None,
                stream={level: {n: syms[n] for n in stream}} if stream else None, dtype=dtype, **sizes)
    full: dict[str, Any] = {}
    for op in report.program.ops:
        for n, s in op.axes.items():
            full.setdefault(n, sympy.sympify(s))
    for n in names:
        if n not in full or not full[n].is_number:
            raise SizeError(f"search: axis {n!r} has no numeric size; give it (axes: {', '.join(sorted(full))})")
    options = [_choices(int(full[n]), hierarchy.multiple(level, n, dtype), limit) for n in names]
    q = report.q
    levels = hierarchy.levels
    exprs = {lv: (sympy.sympify(report.formulas[lv]), sympy.sympify(report.memory[lv])) for lv in levels}
    args = [syms[n] for n in names]
    fns = {lv: (sympy.lambdify(args, h), sympy.lambdify(args, m)) for lv, (h, m) in exprs.items()}
    compute = float(report.compute_time)
    best: Candidate | None = None
    best_key: tuple[float, float] | None = None
    for values in itertools.product(*options):
        fits = all(fns[lv][1](*values) <= hierarchy.capacity(lv, dtype) for lv in levels)
        if not fits:
            continue
        time = max([compute] + [fns[lv][0](*values) * q / hierarchy.level(lv).bandwidth for lv in levels[1:]])
        key = (time, fns[level][0](*values))
        if best_key is None or key < best_key:
            best_key = key
            best = Candidate(dict(zip(group, values[: len(group)])), dict(zip(stream, values[len(group):])),
                             int(round(key[1])), int(round(fns[level][1](*values))), float(time))
    if best is None:
        raise SizeError(f"search: no tiling of {', '.join(names)} at {level} fits {hierarchy.name}'s capacities")
    return best
