"""A zoo of plain PyTorch models users write themselves, for the import corpus (``benchmarks/import_corpus.py``).

Hand-written modules (no torchvision) over the layers and functions of ``torch.nn`` a user reaches for: transformer
layers with padding and causal masks, multi-head attention in every layout, recurrent layers with an initial state,
convolutions of every kind, pooling, normalisation, embeddings, indexing, scans, sorting, resampling, padding,
complex FFTs, small whole networks (U-Net, ResNet block, ViT, MLP-Mixer, a graph network), custom autograd functions,
checkpointing, nested outputs, non-tensor arguments, integer and boolean inputs, buffers, tied and reused weights,
in-place writes through views, shape arithmetic, Python loops and float64.  Each entry is built with random weights in
eval mode, with an example input and a fresh input of the same shapes; :func:`zoo_entries` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

B, T, M = 2, 6, 16

Make = Callable[[torch.Generator], dict[str, Any]]


def _x(*shape: int, dtype: torch.dtype = torch.float32) -> Make:
    return lambda g: {"x": torch.randn(*shape, generator=g, dtype=dtype)}


def _ids(*shape: int, high: int = 20) -> Make:
    return lambda g: {"ids": torch.randint(0, high, shape, generator=g)}


# -- transformers and attention -------------------------------------------------------------------------------------
class EncoderPadded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(M, 4, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(x, src_key_padding_mask=pad)
        return out


def _padded(g: torch.Generator) -> dict[str, Any]:
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[0, -2:] = True
    return {"x": torch.randn(B, T, M, generator=g), "pad": pad}


class EncoderCausal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(M, 2, 32, dropout=0.0, batch_first=True, norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(M), enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        out: torch.Tensor = self.encoder(x, mask=mask, is_causal=True)
        return out


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerDecoderLayer(M, 4, 32, dropout=0.0)  # sequence first
        self.decoder = nn.TransformerDecoder(layer, 2)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_pad: torch.Tensor) -> torch.Tensor:
        causal = torch.triu(torch.full((tgt.shape[0], tgt.shape[0]), float("-inf")), diagonal=1)
        out: torch.Tensor = self.decoder(tgt, memory, tgt_mask=causal, memory_key_padding_mask=memory_pad)
        return out


def _decoder(g: torch.Generator) -> dict[str, Any]:
    pad = torch.zeros(B, T + 2, dtype=torch.bool)
    pad[1, -3:] = True
    return {"tgt": torch.randn(T, B, M, generator=g), "memory": torch.randn(T + 2, B, M, generator=g), "memory_pad": pad}


class MHAWeights(nn.Module):
    """Self-attention returning its averaged weights (sequence first)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(M, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, weights = self.attn(x, x, x, need_weights=True)
        return out, weights


class MHACross(nn.Module):
    """Cross-attention, batch first, keys and values of other widths (kdim/vdim), per-head weights, a padding mask."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(M, 2, kdim=12, vdim=10, batch_first=True)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, weights = self.attn(q, k, v, key_padding_mask=pad, average_attn_weights=False)
        return out, weights


def _cross(g: torch.Generator) -> dict[str, Any]:
    pad = torch.zeros(B, T + 1, dtype=torch.bool)
    pad[0, -2:] = True
    return {"q": torch.randn(B, T, M, generator=g), "k": torch.randn(B, T + 1, 12, generator=g),
            "v": torch.randn(B, T + 1, 10, generator=g), "pad": pad}


class MHANoWeights(nn.Module):
    """Batch-first self-attention with a causal float mask and need_weights=False (the fast path)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(M, 4, batch_first=True, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), 1)
        out: torch.Tensor = self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]
        return out


# -- recurrent ------------------------------------------------------------------------------------------------------
class BiLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(M, 12, num_layers=2, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (h, c) = self.lstm(x, (h0, c0))
        return out, h, c


def _bilstm(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, T, M, generator=g), "h0": torch.randn(4, B, 12, generator=g),
            "c0": torch.randn(4, B, 12, generator=g)}


class BiGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(M, 12, num_layers=2, bidirectional=True)  # sequence first

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h = self.gru(x, h0)
        return out, h


class ElmanRNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(M, 12, num_layers=2, nonlinearity="relu", batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.rnn(x)[0]
        return out


# -- convolutions ---------------------------------------------------------------------------------------------------
class Convs1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(8, 16, 3, padding=2, dilation=2, groups=4)
        self.b = nn.Conv1d(16, 16, 3, padding=1, padding_mode="circular", groups=16)
        self.c = nn.Conv1d(16, 8, 4, stride=2, padding="valid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.c(F.silu(self.b(self.a(x))))
        return out


class Convs2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, padding="same", padding_mode="reflect")
        self.b = nn.Conv2d(8, 8, 3, padding=1, padding_mode="replicate", groups=2, bias=False)
        self.c = nn.Conv2d(8, 6, (3, 1), stride=(2, 1), dilation=(1, 2), padding=(1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.c(self.b(self.a(x)).relu())
        return out


class Conv3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv3d(3, 6, 3, padding=1, groups=3)
        self.b = nn.Conv3d(6, 4, (1, 3, 3), stride=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.b(self.a(x))
        return out


class Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.b = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.c = nn.ConvTranspose1d(8, 3, 3, stride=3)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.b(self.a(x)), self.c(s)


def _transposed(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, 8, 5, 5, generator=g), "s": torch.randn(B, 8, 7, generator=g)}


class Shuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 16, 3, padding=1)
        self.up, self.down = nn.PixelShuffle(2), nn.PixelUnshuffle(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        up = self.up(self.conv(x))
        return up, self.down(up)


class UnfoldFold(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.unfold = nn.Unfold(kernel_size=2, stride=2)
        self.fold = nn.Fold(output_size=(8, 8), kernel_size=2, stride=2)
        self.proj = nn.Linear(12, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.unfold(x)  # b (c kh kw) L
        out: torch.Tensor = self.fold(self.proj(patches.transpose(1, 2)).transpose(1, 2))
        return out


class Pools(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.max_pool2d(x, 3, stride=2, padding=1), F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False),
                F.adaptive_avg_pool2d(x, (3, 5)), F.adaptive_max_pool2d(x, 1), F.max_pool1d(x.flatten(2), 4),
                F.avg_pool1d(x.flatten(2), 3, stride=2, padding=1), F.adaptive_avg_pool1d(x.flatten(2), 7))


class Norms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.ln = nn.LayerNorm([8, 5], elementwise_affine=True)
        self.bn1 = nn.BatchNorm1d(8)
        with torch.no_grad():
            for bn in (self.bn, self.bn1):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inorm(self.gn(self.bn(x)))
        y = self.ln(y.mean(-1))
        out: torch.Tensor = self.bn1(y)
        return out


# -- embeddings and indexing ----------------------------------------------------------------------------------------
class Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, M, padding_idx=0)
        self.bag = nn.EmbeddingBag(20, M, mode="mean")
        self.bag_sum = nn.EmbeddingBag(20, M, mode="sum")

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.emb(ids), self.bag(ids) + self.bag_sum(ids)


def _ids_pad(g: torch.Generator) -> dict[str, Any]:
    ids = torch.randint(1, 20, (B, T), generator=g)
    ids[0, -2:] = 0
    return {"ids": ids}


class EinsumMany(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 8, 5))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.einsum("bihd,bjhd->bhij", a, b)
        y = torch.einsum("bhij,bjhd,hdk->bihk", x.softmax(-1), b, self.w)
        z = torch.einsum("bihd->bdh", a)
        return y, z, torch.einsum("...hd,hdk->...k", a, self.w)


def _einsum(g: torch.Generator) -> dict[str, Any]:
    return {"a": torch.randn(B, T, 4, 8, generator=g), "b": torch.randn(B, T + 1, 4, 8, generator=g)}


class Selecting(nn.Module):
    """torch.where, masked_fill, gather and scatter_add with index tensors computed in the forward."""

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = torch.where(x > 0, x, 0.1 * x)
        z = x.masked_fill(x < -1, 0.0)
        w = torch.where(x.abs() > 0.5, x, torch.zeros_like(x))
        picked = torch.gather(x, 1, idx)
        summed = torch.zeros(x.shape[0], 5).scatter_add(1, idx % 5, picked)
        return y, z, w, picked, summed


def _selecting(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, 10, generator=g), "idx": torch.randint(0, 10, (B, 7), generator=g)}


class Scans(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x.cumsum(1), torch.cumprod(x.sigmoid(), dim=-1), torch.logcumsumexp(x, 1), x.cummax(1).values


class Ranking(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values, order = x.sort(-1, descending=True)
        top, where = x.topk(3, dim=-1)
        return values, order, top, where, x.argmax(-1), x.argmin(1, keepdim=True), x.max(-1).values


class Resample(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.interpolate(x, scale_factor=2, mode="nearest"), F.interpolate(x, size=(7, 9), mode="bilinear"),
                F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
                F.interpolate(x, size=(3, 3), mode="bicubic"), F.interpolate(x.flatten(2), size=11, mode="linear"))


class Pads(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.pad(x, (1, 2)), F.pad(x, (1, 1, 2, 0), value=-1.0), F.pad(x, (2, 2, 1, 1), mode="reflect"),
                F.pad(x, (1, 2, 3, 0), mode="replicate"), F.pad(x, (2, 1, 1, 1), mode="circular"), F.pad(x, (-1, 0)))


class ComplexFFT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.fft.fft2(x)
        z = z * torch.exp(1j * torch.angle(z)) / (z.abs() + 1)
        back = torch.fft.ifft2(z).real
        spectrum = torch.fft.fftshift(torch.fft.rfft(x, dim=-1), dim=-1)
        return self.proj(back), torch.view_as_real(spectrum)


# -- whole small networks -------------------------------------------------------------------------------------------
class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inc, self.down1, self.down2 = DoubleConv(3, 8), DoubleConv(8, 16), DoubleConv(16, 32)
        self.up1, self.conv1 = nn.ConvTranspose2d(32, 16, 2, stride=2), DoubleConv(32, 16)
        self.up2, self.conv2 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), DoubleConv(24, 8)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(F.max_pool2d(x1, 2))
        x3 = self.down2(F.max_pool2d(x2, 2))
        y = self.conv1(torch.cat([x2, self.up1(x3)], dim=1))
        y = self.conv2(torch.cat([self.up2(y), x1], dim=1))
        out: torch.Tensor = self.out(y)
        return out


class ResBlock(nn.Module):
    def __init__(self, cin: int = 8, cout: int = 16, stride: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y += self.shortcut(x)
        return F.relu(y)


class ResNetTiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(ResBlock(8, 16), ResBlock(16, 16, 1))
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x))
        out: torch.Tensor = self.head(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))
        return out


class ViTAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        out: torch.Tensor = self.proj(x)
        return out


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), ViTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, dim: int = M, patch: int = 4, image: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(ViTBlock(dim, 4) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        out: torch.Tensor = self.head(self.norm(x)[:, 0])
        return out


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.tokens = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens))
        self.channels = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channels(self.norm2(x))


class Mixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, M, 4, 4)
        self.blocks = nn.Sequential(*(MixerBlock(16, M) for _ in range(2)))
        self.head = nn.Linear(M, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x).flatten(2).transpose(1, 2))
        out: torch.Tensor = self.head(x.mean(dim=1))
        return out


class MessagePassing(nn.Module):
    """One graph-network layer: messages along edges, summed into the receiving nodes with index_add."""

    def __init__(self) -> None:
        super().__init__()
        self.message, self.update = nn.Linear(2 * M, M), nn.GRUCell(M, M)

    def forward(self, nodes: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        src, dst = edges[0], edges[1]
        messages = F.relu(self.message(torch.cat([nodes[src], nodes[dst]], dim=-1)))
        incoming = torch.zeros_like(nodes).index_add(0, dst, messages)
        degree = torch.zeros(nodes.shape[0]).index_add_(0, dst, torch.ones(dst.shape[0])).clamp(min=1)
        out: torch.Tensor = self.update(incoming / degree[:, None], nodes)
        return out


def _graph(g: torch.Generator) -> dict[str, Any]:
    return {"nodes": torch.randn(7, M, generator=g), "edges": torch.randint(0, 7, (2, 12), generator=g)}


# -- Python-level features ------------------------------------------------------------------------------------------
class Swish(torch.autograd.Function):
    """``x * sigmoid(x)`` with its true gradient written by hand (``tests/test_trace_functions.py`` proves it too)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * (s + x * s * (1 - s))


class CustomFunction(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = Swish.apply(self.fc(x))
        return out


class Checkpointed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(M, 32), nn.Linear(32, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        y = checkpoint(lambda t: self.b(F.gelu(self.a(t))), x, use_reentrant=False)
        out: torch.Tensor = x + y
        return out


class NestedOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(M, 8), nn.Linear(M, 4)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        h = self.a(x)
        return {"logits": self.b(x), "hidden": (h, [h.relu(), {"deep": h.sum(-1)}])}


class Flags(nn.Module):
    """Non-tensor arguments: a bool flag, an int, a float, None."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None, residual: bool = True, repeat: int = 2,
                scale: float = 0.5) -> torch.Tensor:
        y = x
        for _ in range(repeat):
            y = self.fc(y) * scale
        if residual:
            y = y + x
        if extra is not None:
            y = y + extra
        return y


def _flags(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, M, generator=g), "extra": None, "residual": True, "repeat": 3, "scale": 0.25}


class IntBool(nn.Module):
    """Integer and boolean inputs: token ids, an integer count per row, a keep mask."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, M)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.emb(ids)
        valid = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
        h = h * (valid & keep).unsqueeze(-1)
        pooled = h.sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        return pooled, (ids * keep).sum(-1)


def _intbool(g: torch.Generator) -> dict[str, Any]:
    return {"ids": torch.randint(0, 20, (B, T), generator=g), "lengths": torch.randint(1, T + 1, (B,), generator=g),
            "keep": torch.rand(B, T, generator=g) > 0.2}


class Buffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.randn(M))
        self.register_buffer("std", torch.rand(M) + 0.5)
        self.register_buffer("table", torch.randn(T, M), persistent=False)
        self.fc = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc((x - self.mean) / self.std + self.table[: x.shape[1]])
        return out


class Tied(nn.Module):
    """A language model whose output layer is its embedding table (tied), and a layer applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, M)
        self.mix = nn.Linear(M, M)
        self.head = nn.Linear(M, 20, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        h = torch.tanh(self.mix(torch.tanh(self.mix(h))))  # the same weights twice
        out: torch.Tensor = self.head(h)
        return out


class ReusedWeight(nn.Module):
    """One parameter used twice: as a linear map and its transpose (an autoencoder), and in F.linear."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, M) * 0.3)
        self.bias = nn.Parameter(torch.randn(M))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = torch.relu(F.linear(x, self.w))
        return code @ self.w + self.bias


class InPlaceViews(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        y[:, :4].mul_(2.0)
        y[..., -1] = 0.0
        head = y.narrow(2, 4, 4)
        head.add_(1.0).relu_()
        y.transpose(0, 1)[0].zero_()
        y.clamp_(-3, 3)
        return y


class ShapeArithmetic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, m = x.shape
        half = x.shape[1] // 2
        y = self.fc(x).view(b, t, 4, m // 4).transpose(1, 2).reshape(b * 4, t, -1)
        y = y[:, :half] * (m ** -0.5) + y[:, t - half:] / (t + 1)
        out: torch.Tensor = y.reshape(b, 4, half, m // 4).sum(1) * x.size(-1)
        return out


class PythonLoop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(M, M) for _ in range(3))
        self.shared = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(len(self.layers)):
            x = x + torch.tanh(self.layers[i](x)) * (i + 1)
        for _ in range(2):
            x = torch.relu(self.shared(x))
        return x


class Float64(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(M, 32), nn.LayerNorm(32), nn.SiLU(), nn.Linear(32, 4)).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x).softmax(-1)
        return out


class DataDependent(nn.Module):
    """A branch on the input's values: refused by design (``ncd.TraceError`` naming this line)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # both example inputs take this branch; another input raises ncd.errors.RunError (a guard)
            return x * 2
        return x - 1


class DataDependentSize(nn.Module):
    """A size read from the input's values: refused by design (``ncd.TraceError`` naming this line)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.abs().sum().item()) % 3 + 1
        return x[:, :n] * 2


class Elementwise(nn.Module):
    """Activations and binary functions users write, reductions, and shape plumbing."""

    def __init__(self) -> None:
        super().__init__()
        self.prelu, self.glu, self.bil = nn.PReLU(M), nn.GLU(-1), nn.Bilinear(M, 8, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        acts = F.softplus(x) + F.hardswish(x) + F.elu(x) + F.leaky_relu(x, 0.2) + F.mish(x) + torch.erf(x) \
            + F.logsigmoid(x) + self.prelu(x.transpose(1, 2)).transpose(1, 2) + F.selu(x) + x.sign() * x.abs().sqrt()
        pair = torch.maximum(x, x.flip(-1)) - torch.minimum(x, 0.5 * x) + torch.lerp(x, x.tanh(), 0.3) \
            + torch.addcmul(x, x, x, value=0.1) + x.clamp(min=-0.5) + torch.atan2(x, x.roll(1, -1))
        red = torch.stack([x.var(-1), x.std(1).mean(-1, keepdim=True).expand(-1, T), x.logsumexp(-1),
                           x.amax(-1), x.norm(dim=-1), x.prod(-1)], dim=-1)
        sim = F.cosine_similarity(x, x.roll(1, 1), dim=-1) + F.normalize(x, dim=-1).sum(-1)
        a, b = x.split([10, 6], dim=-1)
        parts = torch.cat([b, a[..., :3].repeat(1, 1, 2), x.mT.mT[..., :1].repeat_interleave(2, dim=-1)], -1)
        return acts, pair, red, sim, self.glu(x), self.bil(x, y), parts, F.log_softmax(x, -1) + x.tril()


def _elementwise(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, T, M, generator=g), "y": torch.randn(B, T, 8, generator=g)}


class Indexing(nn.Module):
    """Advanced indexing with tensors and lists, one-hot codes, boolean reductions, integer arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(10, M))

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows = self.table[ids]  # b t m
        cols = x[:, [0, 2, 3]]
        picked = x[torch.arange(x.shape[0]), ids[:, 0] % x.shape[1]]
        code = F.one_hot(ids, 10).float() @ self.table
        flags = (ids > 4).any(-1, keepdim=True) & (ids < 8).all(-1, keepdim=True)
        arith = torch.bitwise_and(ids, 3) + ids.floor_divide(3) - torch.remainder(ids, 4) + (ids << 1)
        return rows + code, cols, picked, flags, arith, torch.diagonal(x[:, :T, :T], dim1=-2, dim2=-1)


def _indexing(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, T, M, generator=g), "ids": torch.randint(0, 10, (B, T), generator=g)}


class Odd(nn.Module):
    """Edge cases of the interface: an input returned as it is, an output twice, a parameter as an output, a list of
    input tensors, a detached branch, no_grad inside the forward, an input read only for its shape."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.scale = nn.Linear(M, M), nn.Parameter(torch.randn(M))

    def forward(self, xs: list[torch.Tensor], shape_only: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, b = xs
        y = self.fc(a + b)
        with torch.no_grad():
            z = y.detach() * 2
        pos = torch.arange(shape_only.shape[-1], dtype=torch.float32)
        return a, y, y, self.scale, z + pos[: z.shape[-1]].sum(), y.new_zeros(shape_only.shape[0])


def _odd(g: torch.Generator) -> dict[str, Any]:
    return {"xs": [torch.randn(B, M, generator=g), torch.randn(B, M, generator=g)],
            "shape_only": torch.randn(3, 5, generator=g)}


class Nn(nn.Module):
    """nn layers a user reaches for: RMSNorm, LocalResponseNorm, Flatten/Unflatten, Upsample, softmax over channels."""

    def __init__(self) -> None:
        super().__init__()
        self.rms = nn.RMSNorm(6)
        self.lrn = nn.LocalResponseNorm(3)
        self.flat, self.unflat = nn.Flatten(1), nn.Unflatten(1, (4, 30))
        self.up = nn.Upsample(scale_factor=2)
        self.ident = nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.lrn(self.rms(x))
        return self.unflat(self.flat(self.ident(y))), self.up(y), nn.Softmax2d()(y), F.softmin(y, 1)


class Losses(nn.Module):
    """A model returning its losses against integer targets passed in."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, 5)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.fc(x)
        return (F.cross_entropy(logits, target), F.nll_loss(F.log_softmax(logits, -1), target, reduction="none"),
                F.mse_loss(logits, torch.zeros_like(logits)), F.binary_cross_entropy_with_logits(logits, logits.sigmoid()))


class SameTensorTwice(nn.Module):
    """Called with one tensor as two arguments (``model(x, x)``): the lowered module takes two inputs all the same."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(M, M), nn.Linear(M, M)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = (self.q(a) @ self.k(b).transpose(-1, -2)).softmax(-1) @ b
        return out


def _same(g: torch.Generator) -> dict[str, Any]:
    x = torch.randn(B, T, M, generator=g)
    return {"a": x, "b": x}


class Parametrized(nn.Module):
    """Weights computed from parameters on every call: weight norm (new and old API) and spectral norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(8, 8, 3, padding=1))
        self.old = nn.utils.weight_norm(nn.Conv1d(8, 8, 1))
        self.fc = nn.utils.parametrizations.spectral_norm(nn.Linear(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.old(self.conv(x)).transpose(1, 2))
        return out


class CellLoop(nn.Module):
    """A recurrence written with cells in a Python loop over the positions."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.gru = nn.LSTMCell(M, 12), nn.GRUCell(12, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = g = x.new_zeros(x.shape[0], 12)
        outs = []
        for t in range(x.shape[1]):
            h, c = self.lstm(x[:, t], (h, c))
            g = self.gru(h, g)
            outs.append(g)
        return torch.stack(outs, 1)


class SDPA(nn.Module):
    """F.scaled_dot_product_attention called directly: causal, with a boolean mask and a scale, with a float mask."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        bias = torch.zeros(mask.shape).masked_fill(~mask, -1e4)
        return (F.scaled_dot_product_attention(q, k, v, is_causal=True),
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3),
                F.scaled_dot_product_attention(q, k, v, attn_mask=bias))


def _sdpa(g: torch.Generator) -> dict[str, Any]:
    mask = torch.rand(T, T, generator=g) > 0.3
    mask[:, 0] = True
    return {**{n: torch.randn(B, 2, T, 8, generator=g) for n in "qkv"}, "mask": mask}


class Casts(nn.Module):
    """Casts to other element types in the middle of the model and back."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x).to(torch.bfloat16).float() + x.double().sum(-1, keepdim=True).float()
        return y * (x > 0).long() + x.half().float()


def zoo() -> list[tuple[str, type[nn.Module], Make]]:
    """The zoo: (name, model class, inputs from a generator)."""
    img = _x(B, 4, 8, 8)
    return [
        ("encoder_padding_mask", EncoderPadded, _padded),
        ("encoder_causal", EncoderCausal, _x(B, T, M)),
        ("decoder_masks", Decoder, _decoder),
        ("mha_need_weights", MHAWeights, _x(T, B, M)),
        ("mha_cross_kdim_vdim", MHACross, _cross),
        ("mha_causal_fast", MHANoWeights, _x(B, T, M)),
        ("bilstm_h0", BiLSTM, _bilstm),
        ("bigru_h0", BiGRU, lambda g: {"x": torch.randn(T, B, M, generator=g), "h0": torch.randn(4, B, 12, generator=g)}),
        ("birnn_relu", ElmanRNN, _x(B, T, M)),
        ("conv1d", Convs1d, _x(B, 8, 11)),
        ("conv2d", Convs2d, _x(B, 4, 9, 7)),
        ("conv3d", Conv3d, _x(B, 3, 4, 6, 6)),
        ("conv_transpose", Transposed, _transposed),
        ("pixel_shuffle", Shuffle, _x(B, 4, 4, 4)),
        ("unfold_fold", UnfoldFold, _x(B, 3, 8, 8)),
        ("pooling", Pools, img),
        ("norms", Norms, _x(B, 8, 5, 6)),
        ("embeddings", Embeddings, _ids_pad),
        ("einsum", EinsumMany, _einsum),
        ("where_gather_scatter", Selecting, _selecting),
        ("cumulative", Scans, _x(B, 7)),
        ("sort_topk", Ranking, _x(B, 3, 9)),
        ("interpolate", Resample, img),
        ("pad_modes", Pads, _x(B, 3, 5, 6)),
        ("complex_fft", ComplexFFT, _x(B, T, M)),
        ("unet", UNet, _x(B, 3, 16, 16)),
        ("resnet", ResNetTiny, _x(B, 3, 8, 8)),
        ("vit", ViT, _x(B, 3, 16, 16)),
        ("mlp_mixer", Mixer, _x(B, 3, 16, 16)),
        ("gnn_index_add", MessagePassing, _graph),
        ("autograd_function", CustomFunction, _x(B, T, M)),
        ("checkpoint", Checkpointed, _x(B, T, M)),
        ("nested_outputs", NestedOutputs, _x(B, T, M)),
        ("nontensor_args", Flags, _flags),
        ("int_bool_inputs", IntBool, _intbool),
        ("buffers", Buffers, _x(B, T, M)),
        ("tied_weights", Tied, _ids(B, T)),
        ("weight_reused", ReusedWeight, _x(B, T, M)),
        ("inplace_views", InPlaceViews, _x(B, T, M)),
        ("shape_arithmetic", ShapeArithmetic, _x(B, T, M)),
        ("python_loop", PythonLoop, _x(B, T, M)),
        ("float64", Float64, _x(B, T, M, dtype=torch.float64)),
        ("losses", Losses, lambda g: {"x": torch.randn(4, M, generator=g), "target": torch.randint(0, 5, (4,), generator=g)}),
        ("same_tensor_twice", SameTensorTwice, _same),
        ("parametrized_weights", Parametrized, _x(B, 8, T)),
        ("cell_loop", CellLoop, _x(B, T, M)),
        ("sdpa", SDPA, _sdpa),
        ("casts", Casts, _x(B, T, M)),
        ("data_dependent", DataDependent, lambda g: {"x": torch.randn(B, M, generator=g).abs()}),
        ("data_dependent_size", DataDependentSize, _x(B, M)),
        ("elementwise", Elementwise, _elementwise),
        ("indexing", Indexing, _indexing),
        ("odd_interface", Odd, _odd),
        ("nn_layers", Nn, _x(B, 4, 5, 6)),
    ] + _users()


def _users() -> list[tuple[str, type[nn.Module], Make]]:
    """The second part of the zoo (``benchmarks/corpus_torch_users.py``, beside this file)."""
    import corpus_torch_users  # on the path whenever this module is: the corpus puts their folder there

    users: list[tuple[str, type[nn.Module], Make]] = corpus_torch_users.zoo()
    return users
