"""T5's family names its RMS norms ``*LayerNorm`` (MT5, UMT5, LongT5, SwitchTransformers, Pop2Piano, Udop, Pix2Struct,
Kosmos2_5, CpmAnt; ImageGPT's divides by a ``sqrt``): such a module whose recorded operations are shaped like an RMS
norm is tried as the RMS module idiom (:mod:`ncd.trace.module_idioms`) and, once its values agree, drawn as one ``RMS``
box with its weight, as ``T5LayerNorm`` is.  Each diagram is compared with the model itself (the traced input, a fresh
one, other batch and sequence sizes).  Near misses — ``eps`` outside the root, another ``eps`` than the module's, a
float16 norm whose cast placement changes its value, a layer norm written out — keep their recorded operations."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.normalization import RMSNormOp


class MT5LayerNorm(nn.Module):
    """Transformers' ``MT5LayerNorm`` (T5's, under another name): the square of ``x.to(float32)``, ``x`` itself scaled."""

    def __init__(self, m: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(m))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in [torch.float16, torch.bfloat16]:
            hidden_states = hidden_states.to(self.weight.dtype)
        return self.weight * hidden_states


class CpmAntLayerNorm(MT5LayerNorm):
    """CpmAnt's: cast back to the input's dtype, then scaled."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        old_dtype = hidden_states.dtype
        variance = hidden_states.to(torch.float32).pow(2).mean(dim=-1, keepdim=True)
        return (hidden_states * torch.rsqrt(variance + self.variance_epsilon)).to(old_dtype) * self.weight


class ImageGPTLayerNorm(MT5LayerNorm):
    """ImageGPT's: divided by the root (``sqrt``, not ``rsqrt``) of the mean of ``square(x)``."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        root = torch.sqrt(torch.mean(torch.square(hidden_states), dim=-1, keepdim=True) + self.variance_epsilon)
        return hidden_states / root * self.weight


class SqrtEpsOutsideLayerNorm(MT5LayerNorm):
    """``x / (sqrt(mean(x ** 2)) + eps)``: ``eps`` outside the root, not ``rms_norm``."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        root = torch.sqrt(torch.mean(torch.square(hidden_states), dim=-1, keepdim=True))
        return hidden_states / (root + self.variance_epsilon) * self.weight


class EpsOutsideLayerNorm(MT5LayerNorm):
    """The RMSNorm paper's ``x / (rms + eps)``, written with ``rsqrt``: not ``rms_norm`` (``eps`` outside the root)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        inverse = torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True))
        return self.weight * (hidden_states * (inverse / (1 + self.variance_epsilon * inverse)))


class OtherEpsLayerNorm(MT5LayerNorm):
    """``eps ** 0.5`` under the root where the module says ``eps``."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon ** 0.5))


class WrittenOutLayerNorm(nn.Module):
    """A layer norm written out (centred): no RMS norm."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        return self.weight * (centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5))


class Block(nn.Module):
    def __init__(self, norm: nn.Module, m: int = 8) -> None:
        super().__init__()
        self.lin = nn.Linear(m, m)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.lin(self.norm(x))


def _stack(make: Callable[[int], nn.Module], layers: int = 3, m: int = 8, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(Block(make(m), m) for _ in range(layers))).to(dtype).eval()


def _rms_boxes(d: ncd.Diagram) -> list[RMSNormOp]:
    return [b.prim for b in d.boxes() if isinstance(b.prim, RMSNormOp)]


def _ops(d: ncd.Diagram) -> list[str]:
    return [str(getattr(b.prim, "function", None) or getattr(b.prim, "op", "")) for b in d.boxes()]


def _lowers_equal(model: nn.Module, d: ncd.Diagram, x: torch.Tensor, atol: float = 1e-5) -> None:
    with torch.no_grad():
        for shape in (tuple(x.shape), (3, 5, x.shape[-1]), (1, 2, x.shape[-1])):
            probe = x if shape == tuple(x.shape) else torch.randn(shape, dtype=x.dtype)
            want, got = model(probe), d.to_torch(b=shape[0], t=shape[1])(probe)
            assert got.dtype == want.dtype and torch.allclose(got.float(), want.float(), atol=atol, rtol=1e-4), shape


@pytest.mark.parametrize("make", [MT5LayerNorm, CpmAntLayerNorm, ImageGPTLayerNorm])
def test_t5_family_norm_is_one_rms_box_with_its_weight(make: type[nn.Module]) -> None:
    model, x = _stack(make), torch.randn(2, 4, 8)
    d = ncd.trace(model, x)
    rms = _rms_boxes(d)
    assert rms and all(p.affine and p.eps == 1e-6 for p in rms)  # (the layers drawn as a repeat of one)
    assert not {"square", "rsqrt", "sqrt"} & set(_ops(d))
    assert d.opaque_count == 0
    _lowers_equal(model, d, x)


def test_transformers_mt5_layer_norm_is_one_rms_box() -> None:
    mt5 = pytest.importorskip("transformers.models.mt5.modeling_mt5")
    torch.manual_seed(0)
    model = nn.Sequential(Block(mt5.MT5LayerNorm(8)), Block(mt5.MT5LayerNorm(8))).eval()
    with torch.no_grad():
        for block in model:
            block.norm.weight.normal_()
    x = torch.randn(2, 4, 8)
    d = ncd.trace(model, x)
    assert _rms_boxes(d) and "rsqrt" not in _ops(d)
    _lowers_equal(model, d, x)


@pytest.mark.parametrize("make", [EpsOutsideLayerNorm, SqrtEpsOutsideLayerNorm, OtherEpsLayerNorm,
                                  WrittenOutLayerNorm])
def test_near_miss_layer_norms_keep_their_operations(make: type[nn.Module]) -> None:
    model, x = _stack(make, layers=2), torch.randn(2, 4, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert not any(p.affine for p in _rms_boxes(d))  # (no module drawn whole)
    if make is not WrittenOutLayerNorm:
        assert {"rsqrt", "sqrt"} & set(_ops(d)) and not _rms_boxes(d)
    _lowers_equal(model, d, x)


def test_float16_norm_whose_cast_placement_changes_the_value_keeps_its_operations() -> None:
    # in float16 the module squares and averages in float32, scales x in float32 and casts back before the weight:
    # not torch's rms_norm in float16 (which differs in the last bits), so it is not one box
    model, x = _stack(MT5LayerNorm, layers=2, dtype=torch.float16), (3 * torch.randn(2, 4, 8)).half()
    with torch.no_grad():
        want = model[0].norm(x)
        assert not torch.equal(want, nn.functional.rms_norm(x, (8,), model[0].norm.weight, 1e-6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert not _rms_boxes(d) and "rsqrt" in _ops(d)  # (its float16 casts are opaque boxes, as they were)
    with torch.no_grad():
        assert torch.equal(d.to_torch()(x), model(x))


class L2Norm(nn.Module):
    """Llama 4's weightless ``L2Norm`` (a root mean square over the last axis, despite its name) of ``x.float()``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        return (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6)).type_as(x)


class L2NormOverFeatures(nn.Module):
    """A true L2 norm (a sum, not a mean, of squares): not a root mean square of its ``eps``, but one of ``eps / n``
    scaled by ``1/√n`` (:func:`ncd.trace.idioms_norms.l2_norm`, tests/test_trace_l2norm.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6)


def test_llama4_l2_norm_is_one_weightless_rms_box() -> None:
    model, x = _stack(lambda m: L2Norm(), layers=2), torch.randn(2, 4, 8)
    d = ncd.trace(model, x)
    rms = _rms_boxes(d)
    assert rms and not any(p.affine for p in rms) and "rsqrt" not in _ops(d)
    _lowers_equal(model, d, x)


def test_true_l2_norm_is_not_read_as_a_root_mean_square_of_its_eps() -> None:
    model, x = _stack(lambda m: L2NormOverFeatures(), layers=2), torch.randn(2, 4, 8)
    d = ncd.trace(model, x)
    assert [p.eps for p in _rms_boxes(d)] == [pytest.approx(1e-6 / 8)] and "rsqrt" not in _ops(d)
    assert [b.prim.label() for b in d.boxes() if b.prim.op == "scale"] == ["*1/√(m)"]
    _lowers_equal(model, d, x)
