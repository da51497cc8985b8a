"""The zoo's transformer equals torch.nn.Transformer and its GPT-2 equals transformers' GPT2LMHeadModel (copied weights)."""

from __future__ import annotations

import math

import torch
from torch import nn

import ncd.zoo
from tests.test_zoo_support import Pair, check_equivalent, heads_cols, heads_rows


def under(module: nn.Module, prefix: str) -> dict[str, nn.Parameter]:
    """Parameters of ``module`` below ``prefix``, keyed by the rest of their name."""
    return {name[len(prefix):]: p for name, p in module.named_parameters() if name.startswith(prefix)}


def in_order(module: nn.Module, prefix: str) -> list[nn.Parameter]:
    return list(under(module, prefix).values())


def attention_pairs(ours: list[nn.Parameter], ref: nn.MultiheadAttention, h: int) -> list[Pair]:
    """``ours`` = [Q.w, Q.b, K.w, K.b, V.w, V.b, O.w, O.b] as the diagram orders them."""
    m = ref.embed_dim
    pairs = []
    for j in range(3):
        rows = slice(j * m, (j + 1) * m)
        pairs.append(Pair(ours[2 * j], ref.in_proj_weight, lambda t, r=rows: heads_rows(t[r], h)))
        pairs.append(Pair(ours[2 * j + 1], ref.in_proj_bias, lambda t, r=rows: heads_rows(t[r], h)))
    pairs += [Pair(ours[6], ref.out_proj.weight, lambda t: heads_cols(t, h)), Pair(ours[7], ref.out_proj.bias)]
    return pairs


def plain_pairs(ours: list[nn.Parameter], modules: list[nn.Module]) -> list[Pair]:
    """Weight and bias of each module, in order (linear maps and layer norms)."""
    theirs = [p for mod in modules for p in (mod.weight, mod.bias)]
    assert len(ours) == len(theirs)
    return [Pair(a, b) for a, b in zip(ours, theirs)]


def sinusoidal(t: int, m: int) -> torch.Tensor:
    """Section 3.5 of *Attention Is All You Need*, written out."""
    pe = torch.zeros(t, m)
    for pos in range(t):
        for i in range(0, m, 2):
            angle = pos / 10000 ** (i / m)
            pe[pos, i], pe[pos, i + 1] = math.sin(angle), math.cos(angle)
    return pe


class Seq2Seq(nn.Module):
    """Embeddings, sinusoidal positions, nn.Transformer (post-norm, no final stack norms), output projection, softmax."""

    def __init__(self, v: int, m: int, h: int, f: int, N: int) -> None:
        super().__init__()
        self.m = m
        self.source, self.target = nn.Embedding(v, m), nn.Embedding(v, m)
        self.core = nn.Transformer(m, h, N, N, f, dropout=0.0, batch_first=True)
        self.core.encoder.norm = None  # the paper's stacks end with their last sublayer's norm
        self.core.decoder.norm = None
        self.out = nn.Linear(m, v)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        x, y = src.shape[-1], tgt.shape[-1]
        a = self.source(src) * self.m**0.5 + sinusoidal(x, self.m)
        b = self.target(tgt) * self.m**0.5 + sinusoidal(y, self.m)
        mask = nn.Transformer.generate_square_subsequent_mask(y)
        return torch.softmax(self.out(self.core(a, b, tgt_mask=mask, tgt_is_causal=True)), -1)


def test_transformer_equals_torch_nn_transformer() -> None:
    torch.manual_seed(0)
    sizes = dict(v=11, m=12, k=4, h=3, f=10, N=2, x=5, y=4)
    ours = ncd.zoo.transformer().to_torch(**sizes).eval()
    ref = Seq2Seq(11, 12, 3, 10, 2).eval()
    h = sizes["h"]
    pairs = [Pair(in_order(ours, "sourceembedding.")[0], ref.source.weight),
             Pair(in_order(ours, "targetembedding.")[0], ref.target.weight)]
    for i, layer in enumerate(ref.core.encoder.layers):
        mine = in_order(ours, f"encoders.{i}.")
        pairs += attention_pairs(mine[:8], layer.self_attn, h)
        pairs += plain_pairs(mine[8:], [layer.norm1, layer.linear1, layer.linear2, layer.norm2])
    for i, layer in enumerate(ref.core.decoder.layers):
        mine = in_order(ours, f"decoders.{i}.")
        pairs += attention_pairs(mine[:8], layer.self_attn, h) + plain_pairs(mine[8:10], [layer.norm1])
        pairs += attention_pairs(mine[10:18], layer.multihead_attn, h)
        pairs += plain_pairs(mine[18:], [layer.norm2, layer.linear1, layer.linear2, layer.norm3])
    pairs += plain_pairs(in_order(ours, "output."), [ref.out])
    src, tgt = torch.randint(0, 11, (2, 5)), torch.randint(0, 11, (2, 4))
    check_equivalent(ours, ref, pairs, [src, tgt])


def test_transformer_defaults_are_the_papers() -> None:
    d = ncd.zoo.transformer()
    assert dict(d.get("defaults")) == dict(v=37000, m=512, k=64, h=8, f=2048, N=6, x=8, y=8)
    layers = sum(1 for b in d.walk() if isinstance(b, ncd.Repeat))
    assert layers == 2


def gpt2_pairs(ours: nn.Module, ref: nn.Module, N: int, h: int) -> list[Pair]:
    """Map transformers' GPT-2 (Conv1D weights stored input-first, heads packed (h k)) onto the diagram."""
    gpt = ref.transformer
    m = gpt.wte.weight.shape[1]
    top = under(ours, "")
    pairs = [Pair(top["embedding_e.weight"], gpt.wte.weight), Pair(top["p"], gpt.wpe.weight)]
    for i, block in enumerate(gpt.h):
        mine = in_order(ours, f"blocks.{i}.")
        attn, mlp = block.attn, block.mlp
        pairs += plain_pairs(mine[:2], [block.ln_1])
        for j in range(3):
            cols = slice(j * m, (j + 1) * m)
            pairs.append(Pair(mine[2 + 2 * j], attn.c_attn.weight, lambda t, c=cols: heads_rows(t[:, c].T, h)))
            pairs.append(Pair(mine[3 + 2 * j], attn.c_attn.bias, lambda t, c=cols: heads_rows(t[c], h)))
        pairs += [Pair(mine[8], attn.c_proj.weight, lambda t: heads_cols(t.T, h)), Pair(mine[9], attn.c_proj.bias)]
        pairs += plain_pairs(mine[10:12], [block.ln_2])
        pairs += [Pair(mine[12], mlp.c_fc.weight, lambda t: t.T), Pair(mine[13], mlp.c_fc.bias),
                  Pair(mine[14], mlp.c_proj.weight, lambda t: t.T), Pair(mine[15], mlp.c_proj.bias)]
    pairs += plain_pairs([top["ln.weight"], top["ln.bias"]], [gpt.ln_f])
    return pairs


def test_gpt2_equals_transformers_gpt2_lm_head_model() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    sizes = dict(v=13, m=12, k=4, h=3, N=2, n=9, t=6)
    config = GPT2Config(vocab_size=13, n_positions=9, n_embd=12, n_layer=2, n_head=3, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, attn_implementation="eager")
    ref = GPT2LMHeadModel(config).eval()
    assert ref.lm_head.weight is ref.transformer.wte.weight  # the reference ties its output embedding too
    ours = ncd.zoo.gpt2().to_torch(**sizes).eval()
    tokens = torch.randint(0, 13, (2, 6))
    check_equivalent(ours, lambda ids: ref(ids).logits, gpt2_pairs(ours, ref, 2, 3), [tokens], reference_params=ref)


def test_gpt2_output_embedding_is_the_token_embedding() -> None:
    """Weight tying: one shared parameter, so GPT-2 small has 124,439,808 parameters like the released model."""
    module = ncd.zoo.gpt2().to_torch(N=1, v=50, n=16, m=24, h=2, k=12)
    names = [name for name, _ in module.named_parameters()]
    assert sum(1 for n in names if "embedding" in n or "unembed" in n) == 1
    from transformers import GPT2Config, GPT2Model

    with torch.device("meta"):  # shapes only: GPT-2 small at full size, no memory
        want = sum(p.numel() for p in GPT2Model(GPT2Config()).parameters())
        got = sum(p.numel() for p in ncd.zoo.gpt2().to_torch().parameters())
    assert got == want == 124_439_808
