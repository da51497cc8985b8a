"""The steps of a lowered program as :func:`ncd.torch.fusion.fuse_attention` reads them: which step wrote a value
(by identity, past crossings of wires), a box lowered with its woven axes moved in front and back, and the sum with a
float mask and its comparison with -inf (SDPA's ``attn_mask``).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from ncd.ir.axes import Axis, Dtype, Segment, Type
from ncd.ir.diagram import Box
from ncd.ir.program import Step, Value
from ncd.prims.attention import CausalMaskOp
from ncd.prims.elementwise import ScaleOp
from ncd.prims.gather import CompareOp
from ncd.prims.linear import EinsumOp
from ncd.prims.structure import SwapOp

if TYPE_CHECKING:
    from ncd.torch.codegen import Codegen

_INDEXES: weakref.WeakKeyDictionary[object, dict[int, _Producers]] = weakref.WeakKeyDictionary()


def _full(step: Step) -> tuple[Box, Type, Type]:
    """A box step's box and its full types, read off the values it reads and writes (with the axes it runs woven
    over in place; without those an enclosing class moved in front, as the box's types are written)."""
    assert step.box is not None
    return step.box, _type(step.inputs), _type(step.outputs)


def _type(values: Sequence[Value]) -> Type:
    return Type(tuple(Segment(v.axes, cast(Dtype, v.dtype)) for v in values))


class _Producers:
    """Which step of a list of steps wrote each value (by identity), kept in step with the list as lowering grows it,
    so that finding a value's producer costs O(1) amortised however far back it is, not a walk back over the steps.

    Lowering appends steps and deletes the tail it moves into a box step (``Codegen._box_step``); the rewrite
    removes a pattern's steps from its first on.  Either way the list changes from some position on: :meth:`sync`
    finds that position walking back from the end over the changed positions only and indexes the steps from there.
    An entry whose step is no longer at its position is stale and dropped when met.
    """

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.seen: list[Step] = []  # the step indexed at each position
        self.at: dict[int, list[tuple[int, Step, Value]]] = {}  # id(value) -> its writers (position, step, value)

    def sync(self) -> None:
        steps, seen = self.steps, self.seen
        k = min(len(seen), len(steps))
        while k and seen[k - 1] is not steps[k - 1]:
            k -= 1
        del seen[k:]
        for i in range(k, len(steps)):
            seen.append(steps[i])
            for v in steps[i].outputs:  # (the value is kept with its entry: its id is not reused meanwhile)
                self.at.setdefault(id(v), []).append((i, steps[i], v))

    def producer(self, before: int, value: Value) -> int | None:
        """The position of the last step before ``before`` that wrote ``value``."""
        self.sync()
        entries = self.at.get(id(value), [])
        for j in range(len(entries) - 1, -1, -1):
            i, step, _ = entries[j]
            if i >= len(self.steps) or self.steps[i] is not step:
                del entries[j]  # stale: its step was moved or removed
            elif i < before:
                return i
        return None


def _producer(gen: Codegen, steps: list[Step], before: int, value: Value) -> int | None:
    """The index of the step before ``before`` that wrote ``value`` (by identity), however far back."""
    lists = _INDEXES.setdefault(gen, {})
    index = lists.get(id(steps))
    if index is None or index.steps is not steps:
        index = lists[id(steps)] = _Producers(steps)
    return index.producer(before, value)


def _scores_side(gen: Codegen, steps: list[Step], i: int, inputs: Sequence[Value], crossings: list[int]) -> int | None:
    """Which of the two ``inputs`` of the sum ``steps[i]`` carries the scores (written by the score einsum or a scale or
    causal mask after it); the other is the bias.  ``None``: neither, or a sum of more than two."""
    if len(inputs) != 2:
        return None
    for side in (0, 1):
        j = _through(gen, steps, i, inputs[side], crossings)
        box = steps[j].box if j is not None else None
        if box is not None and isinstance(box.prim, (EinsumOp, ScaleOp, CausalMaskOp)):
            return side
    return None


def _unframe(gen: Codegen, steps: list[Step], i: int, frame: tuple[Axis, ...]
             ) -> tuple[int, list[int], tuple[Box, Type, Type, tuple[Value, ...]]] | None:
    """A box lowered with its woven axes moved in front (a ``weave`` step, the box on the moved values, an ``unweave``
    step back), read from the ``unweave`` at ``i``: the box's position, those of the weave and unweave, and the box with
    its full types and inputs (the values before they were moved); ``None`` if ``i`` is no such unweave."""
    back = steps[i]
    if back.kind != "unweave" or len(back.inputs) != 1 or len(back.outputs) != 1 or back.frame != frame:
        return None
    b = _producer(gen, steps, i, back.inputs[0])
    if b is None:
        return None
    box = steps[b]
    if box.kind != "box" or box.box is None or box.inner or len(box.outputs) != 1 or not box.inputs:
        return None
    w = _producer(gen, steps, b, box.inputs[0])
    if w is None:
        return None
    moved = steps[w]
    if moved.kind != "weave" or moved.frame != frame or len(moved.outputs) != len(box.inputs) \
            or any(a is not c for a, c in zip(moved.outputs, box.inputs)):
        return None
    ins = tuple(moved.inputs)
    if any(v.dtype == "index" for v in (*ins, *back.outputs)):
        return None  # integers (their ranges are not on the values): no step of an attention (longformer's positions)
    return b, [w, i], (box.box, _type(ins), _type(back.outputs), ins)


def _through(gen: Codegen, steps: list[Step], before: int, value: Value, crossings: list[int]) -> int | None:
    """The step before ``before`` that computed ``value``, past crossings of wires it passes through (swap steps with
    no op and no woven axis: output ``k`` is input ``perm[k]``; their positions are added to ``crossings``)."""
    i = _producer(gen, steps, before, value)
    while i is not None and _crossing(steps[i]):
        step = steps[i]
        k = next(k for k, v in enumerate(step.outputs) if v is value)
        value = step.inputs[step.box.prim.perm[k]]  # type: ignore[union-attr]
        if i not in crossings:
            crossings.append(i)
        i = _producer(gen, steps, i, value)
    return i


def _crossing(step: Step) -> bool:
    return step.kind == "box" and step.box is not None and isinstance(step.box.prim, SwapOp) and not step.ops \
        and not step.woven and len(step.inputs) == len(step.outputs) == len(step.box.prim.perm)


def _uncrossed(steps: list[Step], crossings: list[int], removed: set[int]) -> dict[int, Step | None]:
    """Each crossing without the values the rewrite removes (``None``: nothing else crosses there, the step goes)."""
    out: dict[int, Step | None] = {}
    for i in crossings:
        step = steps[i]
        prim = step.box.prim  # type: ignore[union-attr]
        assert isinstance(prim, SwapOp)
        kept = [j for j, v in enumerate(step.inputs) if id(v) not in removed]
        outs = [k for k in range(len(prim.perm)) if prim.perm[k] in kept]
        if not kept:
            out[i] = None
            continue
        perm = tuple(kept.index(prim.perm[k]) for k in outs)
        box = Box(SwapOp(Type(tuple(prim.type.segments[j] for j in kept)), perm))
        cod = Type(tuple(step.cod.segments[k] for k in outs)) if isinstance(step.cod, Type) else step.cod
        out[i] = replace(step, box=box, inputs=tuple(step.inputs[j] for j in kept),
                         outputs=tuple(step.outputs[k] for k in outs), cod=cod)
    return out


def _finite_of(gen: Codegen, steps: list[Step], before: int, mask: Value, bias: Value,
               crossings: list[int]) -> list[int] | None:
    """The steps writing ``mask`` as ``bias > -inf`` (the importer's reading of SDPA's float mask: a row it makes all
    -inf gives 0; with the weave and unweave around the comparison), or ``None``."""
    i = _through(gen, steps, before, mask, crossings)
    if i is None:
        return None
    found = [i]
    framed = _unframe(gen, steps, i, steps[i].frame)
    if framed is not None:
        i, around, full = framed
        found = [i, *around]
        inputs = full[3]
    else:
        inputs = steps[i].inputs
    step = steps[i]
    if step.kind != "box" or step.box is None or not isinstance(step.box.prim, CompareOp):
        return None
    prim = step.box.prim
    if prim.relation != ">" or prim.value != float("-inf") or len(inputs) != 1 or inputs[0].var != bias.var:
        return None
    return found
