"""Misuse a new user makes of the DSL and the public API: each is an ``ncd`` error that names the box, the axes
and the sizes involved (or the call and what it was given), never a plain Python error from deep inside."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import torch

import ncd
from ncd.render import to_svg


def _linear() -> ncd.Diagram:
    return ncd.Linear("m -> k")


def _json_with(**changes: Any) -> str:
    data = json.loads(_linear().to_json())
    data.update(changes)
    return json.dumps(data)


#: (what the user did, the call, the ncd error, a pattern its message must match)
MISUSE: list[tuple[str, Callable[[], object], type[ncd.NCDError], str]] = [
    ("an axis name the wire does not have", lambda: ncd.Identity.of("b t m") >> ncd.Linear("n -> k"),
     ncd.TypeMismatchError, r"(?s)cannot compose identity on 'b t m'.*with L .*axis n of the second is not in segment 0"),
    ("sizes that differ at a junction", lambda: ncd.Identity.of("b t m:64") >> ncd.Linear("m:32 -> k"),
     ncd.TypeMismatchError, r"axis m has size 64 in the first and 32 in the second"),
    ("a box put in parallel with text", lambda: _linear() @ "x",  # type: ignore[operator]
     ncd.TypeMismatchError, r"cannot put L \(built at .*test_public_api_misuse.py.*\) in parallel with str 'x'"),
    ("a box composed with a number", lambda: _linear() >> 3,  # type: ignore[operator]
     ncd.TypeMismatchError, r"cannot compose L .* with int 3: not a diagram"),
    ("a size bound to zero", lambda: _linear().bind(m=0), ncd.SizeError, r"axis m has size 0"),
    ("a misspelt size keyword", lambda: _linear().to_torch(m=3, q=2), ncd.SizeError,
     r"q is not a size of the diagram; its sizes are k, m"),
    ("a module fed the wrong shape", lambda: _linear().to_torch(m=3, k=2)(torch.randn(4, 5)), ncd.InputError,
     r"input 0 should end in axes 'm' of sizes \(m=3\), but has shape \(4, 5\)"),
    ("a negative batch for example inputs", lambda: _linear().example_inputs(-1, m=2, k=3), ncd.InputError,
     r"example_inputs: the leading batch sizes \(-1,\) must be whole numbers ≥ 0, not -1"),
    ("ncd.trace given a function", lambda: ncd.trace(lambda x: x, torch.randn(2)), ncd.TraceError,
     r"ncd.trace takes a torch.nn.Module, not function"),
    ("ncd.trace axes naming too many axes", lambda: ncd.trace(torch.nn.Linear(3, 4), torch.randn(2, 3), axes="b t m"),
     ncd.ParseError, r"axes 'b t m' for input 'input' name 3 axes, but it has shape \(2, 3\)"),
    ("ncd.trace axes that are not text", lambda: ncd.trace(torch.nn.Linear(3, 4), torch.randn(2, 3), axes={"input": 5}),
     ncd.ParseError, r"axes for input 'input' must be text naming its axes, such as 'b t m', not int 5"),
    ("ncd.trace axes of another kind", lambda: ncd.trace(torch.nn.Linear(3, 4), torch.randn(2, 3), axes=7),
     ncd.TraceError, r"axes must be text for the one input .* not int 7"),
    ("ncd.trace axes for an input the model lacks", lambda: ncd.trace(torch.nn.Linear(3, 4), torch.randn(2, 3), axes={"x": "b m"}),
     ncd.TraceError, r"axes given for \['x'\], but the model's tensor inputs are \['input'\]"),
    ("drawing an empty diagram", lambda: to_svg(ncd.Identity.of("")), ncd.InputError,
     r"draw: the diagram is empty \(identity on '' .*\): no wires and no boxes"),
    ("drawing text", lambda: to_svg("hello"), ncd.InputError, r"draw: expected an ncd diagram, not str 'hello'"),  # type: ignore[arg-type]
    ("ncd.draw with its arguments swapped", lambda: ncd.draw("out.svg", _linear()),  # type: ignore[arg-type]
     ncd.InputError, r"draw: expected an ncd diagram, not str 'out.svg'"),
    ("ncd.draw to a path that is not one", lambda: ncd.draw(_linear(), 3),  # type: ignore[arg-type]
     ncd.InputError, r"draw: the path must be a file name such as 'gpt2.svg', not int 3"),
    ("to_svg with an unknown style option", lambda: to_svg(_linear(), colour="red"), ncd.InputError,
     r"draw: unknown option\(s\) colour; known: .*depth"),
    ("to_svg with a style option out of range", lambda: to_svg(_linear(), pitch=-3), ncd.InputError,
     r"draw: pitch=-3 must be a finite number > 0"),
    ("ncd.cost of something else", lambda: ncd.cost(3), ncd.InputError,  # type: ignore[arg-type]
     r"cost: expected an ncd diagram, not int 3"),
    ("ncd.backward of something else", lambda: ncd.backward("x"), ncd.InputError,  # type: ignore[arg-type]
     r"backward: expected an ncd diagram, not str 'x'"),
    ("ncd.io of something else", lambda: ncd.io(None, ncd.Hierarchy.preset("h100")), ncd.InputError,  # type: ignore[arg-type]
     r"io: expected an ncd diagram, not NoneType None"),
    ("ncd.shard of something else", lambda: ncd.shard(3, ncd.Mesh(tp=2), {"k": "tp"}), ncd.InputError,  # type: ignore[arg-type]
     r"shard: expected an ncd diagram, not int 3"),
    ("a diagram file that is not JSON", lambda: ncd.load_json("{not json"), ncd.SchemaError, r"invalid diagram JSON"),
    ("a diagram file of another version", lambda: ncd.load_json(_json_with(version=99)), ncd.SchemaError,
     r"at \$.version: this ncd reads version 1, the file is version 99"),
    ("a diagram file naming an unknown primitive",
     lambda: ncd.load_json(_linear().to_json().replace('"linear"', '"frobnicate"')), ncd.SchemaError,
     r"at \$.diagram: unknown primitive 'frobnicate'"),
    ("a diagram file whose sequence does not compose",
     lambda: ncd.load_json(json.dumps({"format": "ncd.diagram", "version": 1, "diagram": {
         "node": "seq", "parts": [json.loads(_linear().to_json())["diagram"]] * 2}})),
     ncd.SchemaError, r"(?s)at \$.diagram: cannot compose L .*output of the first: 'k'.*input of the second: 'm'"),
]


@pytest.mark.parametrize(("call", "error", "pattern"), [case[1:] for case in MISUSE], ids=[case[0] for case in MISUSE])
def test_misuse_is_an_ncd_error_naming_what_is_wrong(call: Callable[[], object], error: type[ncd.NCDError],
                                                    pattern: str, tmp_path: pathlib.Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a drawing that wrongly went ahead would write here
    with pytest.raises(error, match=pattern) as raised:
        call()
    assert isinstance(raised.value, ncd.NCDError)
    assert not list(tmp_path.iterdir()), "a refused call wrote a file"


def test_wires_alone_still_draw() -> None:
    """Only a diagram with neither wires nor boxes is refused: an identity on wires is a drawing of its wires."""
    import re

    svg = to_svg(ncd.Identity.of("b") @ ncd.Identity.of("c"), embed_fonts=False)
    assert sorted(re.findall(r"<text[^>]*>(.*?)</text>", svg)) == ["b", "b", "c", "c"]  # each wire labelled at both ends
