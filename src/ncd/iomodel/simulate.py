"""A loop simulator: execute a schedule's loop nest and count every element moved.

Independent of the closed forms of :mod:`ncd.iomodel.costs`: it walks every iteration of
the nest with real index ranges, keeps in each unit (one per group) the tile of each array
currently resident, loads an input tile when the tile needed changes, and writes an output
tile when it is replaced or at the end; an output tile visited more than once holds a partial
result, so it is read back on each visit (with its online-softmax state), as FlashAttention-1
does.  A step whose (query, key) ranges are wholly masked by a causal mask (sliding window
included) is skipped.  Sizes must be numbers.

>>> import ncd
>>> from ncd.iomodel.program import flatten
>>> from ncd.iomodel.schedule import Schedule
>>> h = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
>>> p = flatten(ncd.Einsum("a b, b c -> a c"), {"a": 64, "b": 48, "c": 32})
>>> simulate(p, Schedule.make(h, p, {"smem": {"a": 16, "c": 8}}, None), "smem")
20480
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

from ncd.errors import SizeError
from ncd.iomodel.costs import state_axes, used_inputs, written_outputs
from ncd.iomodel.program import Array, Program
from ncd.iomodel.schedule import Schedule

__all__ = ["simulate"]


def _int(value: object, what: str) -> int:
    try:
        return int(cast(Any, value))
    except TypeError:
        raise SizeError(f"the loop simulator needs numbers: {what} is {value}") from None


def simulate(program: Program, schedule: Schedule, level: str) -> int:
    """Elements moved across the boundary above ``level`` when the loop nest runs."""
    loops = schedule.loops(level)
    counts = [_int(lp.count, f"the count of loop {lp.axis}") for lp in loops]
    chunks = [_int(lp.chunk, f"the chunk of {lp.axis}") for lp in loops]
    full: dict[str, int] = {}
    for arr in [*used_inputs(program), *written_outputs(program)]:
        for n, s in arr.axes:
            full[n] = _int(s, f"axis {n}")
    extent = dict(full)
    for lp, c in zip(loops, chunks):
        extent[lp.axis] = c  # the innermost loop on an axis sets the tile extent
    masks = program.masks()
    groups = [i for i, lp in enumerate(loops) if lp.kind == "group"]
    inputs, outputs = used_inputs(program), written_outputs(program)

    def steps() -> Iterator[tuple[tuple[int, ...], dict[str, tuple[int, int]]]]:
        """Every step of the nest that is not wholly masked: its unit (group indices) and ranges."""
        for index in itertools.product(*(range(c) for c in counts)):
            r = ranges(index)
            if needed(r):
                yield tuple(index[i] for i in groups), r

    def ranges(index: tuple[int, ...]) -> dict[str, tuple[int, int]]:
        start = dict.fromkeys(full, 0)
        for i, lp in enumerate(loops):
            start[lp.axis] += index[i] * chunks[i]
        return {n: (start[n], start[n] + extent[n]) for n in full}

    def needed(r: dict[str, tuple[int, int]]) -> bool:
        return all(m.keeps(r[m.query], r[m.key]) for m in masks if m.query in r and m.key in r)

    def tile_id(arr: Array, r: dict[str, tuple[int, int]]) -> tuple[int, ...]:
        return tuple(r[n][0] for n in arr.names)

    def size(names: tuple[str, ...]) -> int:
        return math.prod(extent[n] for n in names)

    # pass 1: how many times each output tile becomes resident
    periods: Counter[tuple[object, ...]] = Counter()
    resident: dict[tuple[object, ...], tuple[int, ...]] = {}
    for unit, r in steps():
        for arr in outputs:
            t = tile_id(arr, r)
            if resident.get((unit, arr.uid)) != t:
                resident[(unit, arr.uid)] = t
                periods[(arr.uid, t)] += 1

    # an array whose tiles are resident more than once holds partial results: like FlashAttention-1,
    # it lives initialised in the parent level and every visit of every tile reads it back
    spilled = {uid for (uid, _), n in periods.items() if n > 1}
    moved = 0
    held: dict[tuple[object, ...], tuple[int, ...]] = {}
    for unit, r in steps():
        for arr in inputs:
            t = tile_id(arr, r)
            if held.get((unit, arr.key())) != t:
                held[(unit, arr.key())] = t
                moved += size(arr.names)
        for arr in outputs:
            t = tile_id(arr, r)
            old = held.get((unit, arr.uid))
            if old != t:
                state = state_axes(program, arr)
                extra = 2 * size(tuple(n for n, _ in state)) if state is not None else 0
                if old is not None:
                    moved += size(arr.names) + (extra if arr.uid in spilled else 0)
                held[(unit, arr.uid)] = t
                if arr.uid in spilled:
                    moved += size(arr.names) + extra
    for (_unit, uid) in held:
        out = next((a for a in outputs if a.uid == uid), None)
        if out is not None:
            state = state_axes(program, out)
            extra = 2 * size(tuple(n for n, _ in state)) if state is not None else 0
            moved += size(out.names) + (extra if uid in spilled else 0)
    return moved
