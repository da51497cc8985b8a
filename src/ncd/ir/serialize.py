"""A versioned JSON format for diagrams.  Loading never executes code.

Every value is tagged: ``{"axis": ...}``, ``{"segment": ...}``, ``{"type": ...}``,
``{"size": "x/s"}`` (read with the safe size parser), ``{"tuple": [...]}``; primitives
are looked up by ``op`` in the registry of declared primitives, never imported by name.

>>> import ncd
>>> d = ncd.Linear("m -> k h", name="Q") >> ncd.Softmax("k")
>>> ncd.load_json(d.to_json()) == d
True
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import sys
from typing import Any

import sympy

from ncd.errors import LimitError, NCDError, SchemaError, SourceLocation, display_path, printable
from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq, Weave
from ncd.ir.encode import FORMAT, VERSION, encode, to_json
from ncd.ir.field_hints import conforms, field_hints, hint_text, short
from ncd.ir.names import check_text
from ncd.ir.primitive import PRIMITIVES
from ncd.ir.size import size
from ncd.limits import Limits, limits
from ncd.prims.opaque_allowlist import check_allowed

__all__ = ["to_json", "load_json", "FORMAT", "VERSION", "encode"]

#: Whole numbers in primitive fields are bounded (a copy count of 10**12 would exhaust memory).
MAX_INT = 2**20


def _load_families() -> None:
    """Import every primitive family shipped in ``ncd.prims`` (our own modules, by directory listing)."""
    import pkgutil

    import ncd.prims

    for info in pkgutil.iter_modules(ncd.prims.__path__):
        importlib.import_module(f"ncd.prims.{info.name}")


# -- decoding ------------------------------------------------------------------------
#: The keys each kind of object may have (anything else is refused, never dropped).
_NODE_KEYS = {
    "identity": {"node", "type"},
    "box": {"node", "op", "fields", "label", "source"},
    "seq": {"node", "parts"},
    "par": {"node", "parts"},
    "weave": {"node", "inner", "axis", "dom_pos", "cod_pos"},
    "block": {"node", "name", "body", "meta"},
    "repeat": {"node", "body", "var", "start", "stop", "name"},
}
_VALUE_KEYS = {"axis": {"axis", "size", "role", "parts"}, "segment": {"segment", "dtype", "range"}, "type": {"type"},
               "size": {"size"}, "tuple": {"tuple"}, "diagram": {"diagram"}}
#: Primitive fields that may hold an infinite or NaN number (a traced mask constant, a captured argument).
_NONFINITE_FIELDS = {("constant", "value"), ("opaque", "args"), ("opaque", "kwargs"), ("scatter", "value"),
                     ("compare", "value")}
#: fields holding an operand (a number computed with, never a count or size that sets how much is built): their whole
#: numbers may span int64 and uint64, as the model's own (``ids * 2654435761``, ``x & (2**40 + 3)``, ``x + 2**40``);
#: an opaque call's arguments stay within ``MAX_INT`` (they may be sizes of what it builds)
_OPERAND_FIELDS = {("constant", "value"), ("scatter", "value"), ("compare", "value"), ("arithmetic", "value"),
                   ("pad", "value")}
OPERAND_INT = 2**64


def file_levels(lim: Limits) -> int:
    """The JSON levels (objects and lists) a file may nest: what the deepest diagram :mod:`ncd.limits` lets one build
    takes.  A diagram node is at most two levels (``{"node": "seq", "parts": [...]}``) and so is a tagged value
    (``{"tuple": [...]}``); the reader then counts nodes against ``nesting`` and values against ``depth``."""
    return 2 * (lim.nesting + 1) + 2 * lim.depth + 4  # + the document, a box's fields and a last list


def _scan(data: Any) -> None:
    """Before decoding: nesting depth, node count, and every string (keys too) against :mod:`ncd.limits`."""
    lim = limits()
    levels = file_levels(lim)
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(data, "$", 1)]
    while stack:
        x, path, depth = stack.pop()
        if depth > levels:
            raise SchemaError(f"invalid diagram JSON at {path}: the file is nested more than {levels} levels deep, more"
                              f" than a diagram within the limits takes (nesting and depth in ncd.limits)")
        if isinstance(x, str):
            _string(x, path)
        elif isinstance(x, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(x))
        elif isinstance(x, dict):
            if "node" in x:
                nodes += 1
                if nodes > lim.nodes:
                    raise SchemaError(f"invalid diagram JSON at {path}: the file has more than {lim.nodes} diagram nodes"
                                      " (nodes in ncd.limits)")
            for k, v in x.items():
                _string(k, f"{path} (a key)")
                stack.append((v, f"{path}.{k}", depth + 1))


def _string(text: str, path: str) -> None:
    try:
        check_text(text, "a text")
    except NCDError as e:
        raise SchemaError(f"invalid diagram JSON at {path}: {e}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SchemaError(f"invalid diagram JSON: key {k!r:.60} appears twice in one object")
        out[k] = v
    return out


def _nonfinite(value: Any) -> bool:
    if isinstance(value, tuple):
        return any(_nonfinite(v) for v in value)
    return isinstance(value, float) and not math.isfinite(value)


class _Reader:
    def __init__(self, trust: bool = False) -> None:
        self.depth = 0  # tagged values one inside another (types, segments, axes, tuples, diagrams)
        self.nodes = 0  # diagram nodes one inside another, the box or identity at the bottom included
        self.trust = trust

    def keys(self, o: dict[str, Any], allowed: set[str], path: str, what: str) -> None:
        unknown = set(o) - allowed
        if unknown:
            raise self.fail(path, f"{what} has no field(s) {sorted(unknown)}; its fields are {sorted(allowed)}")

    def fail(self, path: str, message: str) -> SchemaError:
        return SchemaError(f"invalid diagram JSON at {path}: {message}")

    def enter(self, path: str) -> None:
        self.depth += 1
        if self.depth > limits().depth:
            raise self.fail(path, f"its values are nested more than {limits().depth} levels deep (depth in ncd.limits)")

    def obj(self, x: Any, path: str, *keys: str) -> dict[str, Any]:
        if not isinstance(x, dict):
            raise self.fail(path, f"expected an object, found {type(x).__name__}")
        for k in keys:
            if k not in x:
                raise self.fail(path, f"missing key {k!r}")
        return x

    def text(self, x: Any, path: str) -> str:
        if not isinstance(x, str):
            raise self.fail(path, f"expected a string, found {type(x).__name__}")
        return x

    def list(self, x: Any, path: str) -> list[Any]:
        if not isinstance(x, list):
            raise self.fail(path, f"expected a list, found {type(x).__name__}")
        return x

    def size(self, x: Any, path: str) -> sympy.Expr:
        text = self.text(x, path)
        try:
            return size(text)
        except NCDError as e:
            raise self.fail(path, str(e)) from None

    def value(self, x: Any, path: str) -> Any:
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        self.enter(path)
        try:
            return self._value(x, path)
        except SchemaError:
            raise
        except NCDError as e:
            raise self.fail(path, str(e)) from None
        finally:
            self.depth -= 1

    def _value(self, x: Any, path: str) -> Any:
        if isinstance(x, list):
            raise self.fail(path, "bare lists are not allowed; tuples are tagged {'tuple': [...]}")
        o = self.obj(x, path)
        tag = next((k for k in _VALUE_KEYS if k in o), None)  # the order decoding reads them in
        if tag is not None:
            self.keys(o, _VALUE_KEYS[tag], path, f"a tagged {tag} value")
        if "axis" in o:
            parts = tuple(self.value(p, f"{path}.parts[{i}]") for i, p in enumerate(self.list(o.get("parts", []), f"{path}.parts")))
            role = o.get("role", "feature")
            if role not in ("feature", "item"):
                raise self.fail(path, f"unknown axis role {role!r}")
            if not all(isinstance(p, Axis) for p in parts):
                raise self.fail(f"{path}.parts", "the parts of a bound axis are axes")
            return Axis(self.text(o["axis"], f"{path}.axis"), self.size(o.get("size"), f"{path}.size"), role, parts)
        if "segment" in o:
            axes = tuple(self.value(a, f"{path}.segment[{i}]") for i, a in enumerate(self.list(o["segment"], f"{path}.segment")))
            if not all(isinstance(a, Axis) for a in axes):
                raise self.fail(path, "a segment holds axes only")
            dtype = o.get("dtype", "float")
            if dtype not in ("float", "index", "bool", "complex"):
                raise self.fail(path, f"unknown dtype {dtype!r}")
            rng = self.size(o["range"], f"{path}.range") if o.get("range") is not None else None
            return Segment(axes, dtype, rng)
        if "type" in o:
            segs = tuple(self.value(s, f"{path}.type[{i}]") for i, s in enumerate(self.list(o["type"], f"{path}.type")))
            if not all(isinstance(s, Segment) for s in segs):
                raise self.fail(path, "a type holds segments only")
            return Type(segs)
        if "size" in o:
            return self.size(o["size"], f"{path}.size")
        if "tuple" in o:
            return tuple(self.value(v, f"{path}.tuple[{i}]") for i, v in enumerate(self.list(o["tuple"], f"{path}.tuple")))
        if "diagram" in o:
            return self.diagram(o["diagram"], f"{path}.diagram")
        raise self.fail(path, f"unknown value with keys {sorted(o)}")

    def diagram(self, x: Any, path: str) -> Diagram:
        """A diagram node: refused, before its parts are read, past the nesting building allows (``nesting`` in
        :mod:`ncd.limits` counts composite nodes; the box or identity under them is one more here)."""
        self.nodes += 1
        try:
            if self.nodes > limits().nesting + 1:
                raise self.fail(path, f"diagram nodes are nested more than {limits().nesting} deep (blocks, sequences,"
                                      " pars, weaves and repetitions one inside another; nesting in ncd.limits)")
            return self._diagram(x, path)
        finally:
            self.nodes -= 1

    def _diagram(self, x: Any, path: str) -> Diagram:
        o = self.obj(x, path, "node")
        kind = o["node"]
        if not isinstance(kind, str) or kind not in _NODE_KEYS:
            raise self.fail(f"{path}.node", f"unknown node kind {kind!r:.60}; known: {', '.join(_NODE_KEYS)}")
        self.keys(o, _NODE_KEYS[kind], path, f"a {kind} node")
        try:
            if kind == "identity":
                t = self.value(o.get("type"), f"{path}.type")
                if not isinstance(t, Type):
                    raise self.fail(path, "identity needs a type")
                return Identity(t)
            if kind == "box":
                return self.box(o, path)
            if kind in ("seq", "par"):
                raw_parts = self.list(o.get("parts"), f"{path}.parts")
                parts = tuple(self.diagram(p, f"{path}.parts[{i}]") for i, p in enumerate(raw_parts))
                return Seq(parts) if kind == "seq" else Par(parts)
            if kind == "weave":
                axis = self.value(o.get("axis"), f"{path}.axis")
                if not isinstance(axis, Axis):
                    raise self.fail(path, "weave needs an axis")
                raw_dom, raw_cod = self.list(o.get("dom_pos"), f"{path}.dom_pos"), self.list(o.get("cod_pos"), f"{path}.cod_pos")
                dom_pos = tuple(self._pos(p, f"{path}.dom_pos[{i}]", True) for i, p in enumerate(raw_dom))
                cod_pos = tuple(self._pos(p, f"{path}.cod_pos[{i}]", False) for i, p in enumerate(raw_cod))
                return Weave(self.diagram(o.get("inner"), f"{path}.inner"), axis, dom_pos, cod_pos)  # type: ignore[arg-type]
            if kind == "block":
                meta = self.value(o.get("meta", {"tuple": []}), f"{path}.meta")
                if not isinstance(meta, tuple) or not all(
                    isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str) for m in meta
                ):
                    raise self.fail(f"{path}.meta", "expected a tuple of (key, value) pairs")
                return Block(self.diagram(o.get("body"), f"{path}.body"), self.text(o.get("name"), f"{path}.name"), meta)
            if kind == "repeat":
                name = o.get("name")
                return Repeat(self.diagram(o.get("body"), f"{path}.body"), self.text(o.get("var"), f"{path}.var"),
                              self.size(o.get("start"), f"{path}.start"), self.size(o.get("stop"), f"{path}.stop"),
                              None if name is None else self.text(name, f"{path}.name"))
        except SchemaError:
            raise
        except NCDError as e:
            raise self.fail(path, str(e)) from None
        raise self.fail(path, f"unknown node kind {kind!r}")

    def _pos(self, p: Any, path: str, nullable: bool) -> int | None:
        if p is None and nullable:
            return None
        if isinstance(p, bool) or not isinstance(p, int):
            raise self.fail(path, f"expected a whole number, found {p!r}")
        return p

    def box(self, o: dict[str, Any], path: str) -> Box:
        op = self.text(o.get("op"), f"{path}.op")
        cls = PRIMITIVES.get(op)
        if cls is None:
            raise self.fail(path, f"unknown primitive {op!r}")
        raw = self.obj(o.get("fields", {}), f"{path}.fields")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise self.fail(f"{path}.fields", f"primitive {op!r} has no field(s) {sorted(unknown)}")
        fields = {k: self.value(v, f"{path}.fields.{k}") for k, v in raw.items()}
        if op == "opaque" and not self.trust:
            try:
                check_allowed(fields.get("target"), fields.get("args"), fields.get("kwargs", ()))  # type: ignore[arg-type]
            except NCDError as e:
                raise self.fail(f"{path}.fields.target", str(e)) from None
        hints = field_hints(cls)  # type: ignore[arg-type]  # a primitive class is hashable
        for k, v in fields.items():
            if (op, k) not in _NONFINITE_FIELDS and _nonfinite(v):
                raise self.fail(f"{path}.fields.{k}", f"primitive {op!r} takes finite numbers, found {short(v)}")
            if k in hints and not conforms(v, hints[k]):
                raise self.fail(f"{path}.fields.{k}", f"primitive {op!r} expects {hint_text(hints[k])}, found {short(v)}")
            bound = OPERAND_INT if (op, k) in _OPERAND_FIELDS else MAX_INT
            if not _small_ints(v, bound):
                raise self.fail(f"{path}.fields.{k}", f"whole numbers in primitive fields must lie within ±{bound}")
        label = o.get("label")
        if label is not None and not isinstance(label, str):
            raise self.fail(f"{path}.label", f"expected a string, found {type(label).__name__}")
        try:
            prim = cls(**fields)
            box = Box(prim, o.get("label"), None)
        except NCDError as e:
            raise self.fail(path, f"primitive {op!r}: {e}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise self.fail(path, f"primitive {op!r} has malformed fields: {e}") from None
        source = o.get("source")
        if source is not None:
            src = self.list(source, f"{path}.source")
            if len(src) != 3 or not isinstance(src[0], str) or isinstance(src[1], bool) or not isinstance(src[1], int) \
                    or not isinstance(src[2], str):
                raise self.fail(f"{path}.source", "expected [file, line, function]")
            if not 0 <= src[1] <= 10**9:
                raise self.fail(f"{path}.source[1]", f"line {src[1]} is not a line number")
            box = Box(box.prim, box.label, SourceLocation(display_path(str(src[0])), src[1], str(src[2])))
        return box


def _small_ints(value: Any, bound: int = MAX_INT) -> bool:
    if isinstance(value, tuple):
        return all(_small_ints(v, bound) for v in value)
    return not isinstance(value, int) or isinstance(value, bool) or abs(value) <= bound


def load_json(text: str | bytes, *, trust: bool = False) -> Diagram:
    """Read a diagram from :func:`to_json` text; malformed input raises :class:`SchemaError`.

    Loading never executes code, and a file's opaque boxes may call only the pure tensor operators of
    :mod:`ncd.prims.opaque_allowlist` unless ``trust=True`` (files you made or trust).  Sizes, nesting,
    node counts and string lengths are checked against :mod:`ncd.limits` before anything is built.
    """
    _load_families()
    lim = limits()
    if isinstance(text, (bytes, bytearray)):
        if len(text) > lim.file_bytes:
            raise LimitError(f"invalid diagram JSON: the file has {len(text)} bytes, more than the limit of"
                             f" {lim.file_bytes} (file_bytes in ncd.limits)")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise SchemaError(f"invalid diagram JSON: the file is not UTF-8 text (byte {e.start}: {e.reason})") from None
    if not isinstance(text, str):
        raise SchemaError(f"invalid diagram JSON: expected text, found {type(text).__name__}")
    if len(text) > lim.file_bytes:
        raise LimitError(f"invalid diagram JSON: the text has {len(text)} characters, more than the limit of"
                         f" {lim.file_bytes} (file_bytes in ncd.limits)")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except (TypeError, ValueError, RecursionError) as e:
        raise SchemaError(f"invalid diagram JSON: {printable(str(e))[:200]}") from None
    _scan(data)
    try:
        return _read(data, trust)
    except RecursionError:  # only when the limits were raised past what Python's stack holds
        raise LimitError(f"invalid diagram JSON: the file is nested deeper than Python's recursion limit"
                         f" ({sys.getrecursionlimit()}) lets it be read; lower nesting or depth in ncd.limits") from None


def _read(data: Any, trust: bool) -> Diagram:
    reader = _Reader(trust)
    top = reader.obj(data, "$", "format", "version", "diagram")
    reader.keys(top, {"format", "version", "diagram"}, "$", "the document")
    if top["format"] != FORMAT:
        raise SchemaError(f"invalid diagram JSON at $.format: expected {FORMAT!r}, found {short(top['format'])}")
    version = top["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        raise SchemaError(
            f"invalid diagram JSON at $.version: this ncd reads version {VERSION}, the file is version {short(version)}"
        )
    return reader.diagram(top["diagram"], "$.diagram")
