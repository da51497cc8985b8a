"""Blocks share one definition exactly when each shares it with the first (what the page's queue of definitions relies
on: a block joins a definition after one comparison with its header, not with every instance again)."""

from __future__ import annotations

import itertools

import ncd
from ncd.render.generic import shareable


def _blocks() -> list[ncd.Block]:
    """Blocks of one family: sizes that differ, an axis of one standing for two of another (``m -> m`` against
    ``m -> n``), wires the first has once and another twice, another shape."""
    def layer(k: int, spec: str) -> ncd.Block:
        return (ncd.Linear(spec) >> ncd.ReLU()).block(f"layers.{k}")

    return [layer(0, "m:4 -> n:8"), layer(1, "m:8 -> n:16"), layer(2, "m:4 -> m:4"), layer(3, "m:8 -> n:8"),
            layer(4, "p:4 -> q:8"), layer(5, "m:4 -> n:8"), (ncd.Linear("m:4 -> n:8") >> ncd.GELU()).block("layers.6"),
            (ncd.Identity.of("b m:4") @ ncd.Identity.of("b m:4")).block("layers.7"),
            (ncd.Identity.of("b m:4") @ ncd.Identity.of("b n:8")).block("layers.8")]


def test_blocks_share_a_definition_exactly_when_each_shares_it_with_the_first() -> None:
    blocks = _blocks()
    seen = {True: 0, False: 0}
    for size in (3, 4):
        for chosen in itertools.permutations(blocks, size):
            first, rest = chosen[0], chosen[1:]
            whole = shareable(list(chosen))
            assert whole == all(shareable([first, b]) for b in rest), [b.name for b in chosen]
            seen[whole] += 1
    assert seen[True] and seen[False]  # (both answers met: the comparison can tell them apart)
