"""Side-by-side branches: a traced chain of one-branch steps drawn as the branches it interleaves.

A trace records a model's operations one at a time, so ``f @ g`` arrives as ``(f @ id) >> (id @ g)``: a
chain of steps each acting on a few wires while the others run past.  A hundred embeddings looked up
side by side (MarkupLM's XPath embeddings) then become two hundred steps, each carrying a hundred wires —
drawn in rows, hundreds of thousands of points tall.  By the interchange law the chain *is* the
branches side by side: :func:`gather` finds the runs of steps that each act within one branch (a *lane*:
the wires one step after another works on, or a wire a step brings in) and rewrites each run as the
parallel composition of its lanes' chains.  The diagram is the same one, drawn as the paper draws
independent branches; the result is checked to have the run's own input and output types.

Lanes of one shape then fold (:func:`fold_lanes`): a run of ``n`` neighbouring groups of lanes that are
drawn alike — the same boxes and wires, blocks of one list (``emb.3``, ``emb.4``) — is drawn once in
parentheses with ``×n``, its wires standing for ``n`` tensors each; the legend lists the blocks it stands
for (the family's index) so nothing is lost.

>>> import ncd
>>> from ncd.ir.diagram import Par
>>> x, m, k = ncd.Identity.of("b n"), ncd.Identity.of("b m"), ncd.Identity.of("b k")
>>> f, g, relu = x >> ncd.Linear("n -> m", name="f"), x >> ncd.Linear("n -> k", name="g"), m >> ncd.ReLU()
>>> chain = [f @ x, m @ g, relu @ k]            # as a trace records f @ g, then a ReLU after f
>>> gather(chain) == [Par.of(f >> relu, g)]
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Diagram, Identity, Par, Seq

__all__ = ["gather"]

#: the fewest steps and lanes a run needs before it is redrawn as lanes
MIN_STEPS, MIN_LANES = 3, 2


#: a step of a lane: a part brought in whole, or a part with the lane's wires running past it (above, below)
_Step = Diagram | tuple[list[Segment], Diagram, list[Segment]]


@dataclass
class _Lane:
    dom: list[Segment]
    wires: list[Segment]
    #: made into diagrams only when the run is kept (:meth:`diagram`): most runs tried are too short
    steps: list[_Step] = field(default_factory=list)

    def diagram(self) -> Diagram:
        if not self.steps:
            return Identity(Type(tuple(self.dom)))
        steps = [s if isinstance(s, Diagram) else Par.of(Identity(Type(tuple(s[0]))), s[1], Identity(Type(tuple(s[2]))))
                 for s in self.steps]
        return steps[0] if len(steps) == 1 else Seq.of(*steps)


def _live(step: Diagram) -> tuple[int, Diagram] | None:
    """The one part of ``step`` that is not wires running past, and the segment it starts at (``None``: a step
    acting on several parts, or on every wire)."""
    if not isinstance(step, Par):
        return None
    live = [k for k, p in enumerate(step.parts) if not isinstance(p, Identity)]
    if len(live) != 1:
        return None
    k = live[0]
    return sum(len(p.dom) for p in step.parts[:k]), step.parts[k]


def gather(steps: Sequence[Diagram], runs: dict[int, tuple[Diagram, list[Diagram]]] | None = None) -> list[Diagram]:
    """``steps`` (a chain) with each run of one-branch steps that interleaves ``MIN_LANES`` or more branches
    rewritten as those branches side by side (the same diagram: the interchange law); ``runs`` is given the
    steps each such drawing replaces, by its ``id`` (with the drawing, kept alive so that no other takes its id)."""
    out: list[Diagram] = []
    lives = [_live(step) for step in steps]  # each step's live part, found once: a run is tried from every step
    k = 0
    while k < len(steps):
        end, par = _run(steps, k, lives)
        if par is None:
            out.append(steps[k])
            k += 1
        else:
            if runs is not None:
                runs[id(par)] = (par, list(steps[k:end]))
            out.append(par)
            k = end
    return out


def _run(steps: Sequence[Diagram], start: int, lives: Sequence[tuple[int, Diagram] | None]) -> tuple[int, Diagram | None]:
    """The longest run of one-branch steps from ``start`` and its lanes side by side (``None``: not worth it);
    ``lives``: each step's :func:`_live`."""
    first = lives[start]
    if first is None or len(first[1].dom) > 1:  # a run starts within one wire (a step joining wires is no lane's)
        return start + 1, None
    dom = list(steps[start].dom)
    lanes = [_Lane([seg], [seg]) for seg in dom]
    k = start
    while k < len(steps):
        live = lives[k]
        if live is None or not _apply(lanes, *live):
            break
        k += 1
    busy = [lane for lane in lanes if lane.steps]
    if k - start < MIN_STEPS or len(busy) < MIN_LANES:
        return start + 1, None
    par = Par.of(*(lane.diagram() for lane in lanes))
    if par.dom != steps[start].dom or par.cod != steps[k - 1].cod:  # never silently another diagram
        return start + 1, None
    return k, par


def _apply(lanes: list[_Lane], offset: int, part: Diagram) -> bool:
    """Add ``part`` (acting on the segments from ``offset``) to the lane it works within; ``False`` when it works
    across lanes or brings a wire in inside a lane (the run ends before it)."""
    n_in, pos = len(part.dom), 0
    _merge_untouched(lanes, offset, n_in)
    for j, lane in enumerate(lanes):
        here = len(lane.wires)
        if n_in == 0 and pos == offset:  # a wire brought in between lanes: a lane of its own
            lanes.insert(j, _Lane([], list(part.cod), [part]))
            return True
        if n_in and pos <= offset and offset + n_in <= pos + here:
            before, after = lane.wires[:offset - pos], lane.wires[offset - pos + n_in:]
            lane.steps.append((before, part, after))
            lane.wires = before + list(part.cod) + after
            return True
        if pos + here > offset:
            return False
        pos += here
    if n_in == 0 and pos == offset:
        lanes.append(_Lane([], list(part.cod), [part]))
        return True
    return False


def _merge_untouched(lanes: list[_Lane], offset: int, n_in: int) -> None:
    """Wires no step has worked on yet, taken together by a step, become one lane."""
    if n_in < 2:
        return
    pos, covered = 0, []
    for j, lane in enumerate(lanes):
        here = len(lane.wires)
        if pos + here > offset and pos < offset + n_in and here:
            covered.append(j)
        pos += here
    if len(covered) < 2 or any(lanes[j].steps for j in covered) or covered != list(range(covered[0], covered[-1] + 1)):
        return
    merged = _Lane([s for j in covered for s in lanes[j].dom], [s for j in covered for s in lanes[j].wires])
    lanes[covered[0]:covered[-1] + 1] = [merged]
