"""Runs of pure axis plumbing drawn as at most a split, a crossing and a merge.

A model often moves a tensor's axes through several reshapes and transposes in a row with no arithmetic between
(``nn.MultiheadAttention``: ``view(t, b*h, k) -> transpose(0, 1) -> view(b, h, t, k)``).  Each call converts to its own
box (a view ``▮`` or a crossing), and the chain passes through wires that mean nothing to a reader (``b*h``).  In the
paper's notation the whole run is a split of wires, a crossing, and a merge of wires.

:func:`fuse_movement` finds each run of views and transposes whose intermediate values have one reader each (in one
module; a view and a transpose alone are a split and a crossing already) and replaces it, when that takes fewer
boxes, by its canonical form: a view into the finest axes the run moves (its *atoms*), one crossing of the atoms,
and a view merging them into the run's output.  Each of the three is
left out when it does nothing; a run of reshapes alone (no crossing) is one view from its input to its output.  The
run's output value keeps its id, so what reads it is untouched; a run that ends where it began (a transpose undone,
``unsqueeze`` then a reshape back) is no box, and its readers read its input.

Atoms are found by following the run's reshapes on lists of atoms (a reshape whose cut falls inside an atom splits
that atom, everywhere it occurs); a run whose reshapes do not line up this way is kept as it is.  An atom is drawn
with the name of the output axis, else the input axis, else an intermediate axis it is exactly; an atom with no
such axis keeps the run as it is, and so does a run passing a wire of size 1 that is not a unit wire (``1``): the
batch traced at 1 would be dropped by the split and made again, unconnected to the input's, by the merge.

A learned map acting on the last wire alone (a ``Linear``) between two such runs commutes with them when it keeps
its wire whole (:func:`_through_linear`): it is moved after both runs (or before), and the runs fuse into one.
``nn.MultiheadAttention``'s output projection ``transpose -> view(p*b, h*k) -> Linear -> view(p, b, m) -> transpose``
is then a crossing and a merge ``h k -> m`` before the Linear on ``b p m``, with no ``p*b`` wire.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.compose import fit
from ncd.ir.diagram import Box, Diagram
from ncd.ir.weave import Weave
from ncd.prims.linear import LinearOp
from ncd.prims.opaque import ViewOp
from ncd.prims.structure import TransposeOp
from ncd.trace.naming import PRIME
from ncd.trace.plumbing_parts import slice_parts, step_index
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
    steps = _through_linear(steps, outputs, segs, new_value)
    steps = slice_parts(steps, outputs, segs, new_value, _movement, _canonical)
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
            reshaped = _reshaped(chain, segs)
            new = known.setdefault(key, _canonical(chain, segs) if reshaped is None else reshaped)
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


def _reshaped(chain: list[Step], segs: Mapping[int, Segment]) -> list[tuple[Box, Segment]] | None:
    """A run of views alone (no crossing) as one view from its input to its output, or none when it ends where it
    began: reshapes in a row keep the entries in their order, so they compose to one reshape (exact by construction).
    None (:func:`_canonical` decides) for a run with a transpose or a wire :func:`_canonical` does not follow."""
    if any(isinstance(_prim(step), TransposeOp) for step in chain) or _unfollowed(chain, segs):
        return None
    source, target = segs[chain[0].ins[0]], segs[chain[-1].outs[0]]
    return [] if source.same(target) else [(Box(ViewOp(source, target)), target)]


def _unfollowed(chain: list[Step], segs: Mapping[int, Segment]) -> bool:
    """Whether ``chain`` passes a wire of size 1 with a name (the batch traced at 1) or a size not yet a number: such
    a run is not followed through a view, it is kept as it is."""
    passed = [segs[chain[0].ins[0]]] + [segs[step.outs[0]] for step in chain]
    return any(not a.size.is_Integer or (a.size == 1 and a.name.rstrip(PRIME) != "1") for seg in passed for a in seg.axes)


def _canonical(chain: list[Step], segs: Mapping[int, Segment]) -> list[tuple[Box, Segment]] | None:
    """The boxes (with their outputs) of a split, a crossing and a merge doing what ``chain`` does (none: it ends
    where it began), or None."""
    source = segs[chain[0].ins[0]]
    target = segs[chain[-1].outs[0]]
    if _unfollowed(chain, segs):
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


def _feature_map(step: Step, segs: Mapping[int, Segment]) -> Box | None:
    """The learned map (a :class:`LinearOp` box) that ``step`` applies to the last wire of its one input, woven over
    the others in order (each weave outside the map's own wires, as :func:`~ncd.ir.compose.fit` weaves it); None for
    any other step."""
    diagram: Diagram = step.diagram
    woven: list[Axis] = []
    while type(diagram) is Weave:
        if diagram.dom_pos != (0,) or diagram.cod_pos != (0,):
            return None
        woven.append(diagram.axis)
        diagram = diagram.inner
    if type(diagram) is not Box or not isinstance(diagram.prim, LinearOp) or len(diagram.dom) != 1 \
            or len(diagram.cod) != 1:
        return None
    v, w = segs[step.ins[0]], segs[step.outs[0]]
    if len(v.axes) != len(woven) + 1 or len(w.axes) != len(woven) + 1 or diagram.dom[0].axes != v.axes[-1:] \
            or diagram.cod[0].axes != w.axes[-1:] or any(not a.same(b) or not a.same(c)
                                                         for a, b, c in zip(woven, v.axes, w.axes)):
        return None
    return diagram


def _carried(chain: list[Step], segs: dict[int, Segment], at: int, axis: Axis, forward: bool) -> list[Segment] | None:
    """The segments ``chain`` passes through (its input's first) with the wire at ``at`` of its input (forward; of its
    output backward) followed as a whole through every step and replaced by ``axis``; None when a step cuts or merges
    that wire."""
    passed = [segs[chain[0].ins[0]]] + [segs[step.outs[0]] for step in chain]
    where = [0] * len(passed)
    order = range(len(chain)) if forward else range(len(chain) - 1, -1, -1)
    where[0 if forward else len(chain)] = at
    for k in order:
        src, dst = (k, k + 1) if forward else (k + 1, k)
        pos, have, want = where[src], passed[src], passed[dst]
        prim = _prim(chain[k])
        if isinstance(prim, TransposeOp):
            where[dst] = prim.perm.index(pos) if forward else prim.perm[pos]
            continue
        size, before = int(have.axes[pos].size), _product(have.axes[:pos])
        found = [j for j in range(len(want.axes)) if int(want.axes[j].size) == size and _product(want.axes[:j]) == before]
        if size == 1 or not found:
            return None
        where[dst] = found[0]
    out: list[Segment] = []
    for seg, pos in zip(passed, where):
        axes = seg.axes[:pos] + (axis,) + seg.axes[pos + 1:]
        if any(a.name == axis.name for a in seg.axes[:pos] + seg.axes[pos + 1:]):
            return None
        out.append(seg.with_axes(axes))
    return out


def _product(axes: Sequence[Axis]) -> int:
    out = 1
    for a in axes:
        out *= int(a.size)
    return out


def _through_linear(steps: list[Step], outputs: Sequence[int], segs: dict[int, Segment], new_value: Any) -> list[Step]:
    """``steps`` with each learned map on the last wire (:func:`_feature_map`) that sits between two runs of views and
    transposes moved before or after both, when the two runs then fuse into fewer boxes.

    Such a map acts on that wire alone and on every position of the others alike, so it commutes with any moving of the
    other wires that keeps its wire whole: ``nn.MultiheadAttention``'s output projection ``transpose -> view(p*b, h*k) ->
    Linear -> view(p, b, m) -> transpose`` (4 boxes of plumbing) is a crossing and a merge ``h k -> m`` before the
    Linear on ``b p m``."""
    readers, made = step_index(steps)
    moves = [_movement(step) for step in steps]
    ends = set(outputs)

    def only(v: int) -> int | None:
        ks = readers.get(v, ())
        return ks[0] if v not in ends and len(ks) == 1 else None

    replaced: dict[int, list[Step]] = {}
    dropped: set[int] = set()
    known: dict[tuple[Any, ...], list[tuple[Box, Segment]] | None] = {}  # repeated layers move their wires alike
    for k, step in enumerate(steps):
        if moves[k] or len(step.ins) != 1 or len(step.outs) != 1 or not moves[made.get(step.ins[0], k)]:
            continue
        nxt = only(step.outs[0])
        if nxt is None or not moves[nxt]:
            continue
        inner = _feature_map(step, segs)
        if inner is None:
            continue
        before: list[int] = []  # the run of movement steps making the map's input (in one module)
        v = step.ins[0]
        while v in made and moves[made[v]] and only(v) is not None and made[v] not in dropped \
                and steps[made[v]].stack == steps[made[step.ins[0]]].stack:
            before.insert(0, made[v])
            v = steps[made[v]].ins[0]
        if not before:
            continue
        after: list[int] = []  # the run reading its output (in the same module)
        w = step.outs[0]
        nxt = only(w)
        while nxt is not None and moves[nxt] and steps[nxt].stack == steps[before[-1]].stack:
            after.append(nxt)
            nxt = only(steps[nxt].outs[0])
        if not after:
            continue
        found = _commuted([steps[j] for j in before], step, inner, [steps[j] for j in after], segs, known)
        if found is None or len(found[0]) >= len(before) + len(after) + 1:
            continue
        new, last = found
        start, end = steps[before[0]].ins[0], steps[after[-1]].outs[0]
        vids = [new_value(d.cod[0]) for d in new[:-1]] + [end]
        where = len(new) - 1 if last else 0
        replaced[k] = [Step(d, [i], [o], step.stack if j == where else steps[before[0]].stack)
                       for j, (d, i, o) in enumerate(zip(new, [start] + vids[:-1], vids))]
        dropped.update(before + after)
    if not replaced:
        return steps
    return [s for k, step in enumerate(steps) if k not in dropped for s in replaced.get(k, [step])]


def _commuted(before: list[Step], step: Step, inner: Box, after: list[Step], segs: dict[int, Segment],
              known: dict[tuple[Any, ...], list[tuple[Box, Segment]] | None]) -> tuple[list[Diagram], bool] | None:
    """The diagrams doing what ``before``, the map ``step`` and ``after`` do, with the map moved after both runs (the
    flag: True) or before them, and the runs fused (:func:`_canonical`); None when neither can."""
    v, w = segs[step.ins[0]], segs[step.outs[0]]
    options: list[tuple[list[Diagram], bool]] = []
    late = _carried(after, segs, len(w.axes) - 1, v.axes[-1], True)  # the map last: its input wire through ``after``
    if late is not None and late[-1].axes[-1] is v.axes[-1]:
        options.append((_fused(before, after, late, segs, inner, True, known), True))
    early = _carried(before, segs, len(v.axes) - 1, w.axes[-1], False)  # the map first: its output wire through ``before``
    if early is not None and early[0].axes[-1] is w.axes[-1]:
        options.append((_fused(before, after, early, segs, inner, False, known), False))
    options = [o for o in options if o[0]]
    return min(options, key=lambda o: len(o[0])) if options else None


def _fused(before: list[Step], after: list[Step], moved: list[Segment], segs: dict[int, Segment], inner: Box,
           last: bool, known: dict[tuple[Any, ...], list[tuple[Box, Segment]] | None]) -> list[Diagram]:
    """The map ``inner`` (woven) after (``last``) or before the two runs fused into one, the run it moves through passing
    the segments ``moved`` (its input's first); empty when that fails (``known``: the fused runs met before)."""
    fake = [-1 - j for j in range(len(moved))]  # ids for the moved run's values (real ids are positive)
    local = ChainMap(dict(zip(fake, moved)), segs)
    run = after if last else before
    ids = [before[-1].outs[0]] + fake[1:] if last else fake[:-1] + [after[0].ins[0]]
    moved_run = [Step(s.diagram, [i], [o], s.stack) for s, i, o in zip(run, ids[:-1], ids[1:])]
    chain = before + moved_run if last else moved_run + after
    key = (last, local[chain[0].ins[0]]) + tuple((_prim(step), local[step.outs[0]]) for step in chain)
    try:
        if key in known:  # a box of its own for each run (what symbolize notes is per box)
            canon = None if known[key] is None else [(Box(replace(box.prim)), seg) for box, seg in known[key] or ()]
        else:
            canon = known.setdefault(key, _canonical(chain, local))
        mapped, mapping = fit(inner, Type((moved[-1] if last else segs[before[0].ins[0]],)))
    except Exception:  # noqa: BLE001 - not fused
        return []
    if canon is None or mapping:
        return []
    boxes: list[Diagram] = [box for box, _ in canon]
    if last:
        return boxes + [mapped] if mapped.cod[0].same(segs[after[-1].outs[0]]) else []
    return [mapped] + boxes if mapped.cod[0].same(moved[0]) else []
