"""Shared machinery of the zoo tests: copy a reference model's weights into a lowered diagram, then
compare outputs, input gradients and parameter gradients (each parameter mapped exactly once)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

Transform = Callable[[torch.Tensor], torch.Tensor]


def same(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass
class Pair:
    """Our parameter equals ``transform(theirs)``; so must our gradient."""

    ours: torch.Tensor
    theirs: torch.Tensor
    transform: Transform = same


def param(module: nn.Module, suffix: str) -> nn.Parameter:
    """The unique parameter of ``module`` whose name ends with ``suffix``."""
    hits = [p for name, p in module.named_parameters() if name.endswith(suffix)]
    if len(hits) != 1:
        names = [name for name, _ in module.named_parameters()]
        raise AssertionError(f"{len(hits)} parameters end with {suffix!r}; names: {names}")
    return hits[0]


def params_in_order(module: nn.Module, contains: str = "") -> list[nn.Parameter]:
    return [p for name, p in module.named_parameters() if contains in name]


def heads_rows(t: torch.Tensor, h: int) -> torch.Tensor:
    """torch packs heads as (h k) rows; the diagram's ``m -> k h`` packs them as (k h)."""
    rows = t.shape[0]
    return t.reshape(h, rows // h, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


def heads_cols(t: torch.Tensor, h: int) -> torch.Tensor:
    """Columns of an output projection, (h k) in torch, (k h) in the diagram."""
    cols = t.shape[1]
    return t.reshape(t.shape[0], h, cols // h).transpose(1, 2).reshape(t.shape)


def copy_weights(pairs: Sequence[Pair], ours: nn.Module, theirs: nn.Module) -> None:
    """Copy every pair, checking that each parameter on both sides is mapped exactly once."""
    seen_ours = [id(p.ours) for p in pairs]
    seen_theirs = {id(p.theirs) for p in pairs}
    assert len(seen_ours) == len(set(seen_ours)), "a parameter of the diagram is mapped twice"
    missing_ours = [n for n, p in ours.named_parameters() if id(p) not in seen_ours]
    missing_theirs = [n for n, p in theirs.named_parameters() if id(p) not in seen_theirs]
    assert not missing_ours, f"diagram parameters without a reference: {missing_ours}"
    assert not missing_theirs, f"reference parameters without a diagram parameter: {missing_theirs}"
    # through the state_dict: it holds each weight in its declared axis order (a lowered module may store a
    # map's rows or columns in the order a fused kernel reads, ncd.prims.patterns.chosen_rows / chosen_columns)
    names = {id(p): name for name, p in ours.named_parameters()}
    state = ours.state_dict()
    for p in pairs:
        want = p.transform(p.theirs.detach())
        name = names[id(p.ours)]
        assert state[name].shape == want.shape, f"shape {tuple(state[name].shape)} vs reference {tuple(want.shape)}"
        state[name] = want.clone()
    ours.load_state_dict(state)


def declared_grads(module: nn.Module) -> dict[int, torch.Tensor]:
    """Each parameter's gradient in the declared axis order (as the state_dict shows the parameter), by parameter id."""
    from ncd.torch.verify import declared_order

    params = list(module.parameters())
    grads = declared_order(module, [torch.zeros_like(q) if q.grad is None else q.grad for q in params])
    return {id(q): g for q, g in zip(params, grads)}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_equivalent(
    ours: nn.Module,
    theirs: nn.Module | Callable[..., torch.Tensor],
    pairs: Sequence[Pair],
    inputs: Sequence[torch.Tensor],
    *,
    reference_params: nn.Module | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Equal parameter counts, equal outputs, equal input and parameter gradients."""
    holder = reference_params if reference_params is not None else theirs
    assert isinstance(holder, nn.Module)
    copy_weights(pairs, ours, holder)
    assert count(ours) == count(holder), f"{count(ours)} parameters in the diagram, {count(holder)} in the reference"
    ours_in = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    theirs_in = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    got, want = ours(*ours_in), theirs(*theirs_in)
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg="forward values differ")
    cotangent = torch.randn(want.shape, generator=torch.Generator().manual_seed(1))
    (got * cotangent).sum().backward()
    (want * cotangent).sum().backward()
    for j, (a, b) in enumerate(zip(ours_in, theirs_in)):
        if a.is_floating_point():
            torch.testing.assert_close(a.grad, b.grad, atol=atol, rtol=rtol, msg=f"gradient of input {j} differs")
    grads = declared_grads(ours)
    for k, p in enumerate(pairs):
        assert p.theirs.grad is not None and p.ours.grad is not None, f"pair {k} got no gradient"
        torch.testing.assert_close(grads[id(p.ours)], p.transform(p.theirs.grad), atol=atol, rtol=rtol,
                                   msg=f"gradient of parameter pair {k} (shape {tuple(p.ours.shape)}) differs")
