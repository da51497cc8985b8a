"""Rotary tables of a given frequency table (YaRN, LLaMA-3, Gemma 4's proportional rope: not ``base^(-2j/k)``): one
``ρ`` box carrying the frequencies when the tables are the model's own frequency buffer's, checked entry by entry; tables
of frequencies the model holds nowhere stay as recorded.  Each lowered module is compared with the model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.rotary import RotaryOp


def _ramped(k: int) -> torch.Tensor:
    """A YaRN-like table: the geometric frequencies, the slow half divided by 8 (not geometric as a whole)."""
    inv = 1.0 / (10000.0 ** (torch.arange(0, k, 2, dtype=torch.float32) / k))
    return torch.where(torch.arange(k // 2) >= k // 4, inv / 8, inv)


class GivenRope(nn.Module):
    """HF's rotary module and ``apply_rotary_pos_emb`` over four heads, the tables computed in the forward from
    ``inv_freq`` times ``factor`` (times ``scale``); ``decoy`` is another buffer of as many entries."""

    def __init__(self, k: int = 8, factor: float = 1.0, scale: float = 1.0) -> None:
        super().__init__()
        self.k, self.factor, self.scale = k, factor, scale
        self.q = nn.Linear(k * 4, k * 4)
        self.register_buffer("decoy", torch.linspace(0.1, 0.9, k // 2), persistent=False)
        self.register_buffer("inv_freq", _ramped(k), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 4, self.k).transpose(1, 2)
        with torch.no_grad():
            freqs = torch.arange(t)[:, None].float() * (self.inv_freq * self.factor)[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos() * self.scale, emb.sin() * self.scale
        half = self.k // 2
        rotated = torch.cat((-q[..., half:], q[..., :half]), dim=-1)
        out: torch.Tensor = q * cos + rotated * sin
        return out


def _trace(model: nn.Module, x: torch.Tensor) -> ncd.Diagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, x)


@pytest.mark.parametrize("scale", [1.0, 1.25])
def test_tables_of_the_models_frequency_buffer_are_one_rho(scale: float) -> None:
    # before, only geometric tables were one ρ: these were 7 recorded calls and two constant tables
    torch.manual_seed(0)
    model = GivenRope(scale=scale)
    x = torch.randn(2, 6, 32)
    d = _trace(model, x)
    rho = [b.prim for b in d.boxes() if isinstance(b.prim, RotaryOp)]
    assert len(rho) == 1 and rho[0].scale == pytest.approx(scale)
    assert rho[0].frequencies == tuple(model.inv_freq.tolist())
    fresh = torch.randn(2, 6, 32)
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh), rtol=1e-5, atol=1e-5)


def test_tables_of_frequencies_held_nowhere_stay_as_recorded() -> None:
    # the tables are inv_freq · 1.5: no buffer of the model holds those frequencies, and the decoy's are not them
    torch.manual_seed(0)
    model = GivenRope(factor=1.5)
    x = torch.randn(2, 6, 32)
    d = _trace(model, x)
    assert not any(isinstance(b.prim, RotaryOp) for b in d.boxes())
    fresh = torch.randn(2, 6, 32)
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh), rtol=1e-5, atol=1e-5)


def test_a_given_table_is_serialized_and_read_back() -> None:
    torch.manual_seed(0)
    model = GivenRope()
    d = _trace(model, torch.randn(2, 6, 32))
    back = ncd.load_json(d.to_json())
    assert [b.prim for b in back.boxes() if isinstance(b.prim, RotaryOp)] == \
        [b.prim for b in d.boxes() if isinstance(b.prim, RotaryOp)]
