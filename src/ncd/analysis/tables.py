"""The analysis rule tables: one cost rule and one backward rule per primitive ``op``.

Family modules (``ncd.analysis.elementwise``, ``.linear``, ``.softmax``, ``.structure``,
``.derivative``) register their rules here with :func:`cost_rule` and :func:`backward_rule`.
A primitive the analysis cannot handle gets an explicit entry in :data:`UNSUPPORTED`
naming why; the coverage test requires every primitive in ``ncd.ir.PRIMITIVES`` to have
both rules or such an entry.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sympy

from ncd.errors import NCDError
from ncd.ir.primitive import Primitive

__all__ = ["COST", "BACKWARD", "UNSUPPORTED", "cost_rule", "backward_rule", "unsupported", "cost_entry", "backward_entry",
           "AnalysisError", "load_all"]


class AnalysisError(NCDError):
    """A diagram cannot be costed or differentiated as asked."""


@dataclass(frozen=True)
class CostEntry:
    fn: Callable[..., Any]
    #: whether lowering handles woven axes in place for this box (else codegen moves them to the front)
    in_place: Callable[[Any, tuple[Any, ...]], bool]


COST: dict[str, CostEntry] = {}
BACKWARD: dict[str, Callable[..., Any]] = {}
#: op -> interpreter ("cost" / "backward") -> why it is not supported
UNSUPPORTED: dict[str, dict[str, str]] = {}


def _name(op: str | type[Primitive]) -> str:
    return op if isinstance(op, str) else op.op


def cost_rule(op: str | type[Primitive], in_place: bool | Callable[[Any, tuple[Any, ...]], bool] | None = None) -> Callable:
    """Register the cost rule of a primitive.

    ``in_place`` tells whether lowering handles woven axes in place for a box (else codegen
    moves them to the front first); by default the lowering rule itself is asked.
    """
    if in_place is None:
        test = lowering_in_place
    else:
        test = in_place if callable(in_place) else (lambda box, woven, flag=bool(in_place): flag)

    def deco(fn: Callable) -> Callable:
        COST[_name(op)] = CostEntry(fn, test)
        return fn

    return deco


def backward_rule(op: str | type[Primitive]) -> Callable:
    """Register the backward (reverse-mode) rule of a primitive."""

    def deco(fn: Callable) -> Callable:
        BACKWARD[_name(op)] = fn
        return fn

    return deco


def unsupported(op: str, why: str, *, cost: bool = False, backward: bool = False) -> None:
    """Declare that the cost and/or backward interpreter does not handle ``op`` (a tested, explicit entry)."""
    entry = UNSUPPORTED.setdefault(op, {})
    if cost:
        entry["cost"] = why
    if backward:
        entry["backward"] = why


class _Emitter:
    """Stands in for the code emitter when a lowering rule is asked how it handles woven axes."""

    def fresh(self, hint: str) -> str:
        return hint

    def attr(self, hint: str, expr: str) -> str:
        return "self." + hint

    def line(self, code: str) -> None:
        pass

    def assign(self, hint: str, expr: str, axes: Any) -> str:
        return hint


@functools.lru_cache(maxsize=4096)
def lowering_in_place(box: Any, woven: tuple[Any, ...]) -> bool:
    """Whether the lowering rule of ``box`` handles these woven axes in place (dry run on dummy sizes)."""
    from ncd.torch.rules import NotWeaveAware, RuleContext, Value, Woven, rule_for

    entry = rule_for(box.prim)
    if not woven:
        return True
    if not entry.weave_aware:
        return False
    free = sorted(box.free_symbols | {s for w in woven for s in w.axis.size.free_symbols}, key=str)
    mapping = {s: sympy.Integer(n) for s, n in zip(free, _PRIMES)}
    try:
        bound = box.subs(mapping) if mapping else box
        ws = tuple(Woven(w.axis.subs(mapping), w.dom_pos, w.cod_pos) for w in woven)
        cod = woven[0].cod.subs(mapping)
        dom = woven[0].dom.subs(mapping)
        args = [Value(f"x{j}", seg.axes, seg.dtype) for j, seg in enumerate(dom)]
        ctx = RuleContext(bound, args, ws, [seg.axes for seg in cod], _Emitter())  # type: ignore[arg-type]
        entry.fn(ctx)
    except NotWeaveAware:
        return False
    except Exception:  # any other complaint is lowering's to make; assume in place
        return True
    return True


#: dummy sizes for dry runs on unbound diagrams: distinct, large, divisible by small numbers (strides, halvings)
_PRIMES = tuple(2**12 * 3**4 * 5**2 * 7 * p for p in (11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79,
                                                      83, 89, 97, 101, 103, 107, 109, 113))

_FAMILIES = ("elementwise", "linear", "softmax", "structure", "derivative", "attention", "normalization",
             "movement", "convolution", "embedding", "regularization", "constant", "opaque", "rotary")
_LOADED = False


def load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for family in _FAMILIES:
        try:
            importlib.import_module(f"ncd.analysis.{family}")
        except ModuleNotFoundError as error:
            if error.name != f"ncd.analysis.{family}":
                raise


def _missing(op: str, what: str) -> AnalysisError:
    why = UNSUPPORTED.get(op, {}).get(what)
    if why:
        return AnalysisError(f"{what} of primitive {op!r} is not supported: {why}")
    return AnalysisError(f"no {what} rule for primitive {op!r}")


def cost_entry(prim: Primitive) -> CostEntry:
    load_all()
    if prim.op not in COST:
        raise _missing(prim.op, "cost")
    return COST[prim.op]


def backward_entry(prim: Primitive) -> Callable[..., Any]:
    load_all()
    if prim.op not in BACKWARD:
        raise _missing(prim.op, "backward")
    return BACKWARD[prim.op]
