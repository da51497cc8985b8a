"""Plain PyTorch models from the hunts for silently wrong diagrams (joined to :func:`corpus_torch_styles.zoo`).

Each was written to break ``ncd.trace`` where users' models differ from the corpus: weights used through
``torch.func.functional_call`` and weight norm, blocks picked from a ``ModuleDict`` by name, einops written by hand,
channels-last and non-contiguous inputs, a ``@dataclass`` output, int8/int16/bool inputs, numbers computed from the
input's shape, ``torch.where``/``masked_fill``/``clamp`` with 0-d tensors, integer arithmetic, boolean attention masks
built in the forward, a tensor-subclass input, writes in place through views (a diagonal, a column, a slice), bfloat16
attention, shifted sequences, parameters written in place through an alias (``max_norm``, ``.data``), losses on
labels with ignored entries, ``nn.TransformerEncoder``'s nested-tensor path and positions read from inputs (negative,
or past the axis).  Each was once a crash or silently wrong, or is the case next to one; ``tests/test_trace_hunt.py``
checks every entry against the model at the traced sizes and at another batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

B, T, M = 2, 6, 16

Make = Callable[[torch.Generator], dict[str, Any]]


def _x(*shape: int, dtype: torch.dtype = torch.float32) -> Make:
    return lambda g: {"x": torch.randn(*shape, generator=g).to(dtype)}


class FunctionalCall(nn.Module):
    """``torch.func.functional_call`` of an inner network with one weight replaced by a computed one."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(M, 32), nn.GELU(), nn.Linear(32, M))
        self.delta = nn.Parameter(0.1 * torch.randn(32, M))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = dict(self.inner.named_parameters())
        params["0.weight"] = params["0.weight"] + self.delta
        out: torch.Tensor = torch.func.functional_call(self.inner, params, (x,))
        return out


class WeightNorm(nn.Module):
    """Weight-normalised linear and convolution layers (``parametrizations.weight_norm``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = parametrizations.weight_norm(nn.Linear(M, 32))
        self.c = parametrizations.weight_norm(nn.Conv1d(M, M, 3, padding=1), dim=0)
        self.b = nn.Linear(32, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c(x.transpose(1, 2)).transpose(1, 2)
        out: torch.Tensor = self.b(torch.tanh(self.a(h)))
        return out


class DictDispatch(nn.Module):
    """Blocks of a ``ModuleDict`` called by name in a fixed order, one of them twice."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict({"mlp": nn.Sequential(nn.Linear(M, M), nn.ReLU()), "norm": nn.LayerNorm(M),
                                     "proj": nn.Linear(M, M)})
        self.order = ["norm", "mlp", "proj", "norm"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in self.order:
            x = self.blocks[k](x) + (x if k == "mlp" else 0)
        return x


class HandEinops(nn.Module):
    """``b t (h d) -> b h t d`` by reshape and permute, attention scaled by ``1/sqrt(d)`` from the shape, and back."""

    def __init__(self, h: int = 4) -> None:
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(M, 3 * M)
        self.o = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q, k, v = (z.reshape(b, t, self.h, -1).permute(0, 2, 1, 3) for z in self.qkv(x).chunk(3, dim=-1))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        y = (a @ v).permute(0, 2, 1, 3).flatten(2)
        return self.o(y), y.transpose(1, 2).mean(-1)


class ConvNet(nn.Module):
    """Convolutions and a batch norm, run on a channels-last input."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.bn(self.c1(x))))
        out: torch.Tensor = self.head(h.mean((2, 3)))
        return out


class CumulativeFlip(nn.Module):
    """A cumulative sum and a flip of an input that is a transposed or strided view (not contiguous)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).cumsum(1) + x.flip(1)


@dataclasses.dataclass
class Out:
    logits: torch.Tensor
    hidden: torch.Tensor


class DataclassOut(nn.Module):
    """Returns a plain ``@dataclass`` (once drawn with no outputs at all)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(M, M)
        self.b = nn.Linear(M, 3)

    def forward(self, x: torch.Tensor) -> Out:
        h = torch.tanh(self.a(x))
        return Out(self.b(h), h)


class IntInputs(nn.Module):
    """int8 ids, a boolean mask and int16 numbers as inputs (int8 ids were refused by the lowered module)."""

    def __init__(self) -> None:
        super().__init__()
        self.e = nn.Embedding(50, M)
        self.a = nn.Linear(M, M)

    def forward(self, ids: torch.Tensor, flags: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
        h = self.e(ids.long()) * flags[..., None]
        out: torch.Tensor = self.a(h) + small.float()[..., None]
        return out


def _ints(g: torch.Generator) -> dict[str, Any]:
    return {"ids": torch.randint(0, 50, (B, T), generator=g).to(torch.int8), "flags": torch.rand(B, T, generator=g) > 0.3,
            "small": torch.randint(-5, 5, (B, T), generator=g).to(torch.int16)}


class ShapeScaled(nn.Module):
    """Numbers from the shape ncd follows: a batch mean by hand, ``1/sqrt(t)`` pooling, a temperature ``m ** -0.5``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, m = x.shape
        h = self.a(x)
        center = h - h.sum(0, keepdim=True) / b
        pooled = h.sum(1) * t ** -0.5
        return center, pooled, torch.softmax((h @ h.transpose(1, 2)) * (m ** -0.5), -1)


class ShapeFloatFirst(nn.Module):
    """Numbers from the shape ncd cannot follow (a float written first): lowered at another batch it is refused."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return self.a(x).sum(1) * (1.0 / t) + 0.5 * b


class ScalarTensors(nn.Module):
    """``torch.where``, ``masked_fill`` and ``clamp`` with 0-d tensors, a learned temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)
        self.temp = nn.Parameter(torch.tensor(0.7))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.where(mask[..., None], self.fc(x), torch.tensor(-1.5))
        y = y.masked_fill(y > torch.tensor(2.0), torch.tensor(0.25))
        return (torch.where(y > 0, y / self.temp, torch.zeros((), dtype=y.dtype)),
                torch.clamp(y, min=torch.tensor(-1.0), max=torch.tensor(1.0)))


def _masked(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, T, M, generator=g), "mask": torch.rand(B, T, generator=g) > 0.3}


class IntArithmetic(nn.Module):
    """Integer arithmetic on ids: modulo, floor division, bit operations, a running count, a mean by ``//``."""

    def __init__(self) -> None:
        super().__init__()
        self.e = nn.Embedding(64, M)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = (ids * 3 + 7) % 64
        b = torch.div(ids, 2, rounding_mode="floor") + (ids // 3)
        c = (ids & 7) | ((ids >> 1) ^ 5)
        pos = torch.cumsum((ids > 10).long(), dim=1) - 1
        return self.e(a) + self.e(b.clamp(max=63)) + self.e(c), pos, ids.sum(1) // ids.shape[1]


class BoolMasks(nn.Module):
    """Attention masked by a padding mask and a causal mask combined with ``&``, rows of no key made 0."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(M, M)
        self.k = nn.Linear(M, M)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        att = self.q(x) @ self.k(x).transpose(1, 2) / 4.0
        pair = keep[:, :, None] & keep[:, None, :]
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
        att = torch.nan_to_num(att.masked_fill(~(pair & causal), float("-inf")).softmax(-1))
        return att @ x, (~keep).any(-1), keep.logical_xor(keep.roll(1, 1))


def _keep(g: torch.Generator) -> dict[str, Any]:
    return {"x": torch.randn(B, T, M, generator=g), "keep": torch.rand(B, T, generator=g) > 0.3}


class Marked(torch.Tensor):
    """A tensor subclass that adds no behaviour (a user's marker type)."""


class SubclassInput(nn.Module):
    """Run on a tensor-subclass input (once drawn as a constant: the lowered module ignored its input)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.fc(x)) + x


class ViewWrites(nn.Module):
    """Writes in place through views: a column scaled, a transposed slice, a reshaped view assigned, a diagonal zeroed
    and a slice's sigmoid (the diagonal sent the recording to ``torch.export``, whose writes were lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x).clone()
        y[:, 0].mul_(2.0)
        y.transpose(1, 2)[:, :4].add_(1.0)
        z = y.view(y.shape[0], y.shape[1], 4, 4)
        z[..., 0] = z[..., 1] * 0.5
        y.diagonal(dim1=1, dim2=2).zero_()
        y[:, -1:].sigmoid_()
        return y


class HalfAttention(nn.Module):
    """SiLU, layer norm and causal ``scaled_dot_product_attention``, built in bfloat16."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)
        self.n = nn.LayerNorm(M)
        self.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.n(F.silu(self.fc(x)))[:, None]
        return F.scaled_dot_product_attention(h, h, h, is_causal=True)[:, 0]


class Shifted(nn.Module):
    """A sequence padded by one step and added to its shift, and a sliding mean by ``unfold``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.pad(self.fc(x), (0, 0, 1, 0))
        return y[:, :-1] + y[:, 1:], y.unfold(1, 2, 1).mean(-1)


class RenormedEmbedding(nn.Module):
    """A table looked up with ``max_norm`` (``nn.Embedding`` renorms the rows it reads, in place, through
    ``weight.detach()``), and a weight clipped in place through ``.data`` (as WGAN's critic).  The renorm was dropped
    once: on a fresh input the lowered module read rows the model renorms unrenormed.  (Were the table read whole too,
    a tied output layer, each call would read the rows every earlier call renormed: state no diagram holds.)"""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, M, max_norm=1.0)
        self.fc = nn.Linear(M, M)
        self.out = nn.Linear(M, 40, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.fc.weight.data.clamp_(-0.2, 0.2)
        out: torch.Tensor = self.out(torch.tanh(self.fc(self.emb(ids))))
        return out


class DefaultRMSNorm(nn.Module):
    """``nn.RMSNorm`` with its default ``eps=None`` (ATen's: the compute type's machine epsilon), with and without a
    weight, and ``F.rms_norm`` likewise (once opaque boxes: the rule declined a norm without an explicit eps)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)
        self.norm = nn.RMSNorm(M)
        self.bare = nn.RMSNorm(M, elementwise_affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.fc(x))
        out: torch.Tensor = self.bare(h) + F.rms_norm(h * 1e-3, (M,))
        return out


class IgnoredLabels(nn.Module):
    """A token classifier's loss on labels with ``-100`` (ignored) entries and a QA head's loss on start positions clamped
    to the sequence length, ``ignore_index=t`` (as T5's): ignored rows count for nothing however many there are.  Once
    the ignore mask was drawn only if the traced labels held an ignored class in range: labels traced without ``-100``
    gave a lowered module reading other entries on a fresh input with them (mt5/umt5/t5 QA: diff 0.01-0.15)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, M)
        self.tags = nn.Linear(M, 5)
        self.qa = nn.Linear(M, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.fc(x))
        tags = F.cross_entropy(self.tags(h).flatten(0, 1), labels.flatten())
        logits = self.qa(h).squeeze(-1)
        t = logits.size(1)
        return tags, F.cross_entropy(logits, start.clamp(0, t), ignore_index=t, reduction="sum")


def _labels(g: torch.Generator) -> dict[str, Any]:
    labels = torch.randint(0, 5, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < 0.3] = -100
    return {"x": torch.randn(B, T, M, generator=g), "labels": labels, "start": torch.randint(0, 2 * T, (B,), generator=g)}


class NestedPadding(nn.Module):
    """``nn.TransformerEncoder`` (nested tensors on, a final norm) given a ``src_key_padding_mask`` in eval mode: without
    gradients torch packs the unpadded rows into a nested tensor and pads the result back with zeros, so the padded
    rows enter the norm as ``0``.  The recorder took the other path (torch's fast path off): the padded rows differed
    (diff 2.3), silently."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(M, 4, 2 * M, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(M), enable_nested_tensor=True)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(x, src_key_padding_mask=padding)
        return out


def _padding(g: torch.Generator) -> dict[str, Any]:
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    return {"x": torch.randn(B, T, M, generator=g), "padding": torch.arange(T) >= lengths[:, None]}


class PositionReads(nn.Module):
    """Entries read at positions given as inputs: an advanced index on the positions axis (a negative position counts
    from the end), on a diagonal (``x[arange(b), last]``), ``index_select`` and ``gather`` (both raise on a negative
    position) and a cross-entropy on labels with ``-100``.  Once the lowered gather was ``take_along_dim``, which checks
    no bounds: a position past the axis (gather at 7 of 6, a target 5 of 5, a target -1) read other memory where the
    model raises."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(M, 5)

    def forward(self, x: torch.Tensor, last: torch.Tensor, keep: torch.Tensor, chosen: torch.Tensor, picks: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = x[torch.arange(x.shape[0]), last]  # b m: the row at each batch's last position (-1: the end)
        kept = x[:, keep] + x.index_select(1, chosen)  # b k m
        scores = self.fc(pooled)
        return pooled, kept, x.gather(1, picks), F.cross_entropy(scores, labels)


def _positions(g: torch.Generator) -> dict[str, Any]:
    labels = torch.randint(0, 5, (B,), generator=g)
    labels[0] = -100
    return {"x": torch.randn(B, T, M, generator=g), "last": torch.randint(-T, T, (B,), generator=g),
            "keep": torch.randint(-T, T, (3,), generator=g), "chosen": torch.randint(0, T, (3,), generator=g),
            "picks": torch.randint(0, T, (B, 2, M), generator=g),
            "labels": labels}


def zoo() -> list[tuple[str, type[nn.Module], Make]]:
    """These models: (name, model class, inputs from a generator)."""
    return [
        ("functional_call", FunctionalCall, _x(B, T, M)),
        ("weight_norm", WeightNorm, _x(B, T, M)),
        ("moduledict_by_name", DictDispatch, _x(B, T, M)),
        ("hand_einops", HandEinops, _x(B, T, M)),
        ("channels_last", ConvNet,
         lambda g: {"x": torch.randn(B, 3, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)}),
        ("noncontiguous_input", CumulativeFlip, lambda g: {"x": torch.randn(B, M, T, generator=g).transpose(1, 2)}),
        ("strided_input", CumulativeFlip, lambda g: {"x": torch.randn(B, 2 * T, M, generator=g)[:, ::2]}),
        ("dataclass_out", DataclassOut, _x(B, T, M)),
        ("int8_bool_int16", IntInputs, _ints),
        ("shape_scaled", ShapeScaled, _x(B, T, M)),
        ("shape_float_first", ShapeFloatFirst, _x(B, T, M)),
        ("scalar_tensor_where", ScalarTensors, _masked),
        ("int_bits_arithmetic", IntArithmetic, lambda g: {"ids": torch.randint(0, 64, (B, T), generator=g)}),
        ("bool_masks", BoolMasks, _keep),
        ("subclass_input", SubclassInput, lambda g: {"x": torch.randn(B, T, M, generator=g).as_subclass(Marked)}),
        ("view_writes", ViewWrites, _x(B, T, M)),
        ("bfloat16_attention", HalfAttention, _x(B, T, M, dtype=torch.bfloat16)),
        ("shifted", Shifted, _x(B, T, M)),
        ("rms_norm_default_eps", DefaultRMSNorm, _x(B, T, M)),
        ("embedding_max_norm", RenormedEmbedding, lambda g: {"ids": torch.randint(0, 40, (B, T), generator=g)}),
        ("ignored_labels", IgnoredLabels, _labels),
        ("nested_padding", NestedPadding, _padding),
        ("position_reads", PositionReads, _positions),
    ]
