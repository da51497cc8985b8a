"""Hostile diagram JSON must not run code when loaded or lowered.

An opaque box's lowering writes its captured call as Python source, so everything pasted
into that source is checked twice: by the primitive (JSON loading fails with
``SchemaError``) and by the lowering rule (a primitive built around its checks fails with
``LoweringError``).  Every hostile payload here would create a file if it ran; the tests
assert the error and that the file does not exist.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import ncd
from ncd.errors import LoweringError, ParseError, SchemaError
from ncd.prims.opaque import ConstantOp, Opaque, OpaqueOp


def _good() -> dict[str, Any]:
    box = Opaque("aten.cumsum.default", "a:3 b:4", "a:3 b:4", (("$in", 0), -1), (("dtype", ("$dtype", "float32")),))
    return json.loads(box.to_json())


def _payload(path: Path) -> str:
    return f"__import__('pathlib').Path({str(path)!r}).touch()"


def _hostile(tmp: Path) -> dict[str, Any]:
    """field path -> replacement: each one would run ``_payload`` if pasted into source."""
    run = _payload(tmp / "pwned")
    return {
        "kwarg-name": ("kwargs", {"tuple": [{"tuple": [f"k=0) if {run} else dict(y", 1]}]}),
        "dtype": ("kwargs", {"tuple": [{"tuple": ["dtype", {"tuple": ["$dtype", f"float32 if {run} else torch.float32"]}]}]}),
        "layout": ("kwargs", {"tuple": [{"tuple": ["layout", {"tuple": ["$layout", f"strided if {run} else 0"]}]}]}),
        "memory-format": ("kwargs", {"tuple": [{"tuple": ["memory_format", {"tuple": ["$memory_format", run]}]}]}),
        "device": ("kwargs", {"tuple": [{"tuple": ["device", {"tuple": ["$device", "cpu') if " + run + " else ('cpu"]}]}]}),
        "target": ("target", f"aten.cumsum.default({run}) or torch.ops.aten.cumsum.default"),
        "target-attr": ("target", "aten.__class__.__init__"),
        "target-missing": ("target", "aten.no_such_operator.default"),
        "unknown-tag": ("args", {"tuple": [{"tuple": ["$code", run]}, -1]}),
        "input-index": ("args", {"tuple": [{"tuple": ["$in", 7]}, -1]}),
        "string-arg": ("args", {"tuple": [{"tuple": ["$in", 0]}, f"'+{run}+'"]}),
        "size-arg": ("args", {"tuple": [{"tuple": ["$in", 0]}, {"size": "n"}]}),
    }


CASES = ["kwarg-name", "dtype", "layout", "memory-format", "device", "target", "target-attr", "target-missing",
         "unknown-tag", "input-index", "string-arg", "size-arg"]


@pytest.mark.parametrize("case", CASES)
def test_hostile_json_is_rejected_on_load(case: str, tmp_path: Path) -> None:
    doc = _good()
    field, value = _hostile(tmp_path)[case]
    doc["diagram"]["fields"][field] = value
    with pytest.raises(SchemaError, match=r"invalid diagram JSON at \$\.diagram"):
        ncd.load_json(json.dumps(doc))
    assert not (tmp_path / "pwned").exists()


def test_the_unmodified_document_loads_and_runs() -> None:
    """The control: the document the hostile ones are made from is accepted and computes cumsum."""
    box = ncd.load_json(json.dumps(_good()))
    x = torch.randn(3, 4)
    torch.testing.assert_close(box.to_torch()(x), torch.cumsum(x, -1))


@pytest.mark.parametrize("case", ["kwarg-name", "dtype", "layout", "device", "unknown-tag", "string-arg"])
def test_lowering_rechecks_a_primitive_built_around_its_checks(case: str, tmp_path: Path) -> None:
    good = ncd.load_json(json.dumps(_good()))
    prim = good.prim
    field, value = _hostile(tmp_path)[case]
    decoded = _decode(value)
    forged = object.__new__(OpaqueOp)
    for f in dataclasses.fields(OpaqueOp):
        object.__setattr__(forged, f.name, decoded if f.name == field else getattr(prim, f.name))
    with pytest.raises(LoweringError, match="opaque box"):
        ncd.ir.diagram.Box(forged).to_torch()
    assert not (tmp_path / "pwned").exists()


def test_keyword_names_must_be_identifiers() -> None:
    with pytest.raises(ParseError, match=r"keyword 'k=0\) or \(y' is not a Python identifier"):
        Opaque("aten.cumsum.default", "a:3", "a:3", (("$in", 0), 0), (("k=0) or (y", 1),))
    with pytest.raises(ParseError, match="unknown dtype 'float32; x'"):
        Opaque("aten.cumsum.default", "a:3", "a:3", (("$in", 0), 0), (("dtype", ("$dtype", "float32; x")),))


def test_constant_dtype_is_rechecked_when_lowering(tmp_path: Path) -> None:
    forged = object.__new__(ConstantOp)
    good = ConstantOp(ncd.parse_type("a:3")[0], "float32", 1.0)
    for f in dataclasses.fields(ConstantOp):
        object.__setattr__(forged, f.name, getattr(good, f.name))
    object.__setattr__(forged, "dtype", f"float32) if {_payload(tmp_path / 'pwned')} else (0")
    with pytest.raises(LoweringError, match="unknown dtype"):
        ncd.ir.diagram.Box(forged).to_torch()
    assert not (tmp_path / "pwned").exists()


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "tuple" in value:
        return tuple(_decode(v) for v in value["tuple"])
    if isinstance(value, dict) and "size" in value:
        import sympy

        return sympy.Symbol(value["size"])
    return value
