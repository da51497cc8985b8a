"""Behaviour beyond one forward pass: running statistics, weight loading, tied tables, dropout's random mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd


def test_batchnorm_tracks_running_stats_like_batchnorm2d_then_evaluates_with_them() -> None:
    module = ncd.BatchNorm("c x y", momentum=0.2).to_torch(c=3, x=4, y=5)
    reference = nn.BatchNorm2d(3, momentum=0.2)
    torch.manual_seed(0)
    for _ in range(3):
        x = torch.randn(6, 3, 4, 5) * 2 + 1
        torch.testing.assert_close(module(x), reference(x))
    ours = {k.split(".")[-1]: v for k, v in module.state_dict().items()}
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(ours[name], value)
    module.eval()
    reference.eval()
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(module(x), reference(x))


def test_batchnorm_loads_weights_from_batchnorm1d_on_sequences() -> None:
    reference = nn.BatchNorm1d(4).eval()
    with torch.no_grad():
        for tensor in (reference.weight, reference.bias, reference.running_mean):
            tensor.normal_()
        reference.running_var.uniform_(0.5, 2.0)
    module = ncd.BatchNorm("c t").to_torch(c=4, t=6).eval()
    (bn,) = [m for m in module.modules() if isinstance(m, nn.BatchNorm1d)]
    bn.load_state_dict(reference.state_dict())
    x = torch.randn(3, 4, 6)
    torch.testing.assert_close(module(x), reference(x))


def test_layernorm_over_image_axes_loads_torch_weights() -> None:
    reference = nn.LayerNorm((2, 3, 4))
    with torch.no_grad():
        reference.weight.normal_()
        reference.bias.normal_()
    module = (ncd.Identity.of("b c x y") >> ncd.LayerNorm("c x y")).to_torch(b=5, c=2, x=3, y=4)
    (ln,) = [m for m in module.modules() if isinstance(m, nn.LayerNorm)]
    ln.load_state_dict(reference.state_dict())
    x = torch.randn(5, 2, 3, 4)
    torch.testing.assert_close(module(x), reference(x))


def test_rmsnorm_equals_torch_rmsnorm() -> None:
    reference = nn.RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        reference.weight.normal_()
    module = (ncd.Identity.of("t m") >> ncd.RMSNorm("m")).to_torch(t=3, m=8)
    (rms,) = [m for m in module.modules() if isinstance(m, nn.RMSNorm)]
    rms.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(module(x), reference(x))


def language_model() -> ncd.Diagram:
    """Token embedding, a norm, and an output head tied to the embedding, fenced as one block (GPT-2's ends)."""
    body = (ncd.Identity.of("t [v]") >> ncd.Embedding("v", "m", name="E") >> ncd.LayerNorm("m")
            >> ncd.Unembed("v", "m", tied_to="E"))
    return ncd.Identity.of("b t [v]") >> body.block("LM")


def test_tied_unembedding_shares_one_parameter() -> None:
    module = language_model().to_torch(b=2, t=5, v=11, m=6)
    tables = [p for p in module.parameters() if p.shape == (11, 6)]
    assert len(tables) == 1
    assert sum(1 for k in module.state_dict() if k.endswith("weight") and module.state_dict()[k].shape == (11, 6)) == 1
    tokens = torch.randint(0, 11, (2, 5))
    logits = module(tokens)
    (table,) = tables
    (ln,) = [m for m in module.modules() if isinstance(m, nn.LayerNorm)]
    want = F.linear(F.layer_norm(F.embedding(tokens, table), (6,), ln.weight, ln.bias), table)
    torch.testing.assert_close(logits, want)
    logits.sum().backward()
    both = torch.autograd.grad(want.sum(), table)[0]
    torch.testing.assert_close(table.grad, both)  # gradients from the lookup and the head accumulate


def test_tied_unembedding_in_another_block_is_a_clear_error() -> None:
    embed = (ncd.Identity.of("t [v]") >> ncd.Embedding("v", "m", name="E")).block("Embed")
    d = embed >> ncd.Unembed("v", "m", tied_to="E")
    with pytest.raises(ncd.LoweringError, match=r"no embedding box with that label comes before it in the same block"):
        d.to_torch(t=3, v=5, m=4)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_in_training_draws_like_functional_dropout(p: float) -> None:
    module = (ncd.Identity.of("a b") >> ncd.Dropout(p)).to_torch(a=30, b=40).train()
    x = torch.randn(2, 30, 40)
    torch.manual_seed(5)
    got = module(x)
    torch.manual_seed(5)
    torch.testing.assert_close(got, F.dropout(x, p, training=True))
    assert 0 < (got == 0).float().mean().item() < 1
    torch.testing.assert_close(module.eval()(x), x)


def test_bind_then_unbind_is_the_identity_and_matches_reshape() -> None:
    d = ncd.Identity.of("b k h x") >> ncd.Bind("k h -> m") >> ncd.Unbind("m -> k h")
    module = d.to_torch(b=2, k=3, h=4, x=5)
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(module(x), x)
    flat = (ncd.Identity.of("b k h x") >> ncd.Bind("k h -> m")).to_torch(b=2, k=3, h=4, x=5)
    torch.testing.assert_close(flat(x), x.reshape(2, 12, 5))


def test_json_round_trip_keeps_tying_and_batch_axes() -> None:
    d = language_model() >> ncd.Identity.of("b t v")
    again = ncd.load_json(d.to_json())
    assert again == d
    bn = ncd.BatchNorm("b c x y", channel="c", eps=1e-3)
    assert ncd.load_json(bn.to_json()) == bn
