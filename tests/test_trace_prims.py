"""ncd.trace draws the operators hand-written models call with options (activations with their arguments, ...) as
primitives, not opaque boxes, and the lowered diagram computes what the model computes on fresh inputs."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

import ncd
from tests.test_trace import round_trip
from tests.test_trace_robust import _fresh_round_trip


class Activations(nn.Module):
    """Activations called with arguments: leaky ReLU with a slope, ELU / CELU alpha, SELU, softplus beta and
    threshold, hardtanh bounds (and ReLU6 spelled as hardtanh)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.leaky_relu(x, 0.2), F.elu(x, alpha=0.5), F.celu(x, 0.7), F.selu(x), F.softplus(x, beta=2.0, threshold=3.0),
                F.hardtanh(x, -0.5, 0.5), nn.Hardtanh()(x), F.hardtanh(x, 0.0, 6.0), nn.LeakyReLU(0.1)(x))


def test_activations_with_arguments_are_elementwise_boxes() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(Activations(), 3 * torch.randn(2, 5, 6))
    assert d.opaque_count == 0
    labels = sorted(b.prim.label() for b in d.boxes() if b.prim.op == "elementwise")
    assert labels == ["CELU 0.7", "ELU 0.5", "LR 0.1", "LR 0.2", "R6", "SELU", "hardtanh", "hardtanh -0.5, 0.5",
                      "softplus 2, 3"]


def test_activation_arguments_survive_json_and_name_the_derivative() -> None:
    d = ncd.Identity.of("a b") >> ncd.elementwise("leaky_relu", 0.2)
    again = ncd.load_json(d.to_json())
    assert again == d and again != ncd.Identity.of("a b") >> ncd.elementwise("leaky_relu")
    assert '"args"' not in (ncd.Identity.of("a b") >> ncd.elementwise("leaky_relu", 0.01)).to_json()  # the default
    assert "leaky_relu′ 0.2" in [b.prim.label() for b in ncd.backward(d).boxes()]


class Learned(nn.Module):
    """PReLU with one slope and with one per channel (channels at dim 1, and a transposed sequence)."""

    def __init__(self) -> None:
        super().__init__()
        self.one, self.per = nn.PReLU(), nn.PReLU(4, init=0.1)
        with torch.no_grad():
            self.per.weight.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor, seq: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.one(x), self.per(x), self.per(seq.transpose(1, 2)).transpose(1, 2)


def test_prelu_is_a_learned_box_holding_the_models_slopes() -> None:
    torch.manual_seed(0)
    model = Learned()
    d = _fresh_round_trip(model, torch.randn(2, 4, 3, 5), torch.randn(2, 6, 4))
    assert d.opaque_count == 0
    assert [b.prim.label() for b in d.boxes() if b.prim.op == "prelu"] == ["PReLU"] * 3
    assert sum(p.numel() for p in d.to_torch().parameters()) == 5  # the slopes, shared by the two calls


class SameSizes(nn.Module):
    """Convolutions whose output channels are as many as the positions of a spatial wire (8 channels of an 8 x 8 frame;
    one channel of a 1 x 1 map): the channel wire gets a name of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.video = nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 4, 1, 0)
        self.score = nn.Conv2d(4, 1, 4, 1, 0)

    def forward(self, clip: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.video(clip), self.score(self.up(z))


def test_convolutions_with_as_many_channels_as_positions_are_boxes() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(SameSizes(), torch.randn(2, 3, 2, 8, 8), torch.randn(2, 8, 1, 1))
    assert d.opaque_count == 0
    assert sorted(b.prim.op for b in d.boxes() if "conv" in b.prim.op) == ["conv", "conv", "conv_transpose"]


class Instance(nn.Module):
    """Instance norm: functional, affine 2-d, plain 1-d; and one tracking running statistics (a batch norm in eval)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.InstanceNorm2d(4, affine=True, eps=1e-3), nn.InstanceNorm1d(4)
        self.tracked = nn.InstanceNorm1d(4, track_running_stats=True)
        with torch.no_grad():
            self.a.weight.uniform_(0.5, 1.5)
            self.a.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return F.instance_norm(x), self.a(x), self.b(x.flatten(2)), self.tracked(x.flatten(2))


def test_instance_norm_is_a_group_norm_with_a_group_per_channel() -> None:
    import warnings

    torch.manual_seed(0)
    model = Instance().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = _fresh_round_trip(model, torch.randn(2, 4, 5, 3))
    assert d.opaque_count == 0
    assert [b.prim.op for b in d.boxes() if b.prim.op == "batchnorm"] == ["batchnorm"]  # the running statistics
    norms = [b.prim for b in d.boxes() if b.prim.op == "groupnorm"]
    assert [(p.groups, p.eps, p.affine) for p in norms] == [(4, 1e-5, False), (4, 1e-3, True), (4, 1e-5, False)]


class Diagonals(nn.Module):
    """Diagonals of any two dims, traces, diagonal embeddings into any two dims, torch.diag both ways; diagonals off
    the main one (above and below it, of squares and of rectangles) and the main diagonal of a rectangle."""

    def forward(self, x: torch.Tensor, sq: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.diag_embed(x), torch.diag_embed(x, 0, 0, 2), torch.diag_embed(x, dim1=-1, dim2=0),
                torch.diagonal(sq, 0, 0, 2), torch.diagonal(sq, 0, 2, 1), sq[0, 0].diag(), torch.diag(x[0, 0]),
                torch.trace(sq[0, :, :, 0]), torch.diagonal(sq), sq.diagonal(1, -2, -1), x.diagonal(0, 1, 2),
                x.diagonal(-1, 1, 2), x.diagonal(2, 2, 1), torch.diag(x[0], 1), torch.diag(x[1], -2), sq[0].diagonal(-3))


def test_diagonals_traces_and_diagonal_embeddings_are_einsum_wirings() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = _fresh_round_trip(Diagonals(), torch.randn(2, 3, 4), torch.randn(4, 4, 4, 4))
    assert d.opaque_count == 0
    # one cup (the identity matrix) tying two wires per diagonal, trace and diagonal embedding: 11 + 1 + 4
    assert sum(b.prim.op == "unit" for b in d.boxes()) == 16


class Extremes(nn.Module):
    """amax / amin over one, several or every dim (keepdim or not); argmax / argmin along a dim or over every entry."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x.amax((1, 2)), x.amin(-1), x.amax(), x.amin(0, keepdim=True), x.amax((0, 2), True), x.argmax(),
                x.argmin(), x.argmin(1), x.argmin(1, keepdim=True), x.argmax(keepdim=True), torch.amax(x, dim=[2, 0]))


def test_extremes_over_dims_and_their_positions_are_boxes() -> None:
    d = _fresh_round_trip(Extremes(), torch.randn(2, 3, 4))
    # amax over dims apart ((0, 2) and [2, 0]): transposed together, one amax (its gradient at ties: tests/test_trace_ties.py)
    assert d.opaque_count == 0
    ties = torch.randint(0, 3, (2, 3, 4)).float()  # ties: the first position, as torch gives it
    for want, got in zip(Extremes()(ties), d.to_torch()(ties)):
        assert torch.equal(want, got)


class Running(nn.Module):
    """Running products (of a sigmoid: a stick-breaking weight) and log-sum-exps along any dim."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.cumprod(x.sigmoid(), 1), torch.logcumsumexp(x, -1), x.cumprod(0)


def test_running_products_and_log_sum_exps_are_boxes() -> None:
    d = _fresh_round_trip(Running(), torch.randn(2, 5, 7))
    assert d.opaque_count == 0
    assert sorted(b.prim.label() for b in d.boxes() if b.prim.op == "cumulative") == ["LSE≤ m", "Π≤ b", "Π≤ t"]


class Roundings(nn.Module):
    """Piecewise-constant functions (their gradient is zero) and the fractional part, of a float tensor."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.sign(x), x.trunc(), torch.round(x * 4) / 4, torch.frac(x), x.sign() * x.abs().sqrt()


def test_sign_trunc_round_and_frac_are_elementwise_boxes_with_autograds_gradients() -> None:
    d = _fresh_round_trip(Roundings(), 3 * torch.randn(2, 5, 6))
    assert d.opaque_count == 0
    assert sorted(b.prim.label() for b in d.boxes() if b.prim.op == "elementwise") == [
        "frac", "round", "sgn", "sgn", "trunc", "|x|", "√"]
    box = ncd.Identity.of("a") >> ncd.elementwise("frac") >> ncd.elementwise("sign")
    x = torch.randn(5, requires_grad=True)
    (torch.frac(x) + torch.sign(x)).sum().backward()
    # sign′ = 0 whatever the cotangent (autograd's zeros, not 0·g, which is NaN at an infinite cotangent): the backward
    # discards the cotangent (⊸) and yields zeros
    assert [b.prim.label() for b in ncd.backward(box).boxes()] == ["⊸", "0"]
    assert x.grad is not None and torch.equal(x.grad, torch.ones(5))
    assert [b.prim.label() for b in ncd.backward(ncd.Identity.of("a") >> ncd.elementwise("frac")).boxes()] == []


class SubPixel(nn.Module):
    """ESPCN-style upsampling (a convolution to r² times the channels, then pixel_shuffle) and its inverse."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Conv2d(3, 12, 3, padding=1), nn.Conv2d(3, 5, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = F.pixel_shuffle(self.up(x), 2)
        z = F.pixel_unshuffle(self.down(y), 4)
        return y, F.pixel_unshuffle(y, 2), z, nn.PixelShuffle(2)(z), F.pixel_shuffle(x, 1)


def test_pixel_shuffle_and_unshuffle_are_views_and_a_permutation() -> None:
    torch.manual_seed(0)
    model = SubPixel()
    d = _fresh_round_trip(model, torch.randn(2, 3, 4, 6))
    assert d.opaque_count == 0
    assert sum(p.numel() for p in d.to_torch().parameters()) == sum(p.numel() for p in model.parameters())
    assert [b.prim.op for b in d.boxes()].count("transpose") == 4


class ComplexRotary(nn.Module):
    """Llama 4's rotary embedding: pairs of features read as complex numbers, rotated by a complex table, read back."""

    def __init__(self) -> None:
        super().__init__()
        angles = torch.outer(torch.arange(6.0), 1.0 / 10000 ** (torch.arange(0, 8, 2) / 8))
        self.register_buffer("freqs", torch.polar(torch.ones_like(angles), angles))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        rotated = torch.view_as_real(z * self.freqs).flatten(-2)
        return rotated, torch.view_as_real(z).sum(-1)


def test_view_as_complex_and_view_as_real_are_complex_views() -> None:
    d = _fresh_round_trip(ComplexRotary(), torch.randn(2, 6, 8))
    assert d.opaque_count == 0
    assert sorted(b.prim.label() for b in d.boxes() if b.prim.op == "complex_view") == [
        "re, im→z", "z→re, im", "z→re, im"]


class CeilPools(nn.Module):
    """Pooling in ceil mode (HGNetV2's stem, Funnel's token pooling), with and without the padding counted, and average
    pooling with a divisor of its own."""

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.max_pool2d(x, 2, 1, ceil_mode=True), F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True),
                F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True), F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False),
                F.avg_pool1d(x.flatten(2), 4, 3, ceil_mode=True), F.avg_pool2d(x, 2, divisor_override=3),
                F.avg_pool2d(tokens[:, None], (2, 1), stride=(2, 1), ceil_mode=True)[:, 0])


def test_pooling_in_ceil_mode_and_with_a_divisor_are_pooling_boxes() -> None:
    d = _fresh_round_trip(CeilPools(), torch.randn(2, 3, 7, 9), torch.randn(2, 7, 4))
    assert d.opaque_count == 0
    labels = sorted(b.prim.label() for b in d.boxes() if b.prim.op in ("maxpool", "avgpool", "scale"))
    assert labels == ["*4/3", "★2×1→𝔼 ⌈⌉", "★2→Max ⌈⌉", "★2→𝔼", "★2→𝔼 ⌈⌉", "★3→Max ⌈⌉", "★3→𝔼 ⌈⌉", "★4→𝔼 ⌈⌉"]
    assert "ceil_mode" in ncd.load_json(d.to_json()).to_json()
    assert '"ceil_mode"' not in (ncd.Identity.of("x:6") >> ncd.MaxPool("x:6", 2)).to_json()  # the default: not written


class FullReductions(nn.Module):
    """Means and sums over every entry (a loss, a regulariser), with and without ``dim=[]``."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x.mean(), ((x - y) ** 2).sum(), torch.sum(x, dim=[]), x.sum(0).mean(), x.sum(-1, keepdim=True)


def test_means_and_sums_over_every_entry_are_einsums() -> None:
    d = _fresh_round_trip(FullReductions(), torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    assert d.opaque_count == 0
    assert [str(b.cod) for b in d.boxes() if b.prim.op == "einsum"].count("()") == 4


class Narrows(nn.Module):
    """``narrow`` from the start, from the end (a negative start) and over every entry, read after an in-place write."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = x * 2
        y.narrow(2, 4, 2).add_(1.0)
        return x.narrow(1, 1, 2), x.narrow(-1, -3, 2), torch.narrow(x, 0, 0, 2), y


def test_narrow_is_a_slice() -> None:
    d = _fresh_round_trip(Narrows(), torch.randn(2, 5, 6))
    assert d.opaque_count == 0
    assert sum(b.prim.op == "slice" for b in d.boxes()) >= 2


class Losses(nn.Module):
    """Losses drawn as their definitions: mse / L1 (mean, sum, none), cross entropy (label smoothing, an ignored class,
    each reduction), nll on log-probabilities, and CLIP's symmetric cross entropy on labels it makes."""

    def forward(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.mse_loss(x, y), F.mse_loss(x, y, reduction="sum"), F.l1_loss(x, y, reduction="none"), F.l1_loss(x, y),
                F.cross_entropy(x, target), F.cross_entropy(x, target, label_smoothing=0.1),
                F.cross_entropy(x, target, ignore_index=2), F.cross_entropy(x, target, ignore_index=1, reduction="sum"),
                F.cross_entropy(x, target, reduction="none", label_smoothing=0.2), F.nll_loss(x.log_softmax(-1), target),
                F.cross_entropy(x[:4, :4], torch.arange(4)) + F.cross_entropy(x[:4, :4].t(), torch.arange(4)))


def test_losses_with_their_options_are_their_definitions() -> None:
    model = Losses()
    targets = torch.tensor([2, 0, 4, 2, 1, 3])
    d = _fresh_round_trip(model, torch.randn(6, 5), torch.randn(6, 5), targets)
    assert d.opaque_count == 0
    lowered = d.to_torch()
    for other in (torch.tensor([1, 1, 0, 3, 4, 4]), torch.tensor([2, 2, 2, 2, 2, 1])):  # none ignored; all but one
        x, y = torch.randn(6, 5), torch.randn(6, 5)
        torch.testing.assert_close(lowered(x, y, other), model(x, y, other))


class SmoothLosses(nn.Module):
    """Huber and smooth L1 (their thresholds, 0 for smooth L1), KL divergence (log targets, batchmean, targets with
    zeros), BCE with logits (weight, pos_weight) and cross entropy with class weights (an ignored class; labels the
    model makes)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("cw", torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0]))

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logp, w = x.log_softmax(-1), torch.tensor([2.0, 1.0, 0.5, 1.0, 3.0])
        return (F.smooth_l1_loss(x, y, beta=0.5), F.huber_loss(x, y, delta=0.7, reduction="sum"),
                F.smooth_l1_loss(x, y, reduction="none"), F.huber_loss(x, y), F.smooth_l1_loss(x, y, beta=0.0),
                F.kl_div(logp, y.log_softmax(-1), reduction="batchmean", log_target=True),
                F.kl_div(logp, y.softmax(-1), reduction="none"), F.kl_div(logp, t.relu(), reduction="sum"),
                F.binary_cross_entropy_with_logits(x, y.sigmoid()),
                F.binary_cross_entropy_with_logits(x, y.sigmoid(), weight=self.cw, pos_weight=w, reduction="none"),
                F.cross_entropy(x, target, weight=self.cw), F.cross_entropy(x, target, weight=self.cw, reduction="sum"),
                F.cross_entropy(x, target, weight=self.cw, ignore_index=2),
                F.nll_loss(logp, target, weight=self.cw, reduction="none"),
                F.cross_entropy(x, torch.arange(6) % 5, weight=self.cw))


def test_smooth_divergence_and_weighted_losses_are_their_definitions_with_torchs_gradients() -> None:
    torch.manual_seed(0)
    model = SmoothLosses()
    d = _fresh_round_trip(model, torch.randn(6, 5), torch.randn(6, 5), torch.rand(6, 5), torch.tensor([2, 0, 4, 2, 1, 3]))
    assert d.opaque_count == 0
    lowered = d.to_torch()
    for other in (torch.tensor([1, 1, 0, 3, 4, 4]), torch.tensor([2, 2, 2, 2, 2, 1])):  # none ignored; all but one
        x, y = (3 * torch.randn(6, 5)).requires_grad_(), torch.randn(6, 5, requires_grad=True)
        t = torch.rand(6, 5).masked_fill(torch.rand(6, 5) < 0.3, 0.0).requires_grad_()
        got, want = lowered(x, y, t, other), model(x, y, t, other)
        torch.testing.assert_close(got, want)
        for a, b in zip(torch.autograd.grad(sum(g.sum() for g in got), (x, y, t)),
                        torch.autograd.grad(sum(w.sum() for w in want), (x, y, t))):
            torch.testing.assert_close(a, b, equal_nan=True)


def test_kl_divergence_keeps_torchs_nan_gradient_at_a_zero_target() -> None:
    class KL(nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return F.kl_div(x, t, reduction="sum")

    x, t = torch.randn(1, 3), torch.tensor([[0.0, 0.5, 0.5]])
    d = round_trip(KL(), torch.randn(1, 3), torch.rand(1, 3))
    assert d.opaque_count == 0
    grads = [torch.autograd.grad(f(x, tt), tt)[0] for f in (d.to_torch(), KL()) for tt in [t.clone().requires_grad_()]]
    assert grads[0][0, 0].isnan() and grads[1][0, 0].isnan()  # torch's xlogy(t, t): 0/0 at t = 0
    torch.testing.assert_close(grads[0][0, 1:], grads[1][0, 1:])


def test_losses_torch_clamps_or_weights_with_smoothing_stay_opaque() -> None:
    class Clamped(nn.Module):
        def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return (F.binary_cross_entropy(x.sigmoid(), x.mul(2).sigmoid()),
                    F.cross_entropy(x, target, weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1))

    d = _fresh_round_trip(Clamped(), torch.randn(4, 3), torch.tensor([0, 2, 1, 1]))
    assert d.opaque == (("aten.binary_cross_entropy.default", 1), ("aten.cross_entropy_loss.default", 1))




class Vectors(nn.Module):
    """Products with vectors (``mv``, ``dot``, ``vdot``, ``outer``, ``ger``, ``@`` with a vector on either side) and
    linear maps whose weight the model computes (spectral norm's ``W / σ``, ``F.linear`` with an outer product)."""

    def __init__(self) -> None:
        super().__init__()
        self.v, self.u = nn.Parameter(torch.randn(6)), nn.Parameter(torch.randn(5))
        self.fc = nn.utils.parametrizations.spectral_norm(nn.Linear(6, 5))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.mv(x, self.v), x @ self.v, self.u @ y, torch.dot(x[0], self.v), torch.vdot(self.v, x[1]),
                torch.outer(x[0], self.u), torch.ger(self.u, x[2]), x[0] @ self.v, self.fc(x),
                x @ torch.outer(self.v, self.v), F.linear(x, torch.outer(self.u, self.v), self.u * 2))


def test_products_of_vectors_and_computed_weights_are_einsums_with_torchs_gradients() -> None:
    torch.manual_seed(0)
    model = Vectors().eval()
    d = _fresh_round_trip(model, torch.randn(4, 6), torch.randn(5, 4))
    assert d.opaque_count == 0
    lowered = d.to_torch()
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
    x, y = torch.randn(4, 6, requires_grad=True), torch.randn(5, 4)
    got, want = lowered(x, y), model(x, y)
    torch.testing.assert_close(got, want)
    (a, *pa), (b, *pb) = (torch.autograd.grad(sum(o.sum() for o in out), [x, *m.parameters()])
                          for out, m in ((got, lowered), (want, model)))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(sorted(float(g.sum()) for g in pa), sorted(float(g.sum()) for g in pb), rtol=1e-5, atol=1e-5)
    x3 = torch.randn(3, 6)
    torch.testing.assert_close(d.to_torch(b=3)(x3, y), model(x3, y))  # another batch size


def test_a_product_of_integer_vectors_stays_opaque() -> None:
    class Counts(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = (x > 0).long()
            return x * torch.dot(n[0], n[1])

    d = _fresh_round_trip(Counts(), torch.randn(2, 5))
    assert d.opaque == (("aten.dot.default", 1),)


class Products(nn.Module):
    """``torch.prod`` over one axis (kept or not) and over every entry."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x.prod(-1), torch.prod(x, 1, keepdim=True), x[0].prod(), x.relu().prod(0)


def test_products_are_boxes_with_torchs_gradient_at_zeros() -> None:
    torch.manual_seed(0)
    model = Products()
    d = _fresh_round_trip(model, torch.randn(4, 5, 3))
    assert d.opaque_count == 0
    assert sorted(b.prim.label() for b in d.boxes() if b.prim.op == "prod") == ["Π b", "Π m", "Π t", "Π t m"]
    x = torch.randn(4, 5, 3)
    x[0, 1, 2] = 0.0  # one zero in a product, two in another: autograd's gradient there is not y / x
    x[1, 2, :2] = 0.0
    x.requires_grad_()
    got, want = d.to_torch()(x), model(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(*(torch.autograd.grad(sum(o.sum() for o in out), x)[0] for out in (got, want)))
    x3 = torch.randn(3, 5, 3)
    torch.testing.assert_close(d.to_torch(b=3)(x3), model(x3))


class RunningExtrema(nn.Module):
    """The values of ``cummax`` / ``cummin`` along an axis (and the positions of one, which stay opaque)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x.cummax(1).values, torch.cummin(x, -1)[0]


def test_running_maxima_are_boxes_whose_gradient_goes_where_torchs_positions_say() -> None:
    torch.manual_seed(0)
    model = RunningExtrema()
    d = _fresh_round_trip(model, torch.randn(4, 5, 3))
    assert d.opaque_count == 0
    assert sorted(b.prim.label() for b in d.boxes() if b.prim.op == "cumulative") == ["max≤ t", "min≤ m"]
    x = torch.randn(4, 5, 3).round().requires_grad_()  # equal entries: which one the gradient goes to matters
    got, want = d.to_torch()(x), model(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(*(torch.autograd.grad(sum(o.sum() for o in out), x)[0] for out in (got, want)))
    x3 = torch.randn(3, 5, 3)
    torch.testing.assert_close(d.to_torch(b=3)(x3), model(x3))

    class Positions(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            top, where = torch.cummax(x, -1)
            return top, where

    assert _fresh_round_trip(Positions(), torch.randn(2, 5)).opaque == (("aten.cummax.default", 1),)


class RandomizedReLU(nn.Module):
    """``nn.RReLU`` and ``F.rrelu`` in evaluation: a leaky ReLU with the mean of the two slopes."""

    def __init__(self) -> None:
        super().__init__()
        self.r = nn.RReLU(0.1, 0.3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.r(x), F.rrelu(x), F.rrelu(x, 0.2, 0.25, training=False)


def test_rrelu_in_evaluation_is_torchs_leaky_relu_bit_for_bit_and_random_slopes_stay_opaque() -> None:
    model = RandomizedReLU().eval()
    d = _fresh_round_trip(model, torch.randn(4, 6))
    assert sorted(b.prim.label() for b in d.boxes() if b.prim.op == "elementwise") == ["LR 0.2", "LR 0.225", "LR 0.229167"]
    x = torch.randn(4, 6, requires_grad=True)
    got, want = d.to_torch()(x), model(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(*(torch.autograd.grad(sum(o.sum() for o in out), x)[0] for out in (got, want)), rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ncd.trace(model.train(), torch.randn(4, 6)).opaque == (("aten.rrelu.default", 1),)


class Medians(nn.Module):
    """``torch.median`` along an axis (kept or not); the median of every entry stays opaque."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x.median(1).values, torch.median(x, -1, keepdim=True)[0], x.median(0).values


def test_medians_are_boxes_whose_gradient_goes_to_the_entry_torch_picks() -> None:
    torch.manual_seed(0)
    model = Medians()
    d = _fresh_round_trip(model, torch.randn(4, 6, 3))
    assert d.opaque_count == 0
    assert sorted(b.prim.label() for b in d.boxes() if b.prim.op == "median") == ["median b", "median m", "median t"]
    x = torch.randn(4, 6, 3).round().requires_grad_()  # equal entries: torch picks one of them
    got, want = d.to_torch()(x), model(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(*(torch.autograd.grad(sum(o.sum() for o in out), x)[0] for out in (got, want)))
    x3 = torch.randn(3, 6, 3)
    torch.testing.assert_close(d.to_torch(b=3)(x3), model(x3))

    class Whole(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x - x.median()

    assert _fresh_round_trip(Whole(), torch.randn(2, 5)).opaque == (("aten.median.default", 1),)


class RunningInstanceNorms(nn.Module):
    """Instance norms keeping running statistics (with and without affine parameters) and one from its input's."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.InstanceNorm1d(4, track_running_stats=True)
        self.b = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
        self.c = nn.InstanceNorm1d(4, affine=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.a(x), self.b(y), self.c(x)


def test_instance_norms_reading_running_statistics_are_batch_norms_holding_them() -> None:
    torch.manual_seed(0)
    model = RunningInstanceNorms().train()
    for _ in range(3):  # running statistics away from 0 and 1
        model(torch.randn(2, 4, 7) * 3 + 1, torch.randn(2, 4, 5, 5) * 2 - 1)
    with torch.no_grad():
        model.b.weight.uniform_(0.5, 1.5)
        model.b.bias.uniform_(-1.0, 1.0)
    model.eval()
    d = _fresh_round_trip(model, torch.randn(2, 4, 7), torch.randn(2, 4, 5, 5))
    assert d.opaque_count == 0
    assert sorted(b.prim.op for b in d.boxes() if "norm" in b.prim.op) == ["batchnorm", "batchnorm", "groupnorm"]
    lowered = d.to_torch()
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
    x, y = torch.randn(2, 4, 7, requires_grad=True), torch.randn(2, 4, 5, 5, requires_grad=True)
    got, want = lowered(x, y), model(x, y)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(*(torch.autograd.grad(sum(o.sum() for o in out), (x, y)) for out in (got, want)))
    x3, y3 = torch.randn(3, 4, 7), torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(d.to_torch(b=3)(x3, y3), model(x3, y3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opaque = ncd.trace(model.train(), torch.randn(2, 4, 7), torch.randn(2, 4, 5, 5)).opaque
    assert opaque == (("aten.instance_norm.default", 2),)  # training: batch statistics, running ones updated


class Bags(nn.Module):
    """``nn.EmbeddingBag`` over bags of one size: sum with per-sample weights, mean; max stays opaque."""

    def __init__(self) -> None:
        super().__init__()
        self.sum, self.mean = nn.EmbeddingBag(30, 8, mode="sum"), nn.EmbeddingBag(30, 8, mode="mean")

    def forward(self, ids: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.sum(ids, per_sample_weights=w), self.mean(ids), self.mean(ids[:, :3]) + self.sum(ids[:, :1])


def test_bags_of_embeddings_are_lookups_and_sums_with_torchs_gradients() -> None:
    torch.manual_seed(0)
    model = Bags()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randint(0, 30, (4, 5)), torch.rand(4, 5))
    assert d.opaque_count == 0
    lowered = d.to_torch()
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
    ids, w = torch.randint(0, 30, (4, 5)), torch.rand(4, 5, requires_grad=True)
    got, want = lowered(ids, w), model(ids, w)
    torch.testing.assert_close(got, want)
    (a, *pa), (b, *pb) = (torch.autograd.grad(sum(o.sum() for o in out), [w, *m.parameters()])
                          for out, m in ((got, lowered), (want, model)))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(sorted(float(g.sum()) for g in pa), sorted(float(g.sum()) for g in pb))

    class Max(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.max = nn.EmbeddingBag(30, 8, mode="max")

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.max(ids)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ncd.trace(Max(), torch.randint(0, 30, (4, 5))).opaque == (("aten.embedding_bag.padding_idx", 1),)
