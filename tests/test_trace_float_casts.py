"""Casts between float types (``x.half()``, ``x.bfloat16()``, ``x.to(torch.float64)``, ``.float()`` back) are cast
boxes (:class:`ncd.prims.gather.CastOp` of a float ``width`` and ``from_width``), not opaque ``to.dtype`` calls: the
lowered module rounds and computes as the model does, and the backward diagram casts each cotangent back to the type
the cast read (autograd's ``ToCopyBackward``), checked against autograd on the model.  A softmax asked for another
result type (``torch.softmax(x, dim, dtype=torch.float64)``), which torch defines as the cast then the softmax, is those
two boxes."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.prims.gather import CastOp
from ncd.prims.softmax import SoftmaxOp
from ncd.render import to_svg
from ncd.torch.verify import compare_gradients


def _trace(model: nn.Module, *inputs: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *inputs)


class Sections(nn.Module):
    """A float32 model with float64, float16 and bfloat16 sections."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x).to(torch.float64).tanh() * 3
        g = self.b(x.half().float() + 1e-3 * x.bfloat16().float())
        return h.float() + g


class Upcast(nn.Module):
    """A softmax computed in float32 on an input of another type, cast back (as HF's half-precision attention)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().softmax(-1) * 3).to(x.dtype) * x


def _grads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    x = x.detach().clone().requires_grad_(True)
    y = model(x)
    model.zero_grad()
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape).to(y.dtype)).sum().backward()
    assert x.grad is not None
    return y.detach(), x.grad, [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_float_sections_are_cast_boxes_and_their_gradients_autograds() -> None:
    # before, each cast was an opaque to.dtype box (the corpus's torch.casts: 6, torch.mixed_precision: 4) and the
    # diagram had no backward
    torch.manual_seed(0)
    model = Sections()
    x = torch.randn(2, 5, 16)
    d = _trace(model, x)
    assert d.opaque_count == 0
    widths = sorted((b.prim.width, b.prim.from_width) for b in d.boxes() if isinstance(b.prim, CastOp))
    assert widths == [("bfloat16", "float32"), ("float16", "float32"), ("float32", "bfloat16"), ("float32", "float16"),
                      ("float32", "float64"), ("float64", "float32")]  # float32 named: not torch's default when run
    lowered = d.to_torch()
    y, gx, gp = _grads(model, x)
    y2, gx2, gp2 = _grads(lowered, x)
    assert y2.dtype == y.dtype and torch.equal(y2, y)  # the same roundings, in the same types
    torch.testing.assert_close(gx2, gx, rtol=0, atol=0)
    assert sorted(float(g.abs().sum()) for g in gp2) == sorted(float(g.abs().sum()) for g in gp)
    for name, got, want in compare_gradients(d, inputs=(x,)):  # the backward diagram against autograd
        assert got.dtype == want.dtype, name
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_an_upcast_and_back_keeps_the_inputs_type_forward_and_backward(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = Upcast()
    x = torch.randn(2, 5, 16).to(dtype)
    d = _trace(model, x)
    assert d.opaque_count == 0
    lowered = d.to_torch()
    y, gx, _ = _grads(model, x)
    y2, gx2, _ = _grads(lowered, x)
    assert y2.dtype == dtype and torch.equal(y2, y)
    assert gx2.dtype == dtype and torch.equal(gx2, gx)
    ((name, got, want),) = compare_gradients(d, inputs=(x,))
    assert got.dtype == dtype  # the cotangent of x.float() cast back to the input's type, as autograd gives it
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-6, atol=1e-6 * float(want.abs().max()))


def test_a_float_cast_round_trips_through_json_and_costs_its_gradient() -> None:
    from ncd.ir.serialize import load_json

    torch.manual_seed(0)
    d = _trace(Sections(), torch.randn(2, 5, 16)).as_block()
    casts = [b.prim for b in d.boxes() if isinstance(b.prim, CastOp)]
    assert [b.prim for b in load_json(d.to_json()).boxes() if isinstance(b.prim, CastOp)] == casts
    with pytest.raises(ncd.errors.ParseError, match="from_width"):
        CastOp(casts[0].source, casts[0].target, "", "int32")
    back = ncd.backward(d)
    assert sorted((b.prim.width, b.prim.from_width) for b in back.boxes() if isinstance(b.prim, CastOp)) == \
        sorted((c.from_width, c.width) for c in casts)
    report = ncd.cost(d, b=2, t=5)
    # both linear layers' weight gradients (2 · 2·5·16·16 FLOPs each) and their inputs' (the first's behind a cast)
    assert report.backward_flops >= 4 * 2 * 2 * 5 * 16 * 16


def test_a_constant_cast_to_the_type_of_a_live_tensor_is_a_constant() -> None:
    """``c.type_as(x)`` reads only ``x``'s dtype: Pegasus-X's ``arange(d).type_as(embeds)`` and Longformer's
    ``mask.type_as(query)`` were opaque boxes (the call live through ``x`` alone)."""

    class Positions(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.proj(x)
            scale = torch.arange(4, dtype=torch.int64).type_as(h) * 0.5
            keep = (torch.ones(x.shape[1]) != 0)[:, None].type_as(h)
            return h * scale + keep

    torch.manual_seed(0)
    model = Positions().eval()
    d = ncd.trace(model, torch.randn(2, 5, 4))
    assert d.opaque_count == 0
    fresh = torch.randn(2, 5, 4)
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh))


def test_integers_concatenated_with_floats_are_cast_as_torch_promotes_them() -> None:
    """TimesFM's ``cat([patches, pads], -1)`` with integer pads: torch promotes them to floats; the concat was
    opaque ('tensors holding different kinds of values')."""

    class Patches(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor, pads: torch.Tensor) -> torch.Tensor:
            h = torch.cat([x * (1.0 - pads), pads], dim=-1)
            return self.proj(h)

    torch.manual_seed(0)
    model = Patches().eval()
    x, pads = torch.randn(2, 5, 4), torch.randint(0, 2, (2, 5, 4))
    d = ncd.trace(model, x, pads)
    assert d.opaque_count == 0
    fresh_x, fresh_pads = torch.randn(2, 5, 4), torch.randint(0, 2, (2, 5, 4))
    torch.testing.assert_close(d.to_torch()(fresh_x, fresh_pads), model(fresh_x, fresh_pads))


class Typed(nn.Module):
    """A softmax (or log-softmax) asked for its result in another type."""

    def __init__(self, fn: object, dim: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.fn, self.dim, self.dtype = fn, dim, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.dim, dtype=self.dtype)  # type: ignore[operator]


class TypedAttention(nn.Module):
    """Attention whose weights are computed in another type (as fp16 models' ``softmax(..., dtype=torch.float32)``)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) * 0.25, dim=-1, dtype=self.dtype)
        return weights.to(x.dtype) @ self.v(x)


_TYPES = [(torch.float32, torch.float64), (torch.float16, torch.float32), (torch.bfloat16, torch.float32),
          (torch.float64, torch.float32)]


@pytest.mark.parametrize("fn", [torch.softmax, F.softmax, torch.log_softmax, F.log_softmax, torch.special.softmax])
@pytest.mark.parametrize(("source", "target"), _TYPES)
@pytest.mark.parametrize("dim", [-1, 1])
def test_a_softmax_asked_for_another_type_is_a_cast_then_the_softmax(
        fn: object, source: torch.dtype, target: torch.dtype, dim: int) -> None:
    # before, softmax.int with a dtype was an opaque box (equal to the model, but not drawn as a softmax)
    torch.manual_seed(0)
    model = Typed(fn, dim, target)
    x = torch.randn(2, 3, 5).to(source)
    d = _trace(model, x)
    assert d.opaque_count == 0
    prims = [b.prim for b in d.boxes()]
    assert [type(p) for p in prims] == [CastOp, SoftmaxOp]
    cast, soft = prims
    assert isinstance(cast, CastOp) and isinstance(soft, SoftmaxOp)
    assert (cast.width or "float32", cast.from_width or "float32") == (str(target)[6:], str(source)[6:])
    assert soft.log == ("log" in fn.__name__)  # type: ignore[attr-defined]
    lowered = d.to_torch()
    for inp in (x, torch.randn(2, 3, 5).to(source)):  # the traced input and a fresh one
        y, gx, _ = _grads(model, inp)
        y2, gx2, _ = _grads(lowered, inp)
        assert y2.dtype == y.dtype == target and torch.equal(y2, y)  # the same rounding, then the same softmax
        assert gx2.dtype == gx.dtype == source and torch.equal(gx2, gx)  # autograd's cast back to x's type
    ((name, got, want),) = compare_gradients(d, inputs=(x,))  # the backward diagram against autograd
    assert got.dtype == want.dtype == source
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-6, atol=1e-6 * float(want.abs().max()))
    assert ncd.cost(d, b=2, t=3).forward_flops > 0
    svg = to_svg(d)
    assert ">cast<" in svg and "<polygon" in svg  # the cast box, then softmax's triangle


@pytest.mark.parametrize(("source", "target"), _TYPES[:3])
def test_attention_weights_in_another_type_are_drawn_and_equal_to_the_model(
        source: torch.dtype, target: torch.dtype) -> None:
    torch.manual_seed(0)
    model = TypedAttention(target).to(source)
    x = torch.randn(2, 4, 16).to(source)
    d = _trace(model, x)
    assert d.opaque_count == 0
    assert sum(isinstance(b.prim, SoftmaxOp) for b in d.boxes()) == 1
    lowered = d.to_torch()
    with torch.no_grad():
        for inp in (x, torch.randn(2, 4, 16).to(source)):
            got, want = lowered(inp), model(inp)
            assert got.dtype == want.dtype == source and torch.equal(got, want)
    ncd.cost(d)
