"""More plain PyTorch models users write, for the import corpus (joined to :func:`corpus_torch.zoo`).

Hand-written modules over what the first zoo drew opaque or never tried: 3-d and transposed convolutions with output
padding, pixel shuffles in a super-resolution net, instance norm in a style transfer, circular and negative padding,
bags of embeddings, scatter reductions, cumulative products and maxima, arg-extrema, the rarer activations and
elementwise functions, ``F.rms_norm``, diagonals, bitwise operations, casts between element types, losses with their
reductions, ceil-mode pooling, ``grid_sample``, ``masked_scatter``, einsums with repeated and ellipsis indices,
``torch.where`` with scalars; and whole networks: a diffusion U-Net with a time embedding, a Perceiver, a hand-written
selective scan (Mamba), a GPT with its key/value cache, a DETR set decoder and Swin's shifted-window attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

B, T, M = 2, 6, 16

Make = Callable[[torch.Generator], dict[str, Any]]


def _x(*shape: int, dtype: torch.dtype = torch.float32) -> Make:
    return lambda g: {"x": torch.randn(*shape, generator=g).to(dtype)}


# -- layers ---------------------------------------------------------------------------------------------------------
class Video(nn.Module):
    """A 3-d convolutional encoder-decoder: Conv3d, BatchNorm3d, AvgPool3d, ConvTranspose3d."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1)
        self.norm = nn.BatchNorm3d(8)
        self.pool = nn.AvgPool3d((1, 2, 2))
        self.up = nn.ConvTranspose3d(8, 3, (1, 4, 4), stride=(1, 4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.up(self.pool(F.relu(self.norm(self.down(x)))))
        return out


class TransposedPadding(nn.Module):
    """Transposed convolutions with output padding, dilation and groups (1-d and 2-d), and F.conv_transpose2d."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.b = nn.ConvTranspose1d(6, 4, 3, stride=1, dilation=2)
        self.w = nn.Parameter(torch.randn(6, 2, 2, 2) * 0.2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.a(x)
        z = F.conv_transpose2d(y, self.w, stride=2)
        return z, self.b(y.mean(-1))


class SuperResolution(nn.Module):
    """ESPCN-style: features, then channels to space with PixelShuffle; a PixelUnshuffle stem."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.PixelUnshuffle(2)
        self.body = nn.Conv2d(12, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 3 * 16, 3, padding=1)
        self.shuffle = nn.PixelShuffle(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.shuffle(self.head(torch.tanh(self.body(self.stem(x)))))
        return out


class StyleTransfer(nn.Module):
    """Instance norm with and without affine weights, and adaptive instance norm from a style vector."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.InstanceNorm2d(4, affine=True)
        self.b = nn.InstanceNorm1d(4)
        self.style = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(s).chunk(2, -1)
        y = F.instance_norm(x) * gamma[:, :, None, None] + beta[:, :, None, None]
        return self.a(y) + self.b(x.flatten(2)).view_as(x)


def _style(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, 4, 5, 6, generator=g), "s": torch.randn(B, 8, generator=g)}


class CircularPad(nn.Module):
    """Circular padding (a torus), negative padding (cropping), 3-d replicate and constant padding with a value."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.pad(x, (1, 2, 2, 1), mode="circular"), F.pad(x, (-1, -1, 0, -2)),
                F.pad(x[:, None], (1, 1, 1, 1, 1, 1), mode="replicate"), F.pad(x, (0, 3), value=-1.5))


class Bags(nn.Module):
    """Bags of embeddings: sum with per-sample weights, mean and max over fixed-size bags, and offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.sum = nn.EmbeddingBag(30, 8, mode="sum")
        self.mean = nn.EmbeddingBag(30, 8, mode="mean")
        self.max = nn.EmbeddingBag(30, 8, mode="max")

    def forward(self, ids: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.sum(ids, per_sample_weights=w), self.mean(ids), self.max(ids)


def _bags(g: torch.Generator) -> dict[str, Any]:
    return {"ids": torch.randint(0, 30, (B, 5), generator=g), "w": torch.rand(B, 5, generator=g)}


class Scatters(nn.Module):
    """scatter_add, index_add with alpha, scatter_reduce (amax, mean, prod) and index_copy into new tensors."""

    def forward(self, x: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        zeros = torch.zeros(B, 4, M)
        return (zeros.scatter_add(1, idx[..., None].expand(B, T, M), x),
                torch.zeros(8, M).index_add(0, rows, x[0], alpha=0.5),
                zeros.scatter_reduce(1, idx[..., None].expand(B, T, M), x, "amax", include_self=False),
                zeros.scatter_reduce(1, idx[..., None].expand(B, T, M), x, "mean"),
                torch.ones(B, 4, M).scatter_reduce(1, idx[..., None].expand(B, T, M), x, "prod"),
                torch.zeros(8, M).index_copy(0, rows, x[1]))


def _scatters(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, T, M, generator=g), "idx": torch.randint(0, 4, (B, T), generator=g),
            "rows": torch.randperm(8, generator=g)[:T]}


class CumulativeMore(nn.Module):
    """cumprod, cummax / cummin values and indices, logcumsumexp, a reversed cumulative sum."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        top, where = torch.cummax(x, -1)
        return (torch.cumprod(x.sigmoid(), 1), top, where, torch.cummin(x, 0).values,
                torch.logcumsumexp(x, -1), x.flip(-1).cumsum(-1).flip(-1))


class ArgExtrema(nn.Module):
    """argmax / argmin (a dimension, keepdim, flattened), a one-hot of the argmax, amax / amin, prod, max over a dim."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hard = F.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)
        values, indices = x.max(1)
        return (x.argmax(-1), x.argmin(1, keepdim=True), x.argmax(), hard, x.amax((1, 2)), x.amin(-1),
                x.prod(-1), values, indices)


class Activations(nn.Module):
    """PReLU (one and per-channel), GLU, SELU, CELU, leaky ReLU, hardtanh, softplus with beta, mish, hardswish,
    logsigmoid, softsign, tanhshrink, RReLU in eval."""

    def __init__(self) -> None:
        super().__init__()
        self.prelu, self.prelu_c = nn.PReLU(), nn.PReLU(M, init=0.1)
        self.rrelu = nn.RReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.prelu(x) + self.prelu_c(x.transpose(1, 2)).transpose(1, 2) + F.glu(x, -1).repeat(1, 1, 2)
        y = y + F.selu(x) + F.celu(x, 0.5) + F.leaky_relu(x, 0.2) + F.hardtanh(x, -0.5, 0.5)
        y = y + F.softplus(x, beta=2.0) + F.mish(x) + F.hardswish(x) + F.logsigmoid(x) + F.softsign(x)
        out: torch.Tensor = y + F.tanhshrink(x) + self.rrelu(x)
        return out


class Pointwise(nn.Module):
    """sign, atan2, lerp with a tensor weight and a scalar, addcmul / addcdiv, hypot, copysign, fmod, remainder,
    clamp with tensor bounds, xlogy, logaddexp, frac, trunc."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(y)
        z = torch.sign(x) * torch.atan2(x, y) + torch.lerp(x, y, w) + torch.lerp(x, y, 0.3)
        z = z + torch.addcmul(x, x, y, value=0.5) + torch.addcdiv(x, x, y.abs() + 1, value=2)
        z = z + torch.hypot(x, y) + torch.copysign(x, y) + torch.fmod(x, 1.5) + torch.remainder(x, 1.5)
        z = z + torch.clamp(x, min=-y.abs(), max=y.abs()) + torch.xlogy(x.abs(), y.abs() + 1) + torch.logaddexp(x, y)
        out: torch.Tensor = z + x.frac() + x.trunc()
        return out


def _two(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, T, M, generator=g), "y": torch.randn(B, T, M, generator=g)}


class RMSNormFunctional(nn.Module):
    """F.rms_norm with a weight and eps, over one and two trailing dimensions, and nn.RMSNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand(M) + 0.5)
        self.norm = nn.RMSNorm([T, M], eps=1e-5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return F.rms_norm(x, (M,), self.w, eps=1e-6), F.rms_norm(x, (T, M)), self.norm(x)


class Diagonals(nn.Module):
    """diagonal (offsets, of a batch), diag_embed, trace, triu / tril with offsets, torch.diag of a vector."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sq = x @ x.transpose(-1, -2)
        return (torch.diagonal(sq, dim1=-2, dim2=-1), sq.diagonal(1, -2, -1), torch.diag_embed(x[:, 0]),
                torch.trace(sq[0]), torch.triu(sq, 1) + torch.tril(sq, -2), torch.diag(x[0, 0]))


class Bitwise(nn.Module):
    """Integer and boolean bitwise arithmetic: and / or / xor / not, shifts, logical ops, a hash of token ids."""

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = ((ids * 31) ^ (ids >> 1)) & 15
        flags = (ids | 8) - (~ids & 3) + (ids << 2)
        m = torch.logical_and(mask, ids > 3) | torch.logical_xor(mask, ids % 2 == 0)
        return h, flags, m, torch.bitwise_not(mask), torch.logical_not(m).sum(-1)


def _bitwise(g: torch.Generator) -> dict[str, Any]:
    return {"ids": torch.randint(0, 50, (B, T), generator=g), "mask": torch.rand(B, T, generator=g) > 0.5}


class MixedPrecision(nn.Module):
    """A float32 model with half, bfloat16 and float64 sections, and a float64 reduction."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.a(x).half().relu().to(torch.bfloat16) * 2
        d = x.to(torch.float64).softmax(-1).sum(-1)
        return h.float() + x, d


class LossesReduced(nn.Module):
    """Losses with their options: cross entropy (label smoothing, ignore index, class weights), mse (sum), kl_div
    (batchmean, log target), smooth L1, Huber, L1, BCE, cosine embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, 5)
        self.register_buffer("cw", torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0]))

    def forward(self, x: torch.Tensor, target: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.fc(x)
        logp, logq = logits.log_softmax(-1), y.log_softmax(-1)
        return (F.cross_entropy(logits, target, label_smoothing=0.1), F.cross_entropy(logits, target, ignore_index=2),
                F.cross_entropy(logits, target, weight=self.cw, reduction="sum"),
                F.mse_loss(logits, y, reduction="sum"), F.kl_div(logp, logq, reduction="batchmean", log_target=True),
                F.kl_div(logp, y.softmax(-1), reduction="none"), F.smooth_l1_loss(logits, y, beta=0.5),
                F.huber_loss(logits, y, delta=0.7), F.l1_loss(logits, y, reduction="none"),
                F.binary_cross_entropy(logits.sigmoid(), y.sigmoid()))


def _losses(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(4, M, generator=g), "target": torch.randint(0, 5, (4,), generator=g),
            "y": torch.randn(4, 5, generator=g)}


class CeilPools(nn.Module):
    """avg_pool2d in ceil mode without the padding counted, max_pool2d in ceil mode, LP pooling, a 1-d avg pool."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False),
                F.max_pool2d(x, 2, 2, ceil_mode=True), F.lp_pool2d(x, 2, 2), F.avg_pool1d(x.flatten(2), 4, 3, ceil_mode=True),
                F.avg_pool2d(x, 2, divisor_override=3))


class SpatialTransformer(nn.Module):
    """A spatial transformer: an affine grid predicted from the image, grid_sample (bilinear, nearest, border)."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = nn.Linear(3 * 8 * 8, 6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.loc(x.flatten(1)).view(-1, 2, 3) * 0.1 + torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return (F.grid_sample(x, grid, align_corners=False),
                F.grid_sample(x, grid.clamp(-1, 1), mode="nearest", padding_mode="border", align_corners=True))


class MaskedWrites(nn.Module):
    """masked_scatter from a source, masked_fill with a tensor value, index_put with accumulate, torch.where with
    Python scalars on either side and a broadcast mask."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        src = torch.arange(x.numel(), dtype=x.dtype).view_as(x)
        fill = x.masked_fill(mask[..., None], x.mean())
        return (x.masked_scatter(mask[..., None].expand_as(x), src), fill,
                torch.where(x > 0, x, 0.0), torch.where(mask[..., None], 1.0, -1.0) * x,
                torch.where(mask[..., None], x, x.new_tensor(2.0)))


def _masked(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, T, M, generator=g), "mask": torch.rand(B, T, generator=g) > 0.5}


class EinsumIndices(nn.Module):
    """einsum with a repeated index (diagonal, trace), ellipses on either side, an outer product and a bilinear form."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(M, 4, M) * 0.1)

    def forward(self, x: torch.Tensor, sq: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.einsum("bii->bi", sq), torch.einsum("bii->b", sq), torch.einsum("...ij,...jk->...ik", sq, sq),
                torch.einsum("b...d,d->b...", x, x[0, 0]), torch.einsum("bti,ioj,btj->bto", x, self.w, x),
                torch.einsum("i,j->ij", x[0, 0], x[1, 0]))


def _einsum_indices(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, T, M, generator=g), "sq": torch.randn(B, 5, 5, generator=g)}


# -- networks -------------------------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


class TimeResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(4, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(tdim, 2 * cout)
        self.n2, self.c2 = nn.GroupNorm(4, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.t(F.silu(temb))[:, :, None, None].chunk(2, 1)
        h = self.c2(F.silu(self.n2(h) * (1 + scale) + shift))
        out: torch.Tensor = h + self.skip(x)
        return out


class DiffusionUNet(nn.Module):
    """A DDPM-style U-Net: sinusoidal time embedding and its MLP, residual blocks modulated by it (scale and shift),
    a downsampling and an upsampling stage with a skip, a self-attention block at the bottom."""

    def __init__(self) -> None:
        super().__init__()
        self.tmlp = nn.Sequential(nn.Linear(16, 32), nn.SiLU(), nn.Linear(32, 32))
        self.inp = nn.Conv2d(3, 8, 3, padding=1)
        self.d1, self.down = TimeResBlock(8, 8, 32), nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.mid = TimeResBlock(8, 16, 32)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.u1 = TimeResBlock(24, 8, 32)
        self.out = nn.Sequential(nn.GroupNorm(4, 8), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.tmlp(timestep_embedding(t, 16))
        h1 = self.d1(self.inp(x), temb)
        h = self.mid(self.down(h1), temb)
        b, c, hh, ww = h.shape
        seq = h.flatten(2).transpose(1, 2)
        seq = seq + self.attn(seq, seq, seq, need_weights=False)[0]
        h = seq.transpose(1, 2).reshape(b, c, hh, ww)
        h = self.u1(torch.cat([self.up(h), h1], 1), temb)
        out: torch.Tensor = self.out(h)
        return out


def _diffusion(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, 3, 8, 8, generator=g), "t": torch.randint(0, 1000, (B,), generator=g)}


class Perceiver(nn.Module):
    """Perceiver: a learned latent array cross-attends to a long input (hand-written attention, keys and values from
    the input), then the latents self-attend; a mean over the latents and a classifier."""

    def __init__(self, latents: int = 4, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, dim))
        self.heads = heads
        self.q, self.kv, self.o = nn.Linear(dim, dim), nn.Linear(12, 2 * dim), nn.Linear(dim, dim)
        self.ln_x, self.ln_z = nn.LayerNorm(12), nn.LayerNorm(dim)
        self.self_attn = nn.TransformerEncoderLayer(dim, heads, 32, dropout=0.0, batch_first=True, norm_first=True)
        self.cls = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        z = self.latents.unsqueeze(0).expand(b, -1, -1)
        q = self.q(self.ln_z(z)).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k, v = self.kv(self.ln_x(x)).chunk(2, -1)
        k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (k, v))
        attn = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
        z = z + self.o((attn @ v).transpose(1, 2).flatten(2))
        out: torch.Tensor = self.cls(self.self_attn(z).mean(1))
        return out


class SelectiveScan(nn.Module):
    """A hand-written Mamba block: input projection, a causal depthwise convolution, input-dependent step sizes,
    B and C, the discretised recurrence h = exp(delta A) h + delta B x in a Python loop over time, a gate."""

    def __init__(self, dim: int = 8, inner: int = 12, state: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, 2 * inner)
        self.conv = nn.Conv1d(inner, inner, 3, padding=2, groups=inner)
        self.x_proj = nn.Linear(inner, 1 + 2 * state)
        self.dt = nn.Linear(1, inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, state + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out = nn.Linear(inner, dim)
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        u, gate = self.inp(x).chunk(2, -1)
        u = F.silu(self.conv(u.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, b, c = self.x_proj(u).split([1, self.state, self.state], -1)
        delta = F.softplus(self.dt(dt))
        a = -torch.exp(self.A_log)
        h = u.new_zeros(u.shape[0], u.shape[2], self.state)
        ys = []
        for i in range(length):
            da = torch.exp(delta[:, i, :, None] * a)
            h = da * h + delta[:, i, :, None] * b[:, i, None, :] * u[:, i, :, None]
            ys.append((h * c[:, i, None, :]).sum(-1))
        y = torch.stack(ys, 1) + u * self.D
        out: torch.Tensor = self.out(y * F.silu(gate))
        return out


class CachedAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t, _ = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(x).split(x.shape[-1], -1))
        k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
        s = k.shape[2]
        causal = torch.ones(t, s, dtype=torch.bool).tril(s - t)
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        attn = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, -1)), k, v


class GPTWithCache(nn.Module):
    """A GPT decoding step with a hand-written key/value cache: past keys and values in, the new cache out."""

    def __init__(self, vocab: int = 40, dim: int = 16, heads: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(32, dim)
        self.ln1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.attn = nn.ModuleList(CachedAttention(dim, heads) for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU("tanh"), nn.Linear(4 * dim, dim))
                                 for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, cache: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        past = cache[0].shape[2]
        pos = torch.arange(past, past + ids.shape[1])
        h = self.wte(ids) + self.wpe(pos)
        new = []
        for i, (ln1, attn, ln2, mlp) in enumerate(zip(self.ln1, self.attn, self.ln2, self.mlp)):
            a, k, v = attn(ln1(h), cache[2 * i], cache[2 * i + 1])
            h = h + a
            h = h + mlp(ln2(h))
            new += [k, v]
        return self.ln_f(h) @ self.wte.weight.T, new


def _gpt_cache(g: torch.Generator) -> dict[str, Any]:
    return {"ids": torch.randint(0, 40, (B, 3), generator=g),
            "cache": [torch.randn(B, 2, 5, 8, generator=g) for _ in range(4)]}


class DETRDecoder(nn.Module):
    """DETR's set prediction head: learned object queries decode image features (positional encodings added to the
    keys) through a transformer decoder; a class head and a box head (an MLP, sigmoid)."""

    def __init__(self, dim: int = 16, queries: int = 5, classes: int = 4) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, dim, 4, stride=4)
        self.query = nn.Embedding(queries, dim)
        self.row, self.col = nn.Parameter(torch.randn(8, dim // 2)), nn.Parameter(torch.randn(8, dim // 2))
        layer = nn.TransformerDecoderLayer(dim, 2, 32, dropout=0.0, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, 2)
        self.cls = nn.Linear(dim, classes + 1)
        self.box = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.backbone(x)
        b, _, h, w = f.shape
        pos = torch.cat([self.col[:w][None].expand(h, -1, -1), self.row[:h][:, None].expand(-1, w, -1)], -1)
        memory = f.flatten(2).transpose(1, 2) + pos.flatten(0, 1)[None]
        tgt = self.query.weight[None].repeat(b, 1, 1)
        out = self.decoder(tgt, memory)
        return self.cls(out).softmax(-1), self.box(out).sigmoid()


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def window_reverse(win: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    b = win.shape[0] // ((h // w) * (wd // w))
    x = win.view(b, h // w, wd // w, w, w, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, wd, -1)


class SwinBlock(nn.Module):
    """Swin's shifted-window attention: torch.roll by half a window, window partition, attention with a relative
    position bias gathered from a table and a shift mask, window reverse, the roll back; then an MLP."""

    def __init__(self, dim: int = 16, heads: int = 2, window: int = 2, shift: int = 1, size: int = 4) -> None:
        super().__init__()
        self.dim, self.heads, self.window, self.shift = dim, heads, window, shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        img = torch.zeros(1, size, size, 1)
        cnt = 0
        for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
                img[:, hs, ws] = cnt
                cnt += 1
        wins = window_partition(img, window).squeeze(-1)
        mask = wins[:, None] - wins[:, :, None]
        self.register_buffer("mask", mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0))
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        y = torch.roll(self.norm1(x), (-self.shift, -self.shift), (1, 2))
        win = window_partition(y, self.window)
        n = win.shape[1]
        qkv = self.qkv(win).reshape(-1, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + bias[None]
        nw = self.mask.shape[0]
        attn = (attn.view(-1, nw, self.heads, n, n) + self.mask[None, :, None]).view(-1, self.heads, n, n).softmax(-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(-1, n, c))
        y = torch.roll(window_reverse(out, self.window, h, w), (self.shift, self.shift), (1, 2))
        x = x + y
        result: torch.Tensor = x + self.mlp(self.norm2(x))
        return result


class DCGAN(nn.Module):
    """A DCGAN pair: the generator (transposed convolutions, batch norm, ReLU, tanh) and the discriminator on its
    image (strided convolutions, leaky ReLU with slope 0.2, a sigmoid)."""

    def __init__(self, z: int = 8, f: int = 4) -> None:
        super().__init__()
        self.gen = nn.Sequential(nn.ConvTranspose2d(z, 2 * f, 4, 1, 0, bias=False), nn.BatchNorm2d(2 * f), nn.ReLU(True),
                                 nn.ConvTranspose2d(2 * f, f, 4, 2, 1, bias=False), nn.BatchNorm2d(f), nn.ReLU(True),
                                 nn.ConvTranspose2d(f, 3, 4, 2, 1, bias=False), nn.Tanh())
        self.disc = nn.Sequential(nn.Conv2d(3, f, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Conv2d(f, 2 * f, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * f), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Conv2d(2 * f, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.gen(x)
        return image, self.disc(image).flatten(1)


class SelfNormalizing(nn.Module):
    """A self-normalising MLP (SELU and alpha dropout), an ELU / CELU variant and a softplus head with its beta, a
    hardtanh-clipped output."""

    def __init__(self) -> None:
        super().__init__()
        self.snn = nn.Sequential(nn.Linear(M, 32), nn.SELU(), nn.AlphaDropout(0.1), nn.Linear(32, 32), nn.SELU())
        self.elu = nn.Sequential(nn.Linear(32, 16), nn.ELU(0.5), nn.Linear(16, 16), nn.CELU(1.5))
        self.scale = nn.Sequential(nn.Linear(16, 4), nn.Softplus(beta=2.0, threshold=10.0))
        self.clip = nn.Hardtanh(-2.0, 2.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.elu(self.snn(x))
        return self.scale(h), self.clip(h * 3)


def zoo() -> list[tuple[str, type[nn.Module], Make]]:
    """These models and those of :mod:`corpus_torch_styles` (beside this file): (name, model class, inputs)."""
    import corpus_torch_styles  # on the path whenever this module is

    styles: list[tuple[str, type[nn.Module], Make]] = corpus_torch_styles.zoo()
    return [
        ("video_conv3d", Video, _x(B, 3, 2, 8, 8)),
        ("conv_transpose_padding", TransposedPadding, _x(B, 4, 5, 4)),
        ("super_resolution", SuperResolution, _x(B, 3, 8, 8)),
        ("style_instance_norm", StyleTransfer, _style),
        ("circular_negative_pad", CircularPad, _x(B, 5, 6)),
        ("embedding_bag", Bags, _bags),
        ("scatter_reduce", Scatters, _scatters),
        ("cumulative_more", CumulativeMore, _x(B, 5, 7)),
        ("arg_extrema", ArgExtrema, _x(B, 5, 7)),
        ("activations", Activations, _x(B, T, M)),
        ("pointwise", Pointwise, _two),
        ("rms_norm_functional", RMSNormFunctional, _x(B, T, M)),
        ("diagonals", Diagonals, _x(B, 5, 7)),
        ("bitwise", Bitwise, _bitwise),
        ("mixed_precision", MixedPrecision, _x(B, T, M)),
        ("losses_reduced", LossesReduced, _losses),
        ("ceil_pools", CeilPools, _x(B, 3, 7, 9)),
        ("grid_sample", SpatialTransformer, _x(B, 3, 8, 8)),
        ("masked_writes", MaskedWrites, _masked),
        ("einsum_indices", EinsumIndices, _einsum_indices),
        ("diffusion_unet", DiffusionUNet, _diffusion),
        ("perceiver", Perceiver, _x(B, 10, 12)),
        ("selective_scan", SelectiveScan, _x(B, T, 8)),
        ("gpt_kv_cache", GPTWithCache, _gpt_cache),
        ("detr_decoder", DETRDecoder, _x(B, 3, 16, 16)),
        ("swin_window", SwinBlock, _x(B, 4, 4, M)),
        ("dcgan", DCGAN, _x(B, 8, 1, 1)),
        ("self_normalizing", SelfNormalizing, _x(B, T, M)),
    ] + styles
