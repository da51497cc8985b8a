"""Parts of a wire picked after a run of views and transposes, drawn as slices of that wire.

``nn.MultiheadAttention``'s packed in-projection computes the queries, keys and values as one ``Linear`` to ``3·m``
features, then ``unflatten(-1, (3, m)).unsqueeze(0).transpose(0, -2).squeeze(-2)`` and ``proj[0], proj[1], proj[2]``:
a split of the wire ``n = 3·m`` into ``p m``, a crossing bringing ``p`` to the front, a copy of all four wires, and a
select on ``p`` for each part.  Picking entry ``i`` of the outer part ``p`` of a split wire is keeping the entries
``i·m … (i+1)·m − 1`` of the wire itself, so each select is drawn as that slice of ``n`` followed by what the run
does to the other wires (which then fuses with the views and transposes that follow it): exact by construction, the
same entries in the same order; the drawing is the one ``chunk(3, dim=-1)`` gets.

:func:`slice_parts` does it only when every reader of the run's output is such a select on the same wire, the wire
the selects pick from is the outer part of a wire the run splits in two, and the run and the selects are in one
module; anything else is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sympy

from ncd.ir.axes import Segment, Type
from ncd.ir.compose import fit
from ncd.ir.diagram import Box, Diagram
from ncd.ir.weave import Weave
from ncd.prims.opaque import ViewOp
from ncd.prims.slicing import IndexOp, SliceOp
from ncd.prims.structure import TransposeOp
from ncd.trace.wiring import Step

__all__ = ["slice_parts"]


def _picked(step: Step) -> IndexOp | None:
    """The select a step applies (an :class:`IndexOp`, woven over the other wires), else None."""
    diagram: Diagram = step.diagram
    while type(diagram) is Weave:
        diagram = diagram.inner
    prim = getattr(diagram, "prim", None)
    if type(diagram) is not Box or not isinstance(prim, IndexOp) or len(step.ins) != 1 or len(step.outs) != 1:
        return None
    return prim


def _groups(source: Segment, split: Segment) -> list[list[int]] | None:
    """For each wire of ``source``, the wires of ``split`` it is split into (consecutive; none for a wire of size 1,
    which the split drops; None when ``split`` is not a refinement of ``source``)."""
    groups: list[list[int]] = []
    at = 0
    for axis in source.axes:
        need, group = int(axis.size), list[int]()
        while need > 1:
            if at >= len(split.axes) or need % int(split.axes[at].size):
                return None
            need //= int(split.axes[at].size)
            group.append(at)
            at += 1
        groups.append(group)
    return groups if at == len(split.axes) else None


def _fitted(box: Box, seg: Segment) -> Diagram | None:
    try:
        mapped, mapping = fit(box, Type((seg,)))
    except Exception:  # noqa: BLE001 - not drawn so
        return None
    return None if mapping else mapped


def slice_parts(steps: list[Step], outputs: Sequence[int], segs: dict[int, Segment], new_value: Callable[[Segment], int],
                movement: Callable[[Step], bool],
                canonical: Callable[[list[Step], dict[int, Segment]], list[tuple[Box, Segment]] | None]) -> list[Step]:
    """``steps`` with each run of views and transposes (``movement``) whose output is read only by selects of the
    outer part of a wire the run splits in two (:func:`canonical` gives the run's split and crossing) replaced by a
    slice of that wire for each select, followed by the rest of the run's moves."""
    readers, made = step_index(steps)
    ends = set(outputs)
    replaced: dict[int, list[Step]] = {}
    dropped: set[int] = set()
    for v, ks in readers.items():
        if v in ends or v not in made or not movement(steps[made[v]]):
            continue
        picks = [_picked(steps[k]) for k in ks]
        stack = steps[made[v]].stack
        if any(p is None or steps[k].stack != stack for p, k in zip(picks, ks)):
            continue
        names = segs[v].names
        where = {names.index(p.axis.name) if p is not None and p.axis.name in names else -1 for p in picks}
        if len(where) != 1 or -1 in where:
            continue
        (at,) = where
        run = [made[v]]  # back to the first move whose input is not made by a move read only by the run
        while True:
            u = steps[run[0]].ins[0]
            if u not in made or not movement(steps[made[u]]) or u in ends or len(readers.get(u, ())) != 1 \
                    or steps[made[u]].stack != stack:
                break
            run.insert(0, made[u])
        new = _sliced(run, ks, at, steps, segs, new_value, canonical)
        if new is None:
            continue
        dropped.update(run)
        for k, made_steps in zip(ks, new):
            replaced[k] = made_steps
    if not replaced:
        return steps
    return [s for k, step in enumerate(steps) if k not in dropped for s in replaced.get(k, [step])]


def _sliced(run: list[int], ks: list[int], at: int, steps: list[Step], segs: dict[int, Segment],
            new_value: Callable[[Segment], int],
            canonical: Callable[[list[Step], dict[int, Segment]], list[tuple[Box, Segment]] | None]) -> list[list[Step]] | None:
    """The steps replacing each select ``ks`` (of wire ``at`` of the run's output): a slice of the run's input and the
    rest of the run; None when the run does not split the picked wire off the front of one of its input's wires."""
    chain = [steps[k] for k in run]
    source = segs[chain[0].ins[0]]
    target = segs[chain[-1].outs[0]]
    canon = canonical(chain, segs)
    if not canon:
        return None
    boxes = [b for b, _ in canon]
    split = source
    perm: tuple[int, ...] = tuple(range(len(source.axes)))
    for box in boxes:
        if isinstance(box.prim, ViewOp) and box is boxes[0]:
            split = box.prim.target
        elif isinstance(box.prim, TransposeOp):
            perm = box.prim.perm
        else:
            return None  # a merge at the end: the picked wire is not one of the split's
    if len(perm) != len(split.axes) or not split.with_axes(split.axes[j] for j in perm).same(target):
        return None
    picked = perm[at]  # the picked wire's place in the split
    groups = _groups(source, split)
    if groups is None:
        return None
    owner = next((g for g, group in enumerate(groups) if picked in group), None)
    if owner is None or len(groups[owner]) != 2 or groups[owner][0] != picked:
        return None  # (a wire split in three: its inner parts have no wire of their own to be named after)
    whole, rest = source.axes[owner], split.axes[groups[owner][1]]
    width = int(rest.size)
    sliced = source.with_axes(source.axes[:owner] + (rest,) + source.axes[owner + 1:])
    kept = [j for j in range(len(split.axes)) if j != picked]
    parted = split.with_axes(split.axes[j] for j in kept)
    order = [j for j in perm if j != picked]
    rest_perm = tuple(kept.index(j) for j in order)
    out: list[list[Step]] = []
    for k in ks:
        step = steps[k]
        prim = _picked(step)
        assert prim is not None
        size = int(prim.axis.size)
        index = int(prim.index) % size if prim.index.is_Integer else None
        if index is None or not segs[step.outs[0]].same(parted.with_axes(parted.axes[j] for j in rest_perm)):
            return None
        made: list[tuple[Diagram, Segment]] = []
        cut = _fitted(Box(SliceOp(whole, sympy.Integer(index * width), sympy.Integer((index + 1) * width), sympy.Integer(1),
                                  rest, source.dtype, source.range)), source)
        if cut is None or not cut.cod[0].same(sliced):
            return None
        made.append((cut, sliced))
        if not parted.same(sliced):
            made.append((Box(ViewOp(sliced, parted)), parted))
        if rest_perm != tuple(range(len(rest_perm))):
            made.append((Box(TransposeOp(parted, rest_perm)), parted.with_axes(parted.axes[j] for j in rest_perm)))
        vids = [new_value(seg) for _, seg in made[:-1]] + [step.outs[0]]
        ins = [steps[run[0]].ins[0]] + vids[:-1]
        out.append([Step(d, [i], [o], step.stack) for (d, _), i, o in zip(made, ins, vids)])
    return out


def step_index(steps: Sequence[Step]) -> tuple[dict[int, list[int]], dict[int, int]]:
    """For each value, the indices of the steps reading it (in order) and the index of the step making it."""
    readers: dict[int, list[int]] = {}
    made: dict[int, int] = {}
    for k, step in enumerate(steps):
        for v in step.ins:
            readers.setdefault(v, []).append(k)
        for v in step.outs:
            made[v] = k
    return readers, made
