"""Dense readings of experts modules that route their own tokens (JetMoE: a router reading its group sizes into Python
with ``tolist``), and their checks against the module's own methods on the traced tokens and random ones, with the live
parameters and with random ones (:func:`~ncd.trace.moe_proof.perturbed`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch.nn.utils.stateless import _reparametrize_module

from ncd.trace.moe_proof import _agree, perturbed
from ncd.trace.moe_readings import _gate, _one_hot


def _routing(module: torch.nn.Module, classes: dict[type, bool] | None = None
             ) -> tuple[torch.nn.Linear, int, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The router's linear map and top-k, the experts' input and output weights (``e · m``, ``e m ·``) and the bias of a
    module that routes its own tokens: ``router.layer``, ``router.top_k``, ``input_linear.weight``,
    ``output_linear.weight``, ``bias`` (JetMoE's mixtures of experts and of attention experts)."""
    if _lacks(module, "router", classes):  # most modules
        return None
    router = getattr(module, "router", None)
    if router is None:
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


def _lacks(module: torch.nn.Module, name: str, classes: dict[type, bool] | None = None) -> bool:
    """Whether ``getattr(module, name)`` would raise, told without raising (a miss raises inside torch's
    ``__getattr__``: ~1.5 us a module) for a module whose class looks attributes up as ``torch.nn.Module`` does (its
    class, its ``__dict__``, then its parameters, buffers and submodules); ``False`` for any other.  ``classes``: the
    answers for the classes asked already (one walk of the modules: no class changes)."""
    cls = type(module)
    plain = classes.get(cls) if classes is not None else None
    if plain is None:
        plain = (_is_torch_getattr(cls.__getattr__) and cls.__getattribute__ is _OBJECT_GETATTRIBUTE
                 and not any(name in vars(c) for c in cls.__mro__))
        if classes is not None:
            classes[cls] = plain
    return (plain and name not in module.__dict__ and name not in module._parameters
            and name not in module._buffers and name not in module._modules)


_OBJECT_GETATTRIBUTE = object.__getattribute__


def _is_torch_getattr(function: object) -> bool:
    """Whether a class's ``__getattr__`` is ``torch.nn.Module``'s own, told by its name rather than by identity with the
    function found when this module was imported: ``ncd.trace`` wraps ``Module.__getattr__`` while it reads the order
    parameters are used in, and this module may be imported inside that window (a function taken then is the wrapper,
    and every module would be asked the slow way ever after)."""
    return (getattr(function, "__module__", None) == "torch.nn.modules.module"
            and getattr(function, "__qualname__", None) == "Module.__getattr__")


def _route(layer: torch.nn.Linear, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = layer(x).float()
    top, chosen = logits.topk(k, dim=1)
    return chosen, torch.softmax(top, dim=1).type_as(x), logits


Routing = tuple[torch.nn.Linear, int, torch.Tensor, torch.Tensor, torch.Tensor]


def _weights(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The experts' input and output weights and the bias of :func:`_routing`, read at each call (the parameters the
    module holds then: the check also runs both sides with random ones)."""
    return (cast(torch.Tensor, module.get_submodule("input_linear").weight),
            cast(torch.Tensor, module.get_submodule("output_linear").weight), cast(torch.Tensor, module.bias))


def _routed_mlp(module: torch.nn.Module, found: Routing | None
                ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``y = Σ_e G[t, e] · W_out[e] (act(W_in[e] x)₁ ⊙ (W_in[e] x)₂) + bias``, routed by the module's own router
    (``found``: its :func:`_routing`)."""
    act = getattr(module, "activation", None)
    if found is None or not callable(act):
        return None
    layer, k = found[:2]

    def forward(layer_input: torch.Tensor) -> torch.Tensor:
        w_in, w_out, bias = _weights(module)
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
    layer, k = found[:2]
    experts = int(found[2].shape[0])

    def map(layer_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:  # noqa: A001
        x = layer_input.reshape(-1, layer_input.shape[-1])
        chosen, gates, logits = _route(layer, k, x)
        q = torch.einsum("tm,ehm->teh", x, _weights(module)[0])
        picked = torch.einsum("tke,teh->tkh", _one_hot(chosen, experts, q.dtype), q)
        return picked.view(*layer_input.shape[:-1], k, -1), logits, (chosen, gates)

    def reduce(layer_input: torch.Tensor, topo: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        chosen, gates = topo
        _, w_out, bias = _weights(module)
        a = layer_input.reshape(-1, k, layer_input.shape[-1])
        y = torch.einsum("tkh,emh->tkem", a, w_out)
        out = torch.einsum("tk,tke,tkem->tm", gates, _one_hot(chosen, experts, y.dtype), y)
        return out.view(*layer_input.shape[:-2], -1) + bias

    return map, reduce


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
    known) and on random ones, then on random ones with the module's parameters replaced by random ones of their scale
    (:func:`~ncd.trace.moe_proof.perturbed`: a bias the reading misplaces vanishes at a model's initial zeros)."""
    own = module.forward  # what the model runs, not the class's (an instance may carry a forward of its own)
    cases = _tokens(call)
    with torch.no_grad():
        if not (cases and all(_agree(dense(x), traced if j == 0 and traced is not None else own(x))
                              for j, x in enumerate(cases))):
            return False
        with _reparametrize_module(module, perturbed(dict(module.named_parameters()))):
            return _agree(dense(cases[1]), own(cases[1]))


def _routed_attention_agrees(module: torch.nn.Module, dense_map: Callable[..., Any], dense_reduce: Callable[..., Any],
                             call: tuple[Any, ...]) -> bool:
    """Whether ``dense_map`` and ``dense_reduce`` equal the module's own ``map`` and ``reduce`` on the traced tokens and
    random ones (``reduce`` of random outputs, routed as ``map`` routed the tokens), then on random ones with the
    module's parameters replaced by random ones of their scale (:func:`~ncd.trace.moe_proof.perturbed`)."""
    own_map: Callable[..., Any] = module.map  # type: ignore[assignment]  # (the instance's, as the model runs it)
    own_reduce: Callable[..., Any] = module.reduce  # type: ignore[assignment]
    cases = _tokens(call)
    gen = torch.Generator().manual_seed(1)

    def agree(x: torch.Tensor) -> bool:
        (want, want_logits, want_topo), (got, got_logits, got_topo) = own_map(x), dense_map(x)
        if not (_agree(got, want) and _agree(got_logits, want_logits)):
            return False
        a = torch.randn(tuple(want.shape), generator=gen).to(want.dtype)
        return _agree(dense_reduce(a, got_topo), own_reduce(a, want_topo))

    with torch.no_grad():
        if not (cases and all(agree(x) for x in cases)):
            return False
        with _reparametrize_module(module, perturbed(dict(module.named_parameters()))):
            return agree(cases[1])
