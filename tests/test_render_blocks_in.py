"""The blocks each node holds found bottom-up (``ncd.render.wrap._blocks_in``): the same families, in the same order,
as the page's walk over the node (``_families`` with ``bodies``), on random diagrams whose parts are used several
times (a node held twice is met once), and a node asked a second time answers from what it kept."""

from __future__ import annotations

import random

import ncd
from ncd.render import wrap


def _diagram(rng: random.Random, pool: list[ncd.Diagram], depth: int = 0) -> ncd.Diagram:
    if pool and rng.random() < 0.3:  # (a part used again: the same node object in two places)
        return rng.choice(pool)
    if depth > 3 or rng.random() < 0.2:
        d: ncd.Diagram = ncd.Identity.of("b n") >> rng.choice([ncd.ReLU, ncd.GELU])()
    else:
        d = _diagram(rng, pool, depth + 1)
        for _ in range(rng.randrange(3)):
            d = d >> _diagram(rng, pool, depth + 1)
        if rng.random() < 0.3:
            d = ncd.Copy("b n", 2) >> (d @ _diagram(rng, pool, depth + 1)) >> ncd.Einsum("b n, b n -> b n")
        if rng.random() < 0.6:
            d = d.block(f"{rng.choice(['layers', 'blocks'])}.{rng.randrange(4)}")
    pool.append(d)
    return d


def test_blocks_found_bottom_up_are_the_walks_families_in_its_order() -> None:
    shared = 0
    for seed in range(200):
        rng = random.Random(seed)
        pool: list[ncd.Diagram] = []
        d = _diagram(rng, pool)
        for node in [d, *rng.sample(pool, min(5, len(pool)))]:
            walked = wrap._families(node, [])  # (the walk: a list for the bodies asked)
            for _ in range(2):  # (the second time from what the nodes kept)
                found = wrap._families(node)
                assert list(found) == list(walked)
                assert all([id(b) for b in found[k]] == [id(b) for b in walked[k]] for k in walked)
        walk = list(d.walk())
        shared += len({id(n) for n in walk}) < len(walk)
    assert shared > 20
