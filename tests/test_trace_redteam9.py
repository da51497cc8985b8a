"""Red team, ninth pass: each test fails on the main it was written against and compares with the model itself
(its outputs and their dtypes)."""

from __future__ import annotations

import warnings

import torch

import ncd


def _lowered_as_the_model(model: torch.nn.Module, *inputs: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diagram = ncd.trace(model, *inputs)
    lowered = diagram.to_torch()
    for x in (inputs, tuple(torch.rand_like(x) + 0.25 for x in inputs)):
        want, got = model(*x), lowered(*x)
        want = want if isinstance(want, tuple) else (want,)
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert (g.dtype, g.shape) == (w.dtype, w.shape)
            assert torch.equal(g, w)
    return diagram


class _FastInverseRoot(torch.nn.Module):
    """Quake's inverse square root: the bits of a float read as an integer, shifted, and read back as a float."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        bits = x.view(torch.int32)
        return (0x5F3759DF - (bits >> 1)).view(torch.float32), x.view(torch.int32), (bits + 1).view(torch.float32) * 2


class _HalfBits(torch.nn.Module):
    """The bits of half- and bfloat16 values read as int16 (a packed-weight format), and float32 bits read as halves."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.rand(10) + 0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x.half().view(torch.int16) & 255, x.bfloat16().view(torch.int16).float(),
                x * (self.w.view(torch.int32) >> 20).float(), x.view(torch.float16).float().nan_to_num().sum(-1))


def test_a_tensor_viewed_as_another_dtype_reads_its_bits_as_the_model_does() -> None:
    """``x.view(torch.int32)`` reinterprets the bytes; it was drawn as the identity (a reshape to the same sizes), so
    the lowered module returned float values where the model returns integers, with no warning."""
    x = torch.rand(2, 10) + 0.1
    _lowered_as_the_model(_FastInverseRoot(), x)
    _lowered_as_the_model(_HalfBits(), x)


class _WrittenInPlaceWider(torch.nn.Module):
    """In-place writes whose operands are wider than the written tensor: torch computes in the wider type and rounds
    (wraps) the result to the written tensor's own dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.lin(x).half()
        h.add_(x, alpha=0.5)
        h.mul_(self.lin(x))
        b = x.bfloat16()
        b[:, 1:3].sub_(x[:, :2])
        ids = (x * 1000).int()
        ids.mul_((x * 3e6).long())  # int32 products wrap around as the model's do
        return h, b, ids


def test_an_in_place_write_computed_in_a_wider_type_keeps_the_written_dtype() -> None:
    """``h.add_(x)`` of a float16 ``h`` and a float32 ``x`` was recorded as ``add(h, x)``: the lowered module returned
    float32 (int64 for an int32 ``ids.mul_(longs)``) with no warning; it is that call and a cast back."""
    x = torch.randn(3, 5)
    model = _WrittenInPlaceWider()
    lowered = _lowered_as_the_model(model, x).to_torch()
    mine, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    (want,) = torch.autograd.grad(sum(y.float().sum() for y in model(mine)[:2]), mine)
    (got,) = torch.autograd.grad(sum(y.float().sum() for y in lowered(theirs)[:2]), theirs)
    torch.testing.assert_close(got, want)


class _DiagonalFilled(torch.nn.Module):
    """A square slice of the input copied and its diagonal filled in place (``fill_diagonal_`` has no functional form:
    the export capture records it as ``as_strided`` reads and writes of the copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x[:, : x.shape[0]].clone()
        y.fill_diagonal_(0.5)
        return y * 2


class _StridedCopy(torch.nn.Module):
    """Windows read by ``as_strided`` from a copy of a slice, and written through it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x[:, 1:4].clone()
        y.as_strided([2, 2], [3, 1], 1).mul_(3)
        return y + y.as_strided([3], [4]).sum()


class _StridedTransposed(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.t().as_strided([2, 2], [1, 3])


def test_strides_read_from_a_copy_of_a_slice_read_the_copy_s_entries() -> None:
    """An opaque ``as_strided`` read the copy's strides from the slice itself (the copy was no box): the lowered
    module returned other entries than the model (the diagonal left unfilled), with no warning."""
    x = torch.randn(3, 5)
    _lowered_as_the_model(_DiagonalFilled(), x)
    for capture in ("dispatch", "export"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lowered = ncd.trace(_StridedCopy(), x, capture=capture).to_torch()
        torch.testing.assert_close(lowered(x), _StridedCopy()(x), rtol=0, atol=0)


def test_strides_of_a_view_of_the_input_read_the_input_s_memory() -> None:
    """A view of the input is the lowered module's own view of it: its strides read what the model's read."""
    x, fresh = torch.randn(3, 5), torch.randn(3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(_StridedTransposed(), x, capture="export").to_torch()
    for v in (x, fresh):
        torch.testing.assert_close(lowered(v), _StridedTransposed()(v), rtol=0, atol=0)


class _TinyAndHugeScales(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.lin(x) * 1e-20).exp() - 1, x * 3.5e12, x / 7e-7


def test_a_diagram_scaling_by_a_number_written_with_an_exponent_reads_back_from_its_json() -> None:
    """``to_json`` writes a factor 1e-20 as sympy prints it ('1.00000000000000e-20'), which ``load_json`` refused
    (SchemaError: unexpected 'e'); read back, the module computes the model's values."""
    model, x = _TinyAndHugeScales(), torch.randn(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    module = ncd.load_json(d.as_block().to_json()).to_torch()
    module.load_state_dict(d.state_dict(module))
    module.train(d.training)
    with torch.no_grad():
        for got, want in zip(module(x), model(x)):
            torch.testing.assert_close(got, want)
