"""What lowering writes into: one generated class at a time (:class:`ClassEmitter`: its attributes, locals and ops),
and the size expressions bound constants were written as (:class:`NamedSizes`, printed by name).

The rules of :mod:`ncd.torch.rules` reach the emitter as ``ctx.em``; :class:`~ncd.torch.codegen.Codegen` makes one
per class it writes.
"""

from __future__ import annotations

import keyword
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import sympy

from ncd.ir.axes import Axis
from ncd.ir.diagram import Box, Diagram, defaults_of
from ncd.ir.names import python_name
from ncd.ir.program import Expr, Function, Op, OpKind, Value, layout_comment, size_code
from ncd.ir.size import symbol

__all__ = ["ClassEmitter", "NamedSizes", "identifier"]


def _attribute_name(name: str) -> bool:
    """Whether ``sizes.<name>`` is Python naming exactly that attribute (no keyword; NFKC leaves it as it is)."""
    return name.isidentifier() and not keyword.iskeyword(name) and unicodedata.normalize("NFKC", name) == name


def identifier(text: str, default: str = "x") -> str:
    """A variable name for ``text`` as Python reads it (NFKC, no keyword or builtin; see ``ncd.ir.names``)."""
    return python_name(text, default)


_NAMES = re.compile(r"(?<![.\w])[^\W\d]\w*")  # an identifier, Unicode letters too (a box named é)


@dataclass
class NamedSizes:
    """The size expressions a diagram's constants were written as (``Scale("k**-0.5")``), so that bound source
    prints them by name (``x * sizes.k ** -0.5``) rather than as the number they were bound to.

    >>> import ncd
    >>> named = NamedSizes.of(ncd.Scale("k**-0.5") >> ncd.Scale(0.25), {"k": 64})
    >>> named.written(sympy.Rational(1, 8)), named.written(sympy.Rational(1, 4))
    (1/sqrt(k), 1/4)
    """

    #: the bound sizes
    sizes: dict[str, int]
    #: a bound constant -> the size expression it was bound from (``None``: from several, or also written as a number)
    table: dict[sympy.Expr, sympy.Expr | None]
    #: the sizes printed by name so far (the generated module defines them: ``Program.sizes``)
    used: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, diagram: Diagram, sizes: dict[str, int]) -> NamedSizes:
        """The constants of ``diagram``'s scales, bound at ``sizes`` (with the top block's defaults)."""
        from ncd.prims.elementwise import ScaleOp

        merged = {**defaults_of(diagram), **sizes}
        mapping = {symbol(k): sympy.Integer(v) for k, v in merged.items()}
        table: dict[sympy.Expr, sympy.Expr | None] = {}
        for box in diagram.boxes():
            if isinstance(box.prim, ScaleOp):
                given = cast(ScaleOp, box.prim.subs(mapping))  # as binding the diagram makes it
                pairs = [(box.prim.factor, given.factor)]
                if box.prim.divisor is not None and given.divisor is not None:  # (a division: printed alike)
                    pairs.append((box.prim.divisor, given.divisor))
                for factor, bound in pairs:
                    if bound.free_symbols:
                        continue
                    written = factor if factor.free_symbols else None
                    if table.setdefault(bound, written) != written:
                        table[bound] = None
        return cls(merged, table)

    def written(self, value: sympy.Expr) -> sympy.Expr:
        """The size expression the bound constant ``value`` was written as, else ``value`` itself."""
        return self.table.get(value) or value

    def code(self, value: sympy.Expr) -> str | None:
        """``value`` as Python reading its sizes by name (:func:`~ncd.ir.program.size_code`), if it has any."""
        names = [str(s) for s in value.free_symbols]
        ok = names and all(n in self.sizes and _attribute_name(n) for n in names)  # `sizes.lambda` would not compile
        text = size_code(value) if ok else None
        if text is not None:
            self.used.update((str(s), self.sizes[str(s)]) for s in value.free_symbols)
        return text


@dataclass
class ClassEmitter:
    """Builds one :class:`~ncd.ir.program.Function` (one generated class): its attributes and its ops.

    Rules reach it as ``ctx.em``: :meth:`attr` declares a submodule or parameter, :meth:`fresh` names a
    local, :meth:`assign` binds an expression (typed :class:`~ncd.ir.program.Expr` or text) to a new local,
    :meth:`line` adds a statement.  Text ops read the values their text names.
    """

    name: str
    doc: str
    names: set[str] = field(default_factory=set)
    #: woven axes moved in front of every tensor while a woven sub-diagram is lowered (shown in comments)
    leading: tuple[Axis, ...] = ()
    #: the box being lowered (recorded on the ops it emits)
    current: Box | None = None
    function: Function = field(init=False)
    #: per base name, the next suffix to try (so that naming n locals alike stays linear)
    suffixes: dict[str, int] = field(default_factory=dict)
    #: per name given out with a suffix, its base and suffix (:meth:`release` gives them back)
    suffixed: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: the tensors in scope, by variable (the arguments of text ops are read off their text)
    values: dict[str, Value] = field(default_factory=dict)
    #: the learned maps whose weights store their rows in a chosen order (:func:`ncd.prims.patterns.chosen_rows`)
    rows: dict[int, tuple[str, ...]] = field(default_factory=dict)
    #: the learned maps whose weights store their columns in a chosen order (:func:`ncd.prims.patterns.chosen_columns`)
    cols: dict[int, tuple[str, ...]] = field(default_factory=dict)
    #: the size expressions constants were written as (printed by name; ``None``: constants print as numbers)
    named: NamedSizes | None = None

    def __post_init__(self) -> None:
        self.function = Function(self.name, _docstring_text(self.doc))
        if self.named is not None and self.named.table:
            self.names.add("sizes")  # the module's namespace of named sizes: no local may shadow it

    def written(self, value: sympy.Expr) -> sympy.Expr:
        """The size expression a bound constant was written as (``1/sqrt(k)`` for ``1/8``), else the constant."""
        return self.named.written(value) if self.named is not None else value

    def size_code(self, value: sympy.Expr) -> str | None:
        """``value`` (a size expression, see :meth:`written`) as Python reading the sizes by name (``sizes.k ** -0.5``),
        the sizes then defined at the top of the module; ``None`` for a number or when nothing is named."""
        return self.named.code(value) if self.named is not None else None

    @property
    def init(self) -> list[str]:
        """The constructor's statements (rules may append buffers)."""
        return self.function.init

    @property
    def uses_store(self) -> bool:
        return self.function.uses_store

    @uses_store.setter
    def uses_store(self, value: bool) -> None:
        self.function.uses_store = value

    def fresh(self, hint: str) -> str:
        base = identifier(hint)
        name, k = base, self.suffixes.get(base, 1)
        if name in self.names:
            name = f"{base}_{k}"
            while name in self.names:
                k += 1
                name = f"{base}_{k}"
            self.suffixed[name] = (base, k)
            k += 1
        self.suffixes[base] = k
        self.names.add(name)
        return name

    def release(self, name: str) -> None:
        """Give ``name`` back (a rewrite removed what it named): the next :meth:`fresh` may take it again, as if it
        had never been given out."""
        self.names.discard(name)
        base, k = self.suffixed.pop(name, (name, 0))
        if k and self.suffixes.get(base, k) > k:
            self.suffixes[base] = k

    def attr(self, hint: str, expr: str) -> str:
        name = self.fresh(hint)
        self.function.init.append(f"self.{name} = {expr}")
        self.function.attributes[name] = expr
        return f"self.{name}"

    def reads(self, text: str) -> tuple[Value, ...]:
        """The values in scope that ``text`` names (the arguments of an untyped op)."""
        found: dict[str, Value] = {}
        for name in _NAMES.findall(text):
            if name in self.values and name not in found:
                found[name] = self.values[name]
        return tuple(found.values())

    def emit(self, op: Op) -> Op:
        """Append ``op``; its outputs come into scope."""
        self.function.ops.append(op)
        for v in op.outputs:
            self.values[v.var] = v
        return op

    def line(self, code: str, outputs: Sequence[Value] = (), kind: OpKind = "statement") -> None:
        """A statement (``outputs``: the values it binds, e.g. by tuple assignment or a loop)."""
        reads = () if code.lstrip().startswith("#") else self.reads(code)
        self.emit(Op(kind, "", reads, tuple(outputs), code, box=self.current))

    def assign(self, hint: str, expr: str | Expr, axes: tuple[Axis, ...], dtype: str = "float",
               comment: str | None = None, kind: OpKind | None = None) -> str:
        """Bind ``expr`` to a fresh local named after ``hint`` (an identifier is returned as it is)."""
        text = str(expr)
        if text.isidentifier():
            return text
        name = self.fresh(hint)
        out = Value(name, self.leading + axes, dtype)
        note = layout_comment(self.leading + axes) if comment is None else comment
        if isinstance(expr, Expr):
            op = Op(kind or expr.kind, expr.target, expr.args, (out,), text, note, self.current, options=expr.options)
        else:
            target = _call_target(text)
            guess: OpKind = "module" if target[5:] in self.function.attributes else "call" if target else "expr"
            op = Op(kind or guess, target, self.reads(text), (out,), text, note, self.current)
        self.emit(op)
        return name


_CALL = re.compile(r"[^\W\d][\w.]*(?=\()")


def _call_target(text: str) -> str:
    """``F.softmax`` for the text ``F.softmax(x, dim=-1)`` (one call spanning the whole text), else ``""``."""
    head = _CALL.match(text)
    if head is None or not text.endswith(")"):
        return ""
    depth = 0
    for k in range(head.end(), len(text)):
        depth += {"(": 1, ")": -1}.get(text[k], 0)
        if depth == 0:
            return head.group(0) if k == len(text) - 1 else ""
    return ""


def _docstring_text(text: str) -> str:
    """``text`` made safe inside a one-line docstring (block names come from user files)."""
    return "".join(c if c.isprintable() and c not in '"\\' else "?" for c in text)
