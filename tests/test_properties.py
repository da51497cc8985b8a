"""Laws of the diagram algebra, checked numerically on random diagrams and sizes.

* broadcasting (weaving) obeys the index law and equals ``torch.vmap`` — outer, inner (shared
  segments), nested, and at non-leading positions;
* ``>>`` and ``@`` are associative, identities are units, and the interchange law holds;
* the paper's graphical linear-algebra identities: bending a wire transposes a linear map, the
  snake identity, sliding a linear map along a broadcast, einsum fusion of a chain of wirings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.func import vmap

import ncd
from ncd.ir.axes import parse_axis
from ncd.ir.diagram import Diagram, Weave

SETTINGS = settings(max_examples=12, deadline=None)
NAMES = ["a", "b", "d", "e", "f", "g"]


# -- random diagrams --------------------------------------------------------------------------------
@dataclass
class Chain:
    """A random diagram on one segment, the raw boxes it was built from, and sizes for every axis."""

    start: str
    boxes: list[Diagram]
    sizes: dict[str, int]

    @property
    def diagram(self) -> Diagram:
        d: Diagram = ncd.Identity.of(self.start)
        for box in self.boxes:
            d = d >> box
        return d


@st.composite
def chains(draw: st.DrawFn, names: tuple[str, ...] = tuple(NAMES), max_steps: int = 5, min_steps: int = 1) -> Chain:
    pool = list(names)
    axes = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
    sizes = {n: draw(st.integers(1, 3)) for n in pool}
    start = " ".join(axes)
    boxes: list[Diagram] = []
    for _ in range(draw(st.integers(min_steps, max_steps))):
        step = draw(st.sampled_from(["linear", "square", "softmax", "elementwise", "scale", "residual", "transpose", "sum",
                                     "multiply"]))
        p = draw(st.sampled_from(axes))
        if step == "linear":
            free = [n for n in pool if n not in axes]
            q = draw(st.sampled_from(free)) if free else p
            boxes.append(ncd.Linear(f"{p} -> {q}", bias=draw(st.booleans())))
            axes[axes.index(p)] = q
        elif step == "square":
            boxes.append(ncd.Linear(f"{p} -> {p}", bias=True))
        elif step == "softmax":
            boxes.append(ncd.Softmax(p, log=draw(st.booleans())))
        elif step == "elementwise":
            boxes.append(ncd.elementwise(draw(st.sampled_from(["relu", "tanh", "sigmoid", "gelu"]))))
        elif step == "scale":
            boxes.append(ncd.Scale(draw(st.sampled_from([0.5, 2, "3/2"]))))
        elif step == "residual":
            boxes.append(ncd.residual(ncd.Linear(f"{p} -> {p}") >> ncd.Tanh()))
        elif step == "transpose" and len(axes) >= 2:
            k = draw(st.integers(0, len(axes) - 2))
            x, y = axes[k], axes[k + 1]
            boxes.append(ncd.Transpose(f"{x} {y} -> {y} {x}"))
            axes[k], axes[k + 1] = y, x
        elif step == "sum" and len(axes) >= 2:
            boxes.append(ncd.Einsum(f"{p} -> "))
            axes.remove(p)
        elif step == "multiply":
            boxes.append(ncd.Copy(" ".join(axes)) >> ncd.Multiply())
        else:  # a transpose or a sum needs two axes
            boxes.append(ncd.ReLU())
    return Chain(start, boxes, sizes)


def used(d: Diagram, sizes: dict[str, int]) -> dict[str, int]:
    """The sizes ``d`` has (naming a size the diagram lacks is an error)."""
    free = {str(s) for s in d.free_symbols}
    return {k: v for k, v in sizes.items() if k in free}


def lower(d: Diagram, sizes: dict[str, int], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return d.to_torch(**used(d, sizes))


def copy_parameters(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Give ``target`` the parameters of ``source``, matched by order of creation (= order of the boxes)."""
    a, b = list(source.parameters()), list(target.parameters())
    assert [p.shape for p in a] == [p.shape for p in b]
    with torch.no_grad():
        for p, q in zip(a, b):
            q.copy_(p)


def inputs(d: Diagram, sizes: dict[str, int], seed: int = 1) -> tuple[torch.Tensor, ...]:
    return d.example_inputs(seed=seed, **used(d, sizes))


def close(a: object, b: object) -> None:
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


# -- 1. weaving is vmap, and obeys the index law ----------------------------------------------------------
@SETTINGS
@given(chains(), st.integers(1, 3))
def test_weave_equals_vmap_and_obeys_the_index_law(chain: Chain, c: int) -> None:
    d = chain.diagram
    sizes = {**chain.sizes, "c": c}
    woven = d.weave("c")
    assert str(woven.dom) == "c " + str(d.dom)
    base, broadcast = lower(d, sizes), lower(woven, sizes, seed=1)
    broadcast.load_state_dict(base.state_dict())  # the same parameters, by name
    (x,) = inputs(woven, sizes)
    out = broadcast(x)
    close(out, vmap(base)(x))
    for k in range(c):  # indexing c after the operation equals indexing it before
        close(out[k], base(x[k]))


@st.composite
def two_segment(draw: st.DrawFn) -> tuple[Diagram, dict[str, int]]:
    """Two chains side by side, then (sometimes) a wiring that joins them."""
    left = draw(chains(names=("a", "b", "d"), max_steps=3))
    right = draw(chains(names=("e", "f", "g"), max_steps=3))
    d = left.diagram @ right.diagram
    sizes = {**left.sizes, **right.sizes}
    if draw(st.booleans()):
        l_axes, r_axes = list(d.cod[0].names), list(d.cod[1].names)
        out = draw(st.permutations(l_axes + r_axes))
        d = d >> ncd.Einsum(f"{' '.join(l_axes)}, {' '.join(r_axes)} -> {' '.join(out[: draw(st.integers(1, len(out)))])}")
    return d, sizes


@SETTINGS
@given(two_segment(), st.integers(1, 3), st.sampled_from([(), (0,), (1,)]))
def test_inner_broadcasting_equals_vmap_with_shared_segments(pair: tuple[Diagram, dict[str, int]], c: int,
                                                             shared: tuple[int, ...]) -> None:
    d, sizes = pair
    sizes = {**sizes, "c": c}
    woven = d.weave("c", shared=shared)
    base, broadcast = lower(d, sizes), lower(woven, sizes, seed=1)
    broadcast.load_state_dict(base.state_dict())
    xs = inputs(woven, sizes)
    in_dims = tuple(None if j in shared else 0 for j in range(len(d.dom)))
    out = broadcast(*xs)
    close(out, vmap(base, in_dims=in_dims)(*xs))
    for k in range(c):
        close(tuple(o[k] for o in (out if isinstance(out, tuple) else (out,))),
              base(*[x if j in shared else x[k] for j, x in enumerate(xs)]))


@SETTINGS
@given(chains(max_steps=3), st.integers(1, 3), st.integers(1, 2))
def test_nested_weaves_equal_nested_vmaps(chain: Chain, c: int, e: int) -> None:
    d = chain.diagram
    sizes = {**chain.sizes, "c": c, "w": e}
    woven = d.weave("c", "w")
    assert [a.name for a in woven.dom[0].axes[:2]] == ["c", "w"]
    base, broadcast = lower(d, sizes), lower(woven, sizes, seed=1)
    broadcast.load_state_dict(base.state_dict())
    (x,) = inputs(woven, sizes)
    close(broadcast(x), vmap(vmap(base))(x))


@st.composite
def positioned(draw: st.DrawFn) -> tuple[Chain, list[tuple[int, int]]]:
    chain = draw(chains(max_steps=3))
    d = chain.diagram
    positions = []
    n_dom, n_cod = len(d.dom[0]), len(d.cod[0])
    for _ in range(draw(st.integers(1, 2))):
        positions.append((draw(st.integers(0, n_dom)), draw(st.integers(0, n_cod))))
        n_dom, n_cod = n_dom + 1, n_cod + 1
    return chain, positions


@SETTINGS
@given(positioned(), st.integers(1, 3))
def test_weaves_at_non_leading_positions_equal_vmap_with_those_dims(case: tuple[Chain, list[tuple[int, int]]], c: int) -> None:
    chain, positions = case
    sizes = {**chain.sizes, "c": c, "w": 2}
    d: Diagram = chain.diagram
    base = lower(d, sizes)
    reference: Callable[..., torch.Tensor] = base
    for name, (p, q) in zip(["c", "w"], positions):  # innermost first
        d = Weave(d, parse_axis(name), (p,), (q,))
        reference = vmap(reference, in_dims=p, out_dims=q)
    module = lower(d, sizes, seed=1)
    module.load_state_dict(base.state_dict())
    (x,) = inputs(d, sizes)
    close(module(x), reference(x))


@SETTINGS
@given(chains(max_steps=3), st.lists(st.sampled_from(["p", "q", "r"]), max_size=2, unique=True),
       st.lists(st.sampled_from(["s", "u"]), max_size=2, unique=True))
def test_auto_fitting_weaves_over_prefix_and_suffix_axes_like_vmap(chain: Chain, pre: list[str], post: list[str]) -> None:
    sizes = {**chain.sizes, "p": 2, "q": 1, "r": 3, "s": 2, "u": 3}
    d = chain.diagram
    fitted = ncd.Identity.of(" ".join(pre + [str(d.dom[0])] + post)) >> d
    assert [a.name for a in fitted.cod[0].axes] == pre + list(d.cod[0].names) + post
    base = lower(d, sizes)
    reference: Callable[..., torch.Tensor] = base
    for _ in post:
        reference = vmap(reference, in_dims=-1, out_dims=-1)
    for _ in pre:
        reference = vmap(reference)
    module = lower(fitted, sizes, seed=1)
    copy_parameters(base, module)
    (x,) = inputs(fitted, sizes)
    close(module(x), reference(x))


def test_softmax_on_a_middle_axis_normalises_that_axis_only() -> None:
    d = ncd.Identity.of("a x c") >> ncd.Softmax("x")
    assert isinstance(d, Weave)
    x = torch.randn(2, 3, 4)
    close(d.to_torch(a=2, x=3, c=4)(x), torch.softmax(x, dim=1))


# -- 2. composition laws ---------------------------------------------------------------------------------------
@SETTINGS
@given(chains(min_steps=3, max_steps=6), st.data())
def test_composition_is_associative(chain: Chain, data: st.DataObject) -> None:
    n = len(chain.boxes)
    i = data.draw(st.integers(1, n - 2))
    j = data.draw(st.integers(i + 1, n - 1))
    f = ncd.Identity.of(chain.start)
    for box in chain.boxes[:i]:
        f = f >> box
    try:
        g = chain.boxes[i]
        for box in chain.boxes[i + 1 : j]:
            g = g >> box
        h = chain.boxes[j]
        for box in chain.boxes[j + 1 :]:
            h = h >> box
        left, right = (f >> g) >> h, f >> (g >> h)
    except ncd.TypeMismatchError:
        assume(False)  # the raw boxes of g or h do not compose on their own (they need the context of f)
        return
    assert left.dom == right.dom and left.cod == right.cod
    exact = ncd.Identity.of(chain.start)
    for box in chain.boxes:
        exact = exact >> box
    if g.dom == f.cod and h.dom == g.cod:  # no weaving was needed: the very same diagram
        assert left == right
    a, b = lower(left, chain.sizes), lower(right, chain.sizes, seed=1)
    copy_parameters(a, b)
    (x,) = inputs(left, chain.sizes)
    close(a(x), b(x))
    reference = lower(exact, chain.sizes, seed=2)
    copy_parameters(a, reference)
    close(a(x), reference(x))


@SETTINGS
@given(chains(max_steps=3))
def test_exactly_typed_composition_is_associative_structurally_and_identities_are_units(chain: Chain) -> None:
    d = chain.diagram
    f, g, h = d, ncd.Identity(d.cod) >> ncd.Tanh(), ncd.Identity(d.cod) >> ncd.Scale(2)
    assert g.dom == f.cod and h.dom == g.cod
    assert (f >> g) >> h == f >> (g >> h)
    assert ncd.Identity(d.dom) >> d == d == d >> ncd.Identity(d.cod)


@SETTINGS
@given(chains(names=("a", "b"), max_steps=2), chains(names=("d", "e"), max_steps=2), chains(names=("f", "g"), max_steps=2))
def test_parallel_composition_is_associative_with_the_empty_unit(f: Chain, g: Chain, h: Chain) -> None:
    F_, G, H = f.diagram, g.diagram, h.diagram
    assert (F_ @ G) @ H == F_ @ (G @ H)
    empty = ncd.Identity(ncd.Type(()))
    assert empty @ F_ == F_ == F_ @ empty
    sizes = {**f.sizes, **g.sizes, **h.sizes}
    a = lower((F_ @ G) @ H, sizes)
    xs = inputs((F_ @ G) @ H, sizes)
    parts = [lower(F_, sizes, 3), lower(G, sizes, 4), lower(H, sizes, 5)]
    copy_parameters(a, torch.nn.ModuleList(parts))
    close(a(*xs), tuple(p(x) for p, x in zip(parts, xs)))


@SETTINGS
@given(chains(names=("a", "b", "d"), max_steps=4, min_steps=2), chains(names=("e", "f", "g"), max_steps=4, min_steps=2),
       st.data())
def test_interchange_law(left: Chain, right: Chain, data: st.DataObject) -> None:
    i = data.draw(st.integers(1, len(left.boxes) - 1))
    j = data.draw(st.integers(1, len(right.boxes) - 1))

    def fold(start: Diagram, boxes: list[Diagram]) -> Diagram:
        for box in boxes:
            start = start >> box
        return start

    f = fold(ncd.Identity.of(left.start), left.boxes[:i])
    h = fold(ncd.Identity(f.cod), left.boxes[i:])
    g = fold(ncd.Identity.of(right.start), right.boxes[:j])
    k = fold(ncd.Identity(g.cod), right.boxes[j:])
    one, two = (f @ g) >> (h @ k), (f >> h) @ (g >> k)
    assert one.dom == two.dom and one.cod == two.cod
    sizes = {**left.sizes, **right.sizes}
    a, b = lower(one, sizes), lower(two, sizes, seed=1)
    xs = inputs(one, sizes)
    # parameters come in box order, f g h k on one side and f h g k on the other
    reference_f, reference_h = lower(f, sizes, 3), lower(h, sizes, 4)
    reference_g, reference_k = lower(g, sizes, 5), lower(k, sizes, 6)
    copy_parameters(torch.nn.ModuleList([reference_f, reference_g, reference_h, reference_k]), a)
    copy_parameters(torch.nn.ModuleList([reference_f, reference_h, reference_g, reference_k]), b)
    want = (reference_h(reference_f(xs[0])), reference_k(reference_g(xs[1])))
    close(a(*xs), want)
    close(b(*xs), want)


# -- 3. graphical linear algebra ---------------------------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 2))
def test_bending_a_wire_transposes_a_linear_map(a: int, b: int, batch: int) -> None:
    """F: b -> a with weight W.  Cup on (b, e), F on e, cap joining a with the input: y -> Wᵀ y."""
    forward = ncd.Linear("e:b -> a", name="W")
    transposed = (
        (ncd.Identity.of("a") @ ncd.Unit("b", "e:b"))
        >> (ncd.Identity.of("a") @ (ncd.Identity.of("b e:b") >> forward))
        >> ncd.Einsum("a, b a -> b")
    )
    assert str(transposed.dom) == "a" and str(transposed.cod) == "b"
    module = transposed.to_torch(a=a, b=b)
    (weight,) = list(module.parameters())
    assert weight.shape == (a, b)
    y = torch.randn(*([2] * batch), a)
    close(module(y), y @ weight)  # Wᵀ y, written as a row vector times W


@SETTINGS
@given(st.integers(1, 5), st.integers(0, 2))
def test_snake_identities(n: int, batch: int) -> None:
    """A cup then a cap (a contraction) is a straight wire, whichever way the zig-zag goes."""
    left = (ncd.Identity.of("a") @ ncd.Unit("a", "c:a")) >> ncd.Einsum("a, a c:a -> c:a")
    right = (ncd.Unit("b:a", "a") @ ncd.Identity.of("a")) >> ncd.Einsum("b:a a, a -> b:a")
    assert str(left.dom) == str(right.dom) == "a" and str(left.cod) == "c:a" and str(right.cod) == "b:a"
    x = torch.randn(*([3] * batch), n)
    close(left.to_torch(a=n)(x), x)
    close(right.to_torch(a=n)(x), x)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.booleans())
def test_sliding_a_linear_map_along_a_broadcast(c: int, m: int, n: int, bias: bool) -> None:
    """Weaving then composing equals composing then weaving; a linear map commutes with summing a broadcast axis."""
    f, g = ncd.Linear("m -> n", bias=bias), ncd.Softmax("n")
    sizes = {"c": c, "m": m, "n": n}
    one, two = f.weave("c") >> g.weave("c"), (f >> g).weave("c")
    three = ncd.Identity.of("c m") >> f >> g
    a, b, d = lower(one, sizes), lower(two, sizes, 1), lower(three, sizes, 2)
    copy_parameters(a, b)
    copy_parameters(a, d)
    (x,) = inputs(one, sizes)
    close(a(x), b(x))
    close(a(x), d(x))
    linear = ncd.Linear("m -> n")
    before = ncd.Identity.of("c m") >> ncd.Einsum("c m -> m") >> linear
    after = ncd.Identity.of("c m") >> linear >> ncd.Einsum("c n -> n")
    p, q = lower(before, sizes), lower(after, sizes, 1)
    copy_parameters(p, q)
    close(p(x), q(x))
    (w,) = list(p.parameters())
    close(p(x), x.sum(0) @ w.T)


@SETTINGS
@given(st.lists(st.integers(1, 4), min_size=3, max_size=6))
def test_a_chain_of_linear_wirings_fuses_into_one_einsum(sizes_list: list[int]) -> None:
    names = [f"n{k}" for k in range(len(sizes_list))]
    sizes = dict(zip(names, sizes_list))
    matrices = [f"{names[k]} {names[k + 1]}" for k in range(len(names) - 1)]
    fused = ncd.Einsum(", ".join(matrices) + f" -> {names[0]} {names[-1]}")
    stepwise: Diagram = ncd.Identity.of(", ".join(matrices))
    for k in range(1, len(matrices)):
        rest = ", ".join(matrices[k + 1 :])
        step = ncd.Einsum(f"{names[0]} {names[k]}, {matrices[k]} -> {names[0]} {names[k + 1]}")
        stepwise = stepwise >> (step @ ncd.Identity.of(rest) if rest else step)
    stepwise = stepwise >> ncd.Scale(2) >> ncd.Transpose(f"{names[0]} {names[-1]} -> {names[-1]} {names[0]}")
    fused = fused >> ncd.Scale(2) >> ncd.Transpose(f"{names[0]} {names[-1]} -> {names[-1]} {names[0]}")
    assert stepwise.dom == fused.dom and stepwise.cod == fused.cod
    xs = inputs(fused, sizes)
    want = 2 * torch.linalg.multi_dot(list(xs)).T
    close(fused.to_torch(**used(fused, sizes))(*xs), want)
    close(stepwise.to_torch(**used(stepwise, sizes))(*xs), want)
