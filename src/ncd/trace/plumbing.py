"""Runs of pure axis plumbing drawn as at most a split, a crossing and a merge.

A model often moves a tensor's axes through several reshapes and transposes in a row with no arithmetic between
(``nn.MultiheadAttention``: ``view(t, b*h, k) -> transpose(0, 1) -> view(b, h, t, k)``).  Each call converts to its own
box (a view ``▮`` or a crossing), and the chain passes through wires that mean nothing to a reader (``b*h``).  In the
paper's notation the whole run is a split of wires, a crossing, and a merge of wires.

:func:`fuse_movement` finds each run of views and transposes whose intermediate values have one reader each (in one
module; a view and a transpose alone are a split and a crossing already) and replaces it, when that takes fewer
boxes, by its canonical form: a view into the finest axes the run moves (its *atoms*), one crossing of the atoms,
and a view merging them into the run's output.  Each of the three is
left out when it does nothing.  The run's output value keeps its id, so what reads it is untouched; a run that ends
where it began (a transpose undone) is no box, and its readers read its input.

Atoms are found by following the run's reshapes on lists of atoms (a reshape whose cut falls inside an atom splits
that atom, everywhere it occurs); a run whose reshapes do not line up this way is kept as it is.  An atom is drawn
with the name of the output axis, else the input axis, else an intermediate axis it is exactly; an atom with no
such axis keeps the run as it is, and so does a run passing a wire of size 1 that is not a unit wire (``1``): the
batch traced at 1 would be dropped by the split and made again, unconnected to the input's, by the merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ncd.ir.axes import Axis, Segment
from ncd.ir.diagram import Box
from ncd.prims.opaque import ViewOp
from ncd.prims.structure import TransposeOp
from ncd.trace.naming import PRIME
from ncd.trace.wiring import Step

__all__ = ["fuse_movement"]


def _prim(step: Step) -> Any:
    return getattr(step.diagram, "prim", None)


def _movement(step: Step) -> bool:
    prim = _prim(step)
    return type(step.diagram) is Box and isinstance(prim, (ViewOp, TransposeOp)) and len(step.ins) == 1 \
        and len(step.outs) == 1


def fuse_movement(steps: list[Step], outputs: Sequence[int], segs: dict[int, Segment], new_value: Any) -> list[Step]:
    """``steps`` with each run of views and transposes that can be drawn with fewer boxes drawn so
    (``new_value(segment)`` gives the id of a new value)."""
    readers: dict[int, list[int]] = {}
    for k, step in enumerate(steps):
        for v in step.ins:
            readers.setdefault(v, []).append(k)
    ends = set(outputs)

    def follower(k: int) -> int | None:
        """The step reading the only value of movement step ``k``, when it is the value's only reader and a movement
        step in the same module."""
        (v,) = steps[k].outs
        ks = readers.get(v, ())
        if v in ends or len(ks) != 1 or not _movement(steps[ks[0]]) or steps[ks[0]].stack != steps[k].stack:
            return None
        return ks[0]

    followed: set[int] = set()
    runs: list[list[int]] = []
    for k, step in enumerate(steps):
        if k in followed or not _movement(step):
            continue
        run = [k]
        nxt = follower(k)
        while nxt is not None:
            run.append(nxt)
            followed.add(nxt)
            nxt = follower(nxt)
        if len(run) > 2 or (len(run) == 2 and type(_prim(steps[run[0]])) is type(_prim(steps[run[1]]))):
            runs.append(run)  # (a view and a transpose: a split and a crossing already)
    if not runs:
        return steps
    replaced: dict[int, list[Step]] = {}
    dropped: set[int] = set()
    same: dict[int, int] = {}  # the output of a run that ends where it began -> its input
    known: dict[tuple[Any, ...], list[tuple[Box, Segment]] | None] = {}  # repeated layers move their wires alike
    for run in runs:
        chain = [steps[k] for k in run]
        key = (segs[chain[0].ins[0]],) + tuple((_prim(step), segs[step.outs[0]]) for step in chain)
        if key in known:  # a box of its own for each run (what symbolize notes is per box)
            new = None if known[key] is None else [(Box(replace(box.prim)), seg) for box, seg in known[key] or ()]
        else:
            new = known.setdefault(key, _canonical(chain, segs))
        start = same.get(chain[0].ins[0], chain[0].ins[0])  # (runs are met in order: an earlier run's is known)
        if new == [] and chain[-1].outs[0] not in ends and segs[start] == segs[chain[-1].outs[0]]:
            same[chain[-1].outs[0]] = start
            dropped.update(run)
            continue
        if not new or len(new) >= len(run):
            continue
        first = chain[0]
        vids = [new_value(seg) for _, seg in new[:-1]] + [chain[-1].outs[0]]
        ins = [start] + vids[:-1]
        replaced[run[0]] = [Step(box, [i], [o], first.stack) for (box, _), i, o in zip(new, ins, vids)]
        dropped.update(run[1:])
    if not replaced and not dropped:
        return steps
    out: list[Step] = []
    for k, step in enumerate(steps):
        if k in replaced:
            out.extend(replaced[k])
        elif k not in dropped:
            out.append(step if not same or not same.keys() & set(step.ins) else
                       replace(step, ins=[same.get(v, v) for v in step.ins]))
    return out


def _canonical(chain: list[Step], segs: dict[int, Segment]) -> list[tuple[Box, Segment]] | None:
    """The boxes (with their outputs) of a split, a crossing and a merge doing what ``chain`` does (none: it ends
    where it began), or None."""
    source = segs[chain[0].ins[0]]
    target = segs[chain[-1].outs[0]]
    passed = [source] + [segs[step.outs[0]] for step in chain]
    if any(not a.size.is_Integer or (a.size == 1 and a.name.rstrip(PRIME) != "1") for seg in passed for a in seg.axes):
        return None  # a wire of size 1 with a name (the batch traced at 1) is not followed through a view: kept
    sizes: dict[int, int] = {}  # atom -> size
    parts: dict[int, list[int]] = {}  # an atom split later -> its two parts (outer, inner)
    counter = [0]

    def atom(size: int) -> list[int]:
        if size == 1:
            return []
        counter[0] += 1
        sizes[counter[0]] = size
        return [counter[0]]

    def expand(atoms: list[int]) -> list[int]:
        out: list[int] = []
        for a in atoms:
            out.extend(expand(parts[a]) if a in parts else [a])
        return out

    named: list[tuple[list[int], Axis]] = []  # every axis the chain passes through, with its atoms (when first seen)
    axes: list[list[int]] = []
    for a in source.axes:
        axes.append(atom(int(a.size)))
        named.append((axes[-1], a))
    inputs = [list(x) for x in axes]
    for step in chain:
        prim = _prim(step)
        out_seg = segs[step.outs[0]]
        if isinstance(prim, TransposeOp):
            axes = [axes[k] for k in prim.perm]
        else:
            flat = expand([x for ax in axes for x in ax])
            new_axes: list[list[int]] = []
            for a in out_seg.axes:
                need = int(a.size)
                taken: list[int] = []
                while need > 1:
                    if not flat:
                        return None
                    x = flat[0]
                    if need % sizes[x] == 0:
                        taken.append(flat.pop(0))
                        need //= sizes[x]
                    elif sizes[x] % need == 0:  # the cut falls inside the atom: split it, outer part first
                        outer, inner = atom(need)[0], atom(sizes[x] // need)[0]
                        parts[x] = [outer, inner]
                        flat[0] = inner
                        taken.append(outer)
                        need = 1
                    else:
                        return None
                new_axes.append(taken)
            if flat:
                return None
            axes = new_axes
        for ax, a in zip(axes, out_seg.axes):
            named.append((list(ax), a))
    ins = expand([x for ax in inputs for x in ax])
    outs = [expand(ax) for ax in axes]
    order = [x for ax in outs for x in ax]
    if sorted(order) != sorted(ins):
        return None
    names: dict[int, Axis] = {}
    for atoms, a in [(o, a) for o, a in zip(outs, target.axes)] + [(expand(x), a) for x, a in named]:
        if len(atoms) == 1 and atoms[0] not in names:
            names[atoms[0]] = a
    if any(x not in names for x in ins):
        return None
    split = source.with_axes(names[x] for x in ins)
    crossed = split.with_axes(names[x] for x in order)
    if len(set(split.names)) != len(split.names) or any(not names[x].size.is_Integer or int(names[x].size) != sizes[x]
                                                        for x in ins):
        return None
    boxes: list[tuple[Box, Segment]] = []
    if not split.same(source):
        boxes.append((Box(ViewOp(source, split)), split))
    if order != ins:
        perm = tuple(ins.index(x) for x in order)
        boxes.append((Box(TransposeOp(split, perm)), crossed))
    if not crossed.same(target):
        boxes.append((Box(ViewOp(crossed, target)), target))
    return boxes
