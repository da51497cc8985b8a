"""The lowering rule table: one rule per primitive ``op``, emitting ops of the lowered program.

A rule is a function ``rule(prim, ctx: RuleContext) -> list[Expr | str]``, registered beside its
primitive with ``ncd.ir.rules.LOWERING.rule(XxxOp)``, returning one expression per output segment;
the code generator binds each to a new local, as one op of the
:class:`~ncd.ir.program.Program`.  Typed expressions come from the context —
``ctx.call("torch.relu", x)``, ``ctx.method(x, "flatten", -2)``, ``ctx.module(attr, x)``,
``ctx.einsum("...ab,cb->...ac", x, w)`` — and record what runs and which values it reads;
intermediate results are bound with ``ctx.bind(expr, axes, hint)``, which returns a
:class:`Value`.  A plain string is still accepted (an untyped ``expr`` op whose arguments are
the values its text names).  Inputs arrive as :class:`Value`\\ s (a local variable and its
axis layout); every tensor may carry extra *leading* batch dimensions, so rules index
dimensions from the end (``dim=-1``) and use ``...`` in einsum subscripts.

A rule receives woven (broadcast) axes in place, in ``ctx.woven``, exactly when
:func:`ncd.ir.weaving.lowers_in_place` says so — from the primitive's declared
``weave_policy`` — and must then handle them (einsum letters, softmax dims, ...).  Otherwise
it sees only its own axes: the code generator moves woven axes to the front first and back
afterwards.  The cost analysis asks the same function, so both take one decision.

Rules do not import torch: they write source text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ncd.errors import LoweringError
from ncd.ir import rules
from ncd.ir.axes import Axis
from ncd.ir.diagram import Box
from ncd.ir.primitive import Primitive
from ncd.ir.program import Expr, OpKind, Value
from ncd.ir.size import Size, evaluate
from ncd.ir.weaving import WeaveView, einsum_letters

if TYPE_CHECKING:
    from ncd.torch.codegen import ClassEmitter

__all__ = ["Value", "Expr", "Woven", "RuleContext", "Rule", "LOWERING", "NotWeaveAware", "rule_for"]


@dataclass(frozen=True)
class Woven:
    """One broadcast axis around a box: where it sits in each input and output segment."""

    axis: Axis
    dom_pos: tuple[int | None, ...]
    cod_pos: tuple[int, ...]


class NotWeaveAware(Exception):
    """Kept for compatibility: a rule must not raise it (the primitive's ``weave_policy`` decides);
    code generation reports it as a :class:`~ncd.errors.LoweringError`."""


@dataclass
class RuleContext:
    """What a rule sees: the box, its inputs, woven axes (outermost first) and the emitter."""

    box: Box
    args: list[Value]
    woven: tuple[Woven, ...]
    out_axes: list[tuple[Axis, ...]]
    em: ClassEmitter
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def prim(self) -> Primitive:
        return self.box.prim

    def markers(self, side: str, j: int) -> list[tuple[str, int]]:
        """Layout of input (``side="dom"``) or output ``j``: ``("own", k)`` or ``("woven", w)`` per axis."""
        return WeaveView(self.box, self.woven).markers(side, j)  # type: ignore[arg-type]

    def own_dims(self, side: str, j: int) -> list[int]:
        """Negative dims of the box's own axes in the full layout of input/output ``j``."""
        return WeaveView(self.box, self.woven).own_dims(side, j)  # type: ignore[arg-type]

    def subscripts(self, own_letters: list[list[str]], out_letters: list[str]) -> str:
        """Einsum subscripts with woven axes given fresh letters: ``"...ab,...cb->...ac"``."""
        woven_letters = self.woven_letters(own_letters, out_letters)

        def render(layout: list[tuple[str, int]], own: list[str]) -> str:
            return "..." + "".join(own[k] if kind == "own" else woven_letters[k] for kind, k in layout)

        ins = [render(self.markers("dom", j), own_letters[j]) for j in range(len(own_letters))]
        return ",".join(ins) + "->" + render(self.markers("cod", 0), out_letters)

    def woven_letters(self, own_letters: list[list[str]], out_letters: list[str]) -> list[str]:
        """The letters :meth:`subscripts` gives the woven axes (outermost first): the first unused ones."""
        used = {c for letters in own_letters for c in letters} | set(out_letters)
        names = [a.name for seg in (*self.box.dom, *self.box.cod) for a in seg.axes]
        return einsum_letters(len(self.woven), self.box, [*dict.fromkeys(names), *(w.axis.name for w in self.woven)], used)

    # -- typed ops (the lowered program records what runs and what it reads) --------------------
    def _arg(self, value: object) -> tuple[str, tuple[Value, ...]]:
        if isinstance(value, Value):
            return value.var, (self.em.values.get(value.var, value),)
        if isinstance(value, Expr):
            return value.text, value.args
        if isinstance(value, str):
            return value, ()
        return repr(value), ()

    def _render(self, values: Sequence[object], options: dict[str, object]) -> tuple[str, tuple[Value, ...]]:
        texts: list[str] = []
        reads: dict[str, Value] = {}
        for key, item in [(None, v) for v in values] + list(options.items()):
            text, args = self._arg(item)
            texts.append(text if key is None else f"{key}={text}")
            reads.update((v.var, v) for v in args)
        return ", ".join(texts), tuple(reads.values())

    def call(self, target: str, *args: object, kind: OpKind = "call", **options: object) -> Expr:
        """``target(args..., key=value)``: values, expressions, source text or Python literals as arguments.

        >>> import ncd
        >>> from ncd.torch.codegen import to_program
        >>> [(op.kind, op.target) for _, op in to_program(ncd.Unit("a", "b:a"), a=3).ops()]
        [('call', 'torch.eye')]
        """
        text, reads = self._render(args, options)
        return Expr(f"{target}({text})", kind, target, reads)

    def method(self, value: Value | Expr, name: str, *args: object, **options: object) -> Expr:
        """``value.name(args...)`` (a tensor method: ``flatten``, ``unflatten``, ``view``, ...)."""
        head, reads = self._arg(value)
        text, more = self._render(args, options)
        return Expr(f"{head}.{name}({text})", "call", f"Tensor.{name}", reads + tuple(v for v in more if v not in reads))

    def module(self, attribute: str, *args: object) -> Expr:
        """A call of a submodule this rule declared with ``ctx.em.attr`` (``self.l_q(x)``)."""
        return self.call(attribute, *args, kind="module")

    def einsum(self, equation: str, *operands: Value | Expr | str) -> Expr:
        """``torch.einsum(equation, operands...)``, typed with what ATen runs for it (its ``contraction`` option,
        :func:`ncd.torch.aten_einsum.contraction_of`) when its operands are values of the program."""
        from ncd.torch.aten_einsum import contraction_of

        text, reads = self._render(operands, {})
        values = [self.em.values.get(v.var, v) for v in operands if isinstance(v, Value)]
        contraction = contraction_of(equation, [[a.size for a in v.axes] for v in values]) if len(values) == len(operands) else None
        if contraction is not None:
            reads = tuple(values)  # its operands in order, one per subscript (``x, x`` read twice)
        options = (("contraction", contraction),) if contraction is not None else ()
        return Expr(f"torch.einsum('{equation}', {text})", "einsum", "torch.einsum", reads, options)

    def bind(self, expr: Expr | str, axes: Sequence[Axis], hint: str = "t", dtype: str = "float") -> Value:
        """Emit ``expr`` as an op of its own now, bound to a new local; the value (its layout ``axes``)."""
        return Value(self.em.assign(hint, expr, tuple(axes), dtype), tuple(axes), dtype)

    def fail(self, message: str) -> LoweringError:
        location = f" (built at {self.box.source})" if self.box.source else ""
        return LoweringError(f"cannot lower {self.box.text()}{location}: {message}")

    # last in the class: annotations above read the builtin ``int``, not this method
    def int(self, value: Size, what: str = "size") -> int:
        """``value`` as a whole number (every size is bound when lowering)."""
        return evaluate(value, what=f"{what} in {self.box.text()}")


Rule = Callable[[RuleContext], "Sequence[str | Expr]"]


@dataclass(frozen=True)
class RuleEntry:
    fn: Rule
    weave_aware: bool


#: every lowering rule, by ``op`` (the registry of :mod:`ncd.ir.rules`)
LOWERING = rules.LOWERING


def rule_for(prim: Primitive) -> RuleEntry:
    """The lowering rule of ``prim`` (from :data:`ncd.ir.rules.LOWERING`), as ``fn(ctx)``."""
    _load_all()
    fn = rules.LOWERING.lookup(prim)
    return RuleEntry(lambda ctx: fn(ctx.prim, ctx), True)


def _load_all() -> None:
    """Every lowering rule is registered by its family module: :func:`ncd.ir.rules.load` imports them all."""
    rules.load()
