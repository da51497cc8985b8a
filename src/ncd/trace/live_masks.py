"""Masks computed from an input, read as the structure they apply (:mod:`ncd.trace.attention`'s live masks).

A mask an attention reads may be computed from an input by recorded operations (``attention_mask`` expanded, a
padding mask made ``-inf``): :func:`_read_mask` reads it as ``structure[y, x] & (input[b, x] != 0)`` (a
:class:`LiveMask`) after re-running those operations (:func:`_run`, which other readings of recorded operations
share) on the traced input and on random 0/1 inputs, every entry every time; a float mask when it is ``0`` exactly
there and ``-inf`` everywhere else.  It is read only where the lowered softmax gives ``0`` on a row whose keys are
all masked, as ``scaled_dot_product_attention`` does (:func:`empty_rows_give_zero`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sympy
import torch

from ncd.ir.diagram import Box
from ncd.prims.softmax import SoftmaxOp
from ncd.trace.capture import Node, live_call, upstream
from ncd.trace.idioms import _tensor
from ncd.trace.recipes import recipe, same_recipe

if TYPE_CHECKING:
    from ncd.trace.convert import Converter

__all__ = ["LiveMask", "empty_rows_give_zero"]


@dataclass
class LiveMask:
    """A boolean mask ``structure[y, x] & (input[b, x] != 0)`` (``negated``: ``== 0``) computed from ``input`` by
    ``nodes`` (or a float one, ``0`` there and ``-inf`` elsewhere)."""

    input: Node
    structure: torch.Tensor  # (y, x) bool
    nodes: list[Node]
    negated: bool = False


def _subgraph(mask: Node, limit: int = 400) -> tuple[list[Node], list[Node]] | None:
    """The live operations that compute ``mask`` (in recorded order) and the inputs they read."""
    calls: list[Node] = []
    inputs: list[Node] = []
    for n in upstream(mask, live_call):
        if n.kind == "input":
            inputs.append(n)
        elif live_call(n):
            calls.append(n)
            if len(calls) > limit:
                return None
    return calls, inputs


#: arguments :func:`_run` passes as they are
_SCALARS = frozenset({int, float, bool, str, type(None)})


def _run(nodes: list[Node], given: dict[int, Any], until: Node | None = None, values: dict[int, Any] | None = None) -> Any:
    """Re-run recorded operations with some nodes' values replaced; the value of ``until`` (else the last node's).
    ``values``, when given, receives every node's new value (by id)."""
    values = {} if values is None else values
    values.update(given)

    def sub(value: Any) -> Any:
        if type(value) in _SCALARS:  # (most arguments: a size, a dim, a flag)
            return value
        if isinstance(value, Node):
            return values[id(value)] if id(value) in values else value.value
        if isinstance(value, (list, tuple)):
            return type(value)(sub(v) for v in value)
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        return value

    out = None
    with torch.no_grad():
        for n in nodes:
            out = n.target(*sub(n.args), **sub(n.kwargs))
            values[id(n)] = out
    return out if until is None else values[id(until)]


def _zero_or_minus_inf(value: torch.Tensor) -> bool:
    """Whether a float mask holds only ``0`` and ``-inf`` (what :func:`_read_mask` reads; a position bias added to a
    mask, or ``finfo.min`` for ``-inf``, is not such a mask: inkling's second attention re-ran 183 recorded operations,
    its whole first layer, ~11 ms, to find that out)."""
    return bool(((value == 0) | (value == float("-inf"))).all())


_EMPTY_ROWS: list[bool] = []


def empty_rows_give_zero() -> bool:
    """Whether the lowered softmax after a padding mask gives 0 on a row whose keys are all masked (as
    ``scaled_dot_product_attention`` does for a query that may attend to no key): only then is a padding mask read
    from an input (checked once, on the lowering itself).

    >>> empty_rows_give_zero()
    True
    """
    if not _EMPTY_ROWS:
        from ncd.ir.axes import Axis
        from ncd.prims.attention import PaddingMaskOp
        from ncd.torch.module import to_torch

        try:
            x = Axis("x", sympy.Integer(2))
            module = to_torch(Box(PaddingMaskOp(x)) >> Box(SoftmaxOp(x)))
            with torch.no_grad():
                out = module(torch.randn(2), torch.zeros(2, dtype=torch.bool))
            _EMPTY_ROWS.append(bool((out == 0).all()))
        except Exception:  # noqa: BLE001 - a lowering that cannot say: not read
            _EMPTY_ROWS.append(False)
    return _EMPTY_ROWS[0]


def _read_mask(conv: Converter, mask: Node, read: list[tuple[list[Any], LiveMask]] | None = None) -> LiveMask | None:
    """``mask`` as ``structure[y, x] & (input[b, x] != 0)`` (a float mask: ``0`` there, ``-inf`` elsewhere; or with
    ``== 0``, negated): checked by re-running its operations on the traced input and on random 0/1 inputs (every
    entry, every time).  ``read``: masks read before, with their recipes; a mask made from the same input by the same
    operations on equal arguments as one of them (each layer of ``nn.TransformerEncoder`` makes its own) is that
    reading on its own operations: re-running them would give the same values (and is not done again)."""
    if not empty_rows_give_zero():
        return None  # padded queries would be NaN where the model gives 0: the attention stays opaque
    if not _tensor(mask) or mask.value.dim() < 2 or not (mask.value.dtype == torch.bool or mask.value.is_floating_point()):
        return None
    found = _subgraph(mask)
    if found is None:
        return None
    nodes, inputs = found
    if len(inputs) != 1:
        return None
    (source,) = inputs
    p = source.value
    if not isinstance(p, torch.Tensor) or p.dim() != 2 or p.device.type == "meta" or p.is_complex():
        return None
    order = {id(n): k for k, n in enumerate(conv.captured.nodes)}
    nodes.sort(key=lambda n: order.get(id(n), 0))
    shape = tuple(mask.value.shape)
    batch, keys = int(p.shape[0]), int(p.shape[1])
    if shape[-1] != keys or shape[0] not in (1, batch) or len(shape) != 4:
        return None
    made = recipe(nodes, [source]) if read is not None else []
    for known, earlier in read or ():
        if earlier.input is source and same_recipe(known, made):
            return LiveMask(source, earlier.structure, nodes, earlier.negated)
    dtype = mask.value.dtype
    if dtype != torch.bool and mask.value.device.type != "meta" and not _zero_or_minus_inf(mask.value):
        return None  # re-run on the traced input (the first probe below), its operations give this value: not read

    def kept(probe: torch.Tensor) -> torch.Tensor | None:
        """Where the mask the operations make from ``probe`` keeps the scores (a float one: ``0`` there, ``-inf``
        elsewhere, nothing else); None when it is not such a mask of ``mask``'s shape."""
        got = _run(nodes, {id(source): probe})
        if not (isinstance(got, torch.Tensor) and got.dtype == dtype and tuple(got.shape) == shape):
            return None
        if dtype == torch.bool:
            return got
        zero = got == 0
        return zero if bool((zero | (got == float("-inf"))).all()) else None

    try:
        negated = False
        full = kept(torch.ones_like(p))
        if full is not None and dtype != torch.bool and not bool(full.any()):  # kept where the input is 0
            negated, full = True, kept(torch.zeros_like(p))
        if full is None:
            return None
        structure = full.reshape(-1, shape[-2], shape[-1])[0]
        if not bool((full == structure).all()):
            return None
        gen = torch.Generator().manual_seed(0)
        probes = [p] + [(torch.rand(tuple(p.shape), generator=gen) > 0.4).to(p.dtype) for _ in range(4)]
        for probe in probes:
            got = kept(probe)
            want = structure & ((probe == 0) if negated else (probe != 0))[:, None, None, :]
            if got is None or not bool((got == want.expand(shape)).all()):
                return None
    except Exception:  # noqa: BLE001 - operations that cannot be re-run are not read
        return None
    reading = LiveMask(source, structure, nodes, negated)
    if read is not None:
        read.append((made, reading))
    return reading
