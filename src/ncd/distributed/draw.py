"""Drawing a sharded diagram: each wire's label carries the mesh axis it is split over (``t`` split over
``tp`` is drawn ``t̄_tp``), and a tag marks every collective where a wire's label changes
(``AR`` all-reduce, ``AG`` all-gather, ``RS`` reduce-scatter, ``A2A`` all-to-all; ``∂`` when it runs
only in the backward pass).  ``ncd.draw`` consults :func:`wire_notes` for every diagram.

>>> import ncd
>>> from ncd.distributed.verify import gpt2_block
>>> sharded = ncd.shard(gpt2_block(), ncd.Mesh(tp=8), {"h": "tp", "f": "tp"})
>>> sorted({glyph for _, glyph in notes(sharded).values() if glyph})
['AR_tp', '∂AR_tp']
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ncd.distributed.derive import PARTIAL, Wire, derive
from ncd.distributed.shard import sharding_of
from ncd.ir.diagram import Diagram

__all__ = ["wire_notes", "notes", "GLYPHS"]

GLYPHS = {"all_reduce": "AR", "all_gather": "AG", "reduce_scatter": "RS", "all_to_all": "A2A"}


def _subscripts(wires: list[Wire]) -> tuple[dict[str, str], ...]:
    return tuple({s: m for m, s in w.place if s != PARTIAL} for w in wires)


def notes(sharded: Diagram) -> dict[tuple[str, int], tuple[tuple[dict[str, str], ...], str | None]]:
    """Gap notes keyed ``("after" | "before", id(node))`` for the renderer (see ``Layout.notes``)."""
    derivation = derive(sharded)
    by_path: dict[tuple[tuple[int, ...], str], list[str]] = {}
    for c in derivation.collectives:
        if not c.activation:
            continue
        side = "after" if c.reason.startswith("partial sums") else "before"
        if c.phase == "forward" or c.reason.startswith("gradient partial sums of a replicated"):
            text = ("" if c.phase == "forward" else "∂") + f"{GLYPHS[c.kind]}_{c.mesh_axis}"
            if text not in by_path.setdefault((c.path, side), []):
                by_path[(c.path, side)].append(text)
    result: dict[tuple[str, int], tuple[tuple[dict[str, str], ...], str | None]] = {
        ("after", key): (_subscripts(wires), None) for key, wires in derivation.outputs_of.items()}
    # a tag goes in the gap before (after) the outermost node that begins (ends) with the box's input (output)
    for plan in derivation.boxes:
        for side, table, wires in (("after", derivation.outputs_of, plan.resolved), ("before", derivation.inputs_of, plan.arrived)):
            tags = by_path.get((plan.path, side))
            if not tags:
                continue
            key = _outermost(derivation, table, wires, plan.path)
            subscripts = _subscripts(plan.outputs if side == "after" else plan.arrived)  # left of the tag: before it
            result[(side, key)] = (subscripts, " ".join(tags))
    return result


def _outermost(derivation: Any, table: dict[int, list[Wire]], wires: list[Wire], path: tuple[int, ...]) -> int:
    """The outermost box, weave or block holding the box whose input (output) is the same tensor.

    Sequential and parallel composites are skipped: a wrapped drawing regroups them into rows and steps.
    """
    srcs = tuple(w.src for w in wires)
    found = [(len(derivation.path_of[k]), k) for k, ws in table.items()
             if tuple(w.src for w in ws) == srcs and path[: len(derivation.path_of[k])] == derivation.path_of[k]]
    steps = [f for f in found if f[1] not in derivation.composites]
    return min(steps or found)[1]


def wire_notes(diagram: Diagram, style: Any) -> Any:
    """``style`` with the notes of a sharded diagram (unchanged for any other diagram)."""
    if sharding_of(diagram) is None:
        return style
    return dataclasses.replace(style, extra=tuple(style.extra) + (("wire_notes", notes(diagram)),))
