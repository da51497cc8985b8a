"""Typed rule registries: every interpreter's rule for a primitive, registered beside the primitive.

A family module (``ncd.prims.<family>``) declares its primitives and registers, in the same
file, each interpreter's rule for them.  A rule receives **its own primitive** first (typed:
``RollOp``, not ``Primitive``), then the interpreter's context::

    @LOWERING.rule(RollOp)
    def _lower(prim: RollOp, ctx: RuleContext) -> list[str]: ...

    @COST.rule(RollOp)
    def _cost(prim: RollOp, ctx: CostContext) -> list[Tensor]: ...

    @BACKWARD.rule(RollOp)
    def _backward(prim: RollOp, box: Box, builder: Builder) -> BoxBackward: ...

A primitive an interpreter deliberately does not handle gets ``TABLE.unsupported(XxxOp, why)``:
looking it up raises an :class:`~ncd.errors.NCDError` quoting ``why``.  The coverage test
(``tests/test_rule_coverage.py``) requires, for every primitive and every interpreter, a rule or
such an entry.

This module imports only ``ncd.ir`` and the standard library — neither torch nor code
generation — so family modules import it freely.  The context types (``RuleContext``,
``CostContext``, the drawing ``Layout``) are named here for the type checker only.

:func:`load` is the one loader: it imports every module of ``ncd.prims``, so which rules exist
never depends on what was imported first.

>>> LOWERING.has("softmax"), COST.has("softmax"), BACKWARD.has("softmax")
(True, True, True)
>>> LOWERING.status("softmax")
'rule'
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from ncd.errors import LoweringError, NCDError
from ncd.ir.primitive import PRIMITIVES, Kind, Primitive

if TYPE_CHECKING:
    from ncd.ir.axes import Axis, Type
    from ncd.ir.diagram import Box, Diagram

__all__ = ["RuleTable", "Recognisers", "BoxBackward", "AnalysisError", "RuleMissing", "LOWERING", "COST", "BACKWARD",
           "BATCHED_BACKWARD", "DRAWING", "SCALAR_DRAWING", "IO_MODEL", "DISTRIBUTED", "DECODE", "STREAMED", "IMPORT",
           "TABLES", "load", "SECOND_ORDER", "NOT_TRACED"]

P = TypeVar("P", bound=Primitive)
A = ParamSpec("A")
R = TypeVar("R")


class AnalysisError(NCDError):
    """A diagram cannot be costed or differentiated as asked."""


class RuleMissing(NCDError):
    """An interpreter has no rule for a primitive (or declares it unsupported)."""


def _op(key: str | type[Primitive] | Primitive) -> str:
    return key if isinstance(key, str) else key.op


class RuleTable(Generic[A, R]):
    """One interpreter's rules, keyed by primitive (class, or its ``op`` name for look-ups).

    A rule has type ``(prim: P, *A) -> R`` where ``P`` is the primitive class it is registered
    for.  The table reads like a mapping from ``op`` to rule (``"softmax" in COST``).
    """

    def __init__(self, name: str, error: type[NCDError] = RuleMissing, home: str | None = None) -> None:
        self.name = name
        self.error = error
        #: the module registering this interpreter's rules, imported on first use (for an interpreter whose rules read
        #: its own internals and import torch, e.g. the streamed lowering)
        self.home = home
        self._rules: dict[str, Callable[Concatenate[Any, A], R]] = {}
        self._unsupported: dict[str, str] = {}
        self._kinds: dict[str, tuple[str, Callable[Concatenate[Any, A], R]]] = {}
        self._kinds_unsupported: dict[str, str] = {}

    @overload
    def rule(self, cls: type[P], /) -> Callable[[Callable[Concatenate[P, A], R]], Callable[Concatenate[P, A], R]]: ...

    @overload
    def rule(self, first: type[Primitive], second: type[Primitive], /,
             *more: type[Primitive]) -> Callable[[Callable[Concatenate[Any, A], R]], Callable[Concatenate[Any, A], R]]: ...

    def rule(self, *classes: type[Primitive]) -> Callable[[Callable[Concatenate[Any, A], R]], Callable[Concatenate[Any, A], R]]:
        """Decorator registering ``fn(prim, ...)`` as the rule of the primitive ``classes``.

        With one class the rule's first parameter is checked to be that class; a rule shared by several
        classes annotates it with their union.
        """

        def register(fn: Callable[Concatenate[Any, A], R]) -> Callable[Concatenate[Any, A], R]:
            for cls in classes:
                if not cls.op:
                    raise TypeError(f"{cls.__name__} has no op: register rules on a concrete primitive")
                self._rules[cls.op] = fn
                self._unsupported.pop(cls.op, None)
            return fn

        return register

    def by_kind(self, *kinds: Kind, what: str) -> Callable[[Callable[Concatenate[Any, A], R]], Callable[Concatenate[Any, A], R]]:
        """Decorator registering ``fn(prim, ...)`` as the rule of every primitive of ``kinds`` without a rule or an
        "unsupported" entry of its own (a family rule builder keyed by kind); ``what`` names the treatment
        (``status`` reports ``"rule: <what>"``)."""

        def register(fn: Callable[Concatenate[Any, A], R]) -> Callable[Concatenate[Any, A], R]:
            for kind in kinds:
                self._kinds[kind] = (what, fn)
            return fn

        return register

    def _load(self) -> None:
        load()
        if self.home is not None:
            importlib.import_module(self.home)

    def _by_kind(self, op: str) -> tuple[str, Callable[Concatenate[Any, A], R]] | None:
        cls = PRIMITIVES.get(op)
        return self._kinds.get(cls.kind) if cls is not None and op not in self._unsupported else None

    def unsupported_kind(self, *kinds: Kind, why: str) -> None:
        """Declare every primitive of ``kinds`` without a rule of its own unsupported, and why (an explicit entry,
        keyed by kind)."""
        if not why:
            raise ValueError("say why the primitives are unsupported")
        for kind in kinds:
            self._kinds_unsupported[kind] = why

    def _why(self, op: str) -> str | None:
        if op in self._unsupported:
            return self._unsupported[op]
        cls = PRIMITIVES.get(op)
        if cls is None or op in self._rules or cls.kind in self._kinds:
            return None
        return self._kinds_unsupported.get(cls.kind)

    def unsupported(self, key: str | type[Primitive], why: str) -> None:
        """Declare that this interpreter does not handle the primitive, and why (an explicit, tested entry)."""
        if not why:
            raise ValueError("say why the primitive is unsupported")
        op = _op(key)
        if op in self._rules:
            raise RuntimeError(f"{self.name}: {op!r} has a rule; it cannot also be unsupported")
        self._unsupported[op] = why

    def has(self, key: str | type[Primitive]) -> bool:
        self._load()
        return _op(key) in self._rules

    def status(self, key: str | type[Primitive]) -> str | None:
        """``"rule"``, ``"unsupported: <why>"`` or ``None`` (a missing cell: the coverage test fails)."""
        self._load()
        op = _op(key)
        if op in self._rules:
            return "rule"
        why = self._why(op)
        if why:
            return f"unsupported: {why}"
        derived = self._by_kind(op)
        return f"rule: {derived[0]}" if derived is not None else None

    def why(self, key: str | type[Primitive]) -> str | None:
        """The reason given for an unsupported primitive (``None`` when it has a rule or nothing)."""
        self._load()
        return self._why(_op(key))

    def get(self, key: str | type[Primitive] | Primitive) -> Callable[Concatenate[Any, A], R] | None:
        """The rule of a primitive (instance, class or ``op``): its own, or its kind's; ``None`` when it has neither."""
        self._load()
        op = _op(key)
        if op in self._rules:
            return self._rules[op]
        derived = self._by_kind(op)
        return derived[1] if derived is not None else None

    def lookup(self, prim: Primitive) -> Callable[Concatenate[Any, A], R]:
        """The rule of ``prim``; an error naming the primitive (and why, if unsupported) when there is none."""
        fn = self.get(prim)
        if fn is not None:
            return fn
        why = self._why(prim.op)
        if why:
            raise self.error(f"{self.name} of primitive {prim.op!r} is not supported: {why}")
        raise self.error(f"no {self.name} rule for primitive {prim.op!r} ({type(prim).__name__})")

    def apply(self, prim: Primitive, *args: A.args, **kwargs: A.kwargs) -> R:
        """Run the rule of ``prim``: ``rule(prim, *args)``."""
        return self.lookup(prim)(prim, *args, **kwargs)

    def rules(self) -> Mapping[str, Callable[Concatenate[Any, A], R]]:
        self._load()
        return dict(self._rules)

    def unsupported_ops(self) -> Mapping[str, str]:
        """Every primitive declared unsupported, by ``op``: on its own or by its kind."""
        self._load()
        return {op: why for op in PRIMITIVES if (why := self._why(op))}

    def __contains__(self, op: object) -> bool:
        self._load()
        return op in self._rules

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._rules))

    def __repr__(self) -> str:
        return f"RuleTable({self.name!r}, {len(self._rules)} rules, {len(self._unsupported)} unsupported)"


@dataclass(frozen=True)
class BoxBackward:
    """A backward rule's result.

    ``stored``: what it needs, in order — ``("in", j)``, ``("out", j)``, ``("param", name)`` or
    ``("aux", j)``: the ``j``-th extra output of ``forward``, a replacement of the box in the
    forward pass that also outputs values the box does not (max pooling's argmax, batch
    normalisation's statistics), woven like output ``aux_like[j]``;
    ``diagram``: ``(stored..., ∂cod) -> (∂dom, ∂params...)`` (only float segments have cotangents);
    ``grads``: the parameter name of each trailing output of ``diagram``.
    """

    stored: tuple[tuple[str, int | str], ...]
    diagram: Diagram
    grads: tuple[str, ...] = ()
    forward: Diagram | None = None
    aux_like: tuple[int, ...] = ()


class Recognisers:
    """Import recognition: rules keyed by ATen operator (``"aten.roll"``: every overload).

    A rule ``fn(conv, node)`` emits boxes through the importer's ``Converter`` (or raises its
    ``Decline``).  ``makes`` names the primitives it produces, for the coverage table; a primitive
    produced by a recogniser that lives in ``ncd.trace`` is declared with :meth:`known`.
    """

    def __init__(self) -> None:
        self._rules: dict[str, Callable[[Any, Any], None]] = {}
        self._makes: dict[str, set[str]] = {}
        self._by: dict[str, set[str]] = {}
        self._unsupported: dict[str, str] = {}

    def rule(self, *aten: str, makes: tuple[type[Primitive], ...] = ()) -> Callable[[Callable[[Any, Any], None]],
                                                                                  Callable[[Any, Any], None]]:
        def register(fn: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
            for name in aten:
                self._rules[name] = fn
            self.known(*makes, aten=aten)
            return fn

        return register

    def known(self, *classes: type[Primitive], aten: tuple[str, ...] = (), by: str = "") -> None:
        """Declare that the importer makes ``classes``: from the ATen operators ``aten`` (recognised by a rule
        of ``ncd.trace`` or of this table), and/or ``by`` a module of the importer (``"ncd.trace.wiring"``)."""
        if not aten and not by:
            raise ValueError("name the ATen operators or the importer module that make the primitive")
        for cls in classes:
            self._makes.setdefault(cls.op, set()).update(aten)
            if by:
                self._by.setdefault(cls.op, set()).add(by)

    def makers(self, key: str | type[Primitive]) -> frozenset[str]:
        """The importer modules declared to make this primitive (beside ATen recognisers)."""
        load()
        return frozenset(self._by.get(_op(key), ()))

    def unsupported(self, key: str | type[Primitive], why: str) -> None:
        if not why:
            raise ValueError("say why the primitive is never imported")
        self._unsupported[_op(key)] = why

    def get(self, aten: str) -> Callable[[Any, Any], None] | None:
        load()
        return self._rules.get(aten)

    def aten(self) -> Mapping[str, Callable[[Any, Any], None]]:
        load()
        return dict(self._rules)

    def sources(self, key: str | type[Primitive]) -> frozenset[str]:
        """The ATen operators the importer makes this primitive from."""
        load()
        return frozenset(self._makes.get(_op(key), ()))

    def status(self, key: str | type[Primitive]) -> str | None:
        load()
        op = _op(key)
        if self._makes.get(op) or self._by.get(op):
            return "rule"
        if op in self._unsupported:
            return f"unsupported: {self._unsupported[op]}"
        return None


#: the reason backward-pass primitives give for the backward interpreter
SECOND_ORDER = "second derivatives (the backward of a backward diagram) are not supported"
#: the reason backward-pass primitives give for the importer
NOT_TRACED = "a backward-pass primitive: forward traces never contain it"

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.ir.program import Expr
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

#: lowering to the program: ``(prim, ctx: RuleContext) -> one expression (text or Expr) per output``
LOWERING: RuleTable[[RuleContext], Sequence[str | Expr]] = RuleTable("lowering", LoweringError)
#: exact costs: ``(prim, ctx: CostContext) -> the output tensors`` (recording FLOPs and saved tensors on ``ctx``)
COST: RuleTable[[CostContext], list[Tensor]] = RuleTable("cost", AnalysisError)
#: reverse mode as a diagram: ``(prim, box, builder) -> BoxBackward``
BACKWARD: RuleTable[[Box, Builder], BoxBackward] = RuleTable("backward", AnalysisError)
#: backward of a box woven over leading ``batch`` axes, its weights' gradients summed over them in one contraction
#: (optional: without one, the box's backward is woven and summed): ``(prim, box, builder, batch) -> BoxBackward``
BATCHED_BACKWARD: RuleTable[[Box, Builder, tuple[Axis, ...]], BoxBackward] = RuleTable("batched backward", AnalysisError)
#: drawing a box on its own wires: ``(prim, layout, box) -> Frag``
DRAWING: RuleTable[[Layout, Box], Frag] = RuleTable("drawing")
#: drawing a scalar box woven over whole tensors: ``(prim, layout, box, dom, cod) -> Frag``
SCALAR_DRAWING: RuleTable[[Layout, Box, Type, Type], Frag] = RuleTable("scalar drawing")
#: the IO model's reading of a box (``ncd.iomodel.program``): ``(prim, walker, box, inputs, woven) -> output arrays``
IO_MODEL: RuleTable[[Any, Box, list[Any], tuple[Axis, ...]], list[Any]] = RuleTable("io model", AnalysisError)
#: the sharding derivation of a box (``ncd.distributed.derive``): ``(prim, deriver, node, box, wires, path) -> BoxSharding``
DISTRIBUTED: RuleTable[[Any, Diagram, Box, list[Any], tuple[int, ...]], Any] = RuleTable(
    "distributed", AnalysisError, home="ncd.distributed.rules")
#: decoding (``ncd.inference.derive``): how a box is rebuilt in the prefill and the one-token step,
#: ``(prim, walk, box, wires, sizes) -> (the rebuilt diagram, its output wires)``
DECODE: RuleTable[[Any, Box, list[Any], dict[str, Any]], tuple[Diagram, list[Any]]] = RuleTable(
    "decode", AnalysisError, home="ncd.inference.rules")
#: the streamed lowering of a relabelled diagram (``ncd.iomodel.lower``): one operation on tiles,
#: ``(prim, streamed, op, tiles, ranges, in_place) -> the output tile``
STREAMED: RuleTable[[Any, Any, list[Any], dict[str, tuple[int, int]], bool], Any] = RuleTable(
    "streamed lowering", LoweringError, home="ncd.iomodel.lower")
#: import recognition, keyed by ATen operator
IMPORT = Recognisers()

#: every primitive-keyed table, by interpreter name
TABLES: dict[str, RuleTable[Any, Any]] = {"lowering": LOWERING, "cost": COST, "backward": BACKWARD,
                                          "drawing": DRAWING, "scalar drawing": SCALAR_DRAWING, "io model": IO_MODEL,
                                          "distributed": DISTRIBUTED, "decode": DECODE,
                                          "streamed lowering": STREAMED}

#: rule modules not beside their primitives, loaded after the families (none: every rule is in its family's module)
LEGACY: tuple[str, ...] = ()

_LOADED = False
_LOADING = threading.RLock()


def load() -> None:
    """Import every family module of ``ncd.prims`` (each registers its rules on import); idempotent."""
    global _LOADED
    if _LOADED:
        return
    with _LOADING:  # another thread may be importing: wait until every family is in
        if _LOADED:
            return
        import ncd.prims

        for info in pkgutil.iter_modules(ncd.prims.__path__):
            importlib.import_module(f"ncd.prims.{info.name}")
        for name in LEGACY:
            importlib.import_module(name)
        _LOADED = True
