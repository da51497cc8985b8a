"""Inputs a user writes that the API read wrongly or refused with a plain Python error: a tensor type with an empty
segment, an einsum of empty segments, a size named like an option of the call, a drawing into
a folder that does not exist."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import torch

import ncd


@pytest.mark.parametrize("text", [",", "b, ,c", "a,", " , "])
def test_an_empty_segment_is_an_ncd_error(text: str) -> None:
    with pytest.raises(ncd.ParseError, match=r"empty segment; write \(\)"):
        ncd.parse_type(text)


@pytest.mark.parametrize("spec", [",->", "a, -> a", ", a -> a"])
def test_an_einsum_of_empty_segments_is_an_ncd_error_naming_its_spec(spec: str) -> None:
    with pytest.raises(ncd.ParseError, match="einsum spec .*empty segment"):
        ncd.Einsum(spec)


def test_an_einsum_diagonal_and_scalars_written_as_such_still_build() -> None:
    diagonal = ncd.Einsum("b i i -> b i")
    x = torch.randn(2, 3, 3)
    torch.testing.assert_close(diagonal.to_torch(b=2, i=3)(x), torch.einsum("bii->bi", x))
    assert str(ncd.Einsum("(), () -> ()").dom) == "(), ()"
    assert str(ncd.parse_type("b m, ()")) == "b m, ()"


def _named(option: str) -> ncd.Diagram:
    return ncd.Identity.of(f"b {option}") >> ncd.Linear(f"{option} -> m")


@pytest.mark.parametrize(("option", "call"), [
    ("training", lambda d: ncd.cost(d, training=4, b=2, m=3)),
    ("dtype", lambda d: ncd.cost(d, dtype=4, b=2, m=3)),
    ("training", lambda d: ncd.backward(d, training=4, b=2, m=3)),
    ("check_inputs", lambda d: d.to_torch(check_inputs=4, b=2, m=3)),
    ("seed", lambda d: d.example_inputs(seed=4, b=2, m=3)),
])
def test_a_size_named_like_an_option_of_the_call_is_an_ncd_error_naming_both(option: str, call: object) -> None:
    d = _named(option)
    with pytest.raises(ncd.SizeError, match=f"size named {option}, which is also .*option .*bind the size first"):
        call(d)  # type: ignore[operator]
    bound = d.bind(**{option: 4})  # the way out the error names
    assert ncd.cost(bound, b=2, m=3).forward_flops == 2 * 2 * 4 * 3
    assert bound.to_torch(b=2, m=3)(torch.randn(2, 4)).shape == (2, 3)


def test_a_size_named_like_an_option_is_fine_when_the_option_keeps_its_default() -> None:
    d = _named("training")
    assert ncd.cost(d, b=2, m=3).forward_flops.free_symbols  # the formula, in the size 'training'


def test_drawing_into_a_missing_folder_creates_it(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "missing" / "deeper" / "x.svg"
    assert ncd.draw(ncd.Linear("m -> k"), target) == str(target)
    assert target.read_text(encoding="utf-8").lstrip().startswith("<")


def test_a_path_that_cannot_be_written_is_an_input_error_raised_before_drawing(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    with pytest.raises(ncd.InputError, match="cannot create its folder"):
        ncd.draw(ncd.Linear("m -> k"), tmp_path / "file" / "x.svg")
    (tmp_path / "d.svg").mkdir()
    with pytest.raises(ncd.InputError, match="it is a folder"):
        ncd.draw(ncd.Linear("m -> k"), tmp_path / "d.svg")


def test_a_type_may_repeat_an_axis_but_a_box_on_it_refuses_naming_itself() -> None:
    # the decision recorded by 7f9a923 (3e0cd62's message said parse_type refuses 'b b'; it does not): types are syntax,
    # an einsum operand reads the diagonal that way, and boxes refuse repeated names with their own message
    assert str(ncd.parse_type("b b")) == "b b"
    torch.testing.assert_close(ncd.Einsum("b b -> b").to_torch(b=3)(torch.eye(3) * 2), torch.full((3,), 2.0))
    with pytest.raises(ncd.TypeMismatchError, match=r"L: tensor 'm m' names axis m twice"):
        ncd.Linear("m m -> k")
    with pytest.raises(ncd.TypeMismatchError, match=r"weave over b: segment 'b' of LN .* already has an axis b"):
        ncd.Identity.of("b b") >> ncd.LayerNorm("b")


@pytest.mark.parametrize("build, message", [
    (lambda: ncd.Slice("t", 5, 2), r"slice 5:2:1 of axis t keeps nothing: the stop must be past the start"),
    (lambda: ncd.Slice("t", 0, 4, 0), r"slice 0:4:0 of axis t: the step must be a positive whole number"),
    (lambda: (ncd.Identity.of("b c y x") >> ncd.Conv("c y x -> d y x", kernel=9)).to_torch(b=1, c=2, d=2, y=4, x=4),
     r"★9: axis y=4 is narrower than its window: the output axis y would have size -4"),
])
def test_an_empty_slice_or_window_names_the_box_and_sizes(build: Any, message: str) -> None:
    # were 'axis t has size -3' / 'axis t has size zoo' / 'axis y has size -4': no box, no slice, no kernel
    with pytest.raises(ncd.SizeError, match=message):
        build()
