"""Costs per level, in closed form: transfers ``H_ℓ``, live memory ``M_ℓ``, FLOPs.

With a relabelling, the diagram runs as one fused kernel: only its inputs, weights and
outputs cross a boundary; intermediates stay in the level where they are computed.  An
array moves across the boundary above level ℓ once per visit of its tile::

    H_ℓ = Σ_arrays  tile_ℓ(A) × (Π group counts) × (Π counts of stream loops down to A's deepest)

where ``tile_ℓ(A)`` multiplies A's axis sizes, each replaced by its chunk at ℓ.  An output
whose reduction (a streamed, summed-out axis) runs *outside* its own deepest loop is spilled:
it is read back and written on every visit, with the online-softmax state ``(m, ℓ)`` beside
it (FlashAttention-1's loop order; like its Algorithm 1, the first visit reads the values the
parent level was initialised with).  Without a relabelling, every box is its own kernel that
reads its inputs and writes its outputs at the top (elementwise boxes and masks fuse into the
kernel that produced their input): the unfused baseline.

>>> import ncd
>>> from ncd.iomodel.program import flatten
>>> from ncd.iomodel.schedule import Schedule
>>> h = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
>>> p = flatten(ncd.Einsum("a b, b c -> a c"))
>>> s = Schedule.make(h, p, {"smem": {"a": "g_a", "c": "g_c"}}, {"smem": {"b": "s_b"}})
>>> transfers(p, s, "smem")
a*b*c/g_c + a*b*c/g_a + a*c
>>> memory(p, s, "smem", bottom=True)
g_a*g_c + g_a*s_b + g_c*s_b
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import sympy

from ncd.iomodel.program import Array, Mask, Op, Program
from ncd.iomodel.schedule import Loop, Schedule
from ncd.ir.size import maximum

__all__ = ["Move", "transfers", "moves", "memory", "live_columns", "unfused_transfers", "unfused_memory", "flops",
           "reduction_axes", "state_axes"]

ZERO = sympy.Integer(0)


@dataclass(frozen=True)
class Move:
    """One array's traffic across a boundary: ``elements`` in total, ``kind`` read/write/spill."""

    array: Array
    kind: str
    tile: sympy.Expr
    visits: sympy.Expr

    @property
    def elements(self) -> sympy.Expr:
        return self.tile * self.visits


def _unique(arrays: Iterable[Array]) -> list[Array]:
    seen: set[tuple[int, frozenset[str]]] = set()
    out = []
    for a in arrays:
        if a.key() not in seen:
            seen.add(a.key())
            out.append(a)
    return out


def used_inputs(program: Program) -> list[Array]:
    return _unique(a for op in program.ops for a in (*op.inputs, *op.params) if a.role in ("input", "param"))


def written_outputs(program: Program) -> list[Array]:
    inputs = {a.key() for a in used_inputs(program)} | {a.key() for a in program.inputs}
    return [a for a in _unique(program.outputs) if a.key() not in inputs]


def _producers(program: Program) -> dict[int, Op]:
    return {arr.uid: op for op in program.ops for arr in op.outputs}


def reduction_axes(program: Program, arr: Array) -> set[str]:
    """Axes summed out (or normalised away) on the way to ``arr``."""
    prod = _producers(program)
    axes: set[str] = set()
    stack, seen = [arr], set()
    while stack:
        a = stack.pop()
        op = prod.get(a.uid)
        if op is None or id(op) in seen:
            continue
        seen.add(id(op))
        axes |= set(op.axes)
        stack.extend(op.inputs)
    return axes - set(arr.names)


def state_axes(program: Program, arr: Array) -> tuple[tuple[str, sympy.Expr], ...] | None:
    """The online-softmax state's axes (the scores' axes without the key) when ``arr`` comes from one."""
    op = _producers(program).get(arr.uid)
    if op is None or op.kind != "online":
        return None
    return tuple((n, s) for n, s in op.inputs[0].axes if n != op.stream_axis)


def tile(arr_axes: Iterable[tuple[str, sympy.Expr]], schedule: Schedule, level: str) -> sympy.Expr:
    return sympy.Mul(*(schedule.chunk(level, n, s) for n, s in arr_axes))


def _runs(lp: Loop) -> bool:
    """A stream loop that really iterates (a loop of one chunk never changes a tile)."""
    return lp.kind == "stream" and lp.count != 1


def _visits(names: Iterable[str], loops: tuple[Loop, ...], causal: list[Mask]) -> tuple[sympy.Expr, int]:
    """Visits of a tile: every group, and the stream loops down to its deepest; and that depth."""
    names = set(names)
    streams = [i for i, lp in enumerate(loops) if _runs(lp) and lp.axis in names]
    depth = max(streams) if streams else -1
    counted = [lp for i, lp in enumerate(loops) if lp.kind == "group" or i <= depth]
    v = sympy.Mul(*(lp.count for lp in counted))
    return v * _causal_fraction(counted, causal), depth


def _causal_fraction(counted: list[Loop], causal: list[Mask]) -> sympy.Expr:
    """Under a causal mask, the fraction of (query chunk, key chunk) pairs not wholly masked."""
    for mask in causal:
        ys = [lp for lp in counted if lp.axis == mask.query]
        xs = [lp for lp in counted if lp.axis == mask.key]
        if not ys or not xs:
            continue
        cy, cx = ys[-1].chunk, xs[-1].chunk
        ny = sympy.Mul(*(lp.count for lp in ys))
        nx = sympy.Mul(*(lp.count for lp in xs))
        window = mask.window
        if all(v.is_number for v in (cy, cx, ny, nx)) and (window is None or sympy.sympify(window).is_number):
            cy_, cx_, ny_, nx_ = int(cy), int(cx), int(ny), int(nx)
            pairs = sum(1 for i in range(ny_) for j in range(nx_)
                        if mask.keeps((i * cy_, (i + 1) * cy_), (j * cx_, (j + 1) * cx_)))
            return sympy.Rational(pairs, ny_ * nx_)
        return sympy.Rational(1, 2)  # symbolic: about half the pairs (ours)
    return sympy.Integer(1)


def moves(program: Program, schedule: Schedule, level: str) -> list[Move]:
    """Every array's traffic across the boundary above ``level`` under the relabelling."""
    loops = schedule.loops(level)
    causal = program.masks()
    out: list[Move] = []
    for arr in used_inputs(program):
        v, _ = _visits(arr.names, loops, causal)
        out.append(Move(arr, "read", tile(arr.axes, schedule, level), v))
    streams = {i: lp.axis for i, lp in enumerate(loops) if _runs(lp)}
    for arr in written_outputs(program):
        v, depth = _visits(arr.names, loops, causal)
        red = reduction_axes(program, arr)
        spilled = any(axis in red and i < depth for i, axis in streams.items())
        t = tile(arr.axes, schedule, level)
        out.append(Move(arr, "write", t, v))
        if spilled:
            out.append(Move(arr, "spill read", t, v))
            state = state_axes(program, arr)
            if state is not None:
                st = tile(state, schedule, level)
                out += [Move(arr, "state read", 2 * st, v), Move(arr, "state write", 2 * st, v)]
    return out


def transfers(program: Program, schedule: Schedule, level: str) -> sympy.Expr:
    """``H_ℓ``: elements moved across the boundary above ``level``."""
    return sympy.expand(sum((m.elements for m in moves(program, schedule, level)), ZERO))


def _accumulates(program: Program, schedule: Schedule, level: str, arr: Array) -> bool:
    streamed = {lp.axis for lp in schedule.loops(level) if lp.kind == "stream"}
    return bool(reduction_axes(program, arr) & streamed)


def live_columns(program: Program, schedule: Schedule, level: str) -> list[list[tuple[str, sympy.Expr]]]:
    """For each operation of one step at the bottom level: the arrays live there (name, tile)."""
    loops = schedule.loops(level)
    streams = [i for i, lp in enumerate(loops) if _runs(lp)]
    innermost = max(streams) if streams else -1
    n = len(program.ops)
    first: dict[tuple[int, frozenset[str]], int] = {}
    last: dict[tuple[int, frozenset[str]], int] = {}
    arrays: dict[tuple[int, frozenset[str]], Array] = {}
    for i, op in enumerate(program.ops):
        for a in (*op.inputs, *op.params):
            last[a.key()] = i
            arrays.setdefault(a.key(), a)
            first.setdefault(a.key(), 0 if a.role != "value" else i)
        for a in op.outputs:
            first.setdefault(a.key(), i)
            arrays.setdefault(a.key(), a)
    outputs = {a.key() for a in written_outputs(program)}
    spans: dict[tuple[int, frozenset[str]], tuple[int, int, str]] = {}
    for key, a in arrays.items():
        lo, hi = first.get(key, 0), last.get(key, first.get(key, 0))
        if a.role in ("input", "param"):
            _, depth = _visits(a.names, loops, [])
            resident = streams and depth < innermost
            spans[key] = (0, n - 1 if resident else hi, a.name or "in")
        elif key in outputs:
            acc = _accumulates(program, schedule, level, a)
            spans[key] = (0 if acc else lo, n - 1, "out")
        else:
            spans[key] = (lo, hi, "tmp")
    # in place: a one-input operation keeping the axes reuses its dead input's buffer
    for i, op in enumerate(program.ops):
        vals = [a for a in op.inputs if a.role == "value"]
        if len(op.inputs) == 1 and vals and len(op.outputs) == 1 and set(vals[0].names) == set(op.outputs[0].names):
            src, dst = vals[0].key(), op.outputs[0].key()
            if spans.get(src, (0, -1, ""))[1] == i and src in spans and dst in spans:
                lo = spans[src][0]
                spans[dst] = (lo, spans[dst][1], spans[dst][2])
                del spans[src]
    cols: list[list[tuple[str, sympy.Expr]]] = [[] for _ in range(max(n, 1))]
    for key, (lo, hi, _tag) in spans.items():
        a = arrays[key]
        t = tile(a.axes, schedule, level)
        label = {"out": "out: ", "tmp": ""}.get(_tag, f"{a.name}: ") + (" ".join(a.names) or "()")
        for i in range(lo, hi + 1):
            cols[i].append((label, t))
        if key in outputs:
            st = state_axes(program, a)
            if st is not None:
                for i in range(lo, hi + 1):
                    cols[i].append(("m, l: " + " ".join(x for x, _ in st), 2 * tile(st, schedule, level)))
    return cols


def memory(program: Program, schedule: Schedule, level: str, *, bottom: bool) -> sympy.Expr:
    """``M_ℓ``: elements live at ``level``.

    At the bottom level (where the arithmetic happens) it is the widest column of one step:
    inputs reloaded every step live from the step's start to their last use, inputs kept
    across steps and accumulating outputs (with their online state) throughout, intermediates
    from their producer to their last use, and a one-input operation keeping its input's axes
    works in place.  Above it (ours), a level stages inputs, weights and outputs only: the sum
    of their tiles.
    """
    if bottom:
        widths = [sympy.expand(sum((t for _, t in col), ZERO)) for col in live_columns(program, schedule, level)]
        return maximum(widths)
    total = ZERO
    for arr in [*used_inputs(program), *written_outputs(program)]:
        total += tile(arr.axes, schedule, level)
    for move in moves(program, schedule, level):  # a spilled online state passes through this level too
        if move.kind == "state write":
            total += move.tile
    return sympy.expand(total)


# -- the unfused baseline ---------------------------------------------------------------
def _kernels(program: Program) -> list[list[Op]]:
    """Boxes grouped into kernels: elementwise boxes and masks join the kernel producing their input."""
    users: dict[int, int] = {}
    for op in program.ops:
        for a in op.inputs:
            users[a.uid] = users.get(a.uid, 0) + 1
    kernels: list[list[Op]] = []
    for op in program.ops:
        vals = [a for a in op.inputs if a.role == "value"]
        joins = (
            kernels and len(op.inputs) == 1 and vals and not op.params
            and (op.kind == "causal" or _scalar(op))
            and vals[0] in kernels[-1][-1].outputs and users.get(vals[0].uid) == 1
        )
        if joins:
            kernels[-1].append(op)
        else:
            kernels.append([op])
    return kernels


def _scalar(op: Op) -> bool:
    dom = getattr(op.node, "dom", None)
    return dom is not None and all(len(seg) == 0 for seg in dom)


def _kernel_io(kernel: list[Op]) -> tuple[list[Array], list[Array]]:
    made = {a.uid for op in kernel for a in op.outputs}
    ins = _unique(a for op in kernel for a in (*op.inputs, *op.params) if a.uid not in made)
    outs = _unique(kernel[-1].outputs)
    return ins, outs


def unfused_transfers(program: Program) -> sympy.Expr:
    """Every kernel reads its inputs and weights and writes its outputs across the boundary."""
    total = ZERO
    for kernel in _kernels(program):
        ins, outs = _kernel_io(kernel)
        total += sum((a.elements() for a in (*ins, *outs)), ZERO)
    return sympy.expand(total)


def unfused_memory(program: Program, *, top: bool) -> sympy.Expr:
    """At the top: the peak of arrays live between kernels; below: the largest kernel's inputs and outputs."""
    kernels = _kernels(program)
    if not top:
        return maximum([sympy.expand(sum((a.elements() for a in (*i, *o)), ZERO)) for i, o in map(_kernel_io, kernels)])
    born: dict[tuple[int, frozenset[str]], int] = {}
    dies: dict[tuple[int, frozenset[str]], int] = {}
    arrays: dict[tuple[int, frozenset[str]], Array] = {}
    final = {a.key() for a in program.outputs}
    for k, kernel in enumerate(kernels):
        ins, outs = _kernel_io(kernel)
        for a in ins:
            arrays.setdefault(a.key(), a)
            born.setdefault(a.key(), 0)
            dies[a.key()] = k
        for a in outs:
            arrays.setdefault(a.key(), a)
            born.setdefault(a.key(), k)
            dies.setdefault(a.key(), k)
    for key in final & set(arrays):
        dies[key] = len(kernels) - 1
    # one sweep: each array's elements join the running total at its first kernel and leave it after its last
    # (was every live array summed again for every kernel: quadratic in the kernels)
    starts: dict[int, list[sympy.Expr]] = {}
    ends: dict[int, list[sympy.Expr]] = {}
    for key, a in arrays.items():
        starts.setdefault(born[key], []).append(a.elements())
        ends.setdefault(dies[key], []).append(a.elements())
    widths: list[sympy.Expr] = []
    total: sympy.Expr = ZERO
    for k in range(len(kernels)):
        total = sympy.expand(sum(starts.get(k, ()), total))
        widths.append(total)
        total = sympy.expand(total - sum(ends.get(k, ()), ZERO))
    return maximum(widths)


def flops(program: Program) -> tuple[sympy.Expr, sympy.Expr]:
    """(matrix, other) FLOPs of the whole diagram.

    Operations under a causal mask count only the unmasked (query, key) pairs: exactly, once
    the sizes (and any sliding window) are numbers; half of them otherwise (ours).
    """
    masks = program.masks()
    mm, other = ZERO, ZERO
    for op in program.ops:
        a, b = program.flops(op)
        f = sympy.Integer(1)
        for m in masks:
            if m.query in op.axes and m.key in op.axes:
                ny, nx = sympy.sympify(op.axes[m.query]), sympy.sympify(op.axes[m.key])
                kept = m.kept(int(ny), int(nx)) if ny.is_number and nx.is_number else None
                f = sympy.Rational(kept, int(ny) * int(nx)) if kept is not None else sympy.Rational(1, 2)
                break
        mm, other = mm + f * a, other + f * b
    return mm, other


def isqrt(value: int) -> int:
    return math.isqrt(value)
