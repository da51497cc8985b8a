"""Fused einsums go through a contraction-order optimiser (opt_einsum, via torch.einsum)."""

from __future__ import annotations

import re

import torch

import ncd


def test_a_chain_of_wirings_is_one_einsum_call_with_every_operand() -> None:
    chain = ncd.Einsum("a b, b c, c d, d e -> a e")
    source = chain.to_source(a=2, b=3, c=4, d=5, e=6)
    calls = re.findall(r"torch\.einsum\('([^']*)', ([^)]*)\)", source)
    assert len(calls) == 1
    spec, operands = calls[0]
    assert spec.count(",") == 3 and len(operands.split(",")) == 4


def test_torch_uses_opt_einsum_to_order_the_contractions() -> None:
    assert torch.backends.opt_einsum.is_available()
    assert torch.backends.opt_einsum.enabled
    assert torch.backends.opt_einsum.strategy in ("auto", "greedy", "optimal")
    # the optimiser's path for a matrix chain with one small middle dimension contracts around it first
    import opt_einsum

    a, b, c = torch.randn(50, 2), torch.randn(2, 50), torch.randn(50, 50)
    path, _ = opt_einsum.contract_path("ab,bc,cd->ad", a, b, c)
    assert path[0] in ((1, 2), (0, 1))
    module = ncd.Einsum("a b, b c, c d -> a d").to_torch(a=50, b=2, c=50, d=50)
    torch.testing.assert_close(module(a, b, c), a @ b @ c, rtol=1e-4, atol=1e-4)
