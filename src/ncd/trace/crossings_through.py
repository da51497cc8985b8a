"""Crossings moved past the boxes between them and the contraction that can absorb them.

A rotary ``transformers`` attention crosses its heads before the rotary embedding, and renames or splits a wire after
it: ``q.view(b, t, h, k).transpose(1, 2)``, then ``ρ`` (woven over ``b h``), then ``view(b, g, r, t, k)`` (the grouped
query heads), then the scores' einsum.  The crossing is not beside the einsum, so :func:`~ncd.trace.crossings.
fold_crossings` keeps it: two crossing boxes per attention in every rotary model.

:func:`through_crossings` moves such a crossing down its chain, when every step on the way is

* a woven box acting on the same axes it gives, in the same order (``ρ`` on ``t k`` woven over ``b h``, a norm on
  ``k``, a scale on nothing): the same box, woven at the places its woven axes have before the crossing.  Exact by
  construction: a weave applies its inner box to each slice along its axis, wherever the axis sits, and the crossing
  keeps the order of the box's own axes (checked; a crossing that reorders them is kept);
* a view that only splits or renames wires (each input wire a run of output wires of the same total size, in order):
  the same split of the same wires before the crossing, and the crossing of the split wires after it.  Exact: a
  reshape splitting one wire in row-major order (``i -> (g, r)``, ``i = g·R + r``) does not depend on where the other
  wires are;

and the chain ends at values only einsums of the same module read (each intermediate value read once, by the next
step, in the crossing's module, not an output of the trace).  The crossing then stands beside the einsums, and
:func:`~ncd.trace.crossings.fold_crossings` folds it.  A chain that ends anywhere else is left as it is: moving its
crossing would change the drawing and save no box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import sympy

from ncd.errors import TypeMismatchError
from ncd.ir.axes import Axis, Segment
from ncd.ir.diagram import Box, Diagram
from ncd.ir.weave import Weave, unweave
from ncd.prims.opaque import ViewOp
from ncd.prims.structure import TransposeOp
from ncd.trace.crossings import _crossing, _einsum
from ncd.trace.plumbing_parts import step_index
from ncd.trace.wiring import Step

__all__ = ["split_before_woven", "through_crossings"]


def _woven(step: Step) -> tuple[Box, tuple[Weave, ...]] | None:
    """The box and its weaves (outermost first) of a step applying a woven box to one value and giving the same
    axes in the same order; None for any other step."""
    d = step.diagram
    if type(d) is not Weave or len(step.ins) != 1 or len(step.outs) != 1 or len(d.dom) != 1 or len(d.cod) != 1:
        return None
    core, weaves = unweave(d)
    if type(core) is not Box or len(core.dom) != 1 or len(core.cod) != 1 or not core.dom[0].same(core.cod[0]) \
            or not d.dom[0].same(d.cod[0]) or any(w.dom_pos != w.cod_pos for w in weaves):
        return None
    return core, weaves


def _rewoven(core: Box, woven: Sequence[Axis], order: Segment) -> Diagram | None:
    """``core`` woven over ``woven`` (outermost first) at the places they have in ``order`` (its own axes kept in their
    order); None when ``order`` reorders the core's own axes or is not its axes with the woven ones."""
    own = core.dom[0].names
    if tuple(n for n in order.names if n in own) != own:
        return None
    diagram: Diagram = core
    held = set(own)
    for axis in reversed(woven):
        held.add(axis.name)
        at = [n for n in order.names if n in held].index(axis.name)
        try:
            diagram = Weave(diagram, axis, (at,), (at,))
        except TypeMismatchError:  # (a woven name the core's own axes have)
            return None
    return diagram if diagram.dom[0].same(order) and diagram.cod[0].same(order) else None


def _groups(view: ViewOp) -> list[list[Axis]] | None:
    """The output wires each input wire of a view is split into (one: renamed, or kept), in order; None for a view
    that merges wires, or whose sizes are not numbers."""
    source, target = view.source.axes, view.target.axes
    if not all(isinstance(a.size, sympy.Integer) for a in (*source, *target)):
        return None
    groups: list[list[Axis]] = []
    at = 0
    for axis in source:
        group: list[Axis] = []
        made = 1
        while at < len(target) and (not group or made < int(axis.size)):
            group.append(target[at])
            made *= int(target[at].size)
            at += 1
        if made != int(axis.size):
            return None
        groups.append(group)
    while at < len(target) and int(target[at].size) == 1 and groups:  # unit wires at the end: the last wire's
        groups[-1].append(target[at])
        at += 1
    return groups if at == len(target) else None


def _moved(crossing: TransposeOp, chain: Sequence[Diagram], segs: Sequence[Segment]) -> list[Box | Diagram] | None:
    """The chain's boxes applied before the crossing, then the crossing (of their last value); None when a step of the
    chain cannot be so moved.  ``segs``: the chain's values (the crossing's output first)."""
    uncrossed, perm = crossing.segment, list(crossing.perm)  # crossed[i] = uncrossed[perm[i]]
    new: list[Box | Diagram] = []
    for diagram in chain:
        if type(diagram) is Weave:
            core, weaves = unweave(diagram)
            assert type(core) is Box
            moved = _rewoven(core, [w.axis for w in weaves], uncrossed)
            if moved is None:
                return None
            new.append(moved)
            continue
        assert type(diagram) is Box and type(diagram.prim) is ViewOp
        groups = _groups(diagram.prim)
        if groups is None:
            return None
        where = [0] * len(perm)  # where uncrossed wire m sits among the crossed ones
        for i, m in enumerate(perm):
            where[m] = i
        split = uncrossed.with_axes([a for m in range(len(perm)) for a in groups[where[m]]])
        starts = [0] * len(perm)  # where uncrossed wire m's group starts in the split wires
        for m in range(1, len(perm)):
            starts[m] = starts[m - 1] + len(groups[where[m - 1]])
        perm = [starts[m] + g for m in perm for g in range(len(groups[where[m]]))]
        new.append(Box(ViewOp(uncrossed, split)))
        uncrossed = split
    last = TransposeOp(uncrossed, tuple(perm))
    if not last.signature()[1][0].same(segs[-1]):
        return None
    return [*new, Box(last)]


def through_crossings(steps: list[Step], outputs: Sequence[int], segs: dict[int, Segment],
                      new_value: Callable[[Segment], int]) -> list[Step]:
    """``steps`` with each crossing whose chain of woven boxes and splitting views ends at einsums moved to the end of
    that chain (see the module); ``new_value(segment)`` gives the id of a new value."""
    if not any(_crossing(s) for s in steps):
        return steps
    readers, _ = step_index(steps)
    ends = set(outputs)
    # repeated layers hold the same box objects (copied layers): moved alike, they give the same new boxes
    known: dict[tuple[int, ...], list[Box | Diagram] | None] = {}
    kept: list[Any] = []  # (the objects the keys name by id live until the end)
    out: list[list[Step]] = [[s] for s in steps]
    changed = False
    for k, step in enumerate(steps):
        prim = _crossing(step)
        if prim is None or segs.get(step.ins[0]) != prim.segment:
            continue
        chain: list[int] = []
        v = step.outs[0]
        while v not in ends:
            ks = readers.get(v, [])
            if ks and all(_einsum(steps[j]) is not None and steps[j].stack == step.stack for j in ks):
                break
            if len(ks) != 1 or steps[ks[0]].stack[:len(step.stack)] != step.stack:  # (in its module or one inside)
                chain = []
                break
            j = ks[0]
            nxt = steps[j]
            if _woven(nxt) is None and _view(nxt) is None:
                chain = []
                break
            chain.append(j)
            v = nxt.outs[0]
        if not chain or v in ends:
            continue
        key = (id(step.diagram), *(id(steps[j].diagram) for j in chain))
        if key not in known:
            kept.append([step.diagram, *(steps[j].diagram for j in chain)])
            known[key] = _moved(prim, [steps[j].diagram for j in chain],
                                [segs[step.outs[0]], *(segs[steps[j].outs[0]] for j in chain)])
        new = known[key]
        if new is None:
            continue
        # each box stays where it was (the lowered module reads the learned boxes' tensors in this order), the crossing
        # after the last
        value = step.ins[0]
        placed: list[tuple[int, Step]] = []
        for n, box in enumerate(new):
            place = chain[min(n, len(chain) - 1)]
            made = steps[chain[-1]].outs[0] if n == len(new) - 1 else new_value(box.cod[0])
            placed.append((place, replace(steps[place], diagram=box, ins=[value], outs=[made])))
            value = made
        for j in (k, *chain):
            out[j] = []
        for place, moved in placed:
            out[place].append(moved)
        changed = True
    return [s for group in out for s in group] if changed else steps


def _view(step: Step) -> ViewOp | None:
    d = step.diagram
    if type(d) is Box and type(d.prim) is ViewOp and len(step.ins) == 1 and len(step.outs) == 1:
        return d.prim
    return None


def _split_first(first: ViewOp, woven: Diagram, then: ViewOp) -> tuple[Box, Diagram] | None:
    """``first``, ``woven`` and ``then`` (a view splitting or renaming only wires ``woven`` is woven over) as one view
    and ``woven`` woven over the split wires; None when ``then`` touches the woven box's own wires."""
    core, weaves = unweave(woven)
    groups = _groups(then)
    if type(core) is not Box or groups is None:
        return None
    own = set(core.dom[0].names)
    split: dict[str, list[Axis]] = {}
    for axis, group in zip(then.source.axes, groups):
        # the box's own wires kept as they are: a renamed one (a rotary's positions, keys at t -> t') is left, as
        # ``ncd.decode`` finds the positions' renames in views that rename alone
        if axis.name in own and (len(group) != 1 or not group[0].same(axis)):
            return None
        split[axis.name] = group
    moved = _rewoven(core, [a for w in weaves for a in split[w.axis.name]], then.target)
    if moved is None or first.source.same(then.target):
        return None
    return Box(ViewOp(first.source, then.target)), moved


def split_before_woven(steps: list[Step], outputs: Sequence[int], segs: dict[int, Segment],
                       new_value: Callable[[Segment], int]) -> list[Step]:
    """``steps`` with each view -> woven box -> view splitting only the box's woven wires (each the only reader of
    the one before, in one module, none an output) drawn as one view and the box woven over the split wires: the
    query heads ``h`` split into ``g r`` after the rotary box, ``view(b, t, h, k) -> ρ -> view(b, t, g, r, k)``, are
    ``view(b, t, g, r, k) -> ρ``.  Exact: a weave applies its box to each slice along its wires, and a split of a
    woven wire makes the same slices; reshapes in a row compose to one."""
    readers, made = step_index(steps)
    ends = set(outputs)

    def only(v: int, stack: tuple[tuple[str, str], ...]) -> int | None:
        """The only reader of ``v``, in the module ``stack`` or one inside it."""
        ks = readers.get(v, [])
        return ks[0] if v not in ends and len(ks) == 1 and steps[ks[0]].stack[:len(stack)] == stack else None

    known: dict[tuple[int, int, int], tuple[Box, Diagram] | None] = {}
    kept: list[Any] = []  # (the objects the keys name by id live until the end)
    out: list[Step | None] = list(steps)
    touched: set[int] = set()
    for c, step in enumerate(steps):
        then = _view(step)
        b = made.get(step.ins[0]) if then is not None else None
        if then is None or b is None or _woven(steps[b]) is None or only(steps[b].outs[0], step.stack) != c \
                or steps[b].stack[:len(step.stack)] != step.stack:
            continue
        a = made.get(steps[b].ins[0])
        first = _view(steps[a]) if a is not None else None
        if a is None or first is None or only(steps[a].outs[0], step.stack) != b or touched & {a, b, c}:
            continue
        key = (id(steps[a].diagram), id(steps[b].diagram), id(step.diagram))
        if key not in known:
            kept.append((steps[a].diagram, steps[b].diagram, step.diagram))
            known[key] = _split_first(first, steps[b].diagram, then)
        new = known[key]
        if new is None:
            continue
        value = new_value(then.target)
        out[a] = replace(steps[a], diagram=new[0], outs=[value])
        out[b] = replace(steps[b], diagram=new[1], ins=[value], outs=list(step.outs))
        out[c] = None
        touched |= {a, b, c}
    return steps if not touched else [s for s in out if s is not None]
