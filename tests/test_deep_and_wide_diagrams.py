"""Diagrams nested deeper, or einsums wider, than ncd can handle end in an ``ncd`` error naming the limit, never in
Python's RecursionError or StopIteration; a misspelt size given to ``bind`` is refused like one given to ``to_torch``."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import sympy
import torch

import ncd
from ncd.errors import LimitError, LoweringError, NCDError, SchemaError, SizeError
from ncd.ir.checks import describe
from ncd.ir.size import symbol
from ncd.limits import limits, override
from ncd.render import to_svg, to_tikz
from ncd.viewer import to_html


def nested_blocks(n: int) -> ncd.Diagram:
    d = ncd.Identity.of("b m") >> ncd.Linear("m -> m")
    for i in range(n):
        d = (d >> ncd.ReLU()).block(f"B{i}")
    return d


def test_a_diagram_nested_to_the_limit_runs_through_every_stage() -> None:
    d = nested_blocks(limits().nesting // 2 - 1)  # a block and a sequence per level
    assert d.nesting() == limits().nesting
    module = d.to_torch(b=3, m=4)
    x = torch.randn(3, 4)
    torch.testing.assert_close(module(x), torch.relu(torch.nn.functional.linear(x, module.state_dict()[next(
        k for k in module.state_dict() if k.endswith("weight"))])))
    assert "relu" in d.to_source(b=3, m=4)
    assert ncd.cost(d, b=3, m=4).forward_flops > 0
    assert "<svg" in to_svg(d) and "tikzpicture" in to_tikz(d) and "<html" in to_html(d, costs=True).lower()
    assert len(d.to_json()) > 0
    try:  # the backward diagram is deeper than its forward one: past the limit it is refused, not overflowed
        ncd.backward(d)
    except LimitError as error:
        assert "nesting in ncd.limits" in str(error)


def test_nesting_past_the_limit_is_refused_when_built_naming_the_depth_and_limit() -> None:
    limit = limits().nesting
    with pytest.raises(LimitError, match=f"nested {limit + 1} deep .*more than the limit of {limit} \\(nesting in ncd.limits\\)"):
        nested_blocks(200)
    with override(nesting=10), pytest.raises(LimitError, match=r"R \(built at .*nested_blocks\).*: .*nested 11 deep"):
        nested_blocks(5)
    wire = ncd.Identity.of(" ".join(f"a{i}" for i in range(limit + 5)))  # each woven axis is one more level
    with pytest.raises(LimitError, match="nesting in ncd.limits"):
        wire >> ncd.Linear("a0 -> a0")


def _wide_einsum(n: int) -> ncd.Diagram:
    t = ", ".join(f"b m{i}" for i in range(n))
    return ncd.Identity.of(t) >> ncd.Einsum(t + " -> b")


def test_an_einsum_with_more_axes_than_letters_is_an_ncd_error_naming_the_box() -> None:
    d = _wide_einsum(60)
    sizes = {str(s): 2 for s in d.free_symbols}
    for stage in (lambda: d.to_torch(**sizes), lambda: ncd.cost(d, **sizes), lambda: ncd.cost(d).formulas):
        with pytest.raises(LoweringError, match=r"einsum \(built at .*\): its einsum needs 61 distinct letters"
                                                r" \(axes b m0 m1 .* … m59\), more than the 52 letters"):
            stage()
    wire = ncd.Identity.of(" ".join(f"a{i}" for i in range(60))) >> ncd.Linear("a0 -> a0")  # 59 woven axes
    with pytest.raises(LoweringError, match=r"L \(built at .*\): its einsum needs 61 distinct letters \(axes a0 a1"):
        ncd.cost(wire, **{f"a{i}": 1 for i in range(60)})


def test_an_einsum_with_fifty_one_axes_still_lowers_and_matches_torch() -> None:
    d = _wide_einsum(50)
    module = d.to_torch(b=2, **{f"m{i}": 1 + i % 2 for i in range(50)})
    xs = [torch.randn(2, 1 + i % 2) for i in range(50)]
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwx"
    want = torch.einsum(",".join("y" + c for c in letters) + "->y", *xs)
    torch.testing.assert_close(module(*xs), want)


def test_bind_refuses_a_size_the_diagram_does_not_have_naming_its_sizes() -> None:
    d = ncd.Linear("m -> k h")
    with pytest.raises(SizeError, match="bind: q is not a size of the diagram; its sizes are h, k, m"):
        d.bind(q=3)
    assert str(d.bind(m=4, q=3).dom) == "m:4"  # one set of sizes binds every part (tests/test_checking.py)
    assert len(d.bind(m=4, k=2, h=2).bind(q=3).dom) == 1  # nothing left to bind: a no-op (backward of index inputs)
    assert str(d.bind(m=4).bind(m=4).dom) == "m:4"  # a bound size may be named again with its value
    with pytest.raises(SizeError, match="axis m has size 4 in the diagram, so m=5 cannot apply"):
        d.bind(m=4).bind(m=5)
    assert isinstance(SizeError("x"), NCDError)


def test_the_unfused_io_peak_reads_each_array_twice_whatever_the_kernel_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """``iomodel.costs.unfused_memory`` sweeps the kernels once (it summed every live array again for each kernel:
    reads grew 16x at 4x the layers); the peak is the same as summing each kernel's live arrays directly."""
    from ncd.iomodel import costs
    from ncd.iomodel.program import Array, flatten

    def chain(n: int) -> ncd.Diagram:
        d = ncd.Identity.of("b m")
        for _ in range(n):
            d = d >> ncd.Linear("m -> m") >> ncd.ReLU()
        return d.bind(b=3, m=5)

    reads = [0]
    elements = Array.elements

    def counted(self: Array) -> object:
        reads[0] += 1
        return elements(self)

    monkeypatch.setattr(Array, "elements", counted)
    counts = []
    for n in (25, 100):
        program = flatten(chain(n), {})
        reads[0] = 0
        peak = costs.unfused_memory(program, top=True)
        counts.append(reads[0])
        assert peak == 3 * 5 * 2 + n * 5 * 5  # the input, one activation and every weight (all kept to the end)
    assert counts[1] <= 4.6 * counts[0], counts  # was 375 -> 5,250 reads


def test_the_io_peak_of_distinct_widths_is_the_max_sympy_builds_without_its_pairwise_comparisons(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The IO model's memory is a ``Max`` over the totals no other one provably exceeds, built unevaluated
    (``ncd.ir.size.maximum``, shared with ``ncd.cost``'s peak): sympy's evaluation compared every pair of totals
    again through its assumptions (20 layers of distinct widths: 3.4 s, 40 layers: 13 s; now 0.14 s / 0.5 s) and
    dropped nothing more.  At sizes it is the memory of the bound diagram, computed with numbers."""
    from sympy.functions.elementary.miscellaneous import MinMaxBase

    from ncd.iomodel.costs import unfused_memory
    from ncd.iomodel.program import flatten

    hierarchy = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
    d = ncd.Identity.of("b m0")
    for i in range(6):
        d = d >> ncd.Linear(f"m{i} -> m{i + 1}") >> ncd.ReLU()
    compared = [0]
    connected = MinMaxBase._is_connected

    def counted(*args: object) -> object:
        compared[0] += 1
        return connected(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(MinMaxBase, "_is_connected", counted)
    program = flatten(d, {})
    unfused_memory(program, top=True), unfused_memory(program, top=False)
    assert compared[0] == 0, compared  # was 30 pairwise comparisons on these 6 layers
    monkeypatch.undo()
    memory = ncd.io(d, hierarchy).memory
    for level, peak in memory.items():
        assert isinstance(peak, sympy.Max) and peak == sympy.Max(*peak.args), level  # nothing left to drop
    names = sorted(str(s) for s in d.free_symbols)
    for seed in range(4):
        bound = {k: 1 + (7 * j + 5 * seed) % 9 for j, k in enumerate(names)}
        numbers = ncd.io(d, hierarchy, **bound).memory
        for level, peak in memory.items():
            assert peak.xreplace({symbol(k): sympy.Integer(v) for k, v in bound.items()}) == numbers[level], level


def _alternating(n: int) -> ncd.Diagram:
    """``n`` + 1 levels: pars and sequences one inside another (each two JSON levels: the node and its parts)."""
    from ncd.ir.diagram import Identity, Par, Seq

    d: ncd.Diagram = ncd.Linear("m -> m") >> ncd.ReLU()
    for i in range(n):
        d = Par((d, ncd.Identity.of("k"))) if i % 2 == 0 else Seq((d, Identity(d.cod)))
    return d


@pytest.mark.parametrize("make", [lambda n: nested_blocks(n // 2 - 1), lambda n: _alternating(n - 2)],
                         ids=["blocks", "pars_and_sequences"])
def test_a_diagram_nested_to_the_limit_loads_back_from_its_json(make: Callable[[int], ncd.Diagram]) -> None:
    """Whatever nesting building allows, JSON reads back (the file limit counted JSON levels, about two per node:
    a diagram nested more than about 48 blocks saved but did not load)."""
    d = make(limits().nesting)
    assert d.nesting() == limits().nesting
    loaded = ncd.load_json(d.to_json())
    assert loaded == d and loaded.to_json() == d.to_json()
    with override(nesting=40):  # the limits in force when reading decide
        with pytest.raises(SchemaError, match=r"nested more than .*nesting.* in ncd\.limits"):
            ncd.load_json(d.to_json())


def _blocks_text(levels: int) -> str:
    """A file of ``levels`` blocks one inside another around a relu, written as text (no diagram built)."""
    head = '{"node": "block", "name": "B", "body": '
    leaf = '{"node": "box", "op": "elementwise", "fields": {"function": "relu"}}'
    return '{"format": "ncd.diagram", "version": 1, "diagram": ' + head * levels + leaf + "}" * levels + "}"


def test_a_file_nested_past_the_limits_is_refused_with_an_ncd_error() -> None:
    limit = limits().nesting
    assert ncd.load_json(_blocks_text(limit)).nesting() == limit
    with pytest.raises(SchemaError, match=f"at \\$.diagram(.body){{{limit + 1}}}: diagram nodes are nested more than"
                                          f" {limit} deep"):
        ncd.load_json(_blocks_text(limit + 1))
    with pytest.raises(SchemaError, match=r"nested more than \d+ levels deep.*nesting and depth in ncd\.limits"):
        ncd.load_json(_blocks_text(600))  # refused before it is read
    with pytest.raises(SchemaError, match="recursion"):
        ncd.load_json(_blocks_text(100_000))  # deeper than the JSON parser's stack
    with pytest.raises(SchemaError, match=r"values are nested more than \d+ levels deep \(depth in ncd\.limits\)"):
        ncd.load_json(_blocks_text(1).replace('"relu"', '{"tuple": [' * 150 + "1" + "]}" * 150))
    with override(nesting=5_000, depth=5_000), pytest.raises(LimitError, match="recursion limit"):
        ncd.load_json(_blocks_text(600))  # limits raised past what Python's stack holds: still an ncd error


def _axes(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def test_every_lowering_that_spells_an_einsum_refuses_more_than_52_letters_naming_the_box() -> None:
    """One pool of letters (``ncd.ir.weaving.einsum_letters``) for every einsum a lowering spells: the streamed
    lowering (was IndexError) and the backward's transposed linear map (was IndexError) name the box and its axes;
    at 52 letters they still run, equal to torch.einsum."""
    from ncd.iomodel.lower import streamed

    hierarchy = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
    ones = {f"{p}{i}": 1 for p in "ac" for i in range(27)}
    wide = ncd.Einsum(f"{_axes('a', 27)}, {_axes('c', 27)} -> a0 c0")
    run = streamed(wide, hierarchy, **ones)
    with pytest.raises(LoweringError, match=r"einsum \(built at .*\): its einsum needs 54 distinct letters \(axes a0 a1"):
        run(torch.ones((1,) * 27), torch.ones((1,) * 27))
    fits = ncd.Einsum(f"{_axes('a', 26)}, {_axes('c', 26)} -> a0 c0")
    x, y = torch.randn((1,) * 25 + (3,)), torch.randn((2,) + (1,) * 25)
    sizes = {**{f"{p}{i}": 1 for p in "ac" for i in range(26)}, "a25": 3, "c0": 2}
    expected = torch.einsum(x, list(range(26)), y, list(range(26, 52)), [0, 26])
    torch.testing.assert_close(streamed(fits, hierarchy, **sizes)(x, y), expected)
    backward = ncd.backward(ncd.Linear(f"{_axes('a', 27)} -> {_axes('c', 27)}"))
    with pytest.raises(LoweringError, match=r"Lᵀ.*: its einsum needs 54 distinct letters \(axes c0 c1"):
        backward.to_torch(**ones)


class _Times(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.factor


class _Variance(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.var(0)


@pytest.mark.parametrize("factor", [math.inf, -math.inf, math.nan, 1e30])
def test_a_factor_past_the_finite_numbers_is_refused_or_runs_as_torch(factor: float) -> None:
    """``Scale(inf)`` was labelled ``*oo`` and lowered to ``x * inf`` (NameError); ``1e30`` to a Python int torch
    cannot convert (OverflowError).  Building refuses inf and nan; a traced multiplication by one runs as torch."""
    if not math.isfinite(factor):
        with pytest.raises(ncd.ParseError, match="Scale takes a finite factor"):
            ncd.Scale(factor)
    model, x = _Times(factor), torch.randn(2, 4)
    d = ncd.trace(model, x)
    torch.testing.assert_close(d.to_torch()(x), model(x), equal_nan=True)


def test_a_variance_over_one_item_is_refused_when_lowered_naming_the_box_and_size() -> None:
    """``x.var(0)`` divides by ``b - 1``: at ``b = 1`` the module raised a RunError (ZeroDivisionError) where torch gives
    nan; lowering now refuses it, naming the factor and the size.  At ``b = 3`` it equals torch."""
    d = ncd.trace(_Variance(), torch.randn(3, 4))
    x = torch.randn(3, 4)
    torch.testing.assert_close(d.to_torch(b=3)(x), _Variance()(x))
    with pytest.raises(LoweringError, match=r"cannot lower \*∞: its factor 1/\(b - 1\) is not finite at b=1"):
        d.to_torch(b=1)


def test_the_nesting_limit_message_names_outer_and_inner_blocks_and_counts_the_rest() -> None:
    """151 nested blocks were named all in one message of 4,163 characters; now the outer and inner three and a count."""
    limit = limits().nesting
    d = ncd.Identity.of("b m") >> ncd.Linear("m -> m")  # a box woven over b: one level
    with pytest.raises(LimitError) as caught:
        for i in range(limit + 5):
            d = d.block(f"B{i}")
    text = str(caught.value)
    last = limit - 2  # B0 .. B{last} around the woven box reach the limit; one more block is refused
    assert len(text) < 600, len(text)
    assert text.startswith(f"block 'B{last + 1}' (ending with block 'B{last}' (ending with block 'B{last - 1}' (ending with"
                           f" {last + 3 - 6} more nested blocks, repeats or weaves, then block 'B1' (ending with block 'B0'")
    assert "L (built at" in text and "woven over b" in text and f"nested {limit + 1} deep" in text
    assert f"'B{last - 2}'" not in text and "'B2'" not in text
    shallow = ncd.Identity.of("b m") >> ncd.Linear("m -> m")
    for i in range(3):
        shallow = shallow.block(f"S{i}")
    assert describe(shallow).count("block 'S") == 3  # seven or fewer are all named


def test_a_wide_par_is_named_by_its_first_and_last_parts() -> None:
    wide = ncd.Linear("m -> m")
    for _ in range(29):
        wide = wide @ ncd.ReLU()
    text = describe(wide)
    assert text.count(" @ ") == 8 and "... 22 more ..." in text and text.startswith("L (built at")
    narrow = ncd.Linear("m -> m") @ ncd.ReLU() @ ncd.ReLU()
    assert describe(narrow).count(" @ ") == 2
