"""What the viewer shows on hover: one record per distinct box, block and wire, shared by every view.

A record is ``{"kind", "title", "rows": [[label, value], ...], "find": [words, more words]}`` of
plain text (``find``: what a search matches, lower case: the label, primitive, family, kind and
:data:`SYNONYMS` first, parameters second); the page shows it
with ``textContent`` only, so user labels (module and class names) can never become markup.
Sizes are shown as written and, where the top block's ``defaults`` bind them, with their
values (``m = 768``).  Costs come from :func:`ncd.analysis.cost.cost` (each distinct part once, composed by
:class:`~ncd.viewer.costs.Costs`) when that interpreter is present and knows every primitive
involved; otherwise the rows are simply absent.

>>> import ncd
>>> cat = Catalogue(ncd.Linear("m -> n").block("Net", defaults=(("m", 4), ("n", 3))))
>>> box = next(ncd.Linear("m -> n").boxes())
>>> record = cat.infos[cat.box(box, box.dom, box.cod, ())]
>>> record["title"], dict(record["rows"])["input"]
('L', 'm  (m = 4)')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import sympy

from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Block, Box, Diagram, Repeat
from ncd.ir.size import symbol
from ncd.torch.read_back import KEYS
from ncd.viewer.costs import Costs, operators_defined

__all__ = ["Catalogue", "human", "SYNONYMS"]

#: Words a search for a box also matches, by primitive (what people call these operations).
SYNONYMS = {
    "linear": "projection dense matmul",
    "einsum": "contraction matmul product",
    "unembed": "projection logits",
    "embedding": "lookup",
    "softmax": "attention weights",
}

_UNITS = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def human(value: int | float, unit: str = "") -> str:
    """A number with an SI prefix: ``human(1536000, "FLOP")`` is ``'1.54 MFLOP'``."""
    for scale, prefix in _UNITS:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:g} {unit}".rstrip()


class Catalogue:
    """Records for everything hoverable, deduplicated, plus the table of blocks (for search and navigation)."""

    def __init__(self, diagram: Diagram, *, costs: bool = True) -> None:
        self.diagram = diagram
        self.defaults: dict[str, int] = dict(diagram.get("defaults", ())) if isinstance(diagram, Block) else {}
        self._subs = {symbol(k): sympy.Integer(v) for k, v in self.defaults.items()}
        self.infos: list[dict[str, Any]] = []
        self.blocks: dict[str, dict[str, Any]] = {}
        self.block_info: dict[str, int] = {}
        self._index: dict[Any, int] = {}
        #: per box (by ``id``: the diagram keeps its boxes alive), the wires it was drawn with and its record
        self._seen: dict[int, list[tuple[Type, Type, tuple[Axis, ...], int]]] = {}
        self.wire_axis: dict[int, tuple[str, str]] = {}  # wire record -> (axis name, size)
        if costs:
            operators_defined(diagram)  # a traced diagram read back: its Functions' operators, as lowering does
        self.costs = Costs(self.defaults) if costs else None
        # what many equal boxes and wires share is worked out once (a 10,000-box chain has a few distinct kinds)
        self._wires: dict[tuple[Any, ...], int] = {}
        self._texts: dict[tuple[Any, ...], str] = {}
        self._kinds: dict[tuple[Any, ...], tuple[list[list[str]], str, int]] = {}  # rows, parameters, number

    # -- records ------------------------------------------------------------------------------
    def _add(self, record: dict[str, Any]) -> int:
        text = json.dumps(record, sort_keys=True, ensure_ascii=False)
        if text not in self._index:
            self._index[text] = len(self.infos)
            self.infos.append(record)
        return self._index[text]

    def box(self, box: Box, dom: Type, cod: Type, woven: tuple[Axis, ...],
            costed: Diagram | Callable[[], Diagram] | None = None) -> int:
        """The record of a drawn box.

        ``dom``/``cod`` are its wires as drawn, ``woven`` the axes broadcast past it and ``costed``
        the box with those broadcasts (what its costs are computed for, or a function making it when needed;
        the box itself by default).
        """
        seen = self._seen.get(id(box))  # this box drawn before (a panel draws its block's boxes again)
        if seen is not None:
            for d, c, w, found in seen:
                if d == dom and c == cod and w == woven:
                    return found
        else:
            seen = self._seen[id(box)] = []
        prim = box.prim
        kind = (prim, dom, cod, woven)  # what the record says about every box of this primitive and wires
        shared = self._kinds.get(kind)
        if shared is None:
            target = costed() if callable(costed) else costed
            rows, params = self._box_rows(box, dom, cod, woven, target if target is not None else box)
            shared = self._kinds[kind] = (rows, params, len(self._kinds))
        rows, params, number = shared
        title, where = box.text(), str(box.source) if box.source else ""
        key = ("box", number, title, box.label, where)  # the kind by its number: hashed once per box, not twice
        index = self._index.get(key)
        if index is None:
            words = " ".join(dict.fromkeys([title, prim.op, prim.family, prim.kind, box.label or "",
                                            SYNONYMS.get(prim.op, "")]))
            record = {"kind": "box", "title": title, "rows": rows + ([["built at", where]] if where else []),
                      "find": [words.lower(), params.lower()]}
            index = self._index[key] = len(self.infos)  # keyed exactly: no need to compare the text
            self.infos.append(record)
        seen.append((dom, cod, woven, index))
        return index

    def _box_rows(self, box: Box, dom: Type, cod: Type, woven: tuple[Axis, ...], costed: Diagram) -> tuple[list[list[str]], str]:
        """The rows every box of ``box``'s primitive and wires shows (its costs do not depend on its label),
        and its parameters as text."""
        prim = box.prim
        flags = [prim.family, prim.kind] + (["learned"] if prim.learned else [])
        rows = [["primitive", f"{prim.op} ({', '.join(f for f in flags if f)})"]]
        params = ", ".join(f"{k}={self._value(v)}" for k, v in prim.fields().items())
        if params:
            rows.append(["parameters", params])
        rows += [["input", self.type_text(dom)], ["output", self.type_text(cod)]]
        if woven:
            rows.append(["broadcast over", " ".join(self.axis_text(a) for a in woven)])
        learned = prim.params()
        if learned:
            rows.append(["weights", "; ".join(f"{k}: {' × '.join(self.size_text(s) for s in shape)}"
                                              for k, shape in learned.items())])
        return rows + self._cost_rows(costed), params

    def wire(self, axis: Axis, segment: int | None, segments: int, *, woven: bool = False) -> int:
        """The record of a wire: its axis name, size and role."""
        key = (axis, segment, segments, woven)
        hit = self._wires.get(key)
        if hit is not None:
            return hit
        role = "item axis (drawn overlined)" if axis.is_item else "feature axis"
        rows = [["size", self.size_text(axis.size, axis.name)], ["role", role]]
        if axis.parts:
            rows.append(["binds", " ".join(self.axis_text(p) for p in axis.parts)])
        if woven:
            rows.append(["broadcast", "runs past the box: the box is applied for every index of this axis"])
        elif segment is not None and segments > 1:
            rows.append(["segment", f"{segment + 1} of {segments}"])
        index = self._add({"kind": "wire", "title": f"axis {self.axis_name(axis)}", "rows": rows,
                           "find": [axis.name.lower(), ""]})
        self.wire_axis[index] = (axis.name, str(axis.size))
        self._wires[key] = index
        return index

    def block(self, key: str, node: Block, parent: str, depth: int, expandable: bool, fold: int,
              repeats: Sequence[Repeat], woven: Sequence[Axis]) -> int:
        """The record of block ``key`` (recorded once; every view draws the same block the same way)."""
        if key in self.block_info:
            return self.block_info[key]
        rows = [["input", self.type_text(node.dom)], ["output", self.type_text(node.cod)]]
        meta = [(k, v) for k, v in node.meta if k not in ("defaults", "legend", *KEYS)]
        if meta:
            rows.append(["parameters", ", ".join(f"{k}={v}" for k, v in meta)])
        boxes = sum(1 for _ in node.boxes())
        rows.append(["boxes", str(boxes)])
        if fold > 1:
            rows.append(["folded", f"×{fold}: identical blocks in a row, drawn once"])
        for r in repeats:
            rows.append(["repeated", f"{r.var} = {self.size_text(r.start)} … {self.size_text(r.stop - 1)}"
                                     f" ({self.size_text(r.stop - r.start)} times, own parameters each)"])
        if woven:
            rows.append(["broadcast over", " ".join(self.axis_text(a) for a in woven)])
        rows += self._cost_rows(node)
        index = self._add({"kind": "block", "title": node.name, "rows": rows, "key": key, "find": [node.name.lower(), ""]})
        self.block_info[key] = index
        self.blocks[key] = {"name": node.name, "parent": parent, "depth": depth, "expandable": expandable,
                            "info": index, "state": False}
        return index

    # -- text -----------------------------------------------------------------------------------
    def size_text(self, value: Any, name: str | None = None) -> str:
        key = ("size", value, name)
        hit = self._texts.get(key)
        if hit is None:
            hit = self._texts[key] = self._size_text(value, name)
        return hit

    def _size_text(self, value: Any, name: str | None) -> str:
        expr = sympy.sympify(value)
        text = str(expr).replace("**", "^")
        bound = expr.xreplace(self._subs) if self._subs else expr
        if name is not None:
            text = name if text == name.rstrip("\u0305") else f"{name} = {text}"
        if bound != expr and bound.is_number:
            text += f" = {int(bound)}" if bound.is_integer else f" = {float(bound):g}"
        return text

    def axis_name(self, axis: Axis) -> str:
        return axis.name + ("\u0305" if axis.is_item and len(axis.name) == 1 else "")

    def axis_text(self, axis: Axis) -> str:
        return self.size_text(axis.size, self.axis_name(axis)) if self._subs else str(axis)

    def type_text(self, typ: Type) -> str:
        key = ("type", typ)
        hit = self._texts.get(key)
        if hit is None:
            hit = self._texts[key] = self._type_text(typ)
        return hit

    def _type_text(self, typ: Type) -> str:
        text = str(typ) or "()"
        bound = [self.axis_text(a) for seg in typ for a in seg if self._subs and a.size.xreplace(self._subs) != a.size]
        return text + (f"  ({', '.join(dict.fromkeys(bound))})" if bound else "")

    def _value(self, value: Any) -> str:
        if isinstance(value, (Type, Segment, Axis)):
            return f"'{value}'"
        if isinstance(value, tuple):
            return "(" + ", ".join(self._value(v) for v in value) + ")"
        if isinstance(value, sympy.Basic):
            return str(value).replace("**", "^")
        return repr(value)

    # -- costs ------------------------------------------------------------------------------------
    def _cost_rows(self, node: Diagram) -> list[list[str]]:
        metrics = self.costs.of(node) if self.costs is not None else None
        if metrics is None:
            return []
        rows = []
        for label, name, unit in (("forward", "forward_flops", "FLOP"), ("backward", "backward_flops", "FLOP"),
                                  ("parameter count", "params", ""), ("activations", "activation_bytes", "B")):
            expr = getattr(metrics, name)
            bound = sympy.sympify(expr).xreplace(self._subs)
            if bound.is_number:
                if bound == 0 and name != "forward_flops":
                    continue
                rows.append([label, human(float(bound), unit)])
            else:
                text = str(sympy.sympify(expr)).replace("**", "^")
                rows.append([label, text if len(text) <= 160 else text[:157] + "…"])
        return rows

