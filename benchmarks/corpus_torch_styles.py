"""Plain PyTorch models in the styles users write that the zoo lacked (joined to :func:`corpus_torch_users.zoo`).

Written by hand, each in a style nobody here chose: einops-style rearranges spelled with ``view``/``permute``,
``torch.where`` masks, boolean indexing and writes with a fixed mask (a buffer), in-place operators on slices,
``register_buffer`` (a normaliser, a fixed projection), ``nn.ModuleDict``/``nn.ParameterList``, weight tying,
attention by hand under a ``tril`` buffer, dropout in eval, a custom ``autograd.Function``, ``torch.no_grad`` inside
``forward``, tensor methods (``expand``, ``repeat``, ``unfold``, ``flip``, ``tril``, ``masked_fill``), integer
arithmetic on ids, LLaMA's complex rotary, outputs as namedtuples and dicts in nested tuples, keyword-only and 0-d
tensor inputs, norms and softmax written by hand, a VQ codebook, masks from lengths, ALiBi, local attention by
``unfold``, squeeze-excitation with a channel shuffle, a mixture of experts by ``topk`` and ``gather``, a GRU cell in a
Python loop at batch 1, sorting, CLIP's loss, a relative-position table, a gated convolution LM, a norm-first
``nn.TransformerEncoderLayer`` at batch 1, capsule routing, float64, ``interpolate``.
"""
from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

B, T, M = 2, 6, 16


Make = Callable[[torch.Generator], dict[str, Any]]


def _x(*shape: int, dtype: torch.dtype = torch.float32) -> Make:
    return lambda g: {"x": torch.randn(*shape, generator=g).to(dtype)}


class PatchRearrange(nn.Module):
    """einops 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)' and back, written with view/permute."""

    def __init__(self, p: int = 2, c: int = 3, dim: int = 8) -> None:
        super().__init__()
        self.p = p
        self.embed = nn.Linear(p * p * c, dim)
        self.unembed = nn.Linear(dim, p * p * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        p = self.p
        h, w = hh // p, ww // p
        t = x.view(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, p * p * c)
        t = self.unembed(F.gelu(self.embed(t)))
        y = t.view(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hh, ww)
        return y + x


class WhereMasks(nn.Module):
    """torch.where with tensor/scalar branches, a mask from a comparison, clamp-by-where."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.lin(x)
        a = torch.where(y > 0, y, 0.1 * y)
        b = torch.where(x.abs() < 1.0, x, torch.zeros_like(x))
        c = torch.where(y > x, torch.tensor(1.0), torch.tensor(-1.0))
        return a, b, c


class FixedBoolIndex(nn.Module):
    """Boolean indexing with a fixed mask buffer: x[:, :, keep], and a masked write with it."""

    def __init__(self) -> None:
        super().__init__()
        keep = torch.zeros(M, dtype=torch.bool)
        keep[::3] = True
        self.register_buffer("keep", keep)
        self.lin = nn.Linear(int(keep.sum()), 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        picked = x[:, :, self.keep]
        y = x.clone()
        y[:, :, self.keep] = 0.0
        return self.lin(picked), y


class SliceInplace(nn.Module):
    """In-place ops on slices of a clone: *=, +=, index assignment, clamp_."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        y[:, :, :4] *= 2.0
        y[..., 0] += 1.0
        y[:, 1:3] = y[:, 1:3] - x[:, 1:3]
        y[:, -1].clamp_(min=-0.5, max=0.5)
        return y


class Buffers(nn.Module):
    """register_buffer (persistent and not), used as a mean/std normaliser and a fixed projection."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.linspace(-1, 1, M))
        self.register_buffer("std", torch.linspace(0.5, 2, M), persistent=False)
        self.register_buffer("proj", torch.randn(M, 5))
        self.lin = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.lin(((x - self.mean) / self.std) @ self.proj)
        return out


class ModuleDictHeads(nn.Module):
    """nn.ModuleDict of heads, nn.ParameterList of per-layer scales, outputs as a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(M, M) for _ in range(3)])
        self.scales = nn.ParameterList([nn.Parameter(torch.full((M,), 0.5 + i)) for i in range(3)])
        self.heads = nn.ModuleDict({"cls": nn.Linear(M, 4), "reg": nn.Linear(M, 1)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for layer, scale in zip(self.layers, self.scales):
            x = x + scale * torch.tanh(layer(x))
        pooled = x.mean(1)
        return {name: head(pooled) for name, head in self.heads.items()}


class TiedLM(nn.Module):
    """Weight tying: the embedding's weight is the output projection (F.linear with emb.weight), scaled."""

    def __init__(self, vocab: int = 30, dim: int = M) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(16, dim) * 0.02)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids) * math.sqrt(self.emb.embedding_dim) + self.pos[: ids.shape[1]]
        h = h + F.silu(self.mix(h))
        out: torch.Tensor = self.out(h)
        return out


def _ids(vocab: int = 30, b: int = B, t: int = T) -> Make:
    return lambda g: {"ids": torch.randint(0, vocab, (b, t), generator=g)}


class HandCausalAttention(nn.Module):
    """Functional attention by hand: tril mask buffer, masked_fill(-inf), softmax, dropout in eval."""

    def __init__(self, dim: int = M, heads: int = 4, ctx: int = 8) -> None:
        super().__init__()
        self.h = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.o = nn.Linear(dim, dim)
        self.drop = nn.Dropout(0.3)
        self.register_buffer("tril", torch.tril(torch.ones(ctx, ctx)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q = q.view(b, t, self.h, c // self.h).transpose(1, 2)
        k = k.view(b, t, self.h, c // self.h).transpose(1, 2)
        v = v.view(b, t, self.h, c // self.h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.tril[:t, :t] == 0, float("-inf"))
        att = self.drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        out: torch.Tensor = self.o(y)
        return out


class _RoundST(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x * 4) / 4

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class CustomFunction(nn.Module):
    """A custom autograd.Function (straight-through quantiser) between two linears."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(M, M)
        self.b = nn.Linear(M, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.b(_RoundST.apply(self.a(x)))
        return out


class NoGradBlock(nn.Module):
    """torch.no_grad inside forward (a target computed without gradients), detach, stop-gradient residual."""

    def __init__(self) -> None:
        super().__init__()
        self.online = nn.Linear(M, M)
        self.target = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            tgt = F.normalize(self.target(x), dim=-1)
        on = F.normalize(self.online(x), dim=-1)
        loss = 2 - 2 * (on * tgt).sum(-1)
        return loss, on + (tgt - on).detach()


class TensorMethods(nn.Module):
    """.expand/.repeat/.unfold/.flip/.tril/.masked_fill/.roll/.cumsum as tensor methods."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, M))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b = x.shape[0]
        withcls = torch.cat([self.cls.expand(b, -1, -1), x], dim=1)
        rep = x.repeat(1, 2, 1)
        win = x.unfold(1, 3, 1)  # b, t-2, m, 3
        fl = x.flip(1) + x.flip(-1)
        tr = (x @ x.transpose(1, 2)).tril(-1)
        mf = x.masked_fill(x < 0, 0.0)
        cs = x.cumsum(1)
        return withcls, rep, win.sum(-1), fl, tr, mf, cs


class IntArithmetic(nn.Module):
    """Integer tensor arithmetic: hashed embeddings (ids * p + q) % n, floor division buckets, bucketize-like."""

    def __init__(self) -> None:
        super().__init__()
        self.hash = nn.Embedding(17, 8)
        self.bucket = nn.Embedding(4, 8)
        self.emb = nn.Embedding(50, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.hash((ids * 31 + 7) % 17)
        bk = self.bucket(torch.div(ids, 13, rounding_mode="floor").clamp(max=3))
        pos = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
        odd = (pos % 2 == 1).unsqueeze(-1)
        out: torch.Tensor = torch.where(odd, h + bk, self.emb(ids))
        return out


class ComplexRotary(nn.Module):
    """Original-LLaMA rotary: view_as_complex, multiply by polar frequencies, view_as_real."""

    def __init__(self, dim: int = M, heads: int = 2, ctx: int = 8) -> None:
        super().__init__()
        self.h = heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        k = dim // heads
        freqs = 1.0 / (10000 ** (torch.arange(0, k, 2).float() / k))
        angles = torch.outer(torch.arange(ctx).float(), freqs)
        self.register_buffer("freqs_cis", torch.polar(torch.ones_like(angles), angles))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.h, -1)
        k = self.wk(x).view(b, t, self.h, -1)
        fc = self.freqs_cis[:t].view(1, t, 1, -1)
        qc = torch.view_as_complex(q.float().reshape(b, t, self.h, -1, 2))
        kc = torch.view_as_complex(k.float().reshape(b, t, self.h, -1, 2))
        q = torch.view_as_real(qc * fc).flatten(3)
        k = torch.view_as_real(kc * fc).flatten(3)
        out: torch.Tensor = torch.einsum("bthd,bshd->bhts", q, k)
        return out


Out = namedtuple("Out", ["logits", "hidden"])


class NestedOutputs(nn.Module):
    """Outputs as a namedtuple inside a nested tuple with a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(M, M)
        self.b = nn.Linear(M, 3)

    def forward(self, x: torch.Tensor) -> tuple[Any, dict[str, Any]]:
        h = torch.relu(self.a(x))
        return Out(self.b(h), h), {"pooled": (h.max(1).values, h.amax(-1)), "norm": h.norm(dim=-1)}


class KeywordOnly(nn.Module):
    """Keyword-only inputs with a default and an optional tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(M, M)

    def forward(self, x: torch.Tensor, *, scale: torch.Tensor, bias: torch.Tensor | None = None,
                temperature: float = 2.0) -> torch.Tensor:
        y = self.lin(x) * scale
        if bias is not None:
            y = y + bias
        return torch.softmax(y / temperature, -1)


def _kwonly(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, T, M, generator=g), "scale": torch.randn(M, generator=g),
            "bias": torch.randn(T, M, generator=g)}


class ScalarTensors(nn.Module):
    """0-d tensors as inputs (a temperature), 0-d buffers, .item-free arithmetic with them, 0-d outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(M, 4)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("eps", torch.tensor(1e-3))

    def forward(self, x: torch.Tensor, temp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.normalize(self.lin(x), dim=-1)
        logits = self.logit_scale.exp() * z @ z.transpose(-1, -2) / (temp + self.eps)
        return logits, logits.mean()


def _scalar(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, T, M, generator=g), "temp": torch.rand((), generator=g) + 0.5}


class HandNorms(nn.Module):
    """LayerNorm and RMSNorm written by hand (var unbiased=False, rsqrt), softmax by hand, logsumexp."""

    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(M) + 0.1 * torch.randn(M))
        self.b = nn.Parameter(0.1 * torch.randn(M))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        ln = (x - mu) / torch.sqrt(var + 1e-5) * self.g + self.b
        rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.g
        e = torch.exp(x - x.max(-1, keepdim=True).values)
        sm = e / e.sum(-1, keepdim=True)
        lse = torch.logsumexp(x, -1)
        std = x.std(1)
        return ln, rms, sm, lse, std


class VQCodebook(nn.Module):
    """VQ-VAE quantiser: nearest code by squared distance (argmin), embedding lookup, straight-through."""

    def __init__(self, codes: int = 12, dim: int = 8) -> None:
        super().__init__()
        self.enc = nn.Linear(M, dim)
        self.codebook = nn.Embedding(codes, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.enc(x)
        d = (z.pow(2).sum(-1, keepdim=True) - 2 * z @ self.codebook.weight.t()
             + self.codebook.weight.pow(2).sum(-1))
        idx = d.argmin(-1)
        q = self.codebook(idx)
        return z + (q - z).detach(), idx


class LengthMask(nn.Module):
    """A key padding mask from lengths (arange < lengths[:, None]), masked mean pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(M, M)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        h = torch.relu(self.lin(x)) * mask.unsqueeze(-1)
        return h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


def _lengths(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(3, T, M, generator=g), "lengths": torch.randint(1, T + 1, (3,), generator=g)}


class ALiBi(nn.Module):
    """ALiBi attention: a bias slope per head times the (negative) distance, causal, by hand."""

    def __init__(self, dim: int = M, heads: int = 4) -> None:
        super().__init__()
        self.h = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        slopes = torch.tensor([2 ** (-8 * (i + 1) / heads) for i in range(heads)])
        self.register_buffer("slopes", slopes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, -1).permute(2, 0, 3, 1, 4).unbind(0)
        pos = torch.arange(t)
        dist = (pos[None, :] - pos[:, None]).clamp(max=0)  # j - i, <= 0
        bias = self.slopes[:, None, None] * dist[None]
        scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1]) + bias
        causal = torch.ones(t, t, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(causal, torch.finfo(scores.dtype).min)
        out = scores.softmax(-1) @ v
        return out.transpose(1, 2).reshape(b, t, c)


class LocalUnfoldAttention(nn.Module):
    """Local attention by F.unfold over a 1-d sequence (windows of 3 around each position)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q = self.q(x)
        k, v = self.kv(x).chunk(2, -1)
        kp = F.pad(k.transpose(1, 2), (1, 1)).unfold(-1, 3, 1)  # b c t 3
        vp = F.pad(v.transpose(1, 2), (1, 1)).unfold(-1, 3, 1)
        att = torch.einsum("btc,bctw->btw", q, kp).softmax(-1)
        return torch.einsum("btw,bctw->btc", att, vp)


class SqueezeExcite(nn.Module):
    """Depthwise-separable conv with squeeze-and-excitation, hardswish, channel shuffle by view/transpose."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pw = nn.Conv2d(c, c, 1, groups=2)
        self.se1 = nn.Conv2d(c, 2, 1)
        self.se2 = nn.Conv2d(2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.hardswish(self.dw(x))
        b, c, h, w = y.shape
        y = y.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)  # channel shuffle
        y = self.pw(y)
        s = torch.sigmoid(self.se2(F.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        return x + y * s


class HandMoE(nn.Module):
    """A top-2 mixture of experts written by hand: topk, softmax over the chosen, a gather of expert outputs."""

    def __init__(self, dim: int = 8, experts: int = 4) -> None:
        super().__init__()
        self.router = nn.Linear(dim, experts, bias=False)
        self.w1 = nn.Parameter(torch.randn(experts, dim, 12) * 0.2)
        self.w2 = nn.Parameter(torch.randn(experts, 12, dim) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.router(x)
        top, idx = logits.topk(2, dim=-1)
        gates = top.softmax(-1)
        h = torch.einsum("btd,edf->btef", x, self.w1)
        outs = torch.einsum("btef,efd->bted", F.gelu(h), self.w2)
        chosen = torch.gather(outs, 2, idx[..., None].expand(-1, -1, -1, outs.shape[-1]))
        return (chosen * gates[..., None]).sum(2)


class GRUCellLoop(nn.Module):
    """A GRU cell unrolled by hand in a Python loop, outputs stacked; batch 1."""

    def __init__(self, dim: int = 8, hidden: int = 6) -> None:
        super().__init__()
        self.cell = nn.GRUCell(dim, hidden)
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)
        outs = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            outs.append(h)
        out: torch.Tensor = self.out(torch.stack(outs, 1))
        return out


class SortTopk(nn.Module):
    """sort, argsort, topk values, kthvalue, median: rank-based pooling."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s, i = x.sort(-1, descending=True)
        top = x.topk(3, -1).values
        med = x.median(-1).values
        order = x.argsort(1)
        return s[..., :2], i, top.sum(-1), med, order


class CLIPLoss(nn.Module):
    """CLIP contrastive logits with a learned temperature and a symmetric cross entropy on arange labels."""

    def __init__(self) -> None:
        super().__init__()
        self.img = nn.Linear(M, 8)
        self.txt = nn.Linear(12, 8)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.img(image)
        t = self.txt(text)
        i = i / i.norm(dim=-1, keepdim=True)
        t = t / t.norm(dim=-1, keepdim=True)
        logits = self.logit_scale.exp() * i @ t.t()
        labels = torch.arange(logits.shape[0])
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        return logits, loss


def _clip(g: torch.Generator) -> dict[str, Any]:
    return {"image": torch.randn(4, M, generator=g), "text": torch.randn(4, 12, generator=g)}


class RelativeBias(nn.Module):
    """A learned relative-position bias table indexed by (i - j + t - 1), added to attention scores."""

    def __init__(self, heads: int = 2, t: int = T, dim: int = 8) -> None:
        super().__init__()
        self.h = heads
        self.table = nn.Parameter(torch.randn(2 * t - 1, heads) * 0.1)
        pos = torch.arange(t)
        self.register_buffer("rel", pos[:, None] - pos[None, :] + t - 1)
        self.qk = nn.Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k = self.qk(x).view(b, t, 2, self.h, -1).unbind(2)
        s = torch.einsum("bihd,bjhd->bhij", q, k) + self.table[self.rel].permute(2, 0, 1)
        return s.softmax(-1)


class GatedConvLM(nn.Module):
    """A causal gated convolution language model (left pad, GLU by chunk, layer scale, residual)."""

    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.conv = nn.Conv1d(dim, 2 * dim, 3)
        self.gamma = nn.Parameter(1e-1 * torch.ones(dim))
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids).transpose(1, 2)
        a, g = self.conv(F.pad(h, (2, 0))).chunk(2, dim=1)
        h = h + self.gamma[:, None] * (a * torch.sigmoid(g))
        out: torch.Tensor = self.head(h.transpose(1, 2))
        return out


class Batch1Transformer(nn.Module):
    """nn.TransformerEncoderLayer norm_first with gelu, batch_first, traced at batch 1 and a src_key_padding_mask."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(M, 4, 32, dropout=0.1, activation="gelu", batch_first=True,
                                                norm_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layer(x, is_causal=False)
        return out


class Capsules(nn.Module):
    """Capsule squash, routing by agreement for 2 iterations (softmax over out capsules)."""

    def __init__(self, n_in: int = 6, n_out: int = 3, d_in: int = 4, d_out: int = 5) -> None:
        super().__init__()
        self.W = nn.Parameter(0.3 * torch.randn(n_in, n_out, d_out, d_in))

    @staticmethod
    def squash(s: torch.Tensor) -> torch.Tensor:
        n2 = (s ** 2).sum(-1, keepdim=True)
        return n2 / (1 + n2) * s / torch.sqrt(n2 + 1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        uhat = torch.einsum("iodk,bik->biod", self.W, x)
        logits = torch.zeros(uhat.shape[:3])
        for _ in range(2):
            c = logits.softmax(2)
            v = self.squash((c[..., None] * uhat).sum(1))
            logits = logits + (uhat * v[:, None]).sum(-1)
        return v


class Float64Net(nn.Module):
    """A float64 model with an int64 index input; outputs in float64 and an integer count."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, M).double()
        self.lin = nn.Linear(M, M).double()

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.emb(ids) + self.lin(x)
        return h.softmax(-1), (h > 0).sum(-1)


def _f64(g: torch.Generator) -> dict[str, Any]:
    return {"ids": torch.randint(0, 10, (B, T), generator=g), "x": torch.randn(B, T, M, generator=g).double()}


class Channels(nn.Module):
    """Channels-last conv net with F.interpolate nearest/bilinear upsampling, adaptive avg pool, flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.relu(self.c1(x))
        up = F.interpolate(y, scale_factor=2, mode="nearest") + F.interpolate(y, size=x.shape[-2:], mode="bilinear",
                                                                              align_corners=False)
        z = F.adaptive_avg_pool2d(self.c2(y), 2).flatten(1)
        return up, self.fc(z)


def zoo() -> list[tuple[str, type[nn.Module], Make]]:
    """These models: (name, model class, inputs from a generator)."""
    return [
        ("patch_rearrange", PatchRearrange, _x(B, 3, 8, 8)),
        ("where_masks", WhereMasks, _x(B, T, M)),
        ("fixed_bool_index", FixedBoolIndex, _x(B, T, M)),
        ("slice_inplace", SliceInplace, _x(B, T, M)),
        ("buffers_projection", Buffers, _x(B, T, M)),
        ("moduledict_heads", ModuleDictHeads, _x(B, T, M)),
        ("tied_lm", TiedLM, _ids()),
        ("hand_causal_attention", HandCausalAttention, _x(B, T, M)),
        ("custom_function", CustomFunction, _x(B, T, M)),
        ("no_grad_block", NoGradBlock, _x(B, T, M)),
        ("tensor_methods", TensorMethods, _x(B, T, M)),
        ("int_arithmetic", IntArithmetic, _ids(50)),
        ("complex_rotary", ComplexRotary, _x(B, T, M)),
        ("namedtuple_outputs", NestedOutputs, _x(B, T, M)),
        ("keyword_only", KeywordOnly, _kwonly),
        ("scalar_tensors", ScalarTensors, _scalar),
        ("hand_norms", HandNorms, _x(B, T, M)),
        ("vq_codebook", VQCodebook, _x(B, T, M)),
        ("length_mask", LengthMask, _lengths),
        ("alibi", ALiBi, _x(B, T, M)),
        ("local_unfold_attention", LocalUnfoldAttention, _x(B, T, 8)),
        ("squeeze_excite", SqueezeExcite, _x(B, 8, 6, 6)),
        ("hand_moe", HandMoE, _x(B, T, 8)),
        ("gru_cell_loop", GRUCellLoop, _x(1, 5, 8)),
        ("rank_pooling", SortTopk, _x(B, T, 7)),
        ("clip_loss", CLIPLoss, _clip),
        ("relative_bias", RelativeBias, _x(B, T, 8)),
        ("gated_conv_lm", GatedConvLM, _ids(20)),
        ("batch1_transformer", Batch1Transformer, _x(1, T, M)),
        ("capsules", Capsules, _x(B, 6, 4)),
        ("float64_net", Float64Net, _f64),
        ("channels_interp", Channels, _x(B, 3, 8, 8)),
    ] + _hunt()


def _hunt() -> list[tuple[str, type[nn.Module], Make]]:
    """The models of the hunts for silently wrong diagrams (``benchmarks/corpus_torch_hunt.py``, beside this file)."""
    import corpus_torch_hunt  # on the path whenever this module is

    hunt: list[tuple[str, type[nn.Module], Make]] = corpus_torch_hunt.zoo()
    return hunt
