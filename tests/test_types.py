"""The text form of types and sizes: parse/print round trips, size arithmetic, safety, errors with positions."""

from __future__ import annotations

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import ncd
from ncd.errors import ParseError, SizeError
from ncd.ir.axes import Axis, Segment, Type, parse_axis, parse_type
from ncd.ir.size import evaluate, size, size_text, sizes_equal, symbol

SETTINGS = settings(max_examples=60, deadline=None)

# -- strategies over the tokens of the text form ---------------------------------------------
NAMES = st.sampled_from(["a", "b", "m", "k", "h", "t", "x", "y", "c", "λ", "n_1", "d2"])
SIZE_TEXTS = st.sampled_from(["3", "64", "x/s", "2*c", "512*2**(1 - i)", "k*h", "m+1", "n_1"])


@st.composite
def axis_tokens(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.sampled_from(["name", "sized", "item", "item-sized", "overline"] + (["bound"] if depth == 0 else [])))
    name = draw(NAMES)
    if kind == "name":
        return name
    if kind == "sized":
        return f"{name}:{draw(SIZE_TEXTS)}"
    if kind == "item":
        return "~" + name
    if kind == "item-sized":
        return f"~{name}:{draw(SIZE_TEXTS)}"
    if kind == "overline":
        return draw(st.sampled_from(["x", "y", "t"])) + "\u0305"
    parts = draw(st.lists(axis_tokens(depth=1), min_size=1, max_size=3))
    return "(" + " ".join(parts) + ")"


@st.composite
def segment_texts(draw: st.DrawFn) -> str:
    axes = draw(st.lists(axis_tokens(), min_size=0, max_size=4))
    tag = draw(st.sampled_from(["", "", " [bool]", " [v]", " [10]"]))
    text = " ".join(axes) + tag
    return text.strip() or "()"


TYPE_TEXTS = st.lists(segment_texts(), min_size=1, max_size=3).map(", ".join)


@SETTINGS
@given(TYPE_TEXTS)
def test_printed_type_parses_back_to_the_same_type(text: str) -> None:
    typ = parse_type(text)
    printed = str(typ)
    again = parse_type(printed)
    assert again == typ, (text, printed)
    assert str(again) == printed
    assert again.same(typ)


@SETTINGS
@given(TYPE_TEXTS)
def test_parsed_type_keeps_roles_sizes_and_tags(text: str) -> None:
    typ = parse_type(text)
    segments = [s.strip() for s in text.split(",")]
    assert len(typ) == len(segments)
    for seg, seg_text in zip(typ, segments):
        if seg_text.endswith("[bool]"):
            assert seg.dtype == "bool" and seg.range is None
        elif seg_text.endswith("]"):
            assert seg.dtype == "index" and seg.range == size(seg_text[seg_text.rindex("[") + 1 : -1])
        else:
            assert seg.dtype == "float"
        for axis in seg:
            if axis.parts:  # a bound axis has the product of its parts' sizes
                assert sizes_equal(axis.size, sympy.Mul(*[p.size for p in axis.parts]))
                assert axis.name == "(" + " ".join(p.name for p in axis.parts) + ")"


def test_item_axes_overline_and_tilde_agree() -> None:
    assert parse_axis("~t") == parse_axis("t\u0305") == Axis("t", symbol("t"), "item")
    assert parse_axis("t\u0304").is_item
    assert str(parse_type("~tok m")) == "~tok m"
    assert str(parse_type("~t m")) == "t\u0305 m"


def test_scalar_segment_prints_as_empty_parentheses_and_round_trips() -> None:
    scalar = Type((Segment(()),))
    assert str(scalar) == "()"
    assert parse_type("()") == scalar
    assert parse_type("") == Type(())
    assert str(ncd.ReLU().dom) == "()"
    assert parse_type("a, (), b")[1] == Segment(())


def test_name_alone_is_its_size_and_name_size_overrides() -> None:
    t = parse_type("x/s 64 m:512 (k h) 512*2**(1-i)")
    names = [a.name for a in t[0]]
    assert names == ["x/s", "64", "m", "(k h)", "512*2**(1-i)"]
    x, s, k, h, i = (symbol(n) for n in "xskhi")
    assert [a.size for a in t[0]] == [x / s, 64, 512, k * h, 512 * 2 ** (1 - i)]


def test_keyword_sizes_bind_symbols() -> None:
    assert str(parse_type("b m", m=512)) == "b m:512"
    assert parse_type("x/s", x=32, s=4)[0].axes[0].size == 8


# -- sizes -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, sizes, value",
    [
        ("x/s", {"x": 32, "s": 4}, 8),
        ("2*c", {"c": 7}, 14),
        ("512*2**(1-i)", {"i": 0}, 1024),
        ("512*2**(1-i)", {"i": 3}, 128),
        ("k^-0.5*k", {"k": 16}, 4),
        ("sqrt(k)", {"k": 49}, 7),
        ("(x - 3)/2 + 1", {"x": 9}, 4),
        ("2^3^2", {}, 512),  # right associative, as in mathematics
        ("-2 + 5", {}, 3),
        ("0.5*x", {"x": 6}, 3),
    ],
)
def test_size_arithmetic_evaluates_like_python(text: str, sizes: dict[str, int], value: int) -> None:
    assert evaluate(size(text), sizes) == value
    python = text.replace("^", "**").replace("sqrt", "math.sqrt")
    import math

    assert eval(python, {"math": math}, dict(sizes)) == pytest.approx(value)  # the independent reference


@SETTINGS
@given(st.integers(1, 64), st.integers(1, 8), st.integers(0, 4))
def test_symbolic_sizes_agree_with_integer_arithmetic(c: int, s: int, i: int) -> None:
    expr = size("(2*c*s)/s + 512*2**(4-i)")
    assert evaluate(expr, {"c": c, "s": s, "i": i}) == 2 * c + 512 * 2 ** (4 - i)
    assert size_text(expr) == str(expr)
    assert size(size_text(expr)) == expr  # the printed form reads back


def test_k_to_the_minus_half_is_one_over_root_k() -> None:
    assert sizes_equal(size("k^-0.5"), 1 / sympy.sqrt(symbol("k")))
    assert size_text(size("k**-0.5")) == "1/sqrt(k)"


def test_unbound_and_fractional_sizes_are_size_errors_naming_the_symbol() -> None:
    with pytest.raises(SizeError, match=r"x/s is not bound: give s, x"):
        evaluate(size("x/s"))
    with pytest.raises(SizeError, match=r"x/s is 7/2, which is not a whole number"):
        evaluate(size("x/s"), {"x": 7, "s": 2})


@pytest.mark.parametrize(
    "text, match",
    [
        ("2 +* 3", r"unexpected '\*' at position 3"),
        ("(x", r"missing '\)' at position 2"),
        ("x)", r"unexpected '\)' at position 1"),
        ("x $ 2", r"unexpected character '\$' at position 2"),
        ("m + ", r"ends too early at position 4"),
        ("", r"it is empty"),
        ("1/0", r"divides by zero"),
        ("sqrt(-4)", r"not a real number"),
        ("9**9**9**9", r"too large"),
        ("2**(2**100)", r"too large"),
        ("(" * 70 + "1" + ")" * 70, r"nested more than"),
        ("1+" * 600 + "1", r"longer than"),
    ],
)
def test_size_parse_errors_say_what_and_where(text: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        size(text)


@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os').system('touch /tmp/ncd_pwned')",
        "().__class__.__bases__[0]",
        "exec('1')",
        "lambda: 1",
        "x if y else z",
        "[1, 2]",
        "a.b",
        "open('/etc/passwd')",
    ],
)
def test_size_parser_never_evaluates_python(hostile: str, tmp_path: pytest.TempPathFactory) -> None:
    with pytest.raises(ParseError):
        size(hostile)
    import os

    assert not os.path.exists("/tmp/ncd_pwned")


def test_function_names_other_than_sqrt_are_just_symbols() -> None:
    assert size("exec") == symbol("exec")  # a size called 'exec' is a name, nothing is called
    assert size("sqrt") == symbol("sqrt")


# -- axis and type errors --------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, error, match",
    [
        ("a:0", SizeError, r"axis a has size 0; a size must be a positive whole number"),
        ("a:-2", SizeError, r"axis a has size -2"),
        ("a:7/2", SizeError, r"axis a has size 7/2"),
        ("a:x-x", SizeError, r"axis a has size 0"),
        ("a:", ParseError, r"has ':' but no size"),
        ("a:b:c", ParseError, r"unexpected character ':' at position 1"),
        ("a (b", ParseError, r"unbalanced brackets in 'a \(b'"),
        ("a b)", ParseError, r"unbalanced brackets"),
        ("~", ParseError, r"has no name"),
        ("(k h):6", ParseError, r"takes its size from its parts"),
        ("a [4] b", ParseError, r"tag \[4\] must come after every axis"),
        ("a:$", ParseError, r"axis 'a:\$': cannot read size '\$': unexpected character '\$' at position 0"),
    ],
)
def test_type_parse_errors_name_the_token(text: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_type(text)


def test_axis_names_cannot_smuggle_code_into_generated_source() -> None:
    for bad in ["a\nimport os", 'a"""', "a\\", "a'", "a\tb"]:
        with pytest.raises(ParseError, match="not a valid axis name"):
            Axis(bad, sympy.Integer(3))


def test_parse_type_rejects_non_text() -> None:
    with pytest.raises(ParseError, match="not int"):
        parse_type(3)  # type: ignore[arg-type]


def test_parallel_composition_grown_one_part_at_a_time_is_the_one_stacked_at_once() -> None:
    """``@`` one part at a time (parts joined when first read) against ``Par.of`` of all parts in one call."""
    import copy
    import pickle

    from ncd.ir.diagram import Par

    parts = [ncd.Linear("m -> n"), ncd.Identity.of("b"), ncd.Identity.of("c"), ncd.ReLU(), ncd.Softmax("k"),
             ncd.Identity.of("d")]
    grown = parts[0]
    prefixes = []
    for p in parts[1:]:
        grown = grown @ p
        prefixes.append(grown)
    whole = Par.of(*parts)
    branch = prefixes[2] @ ncd.Linear("x -> y")  # a prefix grown twice: each composition keeps its own parts
    assert (str(grown.dom), str(grown.cod)) == (str(whole.dom), str(whole.cod)) == ("m, b, c, (), k, d", "n, b, c, (), k, d")
    assert grown == whole and len(grown.parts) == 5  # the identities b and c merged
    assert len(branch.parts) == 4 and branch.parts[-1] == ncd.Linear("x -> y") and len(prefixes[2].parts) == 3
    assert pickle.loads(pickle.dumps(prefixes[-2])) == prefixes[-2] == copy.deepcopy(prefixes[-2])
    assert ncd.load_json(grown.to_json()) == whole


def test_a_kept_hash_is_not_pickled() -> None:
    """Types, segments and axes keep their hash once computed; string hashes differ between processes, so a pickle
    (a saved lowered module holds its diagram) must not carry it."""
    import pickle

    t = parse_type("b m, k h")
    assert {t: 1}[parse_type("b m, k h")] == 1 and "_hash" in vars(t) and "_hash" in vars(t.segments[0].axes[0])
    state = pickle.dumps(t)
    assert b"_hash" not in state and pickle.loads(state) == t
