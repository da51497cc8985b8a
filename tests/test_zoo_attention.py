"""The zoo's MLP, attention and multi-head attention equal independent torch implementations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
import ncd.zoo
from tests.test_zoo_support import Pair, check_equivalent, heads_cols, heads_rows, param, params_in_order


def test_mlp_equals_the_pytorch_tutorial_recogniser() -> None:
    torch.manual_seed(0)
    sizes = {"x": 6, "y": 5, "n": 12, "k": 4}
    ours = ncd.zoo.mlp().to_torch(**sizes)
    ref = nn.Sequential(nn.Flatten(-2), nn.Linear(30, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4),
                        nn.Softmax(-1))
    linears = [m for m in ref if isinstance(m, nn.Linear)]
    pairs = [Pair(o, t) for o, t in zip(params_in_order(ours), [p for m in linears for p in (m.weight, m.bias)])]
    check_equivalent(ours, ref, pairs, [torch.randn(3, 6, 5)])


def test_mlp_defaults_are_the_papers() -> None:
    d = ncd.zoo.mlp()
    assert dict(d.get("defaults")) == {"x": 28, "y": 28, "n": 512, "k": 10}
    assert sum(p.numel() for p in d.to_torch().parameters()) == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10


@pytest.mark.parametrize("mask", [None, "causal"])
def test_attention_equals_sdpa(mask: str | None) -> None:
    d = ncd.zoo.attention(mask=mask)
    sizes = {"y": 5, "x": 5 if mask else 7, "k": 8}
    ours = d.to_torch(**sizes)
    inputs = d.example_inputs(2, **sizes)
    want = F.scaled_dot_product_attention(*inputs, is_causal=mask == "causal")
    torch.testing.assert_close(ours(*inputs), want, atol=1e-5, rtol=1e-4)


def mha_pairs(ours: nn.Module, ref: nn.MultiheadAttention, h: int, bias: bool) -> list[Pair]:
    w = ref.in_proj_weight
    m = w.shape[1]
    pairs = [Pair(param(ours, f"_{n}.weight"), w, lambda t, j=j: heads_rows(t[j * m:(j + 1) * m], h))
             for j, n in enumerate("qkv")]
    pairs.append(Pair(param(ours, "_o.weight"), ref.out_proj.weight, lambda t: heads_cols(t, h)))
    if bias:
        pairs += [Pair(param(ours, f"_{n}.bias"), ref.in_proj_bias, lambda t, j=j: heads_rows(t[j * m:(j + 1) * m], h))
                  for j, n in enumerate("qkv")]
        pairs.append(Pair(param(ours, "_o.bias"), ref.out_proj.bias))
    return pairs


MHA_CASES = [
    dict(self_attention=False, bias=True, mask=None),
    dict(self_attention=False, bias=False, mask=None),
    dict(self_attention=True, bias=True, mask=None),
    dict(self_attention=True, bias=True, mask="causal"),
    dict(self_attention=True, bias=False, mask="padding"),
    dict(self_attention=False, bias=True, mask="padding"),
]


@pytest.mark.parametrize("case", MHA_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_multi_head_attention_equals_torch(case: dict) -> None:
    torch.manual_seed(0)
    m, h, k, y, x, b = 12, 3, 4, 5, 6, 2
    if case["self_attention"]:
        y = x
    ours = ncd.zoo.multi_head_attention(**case).to_torch(m=m, k=k, h=h, y=y, x=x)
    ref = nn.MultiheadAttention(m, h, bias=case["bias"], batch_first=True)
    query, key = torch.randn(b, y, m), torch.randn(b, x, m)
    keep = torch.ones(b, x, dtype=torch.bool)  # ncd.PaddingMask: True = attend to this key
    keep[0, -2:] = False
    keep[1, 1] = False

    def reference(*args: torch.Tensor) -> torch.Tensor:
        q = args[0]
        kv = q if case["self_attention"] else args[1]
        causal = torch.triu(torch.ones(y, x, dtype=torch.bool), 1) if case["mask"] == "causal" else None
        pad = ~args[-1] if case["mask"] == "padding" else None  # torch marks padding with True, ncd marks keys kept
        return ref(q, kv, kv, key_padding_mask=pad, attn_mask=causal, need_weights=False)[0]

    inputs = [query] if case["self_attention"] else [query, key]
    if case["mask"] == "padding":
        inputs.append(keep)
    check_equivalent(ours, reference, mha_pairs(ours, ref, h, case["bias"]), inputs, reference_params=ref)
