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
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FunctionType
from typing import Any

import torch

from ncd.trace.capture import copied, forward_signature

__all__ = ["dense_experts", "dense_reading"]

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _gate(index: torch.Tensor, weight: torch.Tensor, experts: int) -> torch.Tensor:
    """``G[t, e] = Σ_k w[t, k] · [i[t, k] = e]`` (``i`` of experts ``t k`` or a one-hot mask ``t k e``)."""
    if index.dim() == weight.dim():  # the chosen experts: rows of the identity on e
        chosen = _one_hot(index, experts, weight.dtype)
    else:  # a one-hot mask already
        chosen = index.to(weight.dtype)
    return torch.einsum("tk,tke->te", weight, chosen)


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


# -- experts that route their own tokens (JetMoE: a router reading its group sizes into Python with ``tolist``) ----------

def _routing(module: torch.nn.Module) -> tuple[torch.nn.Linear, int, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The router's linear map and top-k, the experts' input and output weights (``e · m``, ``e m ·``) and the bias of a
    module that routes its own tokens: ``router.layer``, ``router.top_k``, ``input_linear.weight``,
    ``output_linear.weight``, ``bias`` (JetMoE's mixtures of experts and of attention experts)."""
    router = getattr(module, "router", None)
    if router is None:  # most modules (each getattr a module misses raises inside torch: ~1 us)
        return None
    layer, k = getattr(router, "layer", None), getattr(router, "top_k", None)
    w_in = getattr(getattr(module, "input_linear", None), "weight", None)
    w_out = getattr(getattr(module, "output_linear", None), "weight", None)
    bias = getattr(module, "bias", None)
    if not (isinstance(layer, torch.nn.Linear) and isinstance(k, int) and isinstance(w_in, torch.Tensor)
            and isinstance(w_out, torch.Tensor) and isinstance(bias, torch.Tensor)):
        return None
    experts = layer.out_features
    if w_in.dim() != 3 or w_out.dim() != 3 or w_in.shape[0] != experts or w_out.shape[0] != experts or not 0 < k <= experts:
        return None
    return layer, k, w_in, w_out, bias


def _route(layer: torch.nn.Linear, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = layer(x).float()
    top, chosen = logits.topk(k, dim=1)
    return chosen, torch.softmax(top, dim=1).type_as(x), logits


Routing = tuple[torch.nn.Linear, int, torch.Tensor, torch.Tensor, torch.Tensor]


def _routed_mlp(module: torch.nn.Module, found: Routing | None
                ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``y = Σ_e G[t, e] · W_out[e] (act(W_in[e] x)₁ ⊙ (W_in[e] x)₂) + bias``, routed by the module's own router
    (``found``: its :func:`_routing`)."""
    act = getattr(module, "activation", None)
    if found is None or not callable(act):
        return None
    layer, k, w_in, w_out, bias = found

    def forward(layer_input: torch.Tensor) -> torch.Tensor:
        x = layer_input.reshape(-1, layer_input.shape[-1])
        chosen, gates, _ = _route(layer, k, x)
        gate, up = torch.einsum("tm,efm->tef", x, w_in).chunk(2, dim=-1)
        y = torch.einsum("tef,emf->tem", act(gate) * up, w_out)
        out = torch.einsum("te,tem->tm", _gate(chosen, gates, int(w_in.shape[0])), y)
        return out.view(*layer_input.shape[:-1], -1) + bias

    return forward


def _routed_attention(module: torch.nn.Module, found: Routing | None
                      ) -> tuple[Callable[..., Any], Callable[..., torch.Tensor]] | None:
    """``map``: each token's query projection by each of its ``k`` experts (``Σ_e [i[t, k] = e] · W_in[e] x``);
    ``reduce``: ``Σ_k w[t, k] Σ_e [i[t, k] = e] · W_out[e] a[t, k] + bias`` — the routing handed from one to the other
    as the chosen experts and their weights (tensors, not group sizes read into Python); ``found``: the module's
    :func:`_routing`."""
    if found is None or not callable(getattr(module, "map", None)) or not callable(getattr(module, "reduce", None)):
        return None
    layer, k, w_in, w_out, bias = found
    experts = int(w_in.shape[0])

    def map(layer_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:  # noqa: A001
        x = layer_input.reshape(-1, layer_input.shape[-1])
        chosen, gates, logits = _route(layer, k, x)
        q = torch.einsum("tm,ehm->teh", x, w_in)
        picked = torch.einsum("tke,teh->tkh", _one_hot(chosen, experts, q.dtype), q)
        return picked.view(*layer_input.shape[:-1], k, -1), logits, (chosen, gates)

    def reduce(layer_input: torch.Tensor, topo: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        chosen, gates = topo
        a = layer_input.reshape(-1, k, layer_input.shape[-1])
        y = torch.einsum("tkh,emh->tkem", a, w_out)
        out = torch.einsum("tk,tke,tkem->tm", gates, _one_hot(chosen, experts, y.dtype), y)
        return out.view(*layer_input.shape[:-2], -1) + bias

    return map, reduce


def _one_hot(chosen: torch.Tensor, experts: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.eye(experts, dtype=dtype, device=chosen.device)[chosen]


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The tokens ``t m``, the chosen experts (``t k`` or a one-hot ``t k e``) and their weights ``t k`` of a call."""
    values = list(args) + list(kwargs.values())
    if len(values) != 3 or not all(isinstance(v, torch.Tensor) for v in values):
        return None
    x, index, weight = values
    if x.dim() != 2 or not x.is_floating_point() or index.is_floating_point() or index.dtype == torch.bool:
        return None
    if not weight.is_floating_point() or weight.dim() != 2 or tuple(weight.shape) != tuple(index.shape[:2]):
        return None
    if index.dim() not in (2, 3) or index.shape[0] != x.shape[0]:
        return None
    return x, index, weight


#: the fewest random tokens :func:`agrees` checks (each expert among them however few the traced tokens)
PROBED = 8


def _routes(experts: int, k: int, rows: int, one_hot: bool, gen: torch.Generator) -> torch.Tensor:
    """Random routing of ``rows`` tokens to ``k`` experts each (distinct ones; for a one-hot mask ``t k e``, any, some
    tokens dropped as by an expert's capacity) in which every expert is chosen: ``⌈e/k⌉`` of the tokens, at random
    places among the rows, are routed to experts ``0 … e-1`` in turn (``rows`` is at least that many)."""
    cover = -(-experts // k)
    covered = torch.randperm(rows, generator=gen)[:cover]
    every = torch.arange(cover * k).view(cover, k) % experts
    if not one_hot:
        chosen = torch.rand((rows, experts), generator=gen).argsort(dim=1)[:, :k]
        chosen[covered] = every.gather(1, torch.rand((cover, k), generator=gen).argsort(dim=1))
        return chosen
    picked = torch.randint(experts, (rows, k), generator=gen)
    picked[covered] = every
    kept = torch.randint(2, (rows, k, 1), generator=gen)
    kept[covered] = 1
    return torch.nn.functional.one_hot(picked, experts) * kept


def agrees(module: torch.nn.Module, dense: Forward, call: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
           experts: int, traced: Any = None) -> bool:
    """Whether ``dense`` equals the module's own forward on the traced arguments and on random ones (``traced``: what
    the module's own forward gave on the traced arguments in the run that read them, if known; else it is run).

    The random cases have as many tokens as the traced one, as many cases as make at least :data:`PROBED` and
    ``⌈e/k⌉`` tokens, of random values routed at random with random weights, every expert chosen by some token
    (:func:`_routes`): both sides compute each token from its own row, so every expert is checked on random tokens."""
    x, index, weight = call
    tokens, k = int(index.shape[0]), int(index.shape[1])
    if x.device.type == "meta" or tokens < 1 or k < 1 or (index.dim() == 2 and k > experts) \
            or (index.dim() == 3 and index.shape[2] != experts):
        return False
    gen = torch.Generator().manual_seed(0)
    probes = -(-max(tokens, PROBED, -(-experts // k)) // tokens)  # cases of the traced number of tokens
    rows = probes * tokens
    chosen = _routes(experts, k, rows, index.dim() == 3, gen).to(index.dtype)
    xs = (2 * torch.randn((rows, *x.shape[1:]), generator=gen)).to(x.dtype)
    ws = torch.rand((rows, k), generator=gen).to(weight.dtype)
    cases = [call, *((xs[j:j + tokens], chosen[j:j + tokens], ws[j:j + tokens]) for j in range(0, rows, tokens))]
    own = module.forward  # what the model runs (an instance's own forward, if it has one), not the class's
    try:
        with torch.no_grad():
            if _agree_at_once(module, dense, cases, traced):
                return True
            for j, (xv, iv, wv) in enumerate(cases):  # (one case at a time: the answer whenever the one call is not)
                want = traced if j == 0 and traced is not None else own(xv, iv, wv)
                if not _agree(dense(xv, iv, wv), want):
                    return False
    except Exception:  # noqa: BLE001 - a reading that cannot run is not proven
        return False
    return True


def _agree(got: Any, want: Any) -> bool:
    """Whether the dense reading's ``got`` is the module's ``want`` (of one case) up to rounding."""
    if not (isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor) and got.shape == want.shape
            and got.dtype == want.dtype):
        return False
    scale = max(1.0, float(want.abs().max()))
    return bool(torch.allclose(got.double(), want.double(), atol=1e-5 * scale, rtol=1e-4))


def _agree_at_once(module: torch.nn.Module, dense: Forward, cases: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                   traced: Any) -> bool:
    """:func:`agrees`' cases run in one call of each side, their tokens one after another, and each case's rows
    compared as :func:`agrees` compares that case: both sides compute each token from its own row (the module's
    kernel routes every token alone), so the rows are each case's results, at a fraction of the cost (the expert
    weights are read once, not once a case: muse_spark 77 → 57 ms for its two).  False, and the cases are run one
    at a time, wherever this does not hold or cannot run."""
    try:
        sizes = [int(case[0].shape[0]) for case in cases]
        ran = cases[1:] if traced is not None else cases  # the module's own forward on the traced case: known
        joined = [torch.cat([case[part] for case in cases]) for part in range(3)]
        got = dense(*joined)
        want = module.forward(*[torch.cat([case[part] for case in ran]) for part in range(3)])
        if not (isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor)
                and got.shape[:1] == (sum(sizes),) and want.shape[:1] == (sum(sizes[len(cases) - len(ran):]),)):
            return False
        starts = [sum(sizes[:j]) for j in range(len(cases) + 1)]  # each case's first row in the joined call
        skip = starts[len(cases) - len(ran)]  # (the rows of the traced case: not in the module's call when known)
        wants = [traced] if traced is not None else []
        wants += [want[starts[j] - skip:starts[j + 1] - skip] for j in range(len(cases) - len(ran), len(cases))]
        return all(_agree(got[starts[j]:starts[j + 1]], w) for j, w in enumerate(wants))
    except Exception:  # noqa: BLE001 - cases one at a time, as ever
        return False


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


@contextlib.contextmanager
def dense_experts(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                  capture: str | None = None) -> Iterator[list[str]]:
    """Within the block, the experts modules of ``model`` proven equal to their dense reading run it; yields their
    paths.  The model is run once (without gradients) to read each module's real arguments; or, when the block
    records it on real values (``capture``: how :func:`~ncd.trace.capture.capture` is asked to capture it), each
    module is decided at its first call in that recording, on the arguments it is given there, with the same check
    (:mod:`ncd.trace.moe_first_call`: the paths are yielded as they are decided, and a module first called elsewhere
    raises :class:`~ncd.trace.moe_first_call.Undecided`, for the caller to capture again without ``capture``).
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
    readings = _readings(model)
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
    check: Callable[[tuple[Any, ...], Any], bool]  # the arguments, and what the class's own method gave on them

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

    def agrees(self, call: tuple[Any, ...], gave: Any = None) -> bool:
        """Whether the dense reading equals the module's own method on ``call`` and random arguments, and that method
        writes none of the module's state (a buffer or counter it updates: the dense reading would not, and the
        model may read it later); the state is put back as it was."""
        before = _state(self.module)
        try:
            agreed = self.check(call, gave)
        except Exception:  # noqa: BLE001 - a reading that cannot run is not proven
            agreed = False
        return _put_state_back(before) and agreed


def _state(module: torch.nn.Module) -> list[tuple[Any, ...]]:
    """The tensors and numbers ``module`` and its submodules hold (where, what, its version and a copy of a buffer or
    plain tensor's values; parameters by version only), to tell whether a run of it wrote them (:func:`_put_state_back`)."""
    out: list[tuple[Any, ...]] = []
    for m in module.modules():
        for store in (m._parameters, m._buffers, vars(m)):
            for name, v in list(store.items()):
                if isinstance(v, torch.Tensor):
                    kept = None if store is m._parameters else v.detach().clone()
                    out.append((store, name, v, v._version, kept))
                elif type(v) in (int, float, bool) and store is vars(m):
                    out.append((store, name, v, None, None))
    return out


def _put_state_back(before: list[tuple[Any, ...]]) -> bool:
    """Whether the state read by :func:`_state` is unchanged; where it is not, it is put back (values and bindings)."""
    same = True
    with torch.no_grad():
        for store, name, v, version, kept in before:
            now = store.get(name)
            if isinstance(v, torch.Tensor):
                if now is not v or v._version != version:
                    same = False
                    if kept is not None and v._version != version:
                        v.copy_(kept)
                    store[name] = v
            elif type(now) is not type(v) or now != v:
                same = False
                store[name] = v
    return same


def _readings(model: torch.nn.Module) -> dict[str, Reading]:
    found: dict[str, Reading] = {}
    for path, module in model.named_modules():
        if not path or found and any(path.startswith(p + ".") for p in found):
            continue
        arity = _arity_or_none(module)  # (read once: the readings below each ask for it)
        dense = _dense_reading(module, arity)
        if dense is not None:
            experts = _experts(module)
            found[path] = Reading(module, {"forward": _called_as(module, dense)}, "forward",
                                  lambda call, gave, m=module, d=dense, e=experts: (  # type: ignore[misc]
                                      (c := _arguments(call, {})) is not None and agrees(m, d, c, e, traced=gave)))
            continue
        routing = _routing(module)  # both readings below route by the module's own router: none for most modules
        if routing is None:
            continue
        mlp = _routed_mlp(module, routing) if arity == 1 else None
        if mlp is not None:
            found[path] = Reading(module, {"forward": mlp}, "forward",
                                  lambda call, gave, m=module, d=mlp: _routed_mlp_agrees(m, d, call, gave))  # type: ignore[misc]
            continue
        attention = _routed_attention(module, routing)
        if attention is not None:
            found[path] = Reading(module, {"map": attention[0], "reduce": attention[1]}, "map",
                                  lambda call, gave, m=module, a=attention: _routed_attention_agrees(m, a[0], a[1], call))  # type: ignore[misc]
    return found


def _close(got: Any, want: Any) -> bool:
    if not (isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor)):
        return False
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    return torch.allclose(got.double(), want.double(), atol=1e-5 * scale, rtol=1e-4)


def _tokens(call: tuple[Any, ...], probes: int = 3) -> list[torch.Tensor]:
    """The traced tokens and random ones of their shape (each routed by the module's own router)."""
    (x,) = call
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.device.type == "meta":
        return []
    gen = torch.Generator().manual_seed(0)
    return [x] + [(2 * torch.randn(tuple(x.shape), generator=gen)).to(x.dtype) for _ in range(probes)]


def _routed_mlp_agrees(module: torch.nn.Module, dense: Callable[[torch.Tensor], torch.Tensor],
                       call: tuple[Any, ...], traced: Any = None) -> bool:
    """Whether ``dense`` equals the module's own forward on the traced tokens (``traced``: what it gave on them, if
    known) and on random ones."""
    own = module.forward  # what the model runs, not the class's (an instance may carry a forward of its own)
    cases = _tokens(call)
    with torch.no_grad():
        return bool(cases) and all(_close(dense(x), traced if j == 0 and traced is not None else own(x))
                                   for j, x in enumerate(cases))


def _routed_attention_agrees(module: torch.nn.Module, dense_map: Callable[..., Any], dense_reduce: Callable[..., Any],
                             call: tuple[Any, ...]) -> bool:
    own_map: Callable[..., Any] = module.map  # type: ignore[assignment]  # (the instance's, as the model runs it)
    own_reduce: Callable[..., Any] = module.reduce  # type: ignore[assignment]
    cases = _tokens(call)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for x in cases:
            (want, want_logits, want_topo), (got, got_logits, got_topo) = own_map(x), dense_map(x)
            if not (_close(got, want) and _close(got_logits, want_logits)):
                return False
            a = torch.randn(tuple(want.shape), generator=gen).to(want.dtype)
            if not _close(dense_reduce(a, got_topo), own_reduce(a, want_topo)):
                return False
    return bool(cases)
