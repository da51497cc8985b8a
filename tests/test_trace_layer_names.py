"""Axis names by role in repeated layers: a layer's names do not depend on what an earlier layer named.

* Heads merged back into the config's width ``m`` at the end of layer 0 (``b t h n -> b t m``, the value heads'
  features named ``n``) are not a merge that layer 1's query split undoes: its queries are ``h k`` as layer 0's,
  so the two layers are one block (drawn once), where layer 1's head features were ``n`` before.
* A causal convolution of a padded sequence (``t`` padded to ``t2``, convolved back to ``t`` positions) added to
  the input keeps the sequence's name ``t``: the output is ``b t m``, not ``b t2:t m``.
* A router's zeros scattered into at its tokens' top-k positions are named like the tokens, not by their size alone:
  a projection as wide as the traced tokens (16 = b*t) is not drawn as ``b*t``.
* Parts a layer merges (a width's halves written into zeros, then flattened) before it cuts another wire of that
  width into parts of the same names keep the name their first merge gave them: layer 1's merge is not named after
  the wire layer 0 cut later (longformer/led's chunks of 256 merged into the 512 positions).
* A series of one channel (``b t 1``) centred by its mean over time (``sum(1, keepdim=True)``) keeps its channel's
  name ``1``: the kept wire is not primed in favour of the reduced one, so layer 0 reads the channel as layer 1 does
  (patchtst's two encoder layers were two blocks, ``1ʹ`` in and ``1`` out of layer 0).
* Patches of as many values as the config's width, mapped onto it (PatchTSMixer's patcher), are the width ``m``; a
  layer mapping its patches ``t`` to a hidden width and back, then adding them (``y + residual``), gives back ``t``,
  not the size's name of the map's output: the first layer's wires are the second's, and the two are one block.

Each diagram is compared with the model it was traced from, at the traced sizes and at others."""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.ir.diagram import Block, Repeat


class _MultiQuery(nn.Module):
    """Attention with one key/value head as wide as a query head (its projections named by size, not as heads)."""

    def __init__(self, m: int = 32, h: int = 4) -> None:
        super().__init__()
        self.h, self.k = h, m // h
        self.q_proj, self.o_proj = nn.Linear(m, m), nn.Linear(m, m)
        self.k_proj, self.v_proj = nn.Linear(m, self.k), nn.Linear(m, self.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, m = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.k).transpose(1, 2)
        k = self.k_proj(x).view(b, t, 1, self.k).transpose(1, 2)
        v = self.v_proj(x).view(b, t, 1, self.k).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) / self.k ** 0.5, -1) @ v
        return x + self.o_proj(a.transpose(1, 2).reshape(b, t, m))


class _Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = types.SimpleNamespace(hidden_size=32, num_attention_heads=4, head_dim=8)
        self.layers = nn.ModuleList([_MultiQuery(), _MultiQuery()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class _CausalConv(nn.Module):
    def __init__(self, m: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv1d(m, m, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x.transpose(1, 2), (2, 0))).transpose(1, 2) + x


def _views(d: ncd.TracedDiagram) -> list[str]:
    return [str(n.cod) for n in d.walk() if type(n).__name__ == "Box" and str(n).startswith("<Box ▮")]


def _one_definition(d: ncd.TracedDiagram) -> bool:
    """Whether the two layers are drawn from one definition: a repetition, or two blocks with equal bodies."""
    blocks = [n for n in d.walk() if isinstance(n, Block) and n.name.startswith("layers.")]
    return any(isinstance(n, Repeat) for n in d.walk()) or blocks[0].body == blocks[1].body


def test_each_layers_queries_are_heads_and_head_features() -> None:
    torch.manual_seed(0)
    model, x = _Stack().eval(), torch.randn(2, 5, 32)
    with torch.no_grad():
        d: ncd.TracedDiagram = ncd.trace(model, x)
        assert _one_definition(d)
        queries = [v for v in _views(d) if v.endswith("h:4 k:8")]
        assert queries and all(v == "b t̅ h:4 k:8" for v in queries)
        assert not any(v.endswith("h:4 n:8") and v.startswith("b t̅") for v in _views(d))  # layer 1's queries before
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)
        y = torch.randn(3, 7, 32)
        torch.testing.assert_close(d.to_torch(b=3, t=7)(y), model(y), atol=1e-5, rtol=1e-5)


def test_a_causal_convolution_gives_back_the_sequence() -> None:
    torch.manual_seed(0)
    model, x = _CausalConv().eval(), torch.randn(2, 5, 8)
    with torch.no_grad():
        d: ncd.TracedDiagram = ncd.trace(model, x)
        assert str(d.cod) == str(d.dom) == "b t̅ m:8"
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)
        y = torch.randn(3, 9, 8)
        torch.testing.assert_close(d.to_torch(b=3, t=9)(y), model(y), atol=1e-5, rtol=1e-5)


class _Router(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k_proj, self.gate = nn.Linear(8, 16), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.gate(x).view(-1, 4)
        mask = torch.zeros_like(scores).scatter_(1, scores.topk(1, -1).indices, 1.0)
        return self.k_proj(x), (scores * mask).view(x.shape[0], x.shape[1], 4)


def test_a_width_as_large_as_the_tokens_is_not_the_tokens() -> None:
    torch.manual_seed(0)
    model, x = _Router().eval(), torch.randn(2, 8, 8)
    with torch.no_grad():
        d: ncd.TracedDiagram = ncd.trace(model, x)
        width = d.cod.segments[0].axes[-1]
        assert str(width.size) == "16"  # was b*t: the tokens flattened for the router (2 * 8) named like the width
        for inputs in (x, torch.randn(2, 8, 8)):
            for got, want in zip(d.to_torch()(inputs), model(inputs)):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


class _Halves(nn.Module):
    """A width's halves written into zeros and merged, then another wire of that width cut into halves."""

    def __init__(self, m: int = 32, w: int = 24) -> None:
        super().__init__()
        self.up, self.gate, self.down = nn.Linear(m, w), nn.Linear(m, w), nn.Linear(w, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        u = self.up(x)
        z = u.new_zeros(b, t, 2, u.shape[-1] // 2)
        z[:, :, 0] = u[..., : u.shape[-1] // 2].flip(-1)
        z[:, :, 1] = u[..., u.shape[-1] // 2:]
        merged = z.reshape(b, t, -1)  # merged first: the cut below comes after it
        g = self.gate(x).reshape(b, t, 2, -1).softmax(-1).reshape(b, t, -1)
        out: torch.Tensor = x + self.down(merged * g)
        return out


class _HalvesStack(_Stack):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Halves(), _Halves()])


def test_parts_merged_before_a_cut_keep_their_merges_name() -> None:
    torch.manual_seed(0)
    model, x = _HalvesStack().eval(), torch.randn(2, 5, 32)
    with torch.no_grad():
        d: ncd.TracedDiagram = ncd.trace(model, x)
        assert _one_definition(d)  # (layer 1's merge was named after the width layer 0 cut: two blocks)
        for inputs in (x, torch.randn(2, 5, 32)):  # (the zeros are made at the traced sizes: held there)
            torch.testing.assert_close(d.to_torch()(inputs), model(inputs), atol=1e-5, rtol=1e-5)


class _ChannelLayer(nn.Module):
    def __init__(self, m: int = 8) -> None:
        super().__init__()
        self.lin = nn.Linear(m, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, m = x.shape
        y = x.reshape(b * c, t, m)  # the channels joined to the batch, then given back
        return (y + torch.relu(self.lin(y))).reshape(b, c, t, m)


class _Centred(nn.Module):
    def __init__(self, m: int = 8) -> None:
        super().__init__()
        self.embed = nn.Linear(1, m)
        self.layers = nn.ModuleList([_ChannelLayer(m), _ChannelLayer(m)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.sum(1, keepdim=True) / x.shape[1]
        z = self.embed(x.transpose(1, 2).unsqueeze(-1))
        for layer in self.layers:
            z = layer(z)
        return z


def test_a_kept_channel_of_one_keeps_its_name_under_a_keepdim_reduction() -> None:
    torch.manual_seed(0)
    model, x = _Centred().eval(), torch.randn(2, 6, 1)
    with torch.no_grad():
        d: ncd.TracedDiagram = ncd.trace(model, x)
        assert _one_definition(d)  # (layer 0 read the channel as 1ʹ and gave it back as 1: two blocks)
        for inputs in (x, torch.randn(2, 6, 1)):
            torch.testing.assert_close(d.to_torch()(inputs), model(inputs))


class _MixerLayer(nn.Module):
    def __init__(self, n: int = 4, m: int = 8) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(m)
        self.up, self.down = nn.Linear(n, 2 * n), nn.Linear(2 * n, n)  # across the patches (hidden width 8 = m)
        self.ff_up, self.ff_down = nn.Linear(m, 2 * m), nn.Linear(2 * m, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        y = self.down(F.gelu(self.up(self.norm(x).transpose(-1, -2)))).transpose(-1, -2)
        x = y + residual
        return x + self.ff_down(F.gelu(self.ff_up(x)))


class _Patches(nn.Module):
    def __init__(self, m: int = 8) -> None:
        super().__init__()
        self.config = types.SimpleNamespace(d_model=m)
        self.patcher = nn.Linear(8, m)  # a patch's 8 values onto the width 8
        self.layers = nn.ModuleList([_MixerLayer(), _MixerLayer()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.patcher(x.transpose(1, 2).unfold(-1, 8, 8))
        for layer in self.layers:
            z = layer(z)
        return z


def test_patches_mixed_across_and_given_back_keep_their_names() -> None:
    torch.manual_seed(0)
    model, x = _Patches().eval(), torch.randn(2, 32, 1)
    with torch.no_grad():
        d: ncd.TracedDiagram = ncd.trace(model, x)
        assert _one_definition(d)  # (layer 0 read 't kt' and gave 'n kt': two blocks)
        torch.testing.assert_close(d.to_torch()(x), model(x))
