"""An opaque call's cost measured by running it: FLOPs forward and backward counted by torch's flop counter on random
inputs of the box's shapes, the inputs autograd keeps and the bytes of what else it keeps.  The cost rule of
:class:`~ncd.prims.opaque.OpaqueOp` (in :mod:`ncd.prims.opaque`) reads it.

>>> from ncd.prims.opaque import Opaque
>>> mm = Opaque("aten.mm.default", "m:2 k:3, k:3 n:4", "m:2 n:4", (("$in", 0), ("$in", 1)))
>>> measure_opaque(mm, [(2, 3), (3, 4)], ["float", "float"])  # FLOPs forward, backward; inputs kept; other bytes
(48, 96, [1, 0], [])
"""

from __future__ import annotations

from typing import Any

from ncd.ir.diagram import Box
from ncd.ir.rules import AnalysisError
from ncd.prims.opaque_calls import call_text

__all__ = ["measure_opaque"]


def measure_opaque(box: Box, shapes: list[tuple[int, ...]], dtypes: list[str]) -> tuple[int, int, list[int], list[int]]:
    """FLOPs forward and backward of the box's call on random inputs, the inputs autograd keeps and the bytes of what
    else it keeps.  Every floating-point input takes a gradient; where the call refuses one for an input that is no
    differentiable argument (a batch norm's running statistics in training), only the first input takes one; a call
    torch has no derivative for at all (``embedding_renorm``: ``nn.Embedding(max_norm=...)``'s in-place renorm, which
    the model runs without gradients; ``heaviside``, whose backward raises a RuntimeError), or whose backward fails where
    its forward ran (Reformer's reversible layers traced in eval mode assert training), is measured forward only, its
    backward costing nothing (the last with a warning: the backward a diagram of it would run is left out)."""
    try:
        return _measure_once(box, shapes, dtypes, set(range(len(shapes))))
    except AnalysisError as error:
        cause = error.__cause__
        if isinstance(cause, (NotImplementedError, RuntimeError)) and "derivative for" in str(cause) \
                and "not implemented" in str(cause):  # (``heaviside``'s is a RuntimeError of its backward)
            return _measure_once(box, shapes, dtypes, set())
        if sum(d in ("float", "complex") for d in dtypes) >= 2:
            try:
                return _measure_once(box, shapes, dtypes, {0})
            except AnalysisError:
                pass
        if isinstance(error, _BackwardFailed):  # (Reformer's reversible layers refuse a backward in eval mode)
            import warnings

            warnings.warn(f"{error}; its backward is counted as costing nothing (0 FLOPs, nothing kept): the cost's"
                          " backward figures leave it out", stacklevel=2)
            return _measure_once(box, shapes, dtypes, set())
        raise


class _BackwardFailed(AnalysisError):
    """The backward of an opaque box's call raised where its forward ran."""


def _measure_once(box: Box, shapes: list[tuple[int, ...]], dtypes: list[str],
                  differentiated: set[int]) -> tuple[int, int, list[int], list[int]]:
    """:func:`measure_opaque` with gradients taken for the floating-point inputs at ``differentiated``."""
    import torch

    xs = []
    for j, (shape, dtype) in enumerate(zip(shapes, dtypes)):
        if dtype == "float":
            xs.append(torch.randn(shape, requires_grad=j in differentiated))
        elif dtype == "bool":
            xs.append(torch.ones(shape, dtype=torch.bool))
        elif dtype == "complex":
            xs.append(torch.randn(shape, dtype=torch.complex64, requires_grad=j in differentiated))
        else:
            xs.append(torch.zeros(shape, dtype=torch.long))
    inputs = {f"x{j}": x for j, x in enumerate(xs)}
    ptrs: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptrs.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    code = call_text(box.prim, list(inputs))  # type: ignore[arg-type]
    try:
        with _flop_counter() as forward, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = eval(code, {"torch": torch}, inputs)  # noqa: S307 - an ATen call of the diagram, with its own arguments
        outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,))
                if isinstance(o, torch.Tensor) and o.requires_grad]
    except Exception as error:  # the model's own code (a traced Function, a custom operator) fails on random inputs:
        # the call's cost is not known
        raise AnalysisError(f"cost of {box.text()}: running the call on random inputs of shapes {shapes} raised"
                            f" {type(error).__name__}: {error}") from error
    try:
        with _flop_counter() as backward:
            if outs:
                torch.autograd.backward(outs, [torch.randn_like(o) for o in outs])
    except Exception as error:  # its backward fails where its forward ran (Reformer's reversible layers refuse one in
        # eval mode, as the model does): measured forward only
        raise _BackwardFailed(f"cost of {box.text()}: the backward of the call on random inputs of shapes {shapes}"
                              f" raised {type(error).__name__}: {error}") from error
    own = {x.untyped_storage().data_ptr(): j for j, x in enumerate(xs)}
    kept = [own[p] for p in ptrs if p in own]
    saved = [n for p, n in ptrs.items() if p not in own and n]
    return int(forward.get_total_flops()), int(backward.get_total_flops()), kept, saved


def _flop_counter() -> Any:
    """torch's ``FlopCounterMode`` counting the total only, without its per-module tracking: that tracking hooks the
    inputs of every module call for the backward, and asserts on a module called inside a traced
    ``autograd.Function`` (Reformer's reversible layers: ``ncd_function`` boxes), which cost this call nothing."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _Untracked()  # type: ignore[assignment]
    return counter


class _Untracked:
    """A module tracker that tracks nothing: every count goes to ``Global`` (the total)."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _Untracked:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
