"""Writing a diagram as versioned JSON: every value tagged (``{"axis": ...}``, ``{"size": "x/s"}``, ...), every node
an object with its ``node`` kind.  :mod:`ncd.ir.serialize` reads it back.

>>> import ncd
>>> obj = encode(ncd.Softmax("k"))
>>> obj["node"], obj["op"]
('box', 'softmax')
"""

from __future__ import annotations

import json
from typing import Any

import sympy

from ncd.errors import SchemaError
from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq, Weave
from ncd.ir.interpreter import Fold
from ncd.ir.size import exact_text, size_text

__all__ = ["FORMAT", "VERSION", "encode", "to_json"]

FORMAT = "ncd.diagram"
VERSION = 1


def _value(v: Any) -> Any:
    if isinstance(v, Axis):
        out: dict[str, Any] = {"axis": v.name, "size": size_text(v.size)}
        if v.role != "feature":
            out["role"] = v.role
        if v.parts:
            out["parts"] = [_value(p) for p in v.parts]
        return out
    if isinstance(v, Segment):
        seg: dict[str, Any] = {"segment": [_value(a) for a in v.axes]}
        if v.dtype != "float":
            seg["dtype"] = v.dtype
        if v.range is not None:
            seg["range"] = size_text(v.range)
        return seg
    if isinstance(v, Type):
        return {"type": [_value(s) for s in v.segments]}
    if isinstance(v, sympy.Basic):
        return {"size": exact_text(v)}  # (a float factor read back as the same double)
    if isinstance(v, tuple):
        return {"tuple": [_value(x) for x in v]}
    if isinstance(v, Diagram):  # a primitive holding a sub-diagram (a scan's body)
        return {"diagram": encode(v)}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise SchemaError(f"cannot serialise value of type {type(v).__name__}: {v!r}")


def encode(d: Diagram) -> dict[str, Any]:
    return _Encode().fold(d)


class _Encode(Fold[dict[str, Any]]):
    """The JSON object of each node, built from its parts' (a :class:`~ncd.ir.interpreter.Fold`)."""

    def identity(self, node: Identity) -> dict[str, Any]:
        return {"node": "identity", "type": _value(node.type)}

    def box(self, box: Box) -> dict[str, Any]:
        out = {"node": "box", "op": box.prim.op, "fields": {k: _value(v) for k, v in box.prim.fields().items()}}
        if box.label is not None:
            out["label"] = box.label
        if box.source is not None:
            out["source"] = box.source.to_list()
        return out

    def seq(self, node: Seq) -> dict[str, Any]:
        return {"node": "seq", "parts": [self.fold(p) for p in node.parts]}

    def par(self, node: Par) -> dict[str, Any]:
        return {"node": "par", "parts": [self.fold(p) for p in node.parts]}

    def weave(self, node: Weave) -> dict[str, Any]:
        return {"node": "weave", "inner": self.fold(node.inner), "axis": _value(node.axis),
                "dom_pos": list(node.dom_pos), "cod_pos": list(node.cod_pos)}

    def block(self, node: Block) -> dict[str, Any]:
        return {"node": "block", "name": node.name, "body": self.fold(node.body), "meta": _value(node.meta)}

    def repeat(self, node: Repeat) -> dict[str, Any]:
        return {"node": "repeat", "body": self.fold(node.body), "var": node.var, "start": size_text(node.start),
                "stop": size_text(node.stop), "name": node.name}

    def unknown(self, node: Diagram) -> dict[str, Any]:
        raise SchemaError(f"cannot serialise diagram node {type(node).__name__}")


def to_json(d: Diagram, indent: int | None = None) -> str:
    return json.dumps({"format": FORMAT, "version": VERSION, "diagram": encode(d)}, indent=indent, ensure_ascii=False)
