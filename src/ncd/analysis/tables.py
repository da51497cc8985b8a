"""The analysis rule tables: one cost rule and one backward rule per primitive ``op``.

Family modules (``ncd.analysis.elementwise``, ``.linear``, ``.softmax``, ``.structure``,
``.derivative``) register their rules here with :func:`cost_rule` and :func:`backward_rule`.
A primitive the analysis cannot handle gets an explicit entry in :data:`UNSUPPORTED`
naming why; the coverage test requires every primitive in ``ncd.ir.PRIMITIVES`` to have
both rules or such an entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ncd.errors import NCDError
from ncd.ir.primitive import Primitive
from ncd.ir.weaving import lowers_in_place

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
    moves them to the front first); by default the primitive's declared ``weave_policy``
    decides (:func:`ncd.ir.weaving.lowers_in_place`, the function code generation asks).
    """
    if in_place is None:
        test: Callable[[Any, tuple[Any, ...]], bool] = lowers_in_place
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


_FAMILIES = ("elementwise", "linear", "softmax", "structure", "derivative", "attention", "normalization",
             "movement", "convolution", "embedding", "regularization", "constant", "opaque", "rotary", "scan")
_LOADED = False


def load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    for family in _FAMILIES:
        try:
            importlib.import_module(f"ncd.analysis.{family}")
        except ModuleNotFoundError as error:
            if error.name != f"ncd.analysis.{family}":
                raise
    _LOADED = True  # only now: another thread must not see half of the rules (imports wait for each other)


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
