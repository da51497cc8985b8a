"""The conversion rules' registry: which rule converts each ATen operator, and how a rule declines.

A rule (``@rule("aten.linear")``) takes the :class:`~ncd.trace.convert.Converter` and one captured node and emits
boxes; it raises :class:`Decline` to leave the call to an opaque box.  :func:`op_name` names an operator as the rules
are keyed; :func:`where`, :func:`_reason` name a call and a rule's failure for :data:`LOG`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ncd.trace.capture import Node
from ncd.trace.naming import PRIME

if TYPE_CHECKING:
    from ncd.trace.convert import Converter

__all__ = ["LOG", "RULES", "Decline", "Rule", "apart", "called", "hook", "op_name", "rule", "where"]

#: Why each opaque box is opaque: at ``DEBUG`` level, one record per opaque box naming the operator, the module path
#: and line, and each rule that declined (its reason) or raised (its error, with the traceback in a record of its own).
#: ``NCD_TRACE_DEBUG=1`` turns it on for a trace, printed to stderr; or configure the ``ncd.trace`` logger.
LOG = logging.getLogger("ncd.trace")

Rule = Callable[["Converter", Node], Any]
RULES: dict[str, Rule] = {}


class Decline(Exception):
    """Raised by a rule that cannot express this call; the node becomes an opaque box."""


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Register a conversion rule for ATen operators (``"aten.linear"``: every overload)."""

    def deco(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn

    return deco


def hook(names: tuple[str, ...], first: Callable[[Converter, Node], bool]) -> None:
    """Put ``first`` in front of whichever rules ``names`` have (registered now or earlier): it converts the node and
    returns True, or returns False to hand it on to the rule it stands in front of (none: ``Decline``)."""
    for name in names:
        previous = RULES.get(name)

        def convert(conv: Converter, node: Node, previous: Rule | None = previous) -> None:
            if first(conv, node):
                return
            if previous is None:
                raise Decline("no rule")
            previous(conv, node)

        convert.__name__ = convert.__qualname__ = getattr(first, "__name__", "hook")
        RULES[name] = convert


#: an OpOverload's names by its id (an OpOverload hashes in Python: ~20k look-ups per toy's trace), and the operators
#: read, held so that their ids stay theirs
_OP_NAMES: dict[int, tuple[str, str]] = {}
_OPS_READ: list[Any] = []


def op_name(target: Any) -> tuple[str, str]:
    """``("aten.linear", "aten.linear.default")`` for an OpOverload (each operator's read once)."""
    found = _OP_NAMES.get(id(target))
    if found is not None:
        return found
    if type(target) is torch._ops.OpOverload:
        found = _OP_NAMES[id(target)] = _op_name(target)
        _OPS_READ.append(target)
        return found
    return _op_name(target)


def called(node: Any) -> str:
    """The operator a recorded call runs (``"aten.add"``, :func:`op_name`'s first name); ``""`` for anything else (a
    constant, a parameter, a number)."""
    return op_name(node.target)[0] if isinstance(node, Node) and node.kind == "call" else ""


def _op_name(target: Any) -> tuple[str, str]:
    name = getattr(target, "name", None)
    if callable(name):
        namespace, _, rest = target.name().rpartition("::")
        full = (namespace or "aten") + "." + rest
        overload = getattr(target, "_overloadname", "default")
        packet = full.split(".")[0] + "." + full.split(".")[1] if full.count(".") >= 1 else full
        return packet, f"{packet}.{overload}"
    text = getattr(target, "__name__", str(target))
    return f"operator.{text}", f"operator.{text}"


def _rule_name(fn: Any) -> str:
    """``ncd.trace.boxes.pad``: the rule a converter tried."""
    if fn is None:
        return "no rule"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', getattr(fn, '__name__', repr(fn)))}"


def _reason(rule: str, error: BaseException) -> str:
    """``rule ncd.trace.boxes.pad declined: padding (1,) in mode 'reflect'`` or ``... raised NameError: ... (at
    boxes.py:12)``; a decline that turned an error into a reason names that error and where it was raised."""
    import os
    import traceback

    def at(e: BaseException) -> str:
        frames = traceback.extract_tb(e.__traceback__)
        return f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""

    if isinstance(error, Decline):
        cause = error.__cause__ or error.__context__
        after = f" (after {type(cause).__name__}{at(cause)})" if cause is not None else ""
        return f"rule {rule} declined: {_first_line(error) or 'no reason given'}{after}"
    where_ = at(error)
    return f"rule {rule} raised {type(error).__name__}: {_first_line(error)}" + (f" ({where_.strip()})" if where_ else "")


def apart(name: str, taken: set[str]) -> str:
    """``name``, primed until it is none of ``taken``.

    >>> apart("n", {"n", "nʹ"})
    'nʹʹ'
    """
    while name in taken:
        name += PRIME
    return name


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ""


def where(node: Node) -> str:
    """``at encoder.layer.0.attention (modeling_bert.py:301)``: the module path and user source line of a call."""
    path = node.stack[-1][0] if node.stack else "the top level"
    return f"at {path}" + (f" ({node.line})" if node.line else "")


def in_transform(node: Node, computed: bool = False) -> Exception:
    """The refusal (an :class:`ncd.TraceError` to raise) of ``node``, run inside a ``torch.func`` transform: its batched
    or wrapped tensors stand for no box (``computed``: and its result depends on the inputs, so no constant can)."""
    from ncd.errors import TraceError

    depends = " on values that depend on the inputs" if computed else ""
    constant = ", and no constant can stand for its result" if computed else ""
    return TraceError(f"{op_name(node.target)[0]} {where(node)} runs inside a torch.func transform (torch.vmap,"
                      f" torch.func.grad, jacrev, ...){depends}: the recording sees its batched or wrapped tensors,"
                      f" which no box stands for{constant} (write the mapped function batched, or trace the function"
                      " the transform maps)")
