"""In inference a whole post-norm encoder layer and a multi-head self-attention project Q, K and V with one product
over their packed weights, and the layer fuses its feed-forward's activation into a product (``ncd.torch.layouts``):
equal to the torch module and to the unfused ops, taken only when it is one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import torch
from torch import nn

import ncd
from ncd.torch.layouts import FUSED_ENCODER
from ncd.zoo.heads import heads_attention
from ncd.zoo.transformers import add_norm, feed_forward

SIZES: dict[str, int] = dict(t=6, m=16, h=4, k=4, f=32)


def gallery_layer(activation: ncd.Diagram | None = None, p: float = 0.1, eps: float = 1e-5, **attention: object
                  ) -> ncd.Diagram:
    """The zoo transformer's encoder layer: the gallery's attention and feed-forward, each added and normalised."""
    attend = heads_attention(self_attention=True, tokens="t", **attention)  # type: ignore[arg-type]
    return (add_norm(attend, "t", p, eps) >> add_norm(feed_forward(activation or ncd.ReLU()), "t", p, eps)
            ).block("EncoderLayer")


def one_sequence_layer(scale: str = "k**-0.5") -> ncd.Diagram:
    """The layer written as one sequence per sublayer (``benchmarks/bench_lowering.py``'s wiring)."""
    q = ncd.Identity.of("t m") >> ncd.Linear("m -> k h", bias=True, name="Q")
    kv = ncd.Identity.of("t m") >> ncd.Rename("t -> x")
    scores = ncd.Einsum("t k h, x k h -> h t x") >> ncd.Scale(scale) >> ncd.Softmax("x")
    attend = (scores @ ncd.Identity.of("x k h")) >> ncd.Einsum("h t x, x k h -> t k h")
    mha = (ncd.Copy("t m", 3) >> (q @ (kv >> ncd.Linear("m -> k h", bias=True, name="K"))
                                  @ (kv >> ncd.Linear("m -> k h", bias=True, name="V")))
           >> attend >> ncd.Linear("k h -> m", bias=True, name="O")).block("MultiHeadAttention")
    ff = ncd.Linear("m -> f", bias=True, name="1") >> ncd.ReLU() >> ncd.Linear("f -> m", bias=True, name="2")
    first = (ncd.residual(mha) >> ncd.LayerNorm("m")).block("AttentionSublayer")
    second = (ncd.residual(ff) >> ncd.LayerNorm("m")).block("FeedForwardSublayer")
    return (first >> second).block("EncoderLayer")


def _torch_layer(module: nn.Module, m: int, h: int, f: int, gelu: bool) -> nn.TransformerEncoderLayer:
    """``nn.TransformerEncoderLayer`` holding the lowered module's weights, read from its *declared* state_dict
    (projections declared ``m -> k h``: torch's packed rows are ``(h k)``, so each is permuted here)."""
    state = module.state_dict()
    k = m // h

    def rows(w: torch.Tensor) -> torch.Tensor:  # declared (k h) rows -> torch's (h k)
        return w.reshape(k, h, *w.shape[1:]).transpose(0, 1).flatten(0, 1)

    def named(part: str) -> dict[str, torch.Tensor]:
        return {n.rsplit(".", 1)[-1]: v for n, v in state.items() if part in n}

    layer = nn.TransformerEncoderLayer(m, h, f, dropout=0.0, batch_first=True, activation="gelu" if gelu else "relu")
    q, kk, v, o = (named(f"l_plus_{c}.") for c in "qkvo")
    linears = [n for n in state if n.endswith(".weight") and state[n].shape in ((f, m), (m, f))]
    norms = [n for n in state if n.endswith(".weight") and state[n].dim() == 1]
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(torch.cat([rows(q["weight"]), rows(kk["weight"]), rows(v["weight"])]))
        layer.self_attn.in_proj_bias.copy_(torch.cat([rows(q["bias"]), rows(kk["bias"]), rows(v["bias"])]))
        layer.self_attn.out_proj.weight.copy_(o["weight"].reshape(m, k, h).transpose(1, 2).flatten(1, 2))
        layer.self_attn.out_proj.bias.copy_(o["bias"])
        targets: list[nn.Module] = [layer.linear1, layer.linear2, layer.norm1, layer.norm2]
        for target, name in zip(targets, linears + norms):
            target.weight.copy_(state[name])
            target.bias.copy_(state[name.removesuffix("weight") + "bias"])
    return layer.eval()


def _kernels(module: Callable[[torch.Tensor], object], x: torch.Tensor) -> Counter[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        module(x)
    return Counter(e.name for e in prof.events())


@pytest.mark.parametrize("wiring", ["gallery", "one sequence", "gelu", "odd heads", "unequal eps"])
def test_an_encoder_layer_in_inference_runs_the_fused_branch_equal_to_torch_and_to_its_own_ops(wiring: str) -> None:
    sizes = dict(SIZES, m=12, h=3) if wiring == "odd heads" else SIZES
    d = (one_sequence_layer() if wiring == "one sequence" else gallery_layer(ncd.GELU() if wiring == "gelu" else None)
         if wiring != "unequal eps" else
         (add_norm(heads_attention(self_attention=True, tokens="t"), "t", 0.1, 1e-5)
          >> add_norm(feed_forward(ncd.ReLU()), "t", 0.1, 1e-3)).block("EncoderLayer"))
    module = d.to_torch(**sizes)
    assert module.ncd_source.count(FUSED_ENCODER + "(") == 1
    for p in module.parameters():  # weights away from zero-mean noise, so that a permuted row would show
        nn.init.uniform_(p, -0.5, 0.5)
    x = torch.randn(3, sizes["t"], sizes["m"])
    reference = _torch_layer(module, sizes["m"], sizes["h"], sizes["f"], wiring == "gelu")
    if wiring == "unequal eps":
        reference.norm2.eps = 1e-3
    module.eval()
    with torch.no_grad():
        fused = module(x)  # packs Q, K and V (once)
        kernels = _kernels(module, x)  # Q, K, V in one product, SDPA (flash), the activation fused into a product
        assert (kernels["aten::" + FUSED_ENCODER.removeprefix("torch.")], kernels["aten::linear"],
                kernels["aten::scaled_dot_product_attention"], kernels["aten::layer_norm"], kernels["aten::cat"]) == (
                    1, 3, 1, 2, 0)
        assert "aten::_transformer_encoder_layer_fwd" not in kernels and "aten::bmm" not in kernels
        torch.testing.assert_close(fused, reference(x), atol=1e-5, rtol=1e-4)
    unfused = module(x)  # with autograd: the ops below the guard
    assert FUSED_ENCODER.removeprefix("torch.") not in str(_kernels(module, x))
    torch.testing.assert_close(fused, unfused.detach(), atol=1e-5, rtol=1e-4)
    unfused.sum().backward()  # and training still differentiates through the unfused ops
    assert all(p.grad is not None for p in module.parameters())


def test_the_fused_kernel_is_left_to_inference_of_batched_plain_inputs() -> None:
    module = gallery_layer().to_torch(**SIZES).eval()
    x = torch.randn(SIZES["t"], SIZES["m"])
    with torch.no_grad():
        for inputs in (x, x.expand(2, 2, *x.shape)):  # unbatched, two batch axes: the ops themselves
            assert FUSED_ENCODER.removeprefix("torch.") not in str(_kernels(module, inputs))
        torch.testing.assert_close(module(x[None])[0], module(x), atol=1e-5, rtol=1e-4)
        compiled = torch.compile(module, backend="eager", fullgraph=True)  # under torch.compile: the ops, fused by it
        torch.testing.assert_close(compiled(x[None]), module(x[None]), atol=1e-5, rtol=1e-4)
        torch.backends.mha.set_fastpath_enabled(False)  # torch's switch for its fast paths turns this one off too
        try:
            assert FUSED_ENCODER.removeprefix("torch.") not in str(_kernels(module, x[None]))
        finally:
            torch.backends.mha.set_fastpath_enabled(True)


@pytest.mark.parametrize("variant", ["causal", "pre-norm", "no bias", "another scale", "tanh gelu",
                                     "width is not heads x features",
                                     "feed-forward over the tokens"])
def test_layers_the_kernel_does_not_compute_keep_their_ops(variant: str) -> None:
    sizes = dict(SIZES, m=24) if variant.startswith("width") else SIZES
    if variant == "feed-forward over the tokens":  # as many tokens as widths: only the axes' names tell them apart
        sizes = dict(SIZES, t=SIZES["m"])
    attend = heads_attention(self_attention=True, tokens="t")
    variants: dict[str, Callable[[], ncd.Diagram]] = {
        "causal": lambda: gallery_layer(mask="causal"),
        "pre-norm": lambda: (ncd.residual(ncd.LayerNorm("m").weave("t") >> attend)
                             >> ncd.residual(ncd.LayerNorm("m") >> feed_forward(ncd.ReLU()))).block("EncoderLayer"),
        "no bias": lambda: gallery_layer(bias=False),
        "another scale": lambda: one_sequence_layer("k**-0.25"),
        "tanh gelu": lambda: gallery_layer(ncd.GELU(approximate="tanh")),
        "feed-forward over the tokens": lambda: (add_norm(attend, "t", 0.0) >> (ncd.residual(ncd.Identity.of("t m") >> (
            ncd.Linear("t -> f", bias=True) >> ncd.ReLU() >> ncd.Linear("f -> t", bias=True))) >> ncd.LayerNorm("m"))),
    }
    d = variants.get(variant, gallery_layer)()
    assert "scaled_dot_product_attention" in d.to_source(**sizes)  # the attention itself is still fused
    assert FUSED_ENCODER not in d.to_source(**sizes)
    assert FUSED_ENCODER in one_sequence_layer().to_source(**SIZES)  # (the layer they vary is taken)


def test_the_packed_projection_follows_every_change_of_the_weights() -> None:
    # the kernel reads Q, K, V packed: packed once, again after an optimiser step, load_state_dict or a new tensor
    module = gallery_layer().to_torch(**SIZES).eval()
    x = torch.randn(2, SIZES["t"], SIZES["m"])

    def unfused() -> torch.Tensor:
        with torch.enable_grad():
            return module(x).detach()

    with torch.no_grad():
        first = module(x)
        torch.testing.assert_close(first, unfused(), atol=1e-5, rtol=1e-4)
    module(x).sum().backward()
    torch.optim.SGD(module.parameters(), lr=0.1).step()  # in place
    other = gallery_layer().to_torch(**SIZES)
    with torch.no_grad():
        stepped = module(x)
        assert not torch.allclose(stepped, first, atol=1e-3)
        torch.testing.assert_close(stepped, unfused(), atol=1e-5, rtol=1e-4)
        module.load_state_dict(other.state_dict())  # in place again
        torch.testing.assert_close(module(x), other.eval()(x), atol=1e-5, rtol=1e-4)
        q = module.linear.l_plus_q
        q.weight = nn.Parameter(torch.zeros_like(q.weight))  # a new tensor
        torch.testing.assert_close(module(x), unfused(), atol=1e-5, rtol=1e-4)


def one_sequence_attention(heads: str = "k h", scale: str = "k**-0.5", bias: bool = True) -> ncd.Diagram:
    """Multi-head self-attention written as one sequence (``benchmarks/bench_lowering.py``'s wiring)."""
    kv = ncd.Identity.of("t m") >> ncd.Rename("t -> x")
    scores = ncd.Einsum(f"t {heads}, x {heads} -> h t x") >> ncd.Scale(scale) >> ncd.Softmax("x")
    attend = (scores @ ncd.Identity.of(f"x {heads}")) >> ncd.Einsum(f"h t x, x {heads} -> t {heads}")
    return (ncd.Copy("t m", 3) >> ((ncd.Identity.of("t m") >> ncd.Linear(f"m -> {heads}", bias=bias, name="Q"))
                                  @ (kv >> ncd.Linear(f"m -> {heads}", bias=bias, name="K"))
                                  @ (kv >> ncd.Linear(f"m -> {heads}", bias=bias, name="V")))
            >> attend >> ncd.Linear(f"{heads} -> m", bias=bias, name="O")).block("MultiHeadAttention")


def _torch_attention(module: nn.Module, m: int, h: int, heads_first: bool) -> nn.MultiheadAttention:
    """``nn.MultiheadAttention`` holding the lowered module's weights, read from its *declared* state_dict."""
    state = module.state_dict()
    k = m // h

    def rows(w: torch.Tensor) -> torch.Tensor:  # declared rows -> torch's (h k)
        return w if heads_first else w.reshape(k, h, *w.shape[1:]).transpose(0, 1).flatten(0, 1)

    q, kk, v, o = ({n.rsplit(".", 1)[-1]: w for n, w in state.items() if f"l_plus_{c}." in n} for c in "qkvo")
    attention = nn.MultiheadAttention(m, h, batch_first=True)
    with torch.no_grad():
        attention.in_proj_weight.copy_(torch.cat([rows(q["weight"]), rows(kk["weight"]), rows(v["weight"])]))
        attention.in_proj_bias.copy_(torch.cat([rows(q["bias"]), rows(kk["bias"]), rows(v["bias"])]))
        columns = o["weight"] if heads_first else o["weight"].reshape(m, k, h).transpose(1, 2).flatten(1, 2)
        attention.out_proj.weight.copy_(columns)
        attention.out_proj.bias.copy_(o["bias"])
    return attention.eval()


@pytest.mark.parametrize("wiring", ["gallery", "k h", "h k"])
def test_a_self_attention_in_inference_runs_the_fused_kernel_equal_to_torch_and_to_its_own_ops(wiring: str) -> None:
    d = (heads_attention(self_attention=True, tokens="t").block("MultiHeadAttention") if wiring == "gallery"
         else one_sequence_attention(wiring))
    module = d.to_torch(t=6, m=16, h=4, k=4)
    assert module.ncd_source.count("unflatten(-1, (3, 4, 4)).transpose(1, 3).unbind(2)") == 1
    for p in module.parameters():  # weights away from zero-mean noise, so that a permuted row would show
        nn.init.uniform_(p, -0.5, 0.5)
    x = torch.randn(3, SIZES["t"], SIZES["m"])
    reference = _torch_attention(module, SIZES["m"], SIZES["h"], wiring == "h k")
    module.eval()
    with torch.no_grad():
        fused = module(x)  # packs Q, K and V (once)
        kernels = _kernels(module, x)  # one product for Q, K and V packed, one for L^O; SDPA as the ops below
        assert (kernels["aten::linear"], kernels["aten::scaled_dot_product_attention"], kernels["aten::cat"]) == (2, 1, 0)
        torch.testing.assert_close(fused, reference(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-4)
    unfused = module(x)  # with autograd: the ops below the guard
    assert _kernels(module, x)["aten::linear"] == 4
    torch.testing.assert_close(fused, unfused.detach(), atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # and other ranks
        torch.testing.assert_close(module(x[0]), fused[0], atol=1e-5, rtol=1e-4)
        assert _kernels(module, x[0])["aten::linear"] == 4


@pytest.mark.parametrize("variant", ["causal", "no bias", "another scale", "followed by a residual"])
def test_attentions_the_packed_product_does_not_compute_keep_their_ops(variant: str) -> None:
    sizes = SIZES
    variants: dict[str, Callable[[], ncd.Diagram]] = {
        "causal": lambda: heads_attention(self_attention=True, tokens="t", mask="causal"),
        "no bias": lambda: one_sequence_attention(bias=False),
        "another scale": lambda: one_sequence_attention(scale="k**-0.25"),
        "followed by a residual": lambda: ncd.residual(heads_attention(self_attention=True, tokens="t")),
    }
    d = variants.get(variant, one_sequence_attention)()
    source = d.to_source(**{n: v for n, v in sizes.items() if n != "f"})
    assert "scaled_dot_product_attention" in source  # the attention itself is still fused
    assert "self._packed" not in source
    assert "self._packed" in one_sequence_attention().to_source(t=6, m=16, h=4, k=4)  # (the one they vary is taken)
    assert "self._packed" in one_sequence_attention().to_source(t=6, m=12, h=3, k=4)  # odd heads too: public ops
