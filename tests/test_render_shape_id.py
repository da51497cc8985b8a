"""Shape ids (``ncd.render.generic.shape_id``): two nodes' ids are equal exactly when their whole shape images are,
checked against the images (``_Shape``) of separate copies on random diagrams, across a renewed table and a pickle,
and on a block whose meta does not hash."""

from __future__ import annotations

import pickle
import random

import ncd
from ncd.render import generic


def _random_diagram(rng: random.Random, kinds: str = "AB", n: str = "n", depth: int = 0) -> ncd.Diagram:
    """A random diagram on wires ``b n``: sequences, blocks (numbered, of ``kinds``), weaves and parallel parts."""
    leaf = rng.choice([ncd.ReLU, ncd.GELU, lambda: ncd.Linear(f"{n} -> {n}", name="w"),
                       lambda: ncd.Linear(f"{n} -> {n}", name="v")])
    if depth > 2 or rng.random() < 0.3:
        return ncd.Identity.of(f"b {n}") >> leaf()
    kind = rng.randrange(3)
    parts = [_random_diagram(rng, kinds, n, depth + 1) for _ in range(rng.randint(1, 3))]
    d = parts[0]
    for p in parts[1:]:
        d = d >> p
    if kind == 1:
        return d.block(f"layers.{rng.randrange(3)}: {rng.choice(kinds)}")
    if kind == 2:
        other = _random_diagram(rng, kinds, n, depth + 1)
        return ncd.Copy(f"b {n}", 2) >> (d @ other) >> ncd.Einsum(f"b {n}, b {n} -> b {n}")
    return d


def test_shape_ids_agree_with_whole_images_on_random_diagrams() -> None:
    """Random diagrams, each also built with its wires renamed (drawn alike) and with its blocks of kind B named C
    (drawn otherwise when it holds one): every pair's answer is their images' equality."""
    nodes = []
    for seed in range(40):
        for kinds, n in (("AB", "n"), ("AB", "m"), ("AC", "n")):
            nodes.append(_random_diagram(random.Random(seed), kinds, n))
    copies = [pickle.loads(pickle.dumps(n)) for n in nodes]  # (images of copies: nothing kept from the ids)
    images = [generic._SHAPE.fold(c) for c in copies]
    alike = renamed = 0
    for i, a in enumerate(nodes):
        for j, b in enumerate(nodes):
            assert generic.same_shape(a, b) == (images[i] == images[j]), (a, b)
            alike += i != j and images[i] == images[j]
        renamed += i % 3 == 0 and images[i] != images[i + 2]
    assert alike > 0 and alike < len(nodes) * (len(nodes) - 1) and renamed > 0


def test_ids_kept_on_a_pickled_node_from_an_old_table_are_found_again() -> None:
    d = ncd.Linear("n -> n", name="w") >> ncd.ReLU()
    assert generic.shape_id(d) is not None
    kept = pickle.loads(pickle.dumps(d))  # (carries the id it was given, with a copy of the table's token)
    assert "_shape_id" in kept.__dict__
    generic._TABLE.clear()
    generic._TOKEN[0] = object()  # (the table renewed: every number given before is stale)
    fresh = ncd.Linear("k -> k", name="w") >> ncd.ReLU()
    assert generic.same_shape(kept, fresh) and generic.same_shape(d, fresh)
    assert not generic.same_shape(kept, ncd.Linear("k -> k", name="w") >> ncd.GELU())


def test_a_block_whose_meta_does_not_hash_is_compared_by_its_image() -> None:
    body = ncd.Linear("n -> n", name="w") >> ncd.ReLU()
    a = ncd.Block(body, "layers.0", (("defaults", {"n": 3}),))
    b = ncd.Block(ncd.Linear("m -> m", name="w") >> ncd.ReLU(), "layers.1", (("defaults", {"n": 3}),))
    c = ncd.Block(body, "layers.2", (("defaults", {"n": 4}),))
    d = ncd.Block(ncd.Linear("m -> m", name="w") >> ncd.GELU(), "layers.3", (("defaults", {"n": 3}),))
    assert generic.shape_id(a) is None
    assert generic.same_shape(a, b) and not generic.same_shape(a, c) and not generic.same_shape(a, d)
    assert generic.same_shape(a >> a, b >> b) and not generic.same_shape(a >> a, a >> c)
