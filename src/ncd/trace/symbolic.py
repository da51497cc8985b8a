"""Sizes as symbols: the batch and sequence axes of a traced diagram drawn as ``b``, ``t`` (traced values as defaults).

:func:`symbolize` rebuilds the diagram with every axis named like an input's batch or
sequence axis (``b``, ``t``, and the primed ``tʹ`` of attention keys) sized by a symbol
of that name; ``view`` boxes that merge such axes get the product, slices that keep the
first ``t`` rows of a table stop at ``t``.  The traced sizes become the block's defaults,
so ``d.to_torch(t=12)`` lowers at another length where the boxes allow.

A wire named like none of the inputs' axes may still be sized by them: a merge the model made (``reshape(b*t, m)``,
attention scores read as ``(b*h, t, tʹ)``) named ``q`` is ``b*t`` wherever ``q`` goes, and the positions a
cumulative sum counts (``mask.cumsum(1)``) range up to ``t + 1`` in the boxes after it.  When a sequence's junction
no longer holds after a pass (one side sized by a symbol, the other by the number it has at the traced sizes), the
name (or the integer range of those wires) is followed as that expression on the next pass, until every junction
holds; a name the model also holds as a number (a parameter, a constant) is then one of the boxes fixed at the
traced sizes, and ``to_torch`` at other sizes checks the lowered module against the model
(:mod:`ncd.trace.other_sizes`).
"""

from __future__ import annotations

from typing import Any

from ncd.errors import NCDError
from ncd.ir.diagram import Diagram
from ncd.trace.symbolic_learn import _merged_sizes
from ncd.trace.symbolic_walk import PASSES, SIZED_BY_TRACE, _Walk

__all__ = ["symbolize", "SIZED_BY_TRACE"]


#: (name, traced size) -> its size in symbols; traced range -> the range in symbols (a box woven over the axes that
#: range is counted along sees none of them: ranges are followed by value)
def symbolize(body: Diagram, sizes: dict[str, int], merges: dict[str, list[tuple[str, int]]] | None = None,
              found: set[Any] | None = None, where: dict[int, str] | None = None,
              ) -> tuple[Diagram, list[tuple[tuple[str, ...], str]]]:
    """``body`` with the axes named in ``sizes`` (or their primes) of that size made symbols; and the boxes whose
    stored tensors or calls then depend on a symbol (they hold at the traced sizes only): the sizes each depends on
    and the box.  Names and ranges sized by those axes under other names are followed (the module's docstring).

    A pass that fails at a junction is not thrown away: the next one keeps every value it rebuilt whose wires have
    none of the names or ranges just learned (a value is a function of the original and of the followed names and
    ranges its wires have), and rebuilds only the others and what the failed pass did not reach.  A box refusing its
    traced sizes (a causal convolution's output ``t:11`` derived as ``t + 3``, a chunk pad's) whose names only the
    values rebuilt for that box hold does not fail the pass: they are followed at once, those values rebuilt, and the
    pass goes on (it counts as a pass; the result is the passes' own: Mamba's and Gated DeltaNet's 3 passes are 1-2).

    Wires a view only renames from or to a symbol's are followed as it too (Mamba's tokens ``y̅`` cut back from the
    convolution's ``t + 3``, its scan state's batch ``z``; a ``(b,)`` input of positions named ``y̅``); a name is shared
    by the wires of its size, so a traced size equal to another by chance (longformer's 2 chunks at batch 2) can make
    the junctions fail: then the passes are made again without them, from the last pass before a view first renamed,
    keeping every value the passes with them rebuilt that no rename and no name or range learned since reaches.

    ``merges``: the wires the model's reshapes merged (name -> the wires and sizes merged, the converter's record);
    one holding the batch or positions is followed as their product from the first pass (``nn.MultiheadAttention``'s
    ``(b*h, t, k)`` read back as ``(t*b, m)``: the merge is ``t*b``, not the leading part of a wire of ``b*h``'s
    traced size).

    ``found`` (if given) gets every symbol of the sizes the passes met and made (a superset of the symbols of the
    result: its every wire, range and size is one of them), without a walk of the result.  ``where`` (if given): by
    the id of a primitive, where the model made what it holds, added to its ``fixed`` entry."""
    follow = _merged_sizes(merges, sizes) if merges else {}
    if found is None:
        found = set()
    walk = _Walk(body, sizes, True, follow, found)
    walk.where.update(where or {})
    saved: list[Any] = []  # the pass the walk was at before a view first renamed a wire, and the walk's state then
    again = None
    try:
        return _passes(walk, 0, saved)
    except NCDError:
        if not walk.renamed:  # no view renamed a wire: the passes without renames are these again, and fail alike
            raise
        again = _Walk(body, sizes, False, follow, found)
        again.where.update(where or {})
        start, state = saved  # the passes before it are the same without renames: they go on from there
        walk.hand_over(again, state)
    finally:  # the walk's nested functions refer to each other (a cycle): what they hold is freed now
        walk.close()
    walk = again
    try:
        return _passes(walk, start)
    finally:
        walk.close()


def _passes(walk: _Walk, start: int = 0, saved: list[Any] | None = None) -> tuple[Diagram, list[tuple[tuple[str, ...], str]]]:
    """Passes ``start`` .. :data:`PASSES` of ``walk`` (the last one's failure is raised); ``saved``: the pass and the
    walk's state before each pass while no view has renamed a wire."""
    n = start
    walk.saved = saved
    while True:
        if saved is not None and not walk.renamed:
            saved[:] = [n, walk.save()]
        walk.budget = PASSES - n  # (a lesson followed at once counts as a pass: the rest of the pass is the next)
        try:
            done = walk.run()
        except NCDError:
            if PASSES - walk.budget >= PASSES or not walk.learned[0] and not walk.learned[1]:
                raise
        else:  # an input's axis a view renames as a symbol's: one more pass with the input sized by it
            if PASSES - walk.budget >= PASSES or not walk.learns_anew():
                return done
        walk.follow_learned()
        n = PASSES - walk.budget + 1

