"""The lowering rule table: one rule per primitive ``op``, producing PyTorch source.

A rule is a function ``rule(ctx: RuleContext) -> list[str]`` returning one Python
expression per output segment.  Inputs arrive as :class:`Value`\\ s (a local variable and
its axis layout); every tensor may carry extra *leading* batch dimensions, so rules index
dimensions from the end (``dim=-1``) and use ``...`` in einsum subscripts.

A rule receives woven (broadcast) axes in place, in ``ctx.woven``, exactly when
:func:`ncd.ir.weaving.lowers_in_place` says so — from the primitive's declared
``weave_policy`` — and must then handle them (einsum letters, softmax dims, ...).  Otherwise
it sees only its own axes: the code generator moves woven axes to the front first and back
afterwards.  The cost analysis asks the same function, so both take one decision.
(``weave_aware=`` of :func:`register` is documentation only: the policy lives on the primitive.)

Rules do not import torch: they write source text.
"""

from __future__ import annotations

import string
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ncd.errors import LoweringError
from ncd.ir.axes import Axis
from ncd.ir.diagram import Box
from ncd.ir.primitive import Primitive
from ncd.ir.size import Size, evaluate
from ncd.ir.weaving import WeaveView

if TYPE_CHECKING:
    from ncd.torch.codegen import ClassEmitter

__all__ = ["Value", "Woven", "RuleContext", "Rule", "LOWERING", "register", "NotWeaveAware", "rule_for"]


@dataclass(frozen=True)
class Value:
    """A tensor in generated code: its variable and its trailing axis layout."""

    var: str
    axes: tuple[Axis, ...]
    dtype: str = "float"


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

    def int(self, value: Size, what: str = "size") -> int:
        return evaluate(value, what=f"{what} in {self.box.text()}")

    def markers(self, side: str, j: int) -> list[tuple[str, int]]:
        """Layout of input (``side="dom"``) or output ``j``: ``("own", k)`` or ``("woven", w)`` per axis."""
        return WeaveView(self.box, self.woven).markers(side, j)  # type: ignore[arg-type]

    def own_dims(self, side: str, j: int) -> list[int]:
        """Negative dims of the box's own axes in the full layout of input/output ``j``."""
        return WeaveView(self.box, self.woven).own_dims(side, j)  # type: ignore[arg-type]

    def subscripts(self, own_letters: list[list[str]], out_letters: list[str]) -> str:
        """Einsum subscripts with woven axes given fresh letters: ``"...ab,...cb->...ac"``."""
        used = {c for letters in own_letters for c in letters} | set(out_letters)
        spare = iter(c for c in string.ascii_letters if c not in used)
        woven_letters = [next(spare) for _ in self.woven]

        def render(layout: list[tuple[str, int]], own: list[str]) -> str:
            return "..." + "".join(own[k] if kind == "own" else woven_letters[k] for kind, k in layout)

        ins = [render(self.markers("dom", j), own_letters[j]) for j in range(len(own_letters))]
        return ",".join(ins) + "->" + render(self.markers("cod", 0), out_letters)

    def fail(self, message: str) -> LoweringError:
        location = f" (built at {self.box.source})" if self.box.source else ""
        return LoweringError(f"cannot lower {self.box.text()}{location}: {message}")


Rule = Callable[[RuleContext], list[str]]


@dataclass(frozen=True)
class RuleEntry:
    fn: Rule
    weave_aware: bool


LOWERING: dict[str, RuleEntry] = {}


def register(op: str | type[Primitive], *, weave_aware: bool = False) -> Callable[[Rule], Rule]:
    """Decorator registering a lowering rule for a primitive (by class or ``op`` name)."""
    name = op if isinstance(op, str) else op.op

    def deco(fn: Rule) -> Rule:
        LOWERING[name] = RuleEntry(fn, weave_aware)
        return fn

    return deco


def rule_for(prim: Primitive) -> RuleEntry:
    _load_all()
    try:
        return LOWERING[prim.op]
    except KeyError:
        raise LoweringError(f"no lowering rule for primitive {prim.op!r} ({type(prim).__name__})") from None


_LOADED = False
_LOADING = threading.Lock()


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    with _LOADING:  # another thread may be importing the rules: wait for all of them
        if _LOADED:
            return
        import importlib
        import pkgutil

        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True
