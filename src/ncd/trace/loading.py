"""Loading the traced values into a lowered module: each held tensor (a parameter, a buffer of its state) matched to
the traced value it stands for by the order its forward first reads them (:func:`_first_use`, the order the
diagram's boxes were emitted in), in the floating-point types the model computes in (:func:`_typed_as`), then frozen
and tied as the model's were (:func:`ncd.trace.params.freeze`, :func:`ncd.trace.params.tie`).  ``ncd.trace`` answers
:func:`load_parameters`."""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any

from ncd.errors import TraceError
from ncd.trace.params import HOLDER, freeze, tie

if TYPE_CHECKING:
    import torch


def _first_use(module: torch.nn.Module, example: tuple[torch.Tensor, ...],
               tensors: tuple[tuple[torch.Tensor, ...], ...] = ()) -> list[str]:
    """Names of the module's parameters and buffers in the order its forward first reads them.

    A read is the attribute access (``self.weight``) — the order of the generated code, which is the order the
    diagram's boxes were emitted in — or, for a tensor reached otherwise, its first use by a torch function.

    The run reads the lowered module's own initial values, not the traced ones (which it is matching): where one of
    them makes the run fail (an integer buffer of 0 dividing positions, a constant count of repeats), it runs again
    holding the traced ``tensors``, each in the first held tensor of its size and kind.  The generated forward holds
    no branch on values, so that run reads its tensors in the same order whatever values they hold."""
    try:
        return _read_order(module, example)
    except (RuntimeError, ValueError, IndexError, ArithmeticError):
        placed = _placed(module, tensors)
        if placed is None:
            raise
    import torch

    kept = {n: t.detach().clone() for n, t in placed}
    try:
        with torch.no_grad():
            for (_, target), value in zip(placed, [v for group in tensors for v in group]):
                target.copy_(value.detach().reshape(target.shape).to(target.dtype))
        return _read_order(module, example)
    finally:
        with torch.no_grad():
            for n, t in placed:
                t.copy_(kept[n])


def _placed(module: torch.nn.Module, tensors: tuple[tuple[torch.Tensor, ...], ...]
            ) -> list[tuple[str, torch.Tensor]] | None:
    """The module's held tensors in the order of the traced ``tensors`` they can hold (of its size, floating point or
    not as it), each traced value matched to the first one left; ``None`` when they do not pair up."""
    held = [(n, t) for n, t in _held(module) if not n.startswith(HOLDER + ".")]
    flat = [v for group in tensors for v in group]
    if not flat or len(flat) != len(held):
        return None
    placed = []
    for value in flat:
        fits = [i for i, (_, t) in enumerate(held) if t.numel() == value.numel()
                and t.is_floating_point() == value.is_floating_point() and t.is_complex() == value.is_complex()]
        if not fits:
            return None
        # one of its shape first: a 4 x 4 causal mask beside widths of 16 went into a norm's weight, and the run that
        # needed it (nn.Transformer's guard that the mask given is the causal one) failed again
        shaped = [i for i in fits if held[i][1].shape == value.shape]
        placed.append(held.pop((shaped or fits)[0]))
    return placed


def _read_order(module: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> list[str]:
    """:func:`_first_use` of one run of ``module`` on ``example``, with the values it holds."""
    import torch
    from torch.overrides import TorchFunctionMode

    names = {id(t): n for n, t in _held(module)}
    order: list[str] = []
    seen: set[int] = set()

    def saw(t: Any) -> None:
        if isinstance(t, torch.Tensor) and id(t) in names and id(t) not in seen:
            seen.add(id(t))
            order.append(names[id(t)])

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            leaves, spec = torch.utils._pytree.tree_flatten((args, kwargs or {}))
            for t in leaves:
                saw(t)
            try:
                return func(*args, **(kwargs or {}))
            except RuntimeError:
                # a model of mixed floating-point types (float16 weights, a float32 table): its tensors take the traced
                # types only once matched by this order, so a call may meet types it does not take: only the order
                # is wanted here, so it runs in the widest of them
                kinds = {t.dtype for t in leaves if isinstance(t, torch.Tensor) and t.is_floating_point()}
                if len(kinds) < 2:
                    raise
                wide = functools.reduce(torch.promote_types, kinds)
                a, kw = torch.utils._pytree.tree_unflatten(
                    [t.to(wide) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in leaves], spec)
                return func(*a, **kw)

    getattr_ = torch.nn.Module.__getattr__

    def reading(self: torch.nn.Module, name: str) -> Any:
        value = getattr_(self, name)
        saw(value)
        return value

    torch.nn.Module.__getattr__ = reading  # type: ignore[method-assign]
    try:
        with torch.no_grad(), _no_autocast(example), Watch():
            module(*example)
    finally:
        torch.nn.Module.__getattr__ = getattr_  # type: ignore[method-assign]
    return order


def _no_autocast(example: tuple[torch.Tensor, ...]) -> contextlib.ExitStack:
    """Autocast off where the caller turned it on, for a run of the lowered module before its parameters are loaded in
    place: autocast caches its casts of parameters until its region ends, and a later call in the same region would
    compute with the casts of the values they held before the load (the lowered module was 0.2 off the model)."""
    import torch

    stack = contextlib.ExitStack()
    for device in sorted({"cpu"} | {t.device.type for t in example if isinstance(t, torch.Tensor)}):
        if torch.is_autocast_enabled(device):
            stack.enter_context(torch.autocast(device, enabled=False))
    return stack


def _held(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The parameters and the buffers of its state (not the ones the lowered module computes itself: ``∿``)."""
    buffers = [(f"{prefix}.{n}" if prefix else n, b) for prefix, sub in module.named_modules()
               for n, b in sub._buffers.items() if b is not None and n not in sub._non_persistent_buffers_set]
    return list(module.named_parameters()) + buffers


def _state_for(module: torch.nn.Module, tensors: tuple[tuple[torch.Tensor, ...], ...],
               example: tuple[torch.Tensor, ...], order: list[str] | None = None) -> dict[str, torch.Tensor]:
    order = _first_use(module, example, tensors) if order is None else order
    flat = [t for group in tensors for t in group]
    current = {n: t for n, t in _held(module) if not n.startswith(HOLDER + ".")}
    unused = set(current) - set(order)
    if len(order) != len(flat) or any(n in dict(module.named_parameters()) for n in unused):
        raise TraceError(
            f"cannot load the traced values: the lowered module uses {len(order)} of its {len(current)} tensors,"
            f" the trace recorded {len(flat)}"
        )
    state = {}
    for name, value in zip(order, flat):
        target = current[name]
        if value.is_complex() and not target.is_complex():
            raise TraceError(f"cannot load the traced values: {name} holds complex numbers (shape {tuple(value.shape)}),"
                             " which the lowered module cannot hold yet; the diagram draws it, but does not run it")
        if target.numel() != value.numel():
            raise TraceError(f"cannot load the traced values: {name} has shape {tuple(target.shape)} in the lowered"
                             f" module but the traced tensor has shape {tuple(value.shape)}")
        # a model of mixed float types: each value in its own (a number of no axes takes the type of the tensors it
        # meets: the module's, as in :meth:`TracedDiagram._float_dtype`)
        kind = value.dtype if value.is_floating_point() and target.is_floating_point() and value.dim() else target.dtype
        state[name] = value.detach().reshape(target.shape).to(kind)
    return state


def _typed_as(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """The module's parameters and buffers in the floating-point types of the values ``state`` loads into them: a model
    of mixed types (float16 weights beside a float32 table) is lowered computing in the types the model computes in,
    not in one (torch's default: its results differed from the model's by the rounding of float16, with no word)."""
    import torch

    for name, value in state.items():
        owner, _, leaf = name.rpartition(".")
        sub = module.get_submodule(owner)
        p = sub._parameters.get(leaf)
        if p is not None and p.is_floating_point() and p.dtype != value.dtype:
            sub._parameters[leaf] = torch.nn.Parameter(p.detach().to(value.dtype), p.requires_grad)
        b = sub._buffers.get(leaf)
        if b is not None and b.is_floating_point() and b.dtype != value.dtype:
            sub._buffers[leaf] = b.to(value.dtype)


def load_parameters(module: torch.nn.Module, tensors: tuple[tuple[torch.Tensor, ...], ...],
                    example: tuple[torch.Tensor, ...], model: torch.nn.Module | None = None,
                    made: frozenset[int] = frozenset()) -> list[str]:
    """Copy traced values into ``module`` (lowered from the traced diagram), matched by first use (given the traced
    ``model``, a constant loaded into a parameter becomes a buffer); the names they were loaded into, in order."""
    order = _first_use(module, example, tensors)
    state = _state_for(module, tensors, example, order)
    _typed_as(module, state)
    # through the state_dict: it takes every weight in its declared order, also where the lowered module stores a
    # map's rows or columns in the order a fused kernel reads (ncd.prims.patterns.chosen_rows / chosen_columns)
    module.load_state_dict(state, strict=False)
    freeze(module, order, tensors, model, made)
    tie(module, order, [t for group in tensors for t in group])
    return order
