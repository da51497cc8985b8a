"""Arithmetic between a traced tensor and a Python number of any type, on either side.

``x + 1``, ``1 - x``, ``3.0 / x``, ``2 ** x``, ``ids * 3 + 1``, ``ids // 2``, ``x.clamp(-2, 2)``, ``x * True``:
each becomes an :class:`~ncd.prims.arithmetic.ArithmeticOp` box whose result has the dtype torch gives it (an index
segment's range follows by interval arithmetic).  ``ids + 0``, ``ids - 0`` and ``ids * 1`` of an integer tensor are
``ids`` itself: no box; so is a float ``x + 0`` whose readers see a zero's sign at most, up to a softmax.
Float sums and products that the plain rules of
:mod:`ncd.trace.idioms` draw as ``+`` and ``*c`` boxes keep those; this rule takes what they decline.
"""

from __future__ import annotations

import math
from typing import Any

import sympy
import torch

from ncd.ir.axes import SCALAR, Segment
from ncd.ir.diagram import Box
from ncd.prims.arithmetic import ArithmeticOp
from ncd.trace import idioms
from ncd.trace.capture import Node
from ncd.trace.convert import RULES, Converter, Decline, rule
from ncd.trace.registry import called

__all__ = ["scalar_arithmetic"]

#: ATen packet -> (operator, reflected)
OPERATORS = {"add": ("+", False), "sub": ("-", False), "rsub": ("-", True), "mul": ("*", False), "div": ("/", False),
             "true_divide": ("/", False), "floor_divide": ("//", False), "remainder": ("%", False), "pow": ("**", False),
             "clamp_min": ("max", False), "clamp_max": ("min", False), "reciprocal": ("/", True),
             "__and__": ("&", False), "bitwise_and": ("&", False), "__or__": ("|", False), "bitwise_or": ("|", False),
             "__xor__": ("^", False), "bitwise_xor": ("^", False), "__lshift__": ("<<", False),
             "bitwise_left_shift": ("<<", False), "__rshift__": (">>", False), "bitwise_right_shift": (">>", False)}


def _number(value: Any) -> bool | int | float | None:
    """A Python number, or the value a 0-d constant tensor holds (torch promotes such a tensor otherwise than a number:
    :func:`_held_alike` declines where that would change the result); ``None`` for anything else."""
    if isinstance(value, Node) and not value.live and isinstance(value.value, torch.Tensor) and value.value.dim() == 0 \
            and value.value.device.type != "meta":
        value = value.value.item()
    if isinstance(value, (bool, int, float)):
        return value
    return None


def _power(a: Any, b: Any) -> Any:
    """``a ** b`` for a range's ends, refusing exponents whose result could not fit int64 (9 ** 3000000007 would
    take minutes to compute)."""
    if isinstance(b, int) and abs(a) > 1 and b > 64:
        raise OverflowError(b)
    return a**b


# Each operator's value at one end of an integer range; only the operator in use is computed.
_ENDS: dict[str, Any] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "//": lambda a, b: a // b if b else 0, "%": lambda a, b: a % b if b else 0,
    "**": _power, "max": max, "min": min, "<<": lambda a, b: a << b, ">>": lambda a, b: a >> b,
}


#: integer types an arithmetic box (computing in int64) would not wrap around as torch does, and the operators that can
NARROW = (torch.int8, torch.uint8, torch.int16)
WRAPS = frozenset({"+", "-", "*", "**", "<<"})


def _target(conv: Converter, node: Node, source: Segment, op: str, c: Any, reflected: bool) -> Segment:
    out = node.value
    if out.dtype == torch.bool:
        return Segment((), "bool")
    if out.is_floating_point():
        return SCALAR
    if out.dtype in NARROW and op in WRAPS:  # the range is the traced values': a fresh input may wrap where they did not
        raise Decline(f"{op} on {out.dtype}, which wraps around")
    if op in ("&", "|", "^", "<<", ">>") and (type(c) is not int or op in ("<<", ">>") and not 0 <= c < 63):
        raise Decline(f"{op} by {c!r}")  # (a shift by a negative or too wide count: torch's result is no shift's)
    if op == "&" and c >= 0:  # x & c is in [0, c] whatever the sign of x
        return Segment((), "index", sympy.Integer(c + 1))
    if op in ("|", "^") and source.dtype == "index" and source.range is not None \
            and not sympy.sympify(source.range).free_symbols:  # |x|, |c| < 2^k: x ∘ c in [-2^k, 2^k)
        return Segment((), "index", sympy.Integer((1 << max(int(source.range) - 1, abs(c)).bit_length()) + 1))
    if source.dtype == "index" and source.range is not None and not sympy.sympify(source.range).free_symbols:
        top = int(source.range) - 1
        if op == "%" and not reflected and isinstance(c, int) and c > 0:  # not monotonic: the ends do not bound it
            return Segment((), "index", sympy.Integer(max(min(top + 1, c), 1)))
        ends = []
        for x in (0, top):
            a, b = (c, x) if reflected else (x, c)
            try:
                end = int(_ENDS[op](a, b))
            except (ZeroDivisionError, KeyError, OverflowError, ValueError, TypeError):
                break
            info = torch.iinfo(out.dtype)
            if not info.min <= end <= info.max:  # the tensor wrapped around: the box would compute the unwrapped value
                raise Decline(f"{op} {c} wraps around {out.dtype}")
            ends.append(end)
        else:
            return Segment((), "index", sympy.Integer(max(max(abs(e) for e in ends) + 1, 1)))
    if out.dtype in (torch.int8, torch.uint8, torch.int16):  # may wrap around, and the range does not tell
        raise Decline(f"arithmetic on {out.dtype} of unknown range")
    from ncd.trace.convert import kind_of

    _, rng = kind_of(out)
    return Segment((), "index", None if rng is None else sympy.Integer(rng))


def _apply(conv: Converter, node: Node, vid: int, op: str, c: Any, reflected: bool, last: bool = True) -> int:
    seg = conv.segs[vid]
    source = Segment((), seg.dtype, seg.range)
    target = _target(conv, node, source, op, c, reflected) if last else source
    return conv.apply(Box(ArithmeticOp(op, c, source, target, reflected)), [vid])


def _held_alike(node: Node, packet: str, x: Node, c: bool | int | float, first: bool) -> None:
    """Decline a number held in a 0-dim tensor (:func:`_number`) where the box's Python number would compute otherwise:
    a result of another type (an int32 ``x ** torch.tensor(2.5, dtype=float16)`` is float16, ``x ** 2.5`` float32), a
    power (a tensor exponent is another kernel: bfloat16 ``x ** torch.tensor(3)`` rounds otherwise than ``x ** 3``), or
    a tensor before ``x`` of another type (``torch.tensor(0.1) * x`` of float16 ``x`` rounds 0.1 to float16 first)."""
    held = [v for v in node.args[:2] if isinstance(v, Node) and not v.live and isinstance(v.value, torch.Tensor)]
    if not held:
        return
    if packet in ("pow", "reciprocal") or torch.result_type(x.value, c) != node.value.dtype \
            or first and held[0].value.dtype != x.value.dtype:
        raise Decline("a 0-dim tensor the number would not stand for")


def scalar_arithmetic(conv: Converter, node: Node) -> None:
    """One live tensor and one Python number: an arithmetic box (or two, for ``clamp``)."""
    packet = node.target.name().split("::")[1].split(".")[0]
    if not isinstance(node.value, torch.Tensor) or node.value.is_complex():
        raise Decline("not a tensor result")
    args = list(node.args)
    if packet in ("clamp", "clip"):
        lo = node.kwargs.get("min", args[1] if len(args) > 1 else None)
        hi = node.kwargs.get("max", args[2] if len(args) > 2 else None)
        x = args[0]
        if not idioms._live(x) or any(v is not None and _number(v) is None for v in (lo, hi)):
            raise Decline("clamp by tensors")
        vid = conv.value(x)
        steps = [("max", _number(lo)), ("min", _number(hi))]
        steps = [(o, v) for o, v in steps if v is not None and not _unbounded(x.value, node.value, o, v)]
        for k, (o, v) in enumerate(steps):
            vid = _apply(conv, node, vid, o, v, False, last=k == len(steps) - 1)
        conv.bind(node, vid)
        return
    op, reflected = OPERATORS[packet]
    c: bool | int | float | None
    if packet == "reciprocal":
        x, c = args[0], 1
    elif packet == "div" and node.kwargs.get("rounding_mode") is not None:
        if node.kwargs["rounding_mode"] != "floor":
            raise Decline("division rounded towards zero")
        op = "//"
        x, c = args[0], _number(args[1])
    elif packet == "pow" and not idioms._live(args[0]):
        x, c, reflected = args[1], _number(args[0]), True
    elif packet in ("add", "mul") and not idioms._live(args[0]):
        x, c = args[1], _number(args[0])
    else:
        x, c = args[0], _number(args[1])
    alpha = node.kwargs.get("alpha", args[2] if packet in ("add", "sub", "rsub") and len(args) > 2 else 1)
    if c is None or not idioms._live(x) or not isinstance(x.value, torch.Tensor) or x.value.is_complex() or alpha != 1:
        raise Decline("not a tensor and a number")
    _held_alike(node, packet, x, c, args[0] is not x)
    if tuple(x.value.shape) != tuple(node.value.shape):
        raise Decline("broadcast")
    if _identity(x.value, node.value, op, c, reflected) or _unbounded(x.value, node.value, op, c) \
            or _unseen_zero(conv, node, x.value, op, c, reflected):
        conv.bind(node, conv.value(x))
        return
    conv.bind(node, _apply(conv, node, conv.value(x), op, c, reflected))


def _identity(x: torch.Tensor, out: torch.Tensor, op: str, c: Any, reflected: bool) -> bool:
    """Whether ``x op c`` is ``x`` itself, exactly: ``x + 0``, ``x - 0``, ``x * 1`` of an integer or boolean tensor
    whose dtype the number does not change (RoBERTa's position ids ``… + past_key_values_length``, ``+ padding_idx``
    when it is 0).  Integer sums and products are exact, so there is no box to draw.  Not on floats: ``-0.0 + 0``
    is ``+0.0``."""
    if out.dtype != x.dtype or x.is_floating_point() or x.is_complex() or type(c) not in (bool, int):
        return False
    return (op in ("+", "-") and c == 0 and not reflected) or (op == "*" and c == 1)


def _unseen_zero(conv: Converter, node: Node, x: torch.Tensor, op: str, c: Any, reflected: bool) -> bool:
    """Whether ``x + 0`` of floats (DeBERTa's ``score = 0; score += c2p / scale``) is ``x`` for all that reads it: the
    sum is ``x`` but for ``-0.0``, which becomes ``+0.0``, and what reads it only ever sees a zero's sign (sums, moves,
    scalings by finite numbers, fills of it) up to softmaxes, which give the same bits for either zero (``exp(±0)`` is
    1; a row's maximum subtracted leaves every other entry as it is), and so the same gradients; no model output on
    the way.  So no box is drawn."""
    if op != "+" or reflected or c != 0 or type(c) not in (int, float) or not x.is_floating_point() \
            or node.value.dtype != x.dtype:
        return False
    outputs = {id(o) for o in conv.captured.outputs if isinstance(o, Node)}
    todo, seen = [node], {id(node)}
    while todo:
        n = todo.pop()
        if id(n) in outputs:
            return False
        for user in conv.consumers.get(id(n), []):
            if not _sign_only(user, n):
                return False
            if called(user) not in _SOFTMAX and id(user) not in seen:
                seen.add(id(user))
                todo.append(user)
            if len(seen) > 64:
                return False
    return True


_SOFTMAX = ("aten.softmax", "aten._softmax")
#: calls that move a tensor's entries (their other arguments sizes, axes or a memory format)
_MOVES = frozenset({"aten.view", "aten.reshape", "aten._unsafe_view", "aten.permute", "aten.transpose", "aten.t",
                    "aten.unsqueeze", "aten.squeeze", "aten.expand", "aten.clone", "aten.contiguous", "aten.alias",
                    "aten.movedim", "aten.flatten", "aten.unflatten"})


def _sign_only(user: Node, n: Node) -> bool:
    """Whether ``user`` shows of ``n`` at most the sign of its zeros (two values of ``n`` alike but for it give results
    alike but for it), or is a softmax of ``n`` (whose result shows nothing of it)."""
    name = called(user)
    args = user.args
    if name in _SOFTMAX or name in _MOVES or name == "aten.masked_fill":
        return bool(args) and args[0] is n and not any(isinstance(v, Node) and v is n for v in args[1:]) \
            and not any(isinstance(v, Node) and v.live for v in args[1:] if name != "aten.masked_fill")
    if name in ("aten.add", "aten.sub"):  # (±0 + y is y, or a zero)
        alpha = user.kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        return len(args) >= 2 and alpha == 1 and isinstance(user.value, torch.Tensor) and user.value.is_floating_point()
    if name in ("aten.mul", "aten.div") and len(args) == 2 and not user.kwargs:  # (±0 · c is a zero)
        other = args[1] if args[0] is n else args[0] if name == "aten.mul" else None
        number = _number(other)
        return isinstance(number, (int, float)) and not isinstance(other, Node) and math.isfinite(number) \
            and (name == "aten.mul" or number != 0)
    return False


def _unbounded(x: torch.Tensor, out: torch.Tensor, op: str, c: Any) -> bool:
    """Whether ``op`` with ``c`` bounds no value of ``x``: ``max(x, -inf)`` and ``min(x, inf)`` of floats of the result's
    dtype are ``x`` for every ``x`` (Mamba 2's ``clamp(dt, dt_min, inf)``), so there is no box to draw."""
    if out.dtype != x.dtype or not x.is_floating_point() or type(c) is not float:
        return False
    return (op == "max" and c == -math.inf) or (op == "min" and c == math.inf)


def _with_fallback(first: Any) -> Any:
    def convert(conv: Converter, node: Node) -> None:
        mark = conv.mark()
        try:
            first(conv, node)
        except Exception:  # noqa: BLE001 - the plain rule declined or failed: try the number rule on a clean slate
            conv.rollback(mark)
            scalar_arithmetic(conv, node)

    return convert


for _packet in OPERATORS:
    _name = f"aten.{_packet}"
    RULES[_name] = _with_fallback(RULES[_name]) if _name in RULES else scalar_arithmetic
rule("aten.clamp", "aten.clip")(scalar_arithmetic)
