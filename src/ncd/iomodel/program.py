"""A diagram as a flat list of operations on named arrays — what the IO model counts.

Only which axes an array carries matters here (not their order): an array is a set of named
axes with sizes.  Structural boxes (copy, swap, transpose, rename, delete) move no data and
make no new array: their outputs are views of their inputs.  Weights of learned boxes are
arrays too (``params``).  A block made by :func:`ncd.online_softmax` is one operation,
streamable along its key axis with the online-softmax state.

>>> import ncd
>>> from ncd.iomodel.program import flatten
>>> p = flatten(ncd.Einsum("a b, b c -> a c"), {"a": 4, "b": 3, "c": 2})
>>> [(op.label, [t.names for t in op.inputs], op.outputs[0].names) for op in p.ops]
[('einsum', [('a', 'b'), ('b', 'c')], ('a', 'c'))]
>>> p.flops(p.ops[0])
(48, 0)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import sympy

from ncd.errors import SizeError
from ncd.ir.axes import Axis, Type
from ncd.ir.diagram import Block, Box, Diagram, Repeat, Weave, describe
from ncd.ir.interpreter import Interpreter
from ncd.ir.primitive import Primitive
from ncd.ir.rules import IO_MODEL
from ncd.ir.size import evaluate, symbol
from ncd.prims.attention import CausalMaskOp
from ncd.prims.linear import EinsumOp, LinearOp
from ncd.prims.scan import ScanOp
from ncd.prims.softmax import SoftmaxOp
from ncd.prims.structure import CopyOp, DeleteOp, RenameOp, SwapOp, TransposeOp

__all__ = ["Array", "Mask", "Op", "Program", "flatten", "ONLINE"]

#: The block name :func:`ncd.online_softmax` gives the online form (its meta holds the key axis).
ONLINE = "online softmax"

Role = Literal["input", "param", "value"]
_counter = itertools.count()


@dataclass(frozen=True, eq=False)
class Array:
    """An array: named axes with sizes; ``root`` identifies the memory it views."""

    axes: tuple[tuple[str, sympy.Expr], ...]
    role: Role
    root: int = -1
    name: str = ""
    uid: int = field(default_factory=lambda: next(_counter))

    def __post_init__(self) -> None:
        if self.root < 0:
            object.__setattr__(self, "root", self.uid)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a for a, _ in self.axes)

    def size(self, axis: str) -> sympy.Expr:
        return dict(self.axes)[axis]

    def elements(self) -> sympy.Expr:
        return sympy.Mul(*(s for _, s in self.axes)) if self.axes else sympy.Integer(1)

    def key(self) -> tuple[int, frozenset[str]]:
        """Two views with the same root and axes are the same data (one load serves both)."""
        return (self.root, frozenset(self.names))


@dataclass(frozen=True, eq=False)
class Op:
    """One operation: its box (or online-softmax block), input, weight and output arrays."""

    node: Diagram
    label: str
    kind: Literal["matmul", "online", "softmax", "causal", "other"]
    inputs: tuple[Array, ...]
    params: tuple[Array, ...]
    outputs: tuple[Array, ...]
    stream_axis: str | None = None  # the key axis of an online-softmax op

    @property
    def axes(self) -> dict[str, sympy.Expr]:
        """Every axis the operation loops over (inputs, weights and outputs)."""
        found: dict[str, sympy.Expr] = {}
        for arr in (*self.inputs, *self.params, *self.outputs):
            for name, s in arr.axes:
                found.setdefault(name, s)
        return found

    def reduced(self) -> set[str]:
        """Axes it reads but does not output (contractions, normalisations' reductions)."""
        out = {n for arr in self.outputs for n in arr.names}
        return {n for n in self.axes if n not in out}


@dataclass
class Program:
    """The operations in order, the diagram's input arrays and its output arrays."""

    ops: list[Op]
    inputs: list[Array]
    outputs: list[Array]

    def params(self) -> list[Array]:
        return [p for op in self.ops for p in op.params]

    def flops(self, op: Op) -> tuple[sympy.Expr, sympy.Expr]:
        """(matrix FLOPs, other FLOPs) of one operation.

        Matrix: 2 per multiply-add over every axis the contraction loops over (an online
        softmax counts its ``P·V`` product).  Other (ours): 5 per element for a softmax or the
        online softmax's exponentials, 1 per output element for everything else.
        """
        loop = sympy.Mul(*op.axes.values())
        out = sum((a.elements() for a in op.outputs), sympy.Integer(0))
        if op.kind == "matmul":
            return 2 * loop, sympy.Integer(0)
        if op.kind == "online":
            scores = op.inputs[0].elements()
            return 2 * loop, 5 * scores
        if op.kind == "softmax":
            return sympy.Integer(0), 5 * out
        return sympy.Integer(0), out

    def masks(self) -> list[Mask]:
        """The causal masks (query axis, key axis, sliding window) of the diagram."""
        return [Mask(op.node.prim.query.name, op.node.prim.key.name, op.node.prim.window)  # type: ignore[attr-defined]
                for op in self.ops if op.kind == "causal"
                and not op.node.prim.lower_right]  # type: ignore[attr-defined]  # (a shifted diagonal: no tile is skipped)


@dataclass(frozen=True)
class Mask:
    """A causal mask: query ``q`` sees key ``k`` iff ``k <= q`` (and ``q - k < window`` with a window)."""

    query: str
    key: str
    window: sympy.Expr | None = None

    def keeps(self, q: tuple[int, int], k: tuple[int, int]) -> bool:
        """Whether any (query, key) pair of the index ranges ``[q0, q1) x [k0, k1)`` is unmasked."""
        if k[0] > q[1] - 1:
            return False
        return self.window is None or q[0] - (k[1] - 1) < int(self.window)

    def kept(self, ny: int, nx: int) -> int | None:
        """Unmasked (query, key) pairs of a ``ny x nx`` score matrix (``None`` if the window is symbolic)."""
        if self.window is not None and not sympy.sympify(self.window).is_number:
            return None
        w = nx if self.window is None else int(self.window)
        return sum(max(0, min(q, nx - 1) - max(0, q - w + 1) + 1) for q in range(ny))


def _arr(axes: list[Axis], woven: tuple[Axis, ...], role: Role, name: str = "") -> Array:
    names = {a.name for a in axes}
    full = [(a.name, a.size) for a in woven if a.name not in names] + [(a.name, a.size) for a in axes]
    return Array(tuple(full), role, name=name)


class _Walker(Interpreter[Array, tuple[Axis, ...]]):
    """The operations in execution order (an :class:`~ncd.ir.interpreter.Interpreter` threading one array per
    segment; the context is the axes the enclosing weaves add, outermost first)."""

    def __init__(self, sizes: Mapping[str, int]) -> None:
        self.sizes = dict(sizes)
        self.ops: list[Op] = []

    def in_place(self, box: Box, woven: tuple[Weave, ...]) -> bool:
        return False  # arrays are sets of named axes: every weave just adds its axis

    def weave(self, inner: Diagram, woven: tuple[Weave, ...], ins: list[Array], cod: Type,
              outer: tuple[Axis, ...]) -> list[Array]:
        return self.run(inner, ins, outer + tuple(w.axis for w in woven))

    def block(self, node: Block, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
        if node.name == ONLINE and node.get("key"):
            return self.online(node, ins, woven)
        return self.run(node.body, ins, woven)

    def repeat(self, node: Repeat, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
        count = evaluate(node.stop - node.start, self.sizes, what=f"repetition count of {node.name or node.var!r}")
        start = evaluate(node.start, self.sizes, what="repetition start")
        for i in range(start, start + count):
            ins = self.run(node.iteration(i), ins, woven)
        return ins

    def box(self, box: Box, values: list[Array], woven: tuple[Weave, ...], ctx: tuple[Axis, ...]) -> list[Array]:
        """The box's rule of :data:`ncd.ir.rules.IO_MODEL` (its own, or its kind's: one kernel); ``ctx`` are the
        woven axes (``woven`` is empty: no weave is handled in place)."""
        result: list[Array] = IO_MODEL.apply(box.prim, self, box, values, ctx)
        return result

    def unknown(self, node: Diagram, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
        raise SizeError(f"the IO model cannot read {describe(node)} ({type(node).__name__})")

    def online(self, node: Block, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
        outs = [_arr(list(seg.axes), woven, "value") for seg in node.cod]
        self.ops.append(Op(node, "online softmax", "online", tuple(ins), (), tuple(outs), str(node.get("key"))))
        return outs

    def kernel(self, node: Box, ins: list[Array], woven: tuple[Axis, ...],
               kind: Literal["matmul", "softmax", "causal", "other"] = "other") -> list[Array]:
        """One kernel: reads its inputs and weights and writes its outputs at the top."""
        outs = [_arr(list(seg.axes), woven, "value") for seg in node.cod]
        params: list[Array] = []
        prim = node.prim
        if isinstance(prim, LinearOp):  # the weight's axes are the map's: relabelling can tile them
            params.append(_arr(list(prim.cod_axes.axes) + list(prim.dom_axes.axes), (), "param", node.text()))
            if prim.bias:
                params.append(_arr(list(prim.cod_axes.axes), (), "param", node.text() + ".bias"))
        else:
            for pname, shape in prim.params().items():  # weights of other boxes: axes no relabelling names
                anon = tuple((f"_{node.text()}.{pname}{j}", s) for j, s in enumerate(shape))
                params.append(Array(anon, "param", name=f"{node.text()}.{pname}"))
        self.ops.append(Op(node, node.text(), kind, tuple(ins), tuple(params), tuple(outs)))
        return outs


# -- the IO model's rules (ncd.ir.rules.IO_MODEL): routing moves no data; every other box is a kernel --------
@IO_MODEL.rule(CopyOp)
def _copy(prim: CopyOp, walker: _Walker, node: Box, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
    return ins * prim.n


@IO_MODEL.rule(DeleteOp)
def _delete(prim: DeleteOp, walker: _Walker, node: Box, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
    return []


@IO_MODEL.rule(SwapOp)
def _swap(prim: SwapOp, walker: _Walker, node: Box, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
    return [ins[k] for k in prim.perm]


@IO_MODEL.rule(TransposeOp)
def _transpose(prim: TransposeOp, walker: _Walker, node: Box, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
    return ins  # axes are named: an order is a view


@IO_MODEL.rule(RenameOp)
def _rename(prim: RenameOp, walker: _Walker, node: Box, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
    src = ins[0]
    mapping = dict(zip(prim.segment.names, prim.names))
    axes = tuple((mapping.get(n, n), s) for n, s in src.axes)
    return [Array(axes, src.role, src.root, src.name)]


@IO_MODEL.rule(EinsumOp, LinearOp)
def _matmul(prim: EinsumOp | LinearOp, walker: _Walker, node: Box, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
    return walker.kernel(node, ins, woven, "matmul")


@IO_MODEL.rule(SoftmaxOp)
def _softmax(prim: SoftmaxOp, walker: _Walker, node: Box, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
    return walker.kernel(node, ins, woven, "softmax")


@IO_MODEL.rule(CausalMaskOp)
def _causal(prim: CausalMaskOp, walker: _Walker, node: Box, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
    return walker.kernel(node, ins, woven, "causal")


@IO_MODEL.by_kind("linear", "multilinear", "nonlinear", "structural", what="one kernel reading its inputs and weights")
def _kernel(prim: Primitive, walker: _Walker, node: Box, ins: list[Array], woven: tuple[Axis, ...]) -> list[Array]:
    return walker.kernel(node, ins, woven)


IO_MODEL.unsupported(ScanOp, "a recurrence runs its body once per step, with weights the scan box does not declare;"
                             " the IO model does not model loops over time")


def defaults(diagram: Diagram) -> dict[str, int]:
    """Default sizes a zoo model carries (``meta['defaults']`` of its top block)."""
    if isinstance(diagram, Block):
        return dict(diagram.get("defaults", ()) or ())
    return {}


def flatten(diagram: Diagram, sizes: Mapping[str, int | sympy.Expr] | None = None) -> Program:
    """The operations of ``diagram`` with sizes bound (unbound sizes stay symbolic)."""
    bound = {**defaults(diagram), **(sizes or {})}
    concrete = {k: v for k, v in bound.items() if isinstance(v, int) or (isinstance(v, sympy.Expr) and v.is_number)}
    d = diagram.subs({symbol(k): sympy.sympify(v) for k, v in bound.items()}) if bound else diagram
    walker = _Walker({k: int(v) for k, v in concrete.items()})
    inputs = [_arr(list(seg.axes), (), "input", f"in{j}") for j, seg in enumerate(d.dom)]
    outputs = walker.run(d, list(inputs), ())
    return Program(walker.ops, inputs, outputs)
