"""The normalisation inside an RMS-norm module that is not one box as a whole (Gemma's ``(1 + w)``, a gated norm):
``x * rsqrt(mean(x ** 2, -1, keepdim=True) + eps)`` is one ``RMS`` box (:mod:`ncd.trace.idioms_norms`), the scale
after it walked as before.  Each diagram is compared with the model itself: its lowered module on the traced input,
a fresh one and inputs of other batch and sequence sizes.  Near misses (another axis, another tensor scaled, a square
read twice, the same operations outside an RMS norm) keep their recorded operations.  Likewise a layer norm written
out in a ``*LayerNorm`` module (Cohere's): one weightless ``LN`` box."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.normalization import LayerNormOp, RMSNormOp


class ZeroCentredRMSNorm(nn.Module):
    """Gemma's RMS norm: scaled by ``1 + w`` (``rms_norm(x) * (1 + w)``: one ``RMS·(1+w)`` box, by the module idiom)."""

    def __init__(self, m: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.randn(m) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return out * (1.0 + self.weight.float())


class GatedRMSNorm(nn.Module):
    """A gated RMS norm (Mamba-2, Gated DeltaNet): ``w * norm(x) * silu(gate)``."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(m))

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
        return self.weight * x * nn.functional.silu(gate)


class OtherAxisRMSNorm(ZeroCentredRMSNorm):
    """The mean over the sequence, not the features: no RMS norm of the last axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-2, keepdim=True) + self.eps) * (1.0 + self.weight)


class OtherTensorRMSNorm(ZeroCentredRMSNorm):
    """The root mean square of ``x`` scales another tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.flip(-1)
        return y * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)


class SquareTwiceRMSNorm(ZeroCentredRMSNorm):
    """The square is read again after the mean: the operations stay."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        square = x.pow(2)
        return x * torch.rsqrt(square.mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight) + square


class Scaled(nn.Module):
    """The same operations, in a module that is no RMS norm: left as they are."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class PowerRMSNorm(nn.Module):
    """Gemma 4's and Muse Spark's weightless norm: the root written ``torch.pow(mean_squared, -0.5)``; with another
    power (``-0.25``) it is no RMS norm."""

    def __init__(self, power: float = -0.5) -> None:
        super().__init__()
        self.eps, self.power = 1e-6, power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_squared = x.float().pow(2).mean(-1, keepdim=True) + self.eps
        return (x * torch.pow(mean_squared, self.power)).type_as(x)


class UnweightedRMSNorm(nn.Module):
    """Inkling 2's, DeepSeek V4's and GLM-5 Next's: the square written ``x.square()``, the root cast back to ``x``'s
    dtype (``wide``: to float64 instead, the product in float64: no RMS norm of ``x``'s dtype)."""

    def __init__(self, wide: bool = False) -> None:
        super().__init__()
        self.eps, self.wide = 1e-6, wide

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        root = torch.rsqrt(x.float().square().mean(-1, keepdim=True) + self.eps)
        return (x * root.to(torch.float64)).to(x.dtype) if self.wide else x * root.to(x.dtype)


class Block(nn.Module):
    def __init__(self, norm: nn.Module, m: int = 8) -> None:
        super().__init__()
        self.lin = nn.Linear(m, m)
        self.norm = norm
        self.out = nn.Linear(m, m)

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.lin(x), *rest)) + x  # type: ignore[no-any-return]


def _traced(model: nn.Module, *inputs: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model.eval(), *inputs)


def _rms_boxes(d: ncd.TracedDiagram) -> list[RMSNormOp]:
    return [b.prim for b in d.boxes() if isinstance(b.prim, RMSNormOp)]


def _lowers_equal(d: ncd.TracedDiagram, model: nn.Module, shapes: list[tuple[int, ...]], gated: bool = False) -> None:
    torch.manual_seed(1)
    for shape in shapes:
        lowered = d.to_torch(b=shape[0], t=shape[1])  # (traced at b=2, t=5: other sizes lower from the same diagram)
        inputs = [torch.randn(shape)] + ([torch.randn(shape)] if gated else [])
        with torch.no_grad():
            torch.testing.assert_close(lowered(*inputs), model(*inputs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("gated", [False, True])
def test_the_normalisation_of_an_rms_norm_scaled_otherwise_is_one_rms_box(gated: bool) -> None:
    torch.manual_seed(0)
    model = Block(GatedRMSNorm(8) if gated else ZeroCentredRMSNorm(8))
    x = torch.randn(2, 5, 8)
    d = _traced(model, x, *([torch.randn(2, 5, 8)] if gated else []))
    (rms,) = _rms_boxes(d)
    # (Gemma's whole module: one RMS·(1+w) box, its weight inside, ncd.trace.module_idioms; the gated one's scale after)
    assert (rms.affine, rms.offset) == ((False, 0.0) if gated else (True, 1.0))
    assert rms.eps == (1e-5 if gated else 1e-6) and [a.size for a in rms.axes.axes] == [8]
    assert not any(getattr(b.prim, "op", "") in ("rsqrt", "mean") for b in d.boxes())
    _lowers_equal(d, model, [(2, 5, 8), (3, 7, 8), (1, 1, 8)], gated)


@pytest.mark.parametrize("norm", [OtherAxisRMSNorm, OtherTensorRMSNorm, SquareTwiceRMSNorm])
def test_near_misses_keep_their_recorded_operations(norm: type[ZeroCentredRMSNorm]) -> None:
    torch.manual_seed(0)
    model = Block(norm(8))
    d = _traced(model, torch.randn(2, 5, 8))
    assert not _rms_boxes(d)
    _lowers_equal(d, model, [(2, 5, 8)])


@pytest.mark.parametrize("power", [-0.5, -0.25])
def test_a_root_written_as_a_power_of_minus_one_half_is_one_rms_box(power: float) -> None:
    torch.manual_seed(0)
    model = Block(PowerRMSNorm(power))
    d = _traced(model, torch.randn(2, 5, 8))
    if power == -0.5:
        (rms,) = _rms_boxes(d)
        assert not rms.affine and rms.eps == 1e-6 and [a.size for a in rms.axes.axes] == [8]
        assert not any(getattr(b.prim, "op", "") in ("pow", "mean") for b in d.boxes())
    else:
        assert not _rms_boxes(d)
    _lowers_equal(d, model, [(2, 5, 8), (3, 7, 8), (1, 1, 8)])


@pytest.mark.parametrize("wide", [False, True])
def test_a_square_written_square_with_its_root_cast_back_is_one_rms_box(wide: bool) -> None:
    torch.manual_seed(0)
    model = Block(UnweightedRMSNorm(wide))
    d = _traced(model, torch.randn(2, 5, 8))
    if not wide:
        (rms,) = _rms_boxes(d)
        assert not rms.affine and rms.eps == 1e-6 and [a.size for a in rms.axes.axes] == [8]
        assert not any(getattr(b.prim, "op", "") in ("square", "rsqrt", "mean") for b in d.boxes())
        _lowers_equal(d, model, [(2, 5, 8), (3, 7, 8), (1, 1, 8)])
    else:
        assert not _rms_boxes(d)
        x = torch.randn(2, 5, 8)
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch()(x), model(x))


def test_the_same_operations_outside_an_rms_norm_are_left_as_they_are() -> None:
    torch.manual_seed(0)
    model = Block(Scaled())
    d = _traced(model, torch.randn(2, 5, 8))
    assert not _rms_boxes(d)
    _lowers_equal(d, model, [(2, 5, 8)])


def test_gemma_draws_its_norms_as_rms_boxes_and_lowers_equal_at_other_sizes() -> None:
    import transformers as T

    config = T.GemmaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    torch.manual_seed(0)
    model = T.GemmaModel(config).eval()
    with torch.no_grad():  # (its norms' weights start at zero: 1 + w would hide a weight read wrongly)
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.5)
    d = _traced(model, torch.randint(0, 50, (2, 8)))
    assert len(_rms_boxes(d)) >= 2  # a decoder layer's norms and the final one (equal definitions drawn once)
    for shape in ((2, 8), (3, 5)):
        ids = torch.randint(0, 50, shape)
        with torch.no_grad():
            expected = model(input_ids=ids).last_hidden_state
            torch.testing.assert_close(d.to_torch(b=shape[0], t=shape[1])(ids), expected, atol=1e-5, rtol=1e-5)


class CohereLayerNorm(nn.Module):
    """Cohere's layer norm, written out without a bias (the difference from the mean made twice)."""

    def __init__(self, m: int, centred_once: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(m))
        self.centred_once = centred_once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        if self.centred_once:
            centred = x - mean
            return self.weight * (centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5))
        variance = (x - mean).pow(2).mean(-1, keepdim=True)
        return self.weight.to(torch.float32) * ((x - mean) * torch.rsqrt(variance + 1e-5))


class CentredReadTwiceLayerNorm(CohereLayerNorm):
    """The difference from the mean is also an output of the module: the operations stay."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        return self.weight * (centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5)) + centred


@pytest.mark.parametrize("centred_once", [False, True])
def test_a_layer_norm_written_out_is_one_ln_box(centred_once: bool) -> None:
    torch.manual_seed(0)
    model = Block(CohereLayerNorm(8, centred_once))
    d = _traced(model, torch.randn(2, 5, 8))
    (ln,) = [b.prim for b in d.boxes() if isinstance(b.prim, LayerNormOp)]
    assert not ln.affine and ln.eps == 1e-5 and [a.size for a in ln.axes.axes] == [8]
    assert not any(getattr(b.prim, "op", "") in ("rsqrt", "mean") for b in d.boxes())
    _lowers_equal(d, model, [(2, 5, 8), (3, 7, 8), (1, 1, 8)])


def test_a_layer_norm_whose_difference_is_read_again_keeps_its_operations() -> None:
    torch.manual_seed(0)
    model = Block(CentredReadTwiceLayerNorm(8))
    d = _traced(model, torch.randn(2, 5, 8))
    assert not [b for b in d.boxes() if isinstance(b.prim, LayerNormOp)]
    _lowers_equal(d, model, [(2, 5, 8)])


def test_cohere2_draws_its_norms_as_ln_boxes_and_lowers_equal_at_other_sizes() -> None:
    import transformers as T

    config = T.Cohere2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4)
    torch.manual_seed(0)
    model = T.Cohere2Model(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.5)
    d = _traced(model, torch.randint(0, 50, (2, 8)))
    assert [b for b in d.boxes() if isinstance(b.prim, LayerNormOp)]
    for shape in ((2, 8), (3, 8)):  # (its rotary tables are constants of the traced length: other batches only)
        ids = torch.randint(0, 50, shape)
        with torch.no_grad():
            expected = model(input_ids=ids).last_hidden_state
            torch.testing.assert_close(d.to_torch(b=shape[0], t=shape[1])(ids), expected, atol=1e-5, rtol=1e-5)
