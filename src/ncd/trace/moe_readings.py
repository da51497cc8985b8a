"""Dense readings of experts modules called with the tokens, the chosen experts and their weights.

Each reading computes ``y[t, m] = Σ_e G[t, e] · expert_e(x[t])[m]`` with ``G[t, e] = Σ_k w[t, k] · [i[t, k] = e]``
(:func:`_gate`): the experts' weights stacked on a leading expert axis (:func:`_stacked`) or a list of expert modules
(:func:`_listed`).  A reading is a candidate only: :func:`ncd.trace.moe_proof.agrees` decides whether it equals the
module's own forward (:mod:`ncd.trace.moe_dense`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import FunctionType
from typing import Any

import torch

from ncd.trace.capture import forward_signature

__all__ = ["Forward", "dense_reading"]

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _gate(index: torch.Tensor, weight: torch.Tensor, experts: int) -> torch.Tensor:
    """``G[t, e] = Σ_k w[t, k] · [i[t, k] = e]`` (``i`` of experts ``t k`` or a one-hot mask ``t k e``)."""
    if index.dim() == weight.dim():  # the chosen experts: rows of the identity on e
        chosen = _one_hot(index, experts, weight.dtype)
    else:  # a one-hot mask already
        chosen = index.to(weight.dtype)
    return torch.einsum("tk,tke->te", weight, chosen)


def _one_hot(chosen: torch.Tensor, experts: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.eye(experts, dtype=dtype, device=chosen.device)[chosen]


def _weight(module: torch.nn.Module, name: str) -> torch.Tensor:
    value = getattr(module, name)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.{name} is not a tensor")
    return value


def _stacked(module: torch.nn.Module) -> Forward | None:
    """The dense reading of experts whose weights carry a leading expert axis (the ``use_experts_implementation``
    attributes ``has_gate``, ``is_transposed``, ``has_bias``, ``has_post_expert_norm`` say which form to try)."""
    gate = bool(getattr(module, "has_gate", True))
    up = getattr(module, "gate_up_proj" if gate else "up_proj", None)
    down = getattr(module, "down_proj", None)
    if not isinstance(up, torch.Tensor) or not isinstance(down, torch.Tensor) or up.dim() != 3 or down.dim() != 3:
        return None
    if up.shape[0] != down.shape[0] or up.shape[0] < 2:
        return None
    transposed = bool(getattr(module, "is_transposed", False))
    bias = bool(getattr(module, "has_bias", False))
    post = getattr(module, "post_expert_norm", None) if getattr(module, "has_post_expert_norm", False) else None
    act = getattr(module, "_apply_gate", None) if gate else getattr(module, "act_fn", None)
    if not callable(act):
        return None
    experts = int(up.shape[0])

    def forward(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        w_up = _weight(module, "gate_up_proj" if gate else "up_proj")
        h = torch.einsum("tm,emf->tef" if transposed else "tm,efm->tef", x.to(w_up.dtype), w_up)
        if bias:
            h = h + _weight(module, "gate_up_proj_bias" if gate else "up_proj_bias")
        h = act(h)
        y = torch.einsum("tef,efm->tem" if transposed else "tef,emf->tem", h, _weight(module, "down_proj"))
        if bias:
            y = y + _weight(module, "down_proj_bias")
        if post is not None:
            y = post(y)
        return torch.einsum("te,tem->tm", _gate(index, weight, experts), y.to(weight.dtype)).to(x.dtype)

    return forward


def _listed(module: torch.nn.Module) -> Forward | None:
    """The dense reading of a list of expert modules of one class and shape (``expert_0 … expert_{e-1}``)."""
    named = list(module.named_children())
    children = [c for _, c in named]
    if len(children) < 2 or len({type(c) for c in children}) != 1 or list(module.named_parameters(recurse=False)):
        return None
    numbers = [name[len(name.rstrip("0123456789")):] for name, _ in named]  # expert_0, expert_1, ... (or 0, 1, ...)
    if numbers != [str(j) for j in range(len(children))]:
        return None
    shapes = {tuple((n, tuple(p.shape)) for n, p in c.named_parameters()) for c in children}
    if len(shapes) != 1 or not next(iter(shapes)):
        return None

    def forward(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        y = torch.stack([expert(x) for expert in module.children()], dim=1)  # t e m
        return torch.einsum("te,tem->tm", _gate(index, weight, len(children)), y.to(weight.dtype)).to(x.dtype)

    return forward


def _arity(module: torch.nn.Module) -> int:
    """``len(forward_signature(module).parameters)``, counted from the code of a plain function bound from the
    module's class (no ``inspect.signature``: 50 us for each class of module a model holds, read on the first trace of
    every model); other forwards (wrapped, with a signature of their own, not bound from the class): by the signature."""
    forward = module.forward
    fn = getattr(forward, "__func__", None)
    # a function without attributes of its own (no __wrapped__, __signature__ or partialmethod to follow)
    if type(fn) is FunctionType and not fn.__dict__ and getattr(forward, "__self__", None) is module:
        code = fn.__code__
        if code.co_argcount:  # (the bound argument ``self`` is its first: not a parameter of the forward)
            return code.co_argcount - 1 + code.co_kwonlyargcount + (code.co_flags & _STARS).bit_count()
    return len(forward_signature(module).parameters)


#: the code flags of ``*args`` and ``**kwargs`` (each one more parameter)
_STARS = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS


def dense_reading(module: torch.nn.Module) -> Forward | None:
    """A candidate dense reading of ``module`` (unproven: :func:`agrees` decides), or ``None``."""
    return _dense_reading(module, _arity_or_none(module))


def _class_arity(cls: type) -> int | None:
    """:func:`_arity` of every module of ``cls`` that holds no ``forward`` of its own, when it is counted from the code
    of the plain function its class binds (its class looks attributes up as ``object`` does); else None (asked of
    each module)."""
    if cls.__getattribute__ is not object.__getattribute__:  # type: ignore[comparison-overlap]
        return None
    fn = next((vars(c)["forward"] for c in cls.__mro__ if "forward" in vars(c)), None)
    if type(fn) is not FunctionType or fn.__dict__ or not fn.__code__.co_argcount:
        return None
    code = fn.__code__
    return code.co_argcount - 1 + code.co_kwonlyargcount + (code.co_flags & _STARS).bit_count()


def _arity_or_none(module: torch.nn.Module) -> int | None:
    """:func:`_arity`, or ``None`` for a forward whose signature cannot be read."""
    try:
        return _arity(module)
    except (TypeError, ValueError):
        return None


def _dense_reading(module: torch.nn.Module, arity: int | None) -> Forward | None:
    """:func:`dense_reading` of a module whose forward takes ``arity`` parameters (:func:`_arity_or_none`)."""
    if arity != 3:
        return None
    if hasattr(module, "has_gate"):  # transformers' experts interface: read densely unless drawn as recorded already
        return None if _drawable(module) else _stacked(module)
    return _listed(module)


def _experts(module: torch.nn.Module) -> int:
    up = getattr(module, "gate_up_proj", getattr(module, "up_proj", None))
    return int(up.shape[0]) if isinstance(up, torch.Tensor) else len(list(module.children()))


def _drawable(module: torch.nn.Module) -> bool:
    """Whether :mod:`ncd.trace.moe` draws this module's kernel as recorded already: a plain gated expert (no biases,
    no per-expert norm, the library's default gate) run by a traceable kernel."""
    try:
        from transformers.integrations.moe import _default_apply_gate
    except ImportError:  # not a transformers experts module: read densely
        return False
    config = getattr(module, "config", None)
    kernel = getattr(config, "_experts_implementation", None)
    return (kernel not in (None, "eager") and not getattr(module, "has_bias", True)
            and not getattr(module, "has_post_expert_norm", True)
            and getattr(type(module), "_apply_gate", None) is _default_apply_gate)


def _called_as(module: torch.nn.Module, dense: Forward) -> Callable[..., torch.Tensor]:
    """``dense`` taking its three arguments as the module's own forward does (by position or by name)."""
    signature = forward_signature(module)

    def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        x, index, weight = bound.arguments.values()
        return dense(x, index, weight)

    return forward
