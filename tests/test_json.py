"""The JSON format: exact round trips of random diagrams; malformed and hostile files raise SchemaError saying where."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import ncd
from ncd.errors import SchemaError
from ncd.ir.diagram import Diagram, Weave
from ncd.ir.serialize import FORMAT, VERSION

SETTINGS = settings(max_examples=40, deadline=None)
SIZES = ["m", "k", "x/s", "2*c", "512*2**(1-i)", "n_1", "7", "k*h"]


# -- random diagrams (every node kind, symbolic sizes) -----------------------------------------
@st.composite
def leaves(draw: st.DrawFn) -> Diagram:
    a, b = draw(st.sampled_from(SIZES)), draw(st.sampled_from(SIZES))
    kind = draw(st.integers(0, 12))
    if kind == 0:
        return ncd.Linear(f"p:{a} -> q:{b} r", bias=draw(st.booleans()), name=draw(st.sampled_from([None, "Q", "K"])))
    if kind == 1:
        return ncd.Einsum(f"y p:{a}, x p:{a} -> y x")
    if kind == 2:
        return ncd.Identity.of(f"~t p:{a}") >> ncd.Softmax(draw(st.sampled_from(["t", "p"])), log=draw(st.booleans()))
    if kind == 3:
        return ncd.Identity.of(f"p:{a} q:{b}") >> ncd.elementwise(draw(st.sampled_from(["relu", "gelu", "tanh", "exp"])))
    if kind == 4:
        return ncd.Identity.of(f"p:{a}") >> ncd.Scale(draw(st.sampled_from(["k**-0.5", "2", "0.125", "1/s"])))
    if kind == 5:
        return ncd.Save(f"p:{a}", "C", draw(st.sampled_from([None, 0, "i", "i+1"])))
    if kind == 6:
        return ncd.Identity.of(f"p:{a}") @ ncd.Load(f"q:{b}", "C", draw(st.sampled_from([None, 1, "i"])))
    if kind == 7:
        return ncd.Identity.of(f"p:{a} q:{b}") >> ncd.Transpose("p q -> q p")
    if kind == 8:
        return ncd.Unit(f"p:{a}", f"q:{a}")
    if kind == 9:
        return ncd.residual(ncd.Linear(f"p:{a} -> p:{a}", bias=True) >> ncd.ReLU())
    if kind == 10:
        return ncd.Identity.of(f"p:{a} [v], q [bool]")
    if kind == 11:
        return ncd.Swap(f"p:{a}, q:{b}") >> (ncd.Identity.of(f"q:{b}") @ ncd.Delete(f"p:{a}"))
    return ncd.Identity.of(f"p:{a}, p:{a}") >> ncd.Multiply()


def _repeat(draw: st.DrawFn) -> Diagram:
    """A repetition whose sizes depend on the iteration (the U-Net's channel halving)."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return ncd.repeat(lambda i: ncd.Linear(f"c:512*2**(-{i}) -> c:512*2**(-{i}-1)").block("down"), "i", 0, "N")
    if kind == 1:
        return ncd.repeat(lambda i: ncd.Save("x c", "C", i) >> ncd.ReLU(), "i", 1, "N+1", name="stage")
    return ncd.repeat(ncd.Identity.of("m") >> ncd.Linear("m -> m", bias=True), "j", 0, 3)


@st.composite
def diagrams(draw: st.DrawFn, depth: int = 0) -> Diagram:
    if depth >= 3 or draw(st.integers(0, 3)) == 0:
        return draw(leaves())
    kind = draw(st.integers(0, 6))
    d = draw(diagrams(depth + 1))
    if kind == 0:
        return d @ draw(diagrams(depth + 1))
    if kind == 1:
        meta = {"defaults": (("s", 2), ("N", 3))} if draw(st.booleans()) else {}
        return d.block(draw(st.sampled_from(["Attention", "MLP", "layer 1"])), **meta)
    used = {name for seg in (*d.dom, *d.cod) for name in seg.names}  # an axis is woven in only once
    if kind == 2 and len(d.dom) and not used & {"b", "w", "g"}:
        shared = draw(st.lists(st.integers(0, len(d.dom) - 1), max_size=len(d.dom) - 1, unique=True))
        return d.weave(draw(st.sampled_from(["b", "~w", "g:x/s"])), shared=shared)
    if kind == 3 and len(d.dom) and "z" not in used:  # a weave at non-leading positions, built directly
        dom_pos = tuple(draw(st.integers(0, len(s))) for s in d.dom)
        cod_pos = tuple(draw(st.integers(0, len(s))) for s in d.cod)
        return Weave(d, ncd.parse_axis("z:2*c"), dom_pos, cod_pos)
    if kind == 4 and len(d.cod):
        return d >> ncd.Copy(d.cod)
    if kind == 5:
        return _repeat(draw)
    return d >> ncd.Identity(d.cod)


@SETTINGS
@given(diagrams())
def test_random_diagrams_round_trip_exactly(d: Diagram) -> None:
    text = d.to_json()
    again = ncd.load_json(text)
    assert again == d
    assert again.to_json() == text
    assert str(again.dom) == str(d.dom) and str(again.cod) == str(d.cod)
    assert again.free_symbols == d.free_symbols
    # locations of the boxes survive, so errors after loading still point at the user's line
    assert [b.source for b in again.boxes()] == [b.source for b in d.boxes()]


def test_symbolic_sizes_survive_the_round_trip_unevaluated() -> None:
    d = ncd.Identity.of("c:512*2**(1-i) x/s") >> ncd.Linear("c:512*2**(1-i) -> n")
    data = json.loads(d.to_json())
    text = json.dumps(data)
    assert "512*2**(1 - i)" in text and "x/s" in text
    again = ncd.load_json(text)
    assert again.dom[0].axes[0].size == 512 * 2 ** (1 - ncd.ir.symbol("i"))
    assert again.bind(i=1, x=8, s=2).dom == d.bind(i=1, x=8, s=2).dom


def test_repeat_with_iteration_dependent_sizes_round_trips_and_still_lowers() -> None:
    r = ncd.repeat(lambda i: ncd.Linear(f"c:64*2**(-{i}) -> c:64*2**(-{i}-1)", bias=True).block("down"), "i", 0, "N")
    again = ncd.load_json(r.to_json(indent=2))
    assert again == r
    a, b = r.to_torch(N=3), again.to_torch(N=3)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert a.ncd_source == b.ncd_source


# -- malformed files: SchemaError with the path -----------------------------------------------
def _file(diagram: Any, **top: Any) -> str:
    return json.dumps({"format": FORMAT, "version": VERSION, "diagram": diagram, **top})


def _relu_box(**fields: Any) -> dict[str, Any]:
    return {"node": "box", "op": "elementwise", "fields": {"function": "relu", **fields}}


AXIS = {"axis": "a", "size": "a"}
SEG = {"segment": [AXIS]}
TYPE = {"type": [SEG]}


@pytest.mark.parametrize(
    "text, where, what",
    [
        ("{", r"", r"Expecting property name"),
        ("[]", r"\$", r"expected an object, found list"),
        (json.dumps({"format": "other", "version": 1, "diagram": {}}), r"\$\.format", r"expected 'ncd\.diagram'"),
        (json.dumps({"format": FORMAT, "version": 99, "diagram": {}}), r"\$\.version", r"reads version 1, the file is version 99"),
        (json.dumps({"format": FORMAT, "version": "1", "diagram": {}}), r"\$\.version", r"version '1'"),
        (json.dumps({"format": FORMAT, "version": 1}), r"\$", r"missing key 'diagram'"),
        (_file({"node": "spline"}), r"\$\.diagram", r"unknown node kind 'spline'"),
        (_file({"type": TYPE}), r"\$\.diagram", r"missing key 'node'"),
        (_file({"node": "seq", "parts": 5}), r"\$\.diagram\.parts", r"expected a list, found int"),
        (_file({"node": "seq", "parts": [{"node": "identity", "type": TYPE}, 3]}), r"\$\.diagram\.parts\[1\]",
         r"expected an object, found int"),
        (_file({"node": "box", "op": "nope"}), r"\$\.diagram", r"unknown primitive 'nope'"),
        (_file({"node": "box", "op": "softmax", "fields": {"axis": 5}}), r"\$\.diagram\.fields\.axis",
         r"'softmax' expects Axis, found 5"),
        (_file({"node": "box", "op": "softmax", "fields": {"axis": AXIS, "log": "yes"}}), r"\$\.diagram\.fields\.log",
         r"expects bool, found 'yes'"),
        (_file({"node": "box", "op": "linear", "fields": {"dom_axes": SEG, "cod_axes": SEG, "bias": 1}}),
         r"\$\.diagram\.fields\.bias", r"expects bool, found 1"),
        (_file({"node": "box", "op": "copy", "fields": {"type": TYPE, "n": 10**12}}), r"\$\.diagram\.fields\.n",
         r"within"),
        (_file({"node": "box", "op": "transpose", "fields": {"segment": SEG, "perm": [0]}}),
         r"\$\.diagram\.fields\.perm", r"bare lists are not allowed"),
        (_file(_relu_box(colour="red")), r"\$\.diagram\.fields", r"has no field\(s\) \['colour'\]"),
        (_file({**_relu_box(), "label": 5}), r"\$\.diagram\.label", r"expected a string, found int"),
        (_file({**_relu_box(), "source": ["f.py", "x", "g"]}), r"\$\.diagram\.source", r"expected \[file, line, function\]"),
        (_file({"node": "identity", "type": {"type": [{"segment": [{"axis": "a", "size": "0"}]}]}}),
         r"\$\.diagram\.type\.type\[0\]\.segment\[0\]", r"axis a has size 0"),
        (_file({"node": "identity", "type": {"type": [{"segment": [{"axis": "a", "size": 3}]}]}}),
         r"\$\.diagram\.type\.type\[0\]\.segment\[0\]\.size", r"expected a string, found int"),
        (_file({"node": "identity", "type": {"type": [{"segment": [AXIS], "dtype": "quaternion"}]}}),
         r"\$\.diagram\.type\.type\[0\]", r"unknown dtype 'quaternion'"),
        (_file({"node": "identity", "type": {"type": [{"segment": [AXIS], "dtype": "index"}]}}),
         r"\$\.diagram\.type\.type\[0\]", r"index range exactly when its dtype is index"),
        (_file({"node": "identity", "type": {"type": [{"segment": [AXIS, TYPE]}]}}),
         r"\$\.diagram\.type\.type\[0\]", r"a segment holds axes only"),
        (_file({"node": "identity", "type": {"type": [{"segment": [{"axis": "a", "size": "a", "role": "hero"}]}]}}),
         r"segment\[0\]", r"unknown axis role 'hero'"),
        (_file({"node": "weave", "inner": _relu_box(), "axis": AXIS, "dom_pos": [0], "cod_pos": ["0"]}),
         r"\$\.diagram\.cod_pos\[0\]", r"expected a whole number, found '0'"),
        (_file({"node": "weave", "inner": _relu_box(), "axis": AXIS, "dom_pos": [5], "cod_pos": [0]}),
         r"\$\.diagram", r"position 5 is outside segment"),
        (_file({"node": "block", "name": "B", "body": _relu_box(), "meta": {"tuple": [1]}}), r"\$\.diagram\.meta",
         r"\(key, value\) pairs"),
        (_file({"node": "block", "name": ["B"], "body": _relu_box()}), r"\$\.diagram\.name", r"expected a string"),
        (_file({"node": "repeat", "body": _relu_box(), "var": "i", "start": "0", "stop": "0"}), r"\$\.diagram",
         r"runs from 0 to 0, which is empty"),
        (_file({"node": "seq", "parts": [{"node": "identity", "type": TYPE},
                                         {"node": "identity", "type": {"type": [{"segment": [{"axis": "b", "size": "b"}]}]}}]}),
         r"\$\.diagram", r"cannot compose"),
    ],
)
def test_malformed_files_raise_schema_errors_saying_where(text: str, where: str, what: str) -> None:
    with pytest.raises(SchemaError, match=r"invalid diagram JSON") as info:
        ncd.load_json(text)
    message = str(info.value)
    assert __import__("re").search(where, message), message
    assert __import__("re").search(what, message), message
    assert message.count("invalid diagram JSON") == 1, f"the prefix is repeated: {message}"


# -- hostile files: refused, and nothing runs ---------------------------------------------------
CANARY = "/tmp/ncd_json_canary"
PAYLOADS = [
    f"__import__('os').system('touch {CANARY}')",
    f"open('{CANARY}', 'w')",
    "().__class__.__base__.__subclasses__()",
    "exec('import os')",
    "9**9**9**9",
    "(" * 500 + "1" + ")" * 500,
    "1/0",
]


@pytest.fixture
def canary() -> Any:
    if os.path.exists(CANARY):
        os.remove(CANARY)
    yield CANARY
    assert not os.path.exists(CANARY), "a hostile file executed code"


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("where", ["axis size", "segment range", "scale factor", "repeat stop", "save index"])
def test_hostile_sizes_are_refused_without_running_anything(payload: str, where: str, canary: str) -> None:
    axis = {"axis": "a", "size": payload if where == "axis size" else "a"}
    seg = {"segment": [axis], **({"dtype": "index", "range": payload} if where == "segment range" else {})}
    identity = {"node": "identity", "type": {"type": [seg]}}
    node: dict[str, Any] = {
        "axis size": identity,
        "segment range": identity,
        "scale factor": {"node": "box", "op": "scale", "fields": {"factor": {"size": payload}}},
        "repeat stop": {"node": "repeat", "body": _relu_box(), "var": "i", "start": "0", "stop": payload},
        "save index": {"node": "box", "op": "save", "fields": {"type": {"type": [SEG]}, "key": "C", "index": {"size": payload}}},
    }[where]
    with pytest.raises(SchemaError, match=r"invalid diagram JSON at \$\.diagram"):
        ncd.load_json(_file(node))


@pytest.mark.parametrize(
    "hostile",
    [
        _file({"node": "box", "op": "__import__('os').system('x')"}),
        _file({"node": "box", "op": "builtins.exec"}),
        _file({"node": "box", "op": "ncd.ir.serialize.load_json", "fields": {}}),
        _file({"node": "os.system", "cmd": "x"}),
        _file({"node": "identity", "type": {"__class__": "os.system"}}),
        _file({"node": "identity", "type": {"type": [{"segment": [{"axis": "a\nimport os", "size": "3"}]}]}}),
        _file({"node": "identity", "type": {"type": [{"segment": [{"axis": 'a"""', "size": "3"}]}]}}),
        _file(_relu_box(function={"tuple": ["relu"]})),
    ],
)
def test_unknown_ops_and_bad_field_types_are_refused(hostile: str, canary: str) -> None:
    with pytest.raises(SchemaError, match=r"invalid diagram JSON at \$"):
        ncd.load_json(hostile)


@pytest.mark.parametrize("depth", [300, 5000, 100_000])
@pytest.mark.parametrize("shape", ["blocks", "tuples", "lists"])
def test_huge_nesting_is_a_schema_error_not_a_crash(depth: int, shape: str) -> None:
    head = f'{{"format": "{FORMAT}", "version": {VERSION}, "diagram": '
    if shape == "blocks":
        body = '{"node": "block", "name": "b", "body": ' * depth + '{"node": "identity", "type": {"type": []}}' + "}" * depth
    elif shape == "tuples":
        body = '{"node": "box", "op": "copy", "fields": {"type": ' + '{"tuple": [' * depth + "]}" * depth + "}}"
    else:
        body = "[" * depth + "]" * depth
    with pytest.raises(SchemaError, match="invalid diagram JSON"):
        ncd.load_json(head + body + "}")


def test_block_names_cannot_break_out_of_generated_docstrings(canary: str) -> None:
    name = f'x"""  open("{CANARY}", "w")  """'
    with pytest.raises(ncd.ParseError, match="control characters"):  # a line break in a name is refused outright
        (ncd.Identity.of("m") >> ncd.ReLU()).block(name.replace("  ", "\n"))
    d = (ncd.Identity.of("m") >> ncd.ReLU()).block(name)
    again = ncd.load_json(d.to_json())
    assert again == d
    module = again.to_torch(m=3)
    assert f'"""  open("{CANARY}"' not in module.ncd_source
    import torch

    x = torch.randn(3)
    torch.testing.assert_close(module(x), torch.relu(x))


def test_loaded_numbers_keep_their_exact_values() -> None:
    d = ncd.Identity.of("a") >> ncd.Scale("0.125")
    again = ncd.load_json(d.to_json())
    factor = next(again.boxes()).prim.factor  # type: ignore[attr-defined]
    assert factor == sympy.Rational(1, 8)
