"""Runs of repeated blocks in a sequence, drawn once: the columns :meth:`~ncd.render.layout.Layout.groups` lays out.

Two kinds of run are folded (``Style.fold``):

* neighbouring blocks that are equal (same name, same contents) are one column with a count, drawn in parentheses
  with ``×n`` (:meth:`~ncd.render.layout.Layout.folded`);
* neighbouring blocks whose contents are equal and whose names differ only by a consecutive index (``layers.0``,
  ``layers.1``, … as a Python loop numbers them) are one :class:`~ncd.ir.diagram.Repeat` of their family's block
  (``layers.i``, ``i = 0 … n−1``): the node :func:`ncd.trace` makes of a model's numbered layers
  (:mod:`ncd.trace.wiring_fold`), so both are drawn alike;
* a pattern of up to :data:`PERIOD` parts holding no block, repeated one after another for at least
  :data:`LONG_RUN` parts, with a learned box that has no name (``Linear("m -> m") >> ReLU()`` written in a loop) is
  one column with a count, as equal blocks are.  A shorter run takes a few rows and is drawn box by box, as written.

Only the drawing changes: the diagram keeps its parts.

>>> import ncd
>>> d = ncd.Identity.of("b m")
>>> for k in range(3):
...     d = d >> (ncd.Linear("m -> m") >> ncd.ReLU()).block(f"layers.{k}")
>>> [(type(unweave(node)[0]).__name__, count) for node, count in fold_runs(d.parts)]
[('Repeat', 1)]
>>> r = unweave(fold_runs(d.parts)[0][0])[0]
>>> r.body.name, r.var, int(r.start), int(r.stop)
('layers.i', 'i', 0, 3)
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

import sympy

from ncd.errors import NCDError
from ncd.ir.diagram import Block, Box, Diagram, Repeat, Weave, unweave
from ncd.render.generic import family, family_indices

__all__ = ["fold_runs"]


def fold_runs(parts: Sequence[Diagram]) -> list[tuple[Diagram, int]]:
    """The columns of a sequence's ``parts``: runs of equal blocks (woven or not) as one block with a count, runs of
    numbered blocks with equal contents as one repetition (count 1); every other part alone."""
    groups: list[tuple[Diagram, int]] = []
    k = 0
    while k < len(parts):
        part = parts[k]
        core = unweave(part)[0]
        if not isinstance(core, Block):
            p, n = _periodic_run(parts, k)
            if n > 1:
                groups.append((part if p == 1 else functools.reduce(operator.rshift, parts[k:k + p]), n))
                k += p * n
            else:
                groups.append((part, 1))
                k += 1
            continue
        j = k + 1
        while j < len(parts) and parts[j] == part:
            j += 1
        if j - k > 1:
            groups.append((part, j - k))
            k = j
            continue
        j = _numbered_run(parts, k)
        repetition = _repetition(parts[k:j]) if j - k > 1 else None
        if repetition is not None:
            groups.append((repetition, 1))
        else:
            groups += [(p, 1) for p in parts[k:j]]
        k = j
    return groups


#: the longest unnamed pattern of parts a run repeats (``Linear >> LayerNorm >> ReLU``: 3)
PERIOD = 8
#: the fewest parts an unnamed run folds: a shorter one takes a few rows drawn as written (seven ``Linear("m -> m") >>
#: ReLU()``, 14 parts: three rows of a column), and a hand-written handful of layers stays as its author wrote it
LONG_RUN = 16


def _periodic_run(parts: Sequence[Diagram], k: int) -> tuple[int, int]:
    """``(p, n)``: the parts from ``k`` are ``n`` repetitions of the ``p`` parts from ``k`` (smallest ``p``,
    most ``n``, ``p·n`` at least :data:`LONG_RUN`), when those ``p`` hold no block and some learned box has no name
    (``Linear("m -> m")`` written in a loop: an imported model's learned boxes are named by their modules, so they
    never repeat); else ``(1, 1)``."""
    best = (1, 1)
    for p in range(1, min(PERIOD, (len(parts) - k) // 2) + 1):
        pattern = parts[k:k + p]
        if p > 1 and pattern[-1] == pattern[0] and all(a == b for a, b in zip(pattern, pattern[1:])):
            break  # (a run of one part: p = 1 found it)
        n = 1
        while k + p * (n + 1) <= len(parts) and all(parts[k + p * n + j] == pattern[j] for j in range(p)):
            n += 1
        if n > 1 and _unnamed_learned(pattern):
            best = (p, n) if p * n >= LONG_RUN else best
            break
    return best


def _unnamed_learned(pattern: Sequence[Diagram]) -> bool:
    """Whether ``pattern`` holds no block and some learned box that has no name."""
    found = False
    for part in pattern:
        for node in part.walk():
            if isinstance(node, (Block, Repeat)):
                return False
            if isinstance(node, Box) and node.learned and node.label is None:
                found = True
    return found


def _numbered_run(parts: Sequence[Diagram], k: int) -> int:
    """The end of the run from ``parts[k]`` (a block, woven or not) of blocks woven alike with its contents and
    meta, named in its family with the next index each (``layers.3``, ``layers.4``): ``k + 1`` when none follows."""
    first, weaves = unweave(parts[k])
    assert isinstance(first, Block)
    fam = family(first.name)
    if fam == first.name:  # (no index in the name)
        return k + 1
    j = k + 1
    while j < len(parts):
        core, others = unweave(parts[j])
        if (not isinstance(core, Block) or family(core.name) != fam or core.meta != first.meta
                or not _woven_alike(weaves, others) or core.body != first.body):
            break
        j += 1
    while j - k > 1:
        blocks = [unweave(p)[0] for p in parts[k:j]]
        indices = family_indices(blocks)  # type: ignore[arg-type]
        if indices is not None and indices == list(range(indices[0], indices[0] + len(indices))):
            return j
        j = k + 1 + _consecutive(indices) if indices is not None else k + 1
    return k + 1


def _consecutive(indices: list[int]) -> int:
    """How many of ``indices`` after the first go on from it one by one."""
    n = 0
    while n + 1 < len(indices) and indices[n + 1] == indices[0] + n + 1:
        n += 1
    return n


def _woven_alike(a: Sequence[Weave], b: Sequence[Weave]) -> bool:
    """Whether two chains of weaves (outermost first) broadcast over the same axes at the same places."""
    return len(a) == len(b) and all((x.axis, x.dom_pos, x.cod_pos) == (y.axis, y.dom_pos, y.cod_pos)
                                    for x, y in zip(a, b))


def _repetition(run: Sequence[Diagram]) -> Diagram | None:
    """The repetition ``run`` (numbered blocks with equal contents) is drawn as, kept for the run's parts (a page
    lays each sequence out more than once, and its columns are memoised by node); ``None`` when no repetition
    holds them."""
    key = tuple(id(p) for p in run)
    kept = _KEPT.get(key)
    if kept is not None and all(a is b for a, b in zip(kept[0], run)):
        return kept[1]
    first, weaves = unweave(run[0])
    assert isinstance(first, Block)
    indices = family_indices([unweave(p)[0] for p in run])  # type: ignore[misc]
    assert indices is not None
    name = family(first.name)
    node: Diagram | None
    try:
        node = Repeat(Block(first.body, name, first.meta), "i", sympy.Integer(indices[0]),
                      sympy.Integer(indices[-1] + 1), name)
        for w in reversed(weaves):
            node = Weave(node, w.axis, w.dom_pos, w.cod_pos)
    except NCDError:
        node = None
    if len(_KEPT) > 10_000:
        _KEPT.clear()
    _KEPT[key] = (tuple(run), node)
    return node


#: the repetition drawn for each run of numbered blocks (by its parts' ids, the parts kept to tell a reused id)
_KEPT: dict[tuple[int, ...], tuple[tuple[Diagram, ...], Diagram | None]] = {}
