"""The checker: composition errors name both boxes, axes, sizes and the user's line; symbolic sizes; input checks."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ncd
from ncd.errors import InputError, SizeError, TypeMismatchError, display_path
from ncd.ir.size import symbol

THIS_FILE = display_path(__file__)  # diagrams record paths relative to the working directory


def _line(offset: int = 0) -> int:
    """The caller's line number (plus ``offset``)."""
    return inspect.currentframe().f_back.f_lineno + offset  # type: ignore[union-attr]


def _at(line: int) -> str:
    return re.escape(f"{THIS_FILE}:{line}")


# -- composition errors ---------------------------------------------------------------------------
def test_size_contradiction_names_both_boxes_their_lines_the_axis_and_both_sizes() -> None:
    first = ncd.Linear("m -> k:4", name="Q")
    line_first = _line(-1)
    second = ncd.Linear("k:5 -> n", name="O")
    line_second = _line(-1)
    with pytest.raises(TypeMismatchError) as info:
        first >> second
    message = str(info.value)
    assert re.search(r"cannot compose L\^Q \(built at " + _at(line_first), message), message
    assert re.search(r"with L\^O \(built at " + _at(line_second), message), message
    assert "output of the first: 'k=4'" in message and "input of the second: 'k=5'" in message
    assert "axis k has size 4 in the first and 5 in the second" in message


def test_missing_axis_error_names_the_segment_and_the_axis() -> None:
    wires = ncd.Identity.of("b t m")
    line_wires = _line(-1)
    with pytest.raises(TypeMismatchError) as info:
        wires >> ncd.Linear("n -> k")
    line_linear = _line(-1)
    message = str(info.value)
    assert re.search(r"identity on 'b t m' \(built at " + _at(line_wires), message), message
    assert re.search(r"with L \(built at " + _at(line_linear), message), message
    assert "axis n of the second is not in segment 0 ('b t m') of the first" in message


def test_the_failing_box_of_a_composite_is_its_first_box_on_the_right_and_last_on_the_left() -> None:
    left = ncd.Linear("m -> k:4") >> ncd.ReLU()
    line_left = _line(-1)
    right = ncd.Linear("k:5 -> n") >> ncd.Softmax("n")
    line_right = _line(-1)
    with pytest.raises(TypeMismatchError) as info:
        left >> right.block("head")
    message = str(info.value)
    # the left side's output comes from its last box (ReLU woven over k), the right side's input enters its first box
    assert re.search(r"cannot compose R \(built at " + _at(line_left) + r".*woven over k", message), message
    assert re.search(r"with block 'head' \(starting with L \(built at " + _at(line_right), message), message
    assert "axis k has size 4 in the first and 5 in the second" in message


@pytest.mark.parametrize(
    "build, detail",
    [
        (lambda: ncd.Linear("m -> k h") >> ncd.Transpose("h k -> k h"),
         r"the axes of segment 0 come in another order \('k h' against 'h k'\); add a transpose"),
        (lambda: ncd.Linear("m -> a b c") >> ncd.Linear("a c -> d"), r"axis b of segment 0 lies between axes the second uses"),
        (lambda: ncd.Identity.of("a, b") >> ncd.ReLU(),
         r"input of the second: '\(\)'\n.*the first gives 2 segment\(s\), the second takes 1"),
        (lambda: ncd.Identity.of("a [4]") >> ncd.ReLU(), r"segment 0 holds index values but float values are expected"),
        (lambda: ncd.Identity.of("a:2, a:3") >> ncd.Add(), r"axis a has size 2 in one segment and 3 in another"),
        (lambda: ncd.Identity.of("b m:2*c") >> ncd.Linear("m:2*d -> k"), r"axis m has size 2\*c in the first and 2\*d"),
    ],
)
def test_composition_errors_explain_the_difference(build, detail: str) -> None:
    line = inspect.getsourcelines(build)[1]
    with pytest.raises(TypeMismatchError, match=detail) as info:
        build()
    assert f"{THIS_FILE}:{line}" in str(info.value) or f"{THIS_FILE}:{line + 1}" in str(info.value)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_size_contradiction_is_never_a_silent_broadcast(n: int) -> None:
    """A size-1 axis does not stretch to meet a larger one: the paper's wires carry exact sizes."""
    with pytest.raises(TypeMismatchError, match=r"axis a has size 1 in the first and 3 in the second"):
        ncd.Identity.of("a:1 b") >> ncd.Linear("a:3 -> c")
    with pytest.raises(TypeMismatchError, match=r"axis a has size 1 in one segment and 3 in another"):
        ncd.Identity.of(", ".join(["a:1"] + ["a:3"] * n)) >> ncd.Add(n + 1)
    with pytest.raises(TypeMismatchError, match=r"axis a has size 2 in the first and 3 in the second"):
        ncd.Identity.of("a:2 b") >> ncd.Softmax("a:3")


# -- symbolic sizes -------------------------------------------------------------------------------
def test_symbolic_sizes_stay_symbolic_until_bound() -> None:
    d = ncd.Identity.of("b x/s c") >> ncd.Linear("c -> 2*c") >> ncd.Softmax("x/s")
    assert str(d.cod) == "b x/s 2*c"
    assert {str(s) for s in d.free_symbols} == {"b", "x", "s", "c"}
    bound = d.bind(x=32, s=4)
    assert str(bound.cod) == "b x/s:8 2*c" and {str(s) for s in bound.free_symbols} == {"b", "c"}
    fully = bound.bind(b=2, c=3)
    assert str(fully.cod) == "b:2 x/s:8 2*c:6" and not fully.free_symbols


def test_unification_binds_a_bare_symbol_to_the_other_side() -> None:
    d = ncd.Identity.of("b m:4") >> ncd.Linear("m -> k")
    assert str(d.dom) == "b m:4" and str(d.cod) == "b k"
    assert symbol("m") not in d.free_symbols


@st.composite
def chains(draw: st.DrawFn) -> tuple[list[str], dict[str, int]]:
    sizes = {name: draw(st.integers(1, 5)) for name in "mkn"}
    sizes["s"] = draw(st.sampled_from([1, 2]))
    sizes["x"] = sizes["s"] * draw(st.integers(1, 3))
    return draw(st.permutations(["lin", "soft", "scale", "relu"])), sizes


def _build(steps: list[str]) -> ncd.Diagram:
    d: ncd.Diagram = ncd.Identity.of("b x/s m")
    for step in steps:
        d = d >> {
            "lin": lambda: ncd.Linear("m -> m", bias=True),
            "soft": lambda: ncd.Softmax("x/s"),
            "scale": lambda: ncd.Scale("m**-0.5"),
            "relu": lambda: ncd.ReLU(),
        }[step]()
    return d >> ncd.Linear("m -> k n")


@settings(max_examples=15, deadline=None)
@given(chains())
def test_bind_then_compose_equals_compose_then_bind(chain: tuple[list[str], dict[str, int]]) -> None:
    steps, sizes = chain
    late = _build(steps).bind(**sizes)
    early: ncd.Diagram = ncd.Identity.of("b x/s m").bind(**sizes)
    for step in steps:
        early = early >> {
            "lin": lambda: ncd.Linear("m -> m", bias=True).bind(**sizes),
            "soft": lambda: ncd.Softmax("x/s").bind(**sizes),
            "scale": lambda: ncd.Scale("m**-0.5").bind(**sizes),
            "relu": lambda: ncd.ReLU(),
        }[step]()
    early = early >> ncd.Linear("m -> k n").bind(**sizes)
    assert early == late
    assert early.dom == late.dom and early.cod == late.cod
    torch.manual_seed(0)
    a = late.to_torch(b=2)
    torch.manual_seed(0)
    b = early.to_torch(b=2)
    x = late.example_inputs(b=2)
    torch.testing.assert_close(a(*x), b(*x))
    assert a.ncd_source == b.ncd_source


def test_binding_an_impossible_size_is_a_size_error() -> None:
    d = ncd.Identity.of("x/s c") >> ncd.Linear("c -> d")
    with pytest.raises(SizeError, match=r"axis x/s has size 7/2; a size must be a positive whole number"):
        d.bind(x=7, s=2)
    with pytest.raises(SizeError, match=r"size k=0 must be a positive whole number"):
        d.to_torch(x=4, s=2, c=3, d=2, k=0)


# -- lowering-time checks ---------------------------------------------------------------------------
def test_lowering_with_an_unbound_size_names_the_symbol() -> None:
    d = ncd.Identity.of("b x/s m") >> ncd.Linear("m -> k")
    with pytest.raises(SizeError, match=r"sizes k, s are not bound; pass them as keywords"):
        d.to_torch(b=2, x=4, m=3)
    with pytest.raises(SizeError, match=r"sizes k, s are not bound"):
        d.to_source(b=2, x=4, m=3)
    with pytest.raises(SizeError, match=r"k\*\*\(-0\.5\)|1/sqrt\(k\)|not bound"):
        (ncd.Identity.of("a") >> ncd.Scale("k**-0.5")).to_torch(a=2)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((4,), r"input 0 should end in axes 'b m' of sizes \(b=2, m=3\), but has shape \(4,\)"),
        ((2, 4), r"axes 'b m' of sizes \(b=2, m=3\), but has shape \(2, 4\)"),
        ((3, 2), r"of sizes \(b=2, m=3\), but has shape \(3, 2\)"),
        ((), r"but has shape \(\)"),
    ],
)
def test_wrong_input_shapes_raise_input_error_naming_axes_and_sizes(shape: tuple[int, ...], match: str) -> None:
    module = (ncd.Identity.of("b m") >> ncd.Linear("m -> k")).to_torch(b=2, m=3, k=4)
    with pytest.raises(InputError, match=match):
        module(torch.randn(shape))


def test_wrong_number_and_kind_of_inputs_are_input_errors() -> None:
    module = ncd.Einsum("a b, b c -> a c").to_torch(a=2, b=3, c=4)
    with pytest.raises(InputError, match=r"takes 2 tensor\(s\) of type 'a:2 b:3, b:3 c:4', but 1 were given"):
        module(torch.randn(2, 3))
    with pytest.raises(InputError, match=r"input 1 should end in axes 'b c' of sizes \(b=3, c=4\), but has shape \(4, 4\)"):
        module(torch.randn(2, 3), torch.randn(4, 4))
    with pytest.raises(InputError, match=r"input 1 \('b c'\) must be a tensor, not list"):
        module(torch.randn(2, 3), [[1.0]])
    index = (ncd.Identity.of("t [v]")).to_torch(t=3, v=5)
    with pytest.raises(InputError, match=r"input 0 \('t'\) holds indices and must be an integer tensor, not torch.float32"):
        index(torch.zeros(3))
