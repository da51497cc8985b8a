"""Side-by-side branches recorded one step at a time (as a trace records ``f @ g``) are drawn side by side.

Checked against the same branches built directly as a parallel composition: the rewritten chain equals
it (the interchange law), and the page draws both alike — same size, same texts.
"""

from __future__ import annotations

import ncd
from ncd.ir.axes import Type
from ncd.ir.diagram import Identity, Par, Seq
from ncd.render import layout
from ncd.render.check import problems
from ncd.render.lanes import gather
from ncd.render.model import Text

N = 12


def _branch(k: int) -> tuple[ncd.Diagram, ncd.Diagram]:
    x = ncd.Identity.of("b n")
    return x >> ncd.Linear("n -> m", name=f"emb{k}"), ncd.Identity.of("b m") >> ncd.ReLU()


def _recorded() -> list[ncd.Diagram]:
    """Each branch's first box, then each branch's second, every step with the other wires running past."""
    branches = [_branch(k) for k in range(N)]
    wires = [list(b[0].dom) for b in branches]
    steps: list[ncd.Diagram] = []
    for stage in (0, 1):
        for k, branch in enumerate(branches):
            before = [s for w in wires[:k] for s in w]
            after = [s for w in wires[k + 1:] for s in w]
            steps.append(Par.of(Identity(Type(tuple(before))), branch[stage], Identity(Type(tuple(after)))))
            wires[k] = list(branch[stage].cod)
    return steps


def test_a_recorded_chain_of_branches_is_the_branches_side_by_side() -> None:
    direct = Par.of(*(f >> g for f, g in (_branch(k) for k in range(N))))
    assert gather(_recorded()) == [direct]
    assert Seq.of(*_recorded()).dom == direct.dom and Seq.of(*_recorded()).cod == direct.cod


def test_the_page_draws_recorded_branches_as_the_direct_parallel_composition(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The recorded chain is drawn as its definition (``Net =``, too wide for one row as a chain) whose contents are
    the direct parallel composition's: the same texts, one column of branches instead of 2·N columns."""
    from collections import Counter

    import ncd.render.definitions as definitions

    recorded = layout(Seq.of(*_recorded()).block("Net"))
    direct = layout(Par.of(*(f >> g for f, g in (_branch(k) for k in range(N)))).block("Net"))  # fits one row
    header = Counter({"=": 1, "b": 2 * N, "n": N, "m": N})  # Net's box with its port labels, then "="
    assert Counter(t.string for t in recorded.of(Text)) == Counter(t.string for t in direct.of(Text)) + header
    assert problems(recorded) == []
    monkeypatch.setattr(definitions, "gather", lambda steps, runs=None: list(steps))  # as it was drawn before
    chain = layout(Seq.of(*_recorded()).block("Net"))
    assert recorded.height < 0.5 * chain.height


def test_steps_across_branches_end_a_run() -> None:
    """A step working on two branches' wires is no branch's: the run ends before it and it stays a step."""
    steps = _recorded()[:N + 2]  # every branch's first box, then the first two branches' second boxes
    both = (ncd.Identity.of("b m") @ ncd.Identity.of("b m")) >> ncd.Add()
    rest = Identity(Type(tuple(steps[-1].cod.segments[2:])))
    join = Par.of(both, rest)
    out = gather(steps + [join])
    assert len(out) == 2 and isinstance(out[0], Par) and out[1] is join
    assert out[0].cod == steps[-1].cod
