"""Crossings of wires folded into the contraction beside them.

Every attention of a ``transformers`` model moves its heads' axes around the two products:
``q.view(b, t, h, k).transpose(1, 2)`` before the scores, ``out.transpose(1, 2).reshape(b, t, h*k)`` after the values.
Each ``transpose`` converts to a crossing box (``⤨``), about four per attention.  In the paper's notation a crossing
of the wires entering or leaving a contraction is no box at all: an einsum identifies its axes by name, so it reads
its operands and writes its result in any order of their axes.

:func:`fold_crossings` removes each crossing (a :class:`~ncd.prims.structure.TransposeOp` step) that

* only einsums read (every reader an :class:`~ncd.prims.linear.EinsumOp` box in the same module, the crossing's
  value not an output of the trace): each reads the crossing's input instead, its operand's segment the input's
  order of the same axes; or
* takes the only result of an einsum box in the same module that nothing else reads: the einsum writes the
  crossing's order of its output axes instead.

Both are exact by construction: an einsum's result, as a function of its named operands, does not depend on the
order their axes are laid out in (the same axes, the same sizes, the same names).  Nothing else changes: what reads
the einsum's result reads the value the crossing made (its id kept).  A crossing with another reader, a woven einsum,
or one in another module is kept as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box
from ncd.prims.linear import EinsumOp
from ncd.prims.structure import TransposeOp
from ncd.trace.plumbing_parts import step_index
from ncd.trace.wiring import Step

__all__ = ["fold_crossings"]


def _crossing(step: Step) -> TransposeOp | None:
    d = step.diagram
    if type(d) is Box and type(d.prim) is TransposeOp and len(step.ins) == 1 and len(step.outs) == 1:
        return d.prim
    return None


def _einsum(step: Step) -> EinsumOp | None:
    d = step.diagram
    if type(d) is Box and type(d.prim) is EinsumOp and len(step.outs) == 1:
        return d.prim
    return None


def fold_crossings(steps: list[Step], outputs: Sequence[int], segs: dict[int, Segment]) -> list[Step]:
    """``steps`` with each crossing that an einsum beside it can absorb absorbed into it (see the module)."""
    if not any(_crossing(s) for s in steps):
        return steps
    steps = list(steps)
    ends = set(outputs)
    readers, made = step_index(steps)
    dropped: set[int] = set()
    # repeated layers hold the same box objects (copied layers, :mod:`ncd.trace.reuse_copy`): the same einsum and
    # crossing folded alike give the same new box, so such layers stay alike by identity
    known: dict[tuple[Any, ...], Box] = {}
    kept = list(steps)  # (the objects the keys name by id live until the end)
    crossings = [k for k, step in enumerate(steps) if _crossing(step) is not None]
    # results first, in order (einsum -> crossing -> crossing), then operands from the last (crossing -> crossing ->
    # einsum): a run of crossings goes into the einsum one by one
    for k, after in [(k, True) for k in crossings] + [(k, False) for k in reversed(crossings)]:
        prim = _crossing(steps[k])
        if k in dropped or prim is None:
            continue
        (source,), (target,) = steps[k].ins, steps[k].outs
        if segs.get(source) != prim.segment or segs.get(target) != prim.signature()[1][0]:
            continue
        if _after(steps, k, source, target, prim, readers, made, ends, known) if after else \
                _before(steps, k, source, target, prim, readers, ends, known):
            dropped.add(k)
    del kept
    return steps if not dropped else [s for k, s in enumerate(steps) if k not in dropped]


def _before(steps: list[Step], k: int, source: int, target: int, prim: TransposeOp, readers: dict[int, list[int]],
            ends: set[int], known: dict[tuple[Any, ...], Box]) -> bool:
    """The crossing at ``k`` absorbed by the einsums reading it (its only readers), which read ``source`` instead."""
    ks = readers.get(target, [])
    if target in ends or not ks or any(_einsum(steps[j]) is None or steps[j].stack != steps[k].stack for j in ks):
        return False
    crossed = steps[k].diagram
    for j in dict.fromkeys(ks):
        reader = steps[j]
        einsum = _einsum(reader)
        assert einsum is not None
        if any(v == target and not einsum.inputs.segments[p] == prim.signature()[1][0] for p, v in enumerate(reader.ins)):
            return False
    for j in dict.fromkeys(ks):
        reader = steps[j]
        key = ("before", id(reader.diagram), id(crossed), tuple(p for p, v in enumerate(reader.ins) if v == target))
        box = known.get(key)
        if box is None:
            einsum = _einsum(reader)
            assert einsum is not None
            inputs = Type(tuple(prim.segment if v == target else seg for v, seg in zip(reader.ins, einsum.inputs)))
            box = known[key] = Box(replace(einsum, inputs=inputs))
        steps[j] = replace(reader, diagram=box, ins=[source if v == target else v for v in reader.ins])
    readers.setdefault(source, []).extend(ks)
    readers[source] = [j for j in readers[source] if j != k]
    readers.pop(target, None)
    return True


def _after(steps: list[Step], k: int, source: int, target: int, prim: TransposeOp, readers: dict[int, list[int]],
           made: dict[int, int], ends: set[int], known: dict[tuple[Any, ...], Box]) -> bool:
    """The crossing at ``k`` absorbed by the einsum making its input (read by nothing else), which makes ``target``."""
    j = made.get(source)
    if j is None or source in ends or readers.get(source) != [k]:
        return False
    writer = steps[j]
    einsum = _einsum(writer)
    if einsum is None or writer.stack != steps[k].stack or writer.outs != [source] or einsum.output != prim.segment:
        return False
    key = ("after", id(writer.diagram), id(steps[k].diagram))
    box = known.get(key)
    if box is None:
        box = known[key] = Box(replace(einsum, output=prim.signature()[1][0]))
    steps[j] = replace(writer, diagram=box, outs=[target])
    made[target] = j
    made.pop(source, None)
    readers.pop(source, None)
    return True
