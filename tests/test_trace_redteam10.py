"""Red team, tenth pass: each test fails on the main it was written against and compares with the model itself (its
outputs, and its parameters' gradients by torch.autograd)."""

from __future__ import annotations

import warnings

import torch

import ncd


def _gradients_as_the_model(model: torch.nn.Module, *inputs: torch.Tensor) -> torch.nn.Module:
    """The lowered module of ``model``: outputs equal on ``inputs``, and the gradient of every parameter the model's
    (matched by shape; each test's parameters have shapes of their own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, *inputs).to_torch()
    want, got = model(*inputs), lowered(*inputs)
    assert torch.allclose(got, want, atol=1e-6)
    weights = torch.linspace(-1, 1, want.numel()).reshape(want.shape)
    (want * weights).sum().backward()
    if got.requires_grad:
        (got * weights).sum().backward()
    mine = {tuple(p.shape): p.grad for p in lowered.parameters() if p.grad is not None}
    for p in model.parameters():
        assert p.grad is not None
        assert tuple(p.shape) in mine, f"no gradient reaches the lowered module's parameter of shape {tuple(p.shape)}"
        assert torch.allclose(mine[tuple(p.shape)], p.grad, atol=1e-6)
    return lowered


class _UnitTriangular(torch.nn.Module):
    """Glow's LU-decomposed 1x1 convolution: ``L * tril + eye`` of a unit lower-triangular ``L`` equals ``L``."""

    def __init__(self) -> None:
        super().__init__()
        self.lower = torch.nn.Parameter(torch.tril(torch.randn(4, 4), -1) + torch.eye(4))
        self.register_buffer("mask", torch.tril(torch.ones(4, 4), -1))
        self.register_buffer("eye", torch.eye(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.lower * self.mask + self.eye)


class _Clipped(torch.nn.Module):
    """A weight clamped in the forward (BinaryConnect; CLIP's ``logit_scale.clamp(max=...)``), inside its bounds."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(5, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.w.clamp(-100.0, 100.0))


class _ZeroPositions(torch.nn.Module):
    """A position table not initialised yet (zeros), read at positions counted down: rows 9..5, not 0..4."""

    def __init__(self) -> None:
        super().__init__()
        self.positions = torch.nn.Embedding(10, 4)
        torch.nn.init.zeros_(self.positions.weight)
        self.register_buffer("ids", torch.arange(10).flip(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.positions(self.ids[: x.shape[1]])


def test_a_computation_on_a_parameter_equal_to_it_is_drawn_not_frozen() -> None:
    """A computation on a parameter whose result equals the whole parameter was read as the table "at its first rows":
    the lowered module held the value as a constant (``L * tril + eye``) or the parameter without the computation
    (``w.clamp(-100, 100)``: no clamp, and no gradient reached ``w``), with no warning."""
    torch.manual_seed(0)
    _gradients_as_the_model(_UnitTriangular(), torch.randn(3, 4))
    model = _Clipped()
    lowered = _gradients_as_the_model(model, torch.randn(2, 3))
    with torch.no_grad():  # the lowered module computes the model's function of its parameters: clamped beyond them
        for p in (*model.parameters(), *lowered.parameters()):
            p.mul_(1000.0)
    x = torch.randn(2, 3)
    assert torch.allclose(lowered(x), model(x))


def test_rows_of_a_table_equal_to_its_first_rows_are_read_where_the_model_reads_them() -> None:
    """A table of zeros read at rows 9..5 equals its rows 0..4: drawn as the table sliced ``:5``, the lowered module
    gave the gradient to rows 0..4."""
    torch.manual_seed(0)
    _gradients_as_the_model(_ZeroPositions(), torch.randn(2, 5, 4))


class _AdaIN(torch.nn.Module):
    """Adaptive instance norm by hand (style transfer): the standard deviation over the positions of each channel, of
    which a blank frame (a constant: padding) has none; over dims apart and with a correction too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        mean, std = h.mean((2, 3), keepdim=True), h.std((2, 3), keepdim=True)
        spread = torch.std(h, (1, 3), correction=0).sum() + h.std(1).sum()
        return (h - mean) / (std + 1e-5) + spread


def test_a_standard_deviation_of_equal_entries_has_the_models_gradient() -> None:
    """``x.std(dims)`` was the root of the deviations' mean square: its gradient where every entry is equal (a blank
    frame's channels) was 0/0, NaN, in the lowered module (torch's std has 0 there), and NaN reached every parameter."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5)
    x[0] = 0.0  # a blank frame: every channel of the convolution is 0, a standard deviation of 0
    _gradients_as_the_model(_AdaIN(), x)


class _TwoNorms(torch.nn.Module):
    """Two layer norms (ones and zeros, as built) and two zero biases, one of each read: T5 called with its
    ``encoder_outputs`` runs only the decoder, whose norms equal the encoder's."""

    def __init__(self) -> None:
        super().__init__()
        self.used, self.spare = torch.nn.LayerNorm(8), torch.nn.LayerNorm(8)
        self.shift, self.spare_shift = torch.nn.Parameter(torch.zeros(8)), torch.nn.Parameter(torch.zeros(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x) + self.shift


def test_an_unread_parameter_equal_to_a_read_one_is_kept() -> None:
    """A parameter the forward does not read, equal in value to one it reads, counted as read (as a copy of all of
    it): the lowered module dropped it and had fewer parameters than the model (T5 decoding from encoder outputs:
    45,344 against 45,504)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(_TwoNorms(), torch.randn(2, 8)).to_torch()
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in _TwoNorms().parameters())
    unused = {n for n, _ in lowered.named_parameters() if n.startswith("unused.")}
    assert unused == {"unused.spare.weight", "unused.spare.bias", "unused.spare_shift"}


class _NormsApart(torch.nn.Module):
    """Norms and a log-sum-exp over dims apart (the batch and the last): a statistic per channel."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x.norm(dim=(0, 2)), torch.logsumexp(x, (0, 2)), torch.linalg.vector_norm(x, 3, dim=(2, 0), keepdim=True),
                torch.logsumexp(x, (-1, 1), keepdim=True))


def test_a_reduction_over_dims_apart_is_a_box() -> None:
    """``x.norm(dim=(0, 2))`` and ``logsumexp(x, (0, 2))`` failed to convert (the box woven over the wire between the
    reduced ones did not compose) and were opaque calls; now a transpose brings the dims together first: no opaque
    box, values and input gradients torch's."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diagram = ncd.trace(_NormsApart(), x)
    assert diagram.opaque_count == 0
    lowered = diagram.to_torch()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    for want, got in zip(_NormsApart()(xa), lowered(xb)):
        assert want.shape == got.shape and torch.allclose(got, want, atol=1e-6)
        weights = torch.linspace(-1, 1, want.numel()).reshape(want.shape)
        (ga,) = torch.autograd.grad((want * weights).sum(), xa)
        (gb,) = torch.autograd.grad((got * weights).sum(), xb)
        assert torch.allclose(gb, ga, atol=1e-6)


class _LiteralWeights(torch.nn.Module):
    """A weightless layer norm written with literal ones and zeros, beside a LayerNorm whose parameters hold the same
    values (as built)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = torch.nn.functional.layer_norm(x, (8,), torch.ones(8), torch.zeros(8))
        return self.norm(x) + 2 * plain


def test_a_literal_equal_to_a_parameter_stays_a_constant() -> None:
    """A tensor the forward makes from no parameter, equal in value to a parameter, was loaded as a parameter of the
    lowered module (it equals "a copy" of one): 35 parameters against the model's 19, and training moved the literal
    ones the model keeps."""
    torch.manual_seed(0)
    model, x = _LiteralWeights(), torch.randn(2, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, x).to_torch()
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
    weights = torch.linspace(-1, 1, 16).reshape(2, 8)
    (model(x) * weights).sum().backward()
    (lowered(x) * weights).sum().backward()
    mine = {name.rpartition(".")[2]: p.grad for name, p in lowered.named_parameters()}  # (the literal's: buffers)
    assert torch.allclose(mine["weight"], model.norm.weight.grad, atol=1e-6)
    assert torch.allclose(mine["bias"], model.norm.bias.grad, atol=1e-6)
