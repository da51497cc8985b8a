"""Gated DeltaNet's L2 normalisation ``x * rsqrt(sum(x * x, -1, keepdim) + eps)`` (Qwen3.5 / Qwen3-Next / OLMo-Hybrid;
Kimi Linear's and Bailing's ``x / sqrt(…)``) is drawn as a weightless ``RMS`` box of ``eps / n`` and a ``*1/√n`` scale
(:func:`ncd.trace.idioms_norms.l2_norm`), not eleven boxes.  Each lowered module is compared with the model at other
sizes and on inputs far from the traced ones (tiny and huge rows, where ``eps`` matters or not), and its gradients
with autograd's through the model; forms that are not that normalisation keep their boxes and stay right."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncd


class QwenL2(nn.Module):
    """``l2norm`` as transformers' Qwen3.5 writes it, on a projection (queries of 4 heads of 16)."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.proj, self.eps = nn.Linear(8, 64), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x).unflatten(-1, (4, 16))
        return q * torch.rsqrt((q * q).sum(dim=-1, keepdim=True) + self.eps)


class KimiL2(QwenL2):
    """Kimi Linear's: the square root, then a division."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x).unflatten(-1, (4, 16))
        return q / torch.sqrt((q * q).sum(dim=-1, keepdim=True) + self.eps)


class OtherAxis(QwenL2):
    """Summed over the heads, not the last axis: not a normalisation of the last axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x).unflatten(-1, (4, 16))
        return q * torch.rsqrt((q * q).sum(dim=-2, keepdim=True) + self.eps)


class NormRead(QwenL2):
    """The sum of squares is read again (returned): its boxes stay."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.proj(x).unflatten(-1, (4, 16))
        total = (q * q).sum(dim=-1, keepdim=True)
        return q * torch.rsqrt(total + self.eps), total


def _ops(d: ncd.TracedDiagram) -> list[str]:
    return [b.prim.op for b in d.boxes()]


def _check(model: nn.Module, d: ncd.TracedDiagram, rows: int) -> None:
    """The lowered module against the model at ``rows`` tokens, on inputs of ordinary, tiny and huge scale (tiny rows:
    ``eps`` dominates the sum), and its input gradient against autograd's through the model."""
    lowered = d.to_torch(t=rows)
    gen = torch.Generator().manual_seed(rows)
    for scale in (1.0, 1e-4, 1e3):
        x = torch.randn(2, rows, 8, generator=gen) * scale
        got, want = lowered(x), model(x)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    x = torch.randn(2, rows, 8, generator=gen, requires_grad=True)
    out = lowered(x)
    (grad,) = torch.autograd.grad((out[0] if isinstance(out, tuple) else out).square().sum(), x)
    y = x.detach().requires_grad_()
    ref = model(y)
    (want,) = torch.autograd.grad((ref[0] if isinstance(ref, tuple) else ref).square().sum(), y)
    torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [QwenL2, KimiL2])
@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_an_l2_normalisation_is_an_rms_box_and_a_scale(cls: type[QwenL2], eps: float) -> None:
    torch.manual_seed(0)
    model = cls(eps).eval()
    d = ncd.trace(model, torch.randn(2, 3, 8))
    ops = _ops(d)
    assert ops == ["linear", "view", "rmsnorm", "scale"], ops  # main: product, sum, views, constant, sum, root, product
    (rms,) = (b.prim for b in d.boxes() if b.prim.op == "rmsnorm")
    assert not rms.affine and rms.eps == pytest.approx(eps / 16, rel=1e-12)
    for rows in (3, 1, 7):
        _check(model, d, rows)


@pytest.mark.parametrize("cls", [OtherAxis, NormRead])
def test_other_forms_keep_their_boxes_and_stay_equal(cls: type[QwenL2]) -> None:
    torch.manual_seed(0)
    model = cls().eval()
    d = ncd.trace(model, torch.randn(2, 3, 8))
    assert "rmsnorm" not in _ops(d)
    for rows in (3, 5):
        _check(model, d, rows)


def test_a_double_precision_normalisation_keeps_its_boxes() -> None:
    """Only float32 is read (as the RMS idiom): in float64 the model's own operations are drawn, and equal."""
    torch.manual_seed(0)
    model = QwenL2().double().eval()
    d = ncd.trace(model, torch.randn(2, 3, 8, dtype=torch.float64))
    assert "rmsnorm" not in _ops(d)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(d.to_torch(t=5)(x), model(x))


class OverTime(nn.Module):
    """The L2 normalisation of each row over the input's length ``t`` (the last axis), with an ``eps`` that matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + 1.0)


def test_l2_norm_over_the_length_follows_it() -> None:
    # ε/n of an RMS box is a number of the traced n: over the input's t it would be wrong at another length (refused
    # there), so those steps stay drawn as recorded and the lowered module is the model at every length
    torch.manual_seed(0)
    model = OverTime()
    d = ncd.trace(model, torch.randn(2, 8) * 0.3, axes={"x": "b ~t"})
    for b, t in ((2, 8), (3, 20), (1, 3)):
        x = torch.randn(b, t) * 0.3
        torch.testing.assert_close(d.to_torch(b=b, t=t)(x), model(x), rtol=1e-5, atol=1e-6)
