"""The zoo's ViT equals transformers' ViTForImageClassification; its visual attention (Figure 28) equals a hand-written one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import ncd.zoo
from tests.test_zoo_support import Pair, check_equivalent, heads_cols, heads_rows, param
from tests.test_zoo_transformer import in_order, plain_pairs, under


def vit_pairs(ours: nn.Module, ref: nn.Module, h: int) -> list[Pair]:
    vit = ref.vit
    emb = vit.embeddings
    m = emb.cls_token.shape[-1]
    top = under(ours, "embeddings.")
    projection = emb.patch_embeddings.projection
    pairs = [
        Pair(top["c"], emb.cls_token, lambda t: t.reshape(1, m)),
        Pair(top["p"], emb.position_embeddings, lambda t: t[0]),
        Pair(top["l_plus.weight"], projection.weight, lambda t: t.flatten(1)),  # ★p then L₊ over (c, i, j)
        Pair(top["l_plus.bias"], projection.bias),
    ]
    for i, layer in enumerate(vit.layers):
        mine = in_order(ours, f"encoders.{i}.")
        attn = layer.attention
        pairs += plain_pairs(mine[:2], [layer.layernorm_before])
        for j, proj in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
            pairs += [Pair(mine[2 + 2 * j], proj.weight, lambda t: heads_rows(t, h)),
                      Pair(mine[3 + 2 * j], proj.bias, lambda t: heads_rows(t, h))]
        pairs += [Pair(mine[8], attn.o_proj.weight, lambda t: heads_cols(t, h)), Pair(mine[9], attn.o_proj.bias)]
        pairs += plain_pairs(mine[10:], [layer.layernorm_after, layer.mlp.fc1, layer.mlp.fc2])
    pairs += plain_pairs(in_order(ours, "head."), [vit.layernorm, ref.classifier])
    return pairs


def test_vit_equals_transformers_vit_for_image_classification() -> None:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                       intermediate_size=10, num_labels=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                       attn_implementation="eager")
    ref = ViTForImageClassification(config).eval()
    with torch.no_grad():  # transformers initialises the class token to zeros; make it matter
        ref.vit.embeddings.cls_token.normal_()
    ours = ncd.zoo.vit(p=4).to_torch(c=3, x=8, m=12, k=4, h=3, N=2, f=10, n=5).eval()
    images = torch.randn(2, 3, 8, 8)
    check_equivalent(ours, lambda pixels: ref(pixel_values=pixels).logits, vit_pairs(ours, ref, 3), [images],
                     reference_params=ref)


def test_vit_defaults_are_vit_base() -> None:
    d = ncd.zoo.vit()
    assert dict(d.get("defaults")) == dict(c=3, x=32, m=768, k=64, h=12, N=12, f=3072, n=1000)
    assert str(d.dom) == "c row:x col:x" and str(d.cod) == "n"


def test_visual_attention_equals_a_hand_written_one() -> None:
    """Figure 28: 1×1 convolutions for queries, keys and values, attention of one image's pixels over the other's, 1×1 out."""
    torch.manual_seed(0)
    c, k, h, w = 5, 4, 3, 4
    ours = ncd.zoo.visual_attention().to_torch(c=c, k=k, h=h, w=w)
    convs = nn.ModuleDict({name: nn.Conv2d(*(c, k) if name != "o" else (k, c), 1) for name in "qkvo"})

    def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        q, key, v = convs["q"](a), convs["k"](b), convs["v"](b)
        flat = [t.flatten(-2).transpose(-1, -2) for t in (q, key, v)]  # pixels as tokens
        out = F.scaled_dot_product_attention(*flat)
        return convs["o"](out.transpose(-1, -2).unflatten(-1, (h, w)))

    pairs = [Pair(param(ours, f"_{n}.{kind}"), getattr(convs[n], kind)) for n in "qkvo" for kind in ("weight", "bias")]
    check_equivalent(ours, reference, pairs, [torch.randn(2, c, h, w), torch.randn(2, c, h, w)], reference_params=convs)
