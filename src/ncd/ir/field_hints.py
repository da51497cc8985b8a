"""Whether a field read from a file has the type its primitive annotates (``tuple[Axis, ...]``, ``Literal[...]``,
``int | None``): :mod:`ncd.ir.serialize` refuses a field that does not conform before the primitive is built.

>>> from typing import Literal
>>> conforms((1, 2), tuple[int, ...]), conforms("max", Literal["sum", "mean"]), conforms(True, int)
(True, False, False)
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Literal, Union

import sympy

__all__ = ["field_hints", "conforms", "short", "hint_text"]


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """The resolved type annotations of a primitive's fields (empty if they cannot be resolved)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation we cannot resolve: the constructor's own checks remain
        return {}


def conforms(value: Any, hint: Any) -> bool:
    """Whether a decoded field value has the annotated type (unknown annotations accept anything)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(conforms(value, h) for h in args)
    if origin is Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(conforms(v, h) for v, h in zip(value, args)))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        if issubclass(hint, sympy.Basic):
            return isinstance(value, sympy.Basic)
        return isinstance(value, hint)
    return True


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def hint_text(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "").replace("sympy.core.expr.", "")
