"""Experts read densely: every expert applied to every token, weighted by the sparse routing weights.

A library's experts kernel — a loop over the experts hit (``nonzero``, ``where``, ``index_add_``), a sort and a
grouped GEMM (``histc``, ``cumsum``, ``_grouped_mm``, ``index_put``) — computes, from the tokens ``x`` (``t m``),
the router's choice ``i`` (``t k`` experts, or a ``t k e`` one-hot mask) and its weights ``w`` (``t k``)::

    y[t, m] = Σ_e G[t, e] · expert_e(x[t])[m],   G[t, e] = Σ_k w[t, k] · [i[t, k] = e]

A loop's shapes depend on the routing (the capture refuses it) and a grouped GEMM's plumbing is drawn as opaque
boxes; the dense reading of the same sum has neither.  :func:`dense_experts` finds experts modules of two forms:

* the expert weights stacked on a leading expert axis (``gate_up_proj``/``up_proj`` and ``down_proj``, with optional
  per-expert biases, ``e f m`` or transposed ``e m f``), the module's own gate (``_apply_gate``: clamps, interleaved
  halves, …) or activation and its optional per-expert norm applied to all experts' outputs at once;
* a list of expert modules (``expert_0 … expert_{e-1}``), each module's own forward applied to every token;
* a module that routes its own tokens (JetMoE's feed-forward and attention experts, whose router reads its group sizes
  into Python): its router's top-k and softmax, then the experts over ``e`` (for attention experts, the ``map`` to
  each token's ``k`` queries and the ``reduce`` back, the routing handed over as tensors).

It runs the model once on the example inputs to get each module's real arguments, and swaps the module's forward
for its dense reading **only if they agree on real values**: on the traced arguments and on random tokens, experts
and weights, the dense reading equals the module's own forward (whatever kernel it runs).  The capture then records
the dense reading, so the experts are drawn by the ordinary rules as einsums with ``e`` on their learned weights,
the gate ``G`` (the identity on ``e`` read at the chosen experts, weighted by ``w``) and the weighted sum over ``e``.

The candidate readings are in :mod:`ncd.trace.moe_readings` (and :mod:`ncd.trace.moe_routed` for experts that route
their own tokens), the check in :mod:`ncd.trace.moe_proof`; this module swaps the readings proven equal in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ncd.trace.capture import copied
from ncd.trace.moe_proof import _arguments, _put_state_back, _state, agrees, noise_shared
from ncd.trace.moe_readings import _arity_or_none, _called_as, _class_arity, _dense_reading, _experts, dense_reading
from ncd.trace.moe_routed import _routed_attention, _routed_attention_agrees, _routed_mlp, _routed_mlp_agrees, _routing
from ncd.trace.walk import _Walk

__all__ = ["dense_experts", "dense_reading"]


@contextlib.contextmanager
def dense_experts(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                  capture: str | None = None, walk: _Walk | None = None) -> Iterator[list[str]]:
    """Within the block, the experts modules of ``model`` proven equal to their dense reading run it; yields their
    paths.  The model is run once (without gradients) to read each module's real arguments; or, when the block
    records it on real values (``capture``: how :func:`~ncd.trace.capture.capture` is asked to capture it), each
    module is decided at its first call in that recording, on the arguments it is given there, with the same check
    (:mod:`ncd.trace.moe_first_call`: the paths are yielded as they are decided, and a module first called elsewhere
    raises :class:`~ncd.trace.moe_first_call.Undecided`, for the caller to capture again without ``capture``).
    ``walk``: the model's modules read already (:class:`ncd.trace.walk._Walk`), marked used when the model runs here.
    ``ncd.trace`` captures the model inside it: a loop over the tokens routed to each expert (refused before, its
    shapes set by ``nonzero``) is drawn as the router and the weighted sum of every expert over ``e``:

    >>> import torch, ncd
    >>> class Experts(torch.nn.ModuleList):  # a loop over the tokens each expert was routed to
    ...     def forward(self, x, chosen, weights):
    ...         out = torch.zeros_like(x)
    ...         for e, expert in enumerate(self):
    ...             rows, slots = (chosen == e).nonzero().unbind(-1)
    ...             out = out.index_add(0, rows, expert(x[rows]) * weights[rows, slots, None])
    ...         return out
    >>> class MoE(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.router, self.experts = torch.nn.Linear(8, 4), Experts([torch.nn.Linear(8, 8) for _ in range(4)])
    ...     def forward(self, x):
    ...         weights, chosen = self.router(x).softmax(-1).topk(2, dim=-1)
    ...         return self.experts(x, chosen, weights)
    >>> model, x = MoE().eval(), torch.randn(6, 8)
    >>> d = ncd.trace(model, x)
    >>> d.opaque, torch.allclose(d.to_torch()(x + 1), model(x + 1), atol=1e-6)
    ((), True)

    """
    with noise_shared(), _dense_experts(model, args, kwargs, capture, walk) as paths:
        yield paths


@contextlib.contextmanager
def _dense_experts(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                   capture: str | None, walk: _Walk | None = None) -> Iterator[list[str]]:
    """:func:`dense_experts` (the random parameters of its checks drawn once for layers of the same shapes)."""
    readings = _readings(model, walk)
    if readings and capture is not None:
        from ncd.trace.moe_first_call import decided_at_first_call, recorded_on_values

        if recorded_on_values(model, args, kwargs, capture):
            with decided_at_first_call(readings) as paths:
                yield paths
            return
    swapped: list[tuple[torch.nn.Module, dict[str, Any]]] = []
    if readings:
        from ncd.trace.watched import _state_kept

        calls: dict[str, tuple[Any, ...]] = {}
        gave: dict[str, Any] = {}  # what each module's own forward gave on those arguments
        undo = [reading.watch(path, calls, gave) for path, reading in readings.items()]
        if walk is not None:  # the model runs: what it holds after is read again
            walk.used = True
        try:
            with torch.no_grad(), _state_kept(model):  # caches this run fills are not the capture's to read
                model(*copied(list(args)), **dict(zip(kwargs, copied(list(kwargs.values())))))
        except Exception:  # noqa: BLE001 - the model does not run as is: nothing is read densely
            calls, gave = {}, {}
        finally:
            for u in undo:
                u()
        for path, reading in readings.items():
            if path in calls and reading.agrees(calls[path], gave.get(path)):
                swapped.append((reading.module, {name: vars(reading.module).get(name) for name in reading.swap}))
                vars(reading.module).update(reading.swap)
    try:
        yield [p for p, r in readings.items() if any(r.module is m for m, _ in swapped)]
    finally:
        for module, before in swapped:
            for name, value in before.items():
                if value is None:
                    vars(module).pop(name, None)
                else:
                    vars(module)[name] = value


@dataclass
class Reading:
    """A module's methods to swap for their dense reading (``swap``), how to watch its real arguments, and the check."""

    module: torch.nn.Module
    swap: dict[str, Callable[..., Any]]
    method: str  # the method whose first call's arguments are watched
    check: Callable[..., bool]  # the arguments, what the class's own method gave on them, and ``later`` (agrees)

    def watch(self, path: str, calls: dict[str, tuple[Any, ...]], gave: dict[str, Any]) -> Callable[[], None]:
        """Record the first call's arguments of ``method`` into ``calls[path]``, and into ``gave[path]`` a copy of
        what it returned when that is the class's own method run on them (no wrapper in between); returns the undo."""
        module, method = self.module, self.method
        before = vars(module).get(method)
        own = getattr(module, method)
        plain = getattr(own, "__self__", None) is module and getattr(own, "__func__", None) is getattr(type(module), method)

        def seen(*a: Any, **kw: Any) -> Any:
            if path in calls:
                return own(*a, **kw)
            calls[path] = tuple(v.detach().clone() if isinstance(v, torch.Tensor) else v
                                for v in list(a) + list(kw.values()))
            out = own(*a, **kw)
            if plain and isinstance(out, torch.Tensor) and not torch.is_autocast_enabled(out.device.type):
                gave[path] = out.detach().clone()  # as the check would compute it: outside autocast, without grad
            return out

        vars(module)[method] = seen

        def undo() -> None:
            if before is None:
                vars(module).pop(method, None)
            else:
                vars(module)[method] = before

        return undo

    def agrees(self, call: tuple[Any, ...], gave: Any = None, later: list[Any] | None = None) -> bool:
        """Whether the dense reading equals the module's own method on ``call`` and random arguments, and that method
        writes none of the module's state (a buffer or counter it updates: the dense reading would not, and the
        model may read it later); the state is put back as it was.  ``later``: a reading of experts whose dense
        reading the caller runs on ``call`` next may leave that comparison to it, putting the module's own result on
        ``call`` in ``later`` (:func:`~ncd.trace.moe_proof.agrees`); others leave it empty."""
        before = _state(self.module)
        try:
            agreed = self.check(call, gave, later)
        except Exception:  # noqa: BLE001 - a reading that cannot run is not proven
            agreed = False
        if not agreed and later is not None:
            later.clear()
        return _put_state_back(before) and agreed


def _readings(model: torch.nn.Module, walk: _Walk | None = None) -> dict[str, Reading]:
    found: dict[str, Reading] = {}
    classes: dict[type, bool] = {}  # (:func:`~ncd.trace.moe_routed._lacks` of each class once)
    arities: dict[type, int | None] = {}  # (:func:`~ncd.trace.moe_readings._class_arity` of each class once)
    for path, module in walk.distinct() if walk is not None and walk.faithful else model.named_modules():
        if not path or found and any(path.startswith(p + ".") for p in found):
            continue
        # (read once: the readings below each ask for it; a module holding no forward of its own, by its class's)
        cls = type(module)
        arity = arities[cls] if cls in arities else arities.setdefault(cls, _class_arity(cls))
        if arity is None or "forward" in module.__dict__:
            arity = _arity_or_none(module)
        dense = _dense_reading(module, arity)
        if dense is not None:
            experts = _experts(module)
            found[path] = Reading(module, {"forward": _called_as(module, dense)}, "forward",
                                  lambda call, gave, later=None, m=module, d=dense, e=experts: (
                                      (c := _arguments(call, {})) is not None
                                      and agrees(m, d, c, e, traced=gave, later=later)))
            continue
        routing = _routing(module, classes)  # both readings below route by the module's own router: most none
        if routing is None:
            continue
        mlp = _routed_mlp(module, routing) if arity == 1 else None
        if mlp is not None:
            found[path] = Reading(module, {"forward": mlp}, "forward",
                                  lambda call, gave, later=None, m=module, d=mlp:
                                  _routed_mlp_agrees(m, d, call, gave))
            continue
        attention = _routed_attention(module, routing)
        if attention is not None:
            found[path] = Reading(module, {"map": attention[0], "reduce": attention[1]}, "map",
                                  lambda call, gave, later=None, m=module, a=attention:
                                  _routed_attention_agrees(m, a[0], a[1], call))
    return found
