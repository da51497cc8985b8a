"""ncd.trace draws the ATen operators of ncd.trace.boxes as their own primitives (no opaque box), and the lowered
diagram computes what the model computes, on the traced inputs and on fresh ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import ncd
from tests.test_trace_robust import _fresh_round_trip


def _ops(d: ncd.TracedDiagram) -> list[str]:
    return sorted(b.prim.op for b in d.boxes())


class Boundaries(nn.Module):
    """Swin's shifted windows, convolution padding of every mode, running sums of floats and of a router's mask."""

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.roll(x, shifts=(-1, 2), dims=(1, 2))
        y = F.pad(y, (1, 1, 2, 0), mode="reflect")
        y = F.pad(y, (0, 1), value=0.5)
        y = F.pad(y, (1, 1, 1, 1), mode="replicate")
        y = F.pad(y, (0, 0, 0, 0))  # nothing: a wire
        y = F.pad(y[:, :1, :1], (0, 0, 0, 2, 0, 3)) + 1  # size-1 wires padded (Swin's patch merging at the last stage)
        counts = torch.cumsum(ids > 1, dim=1)  # a router's running count of tokens
        return y.cumsum(-1), counts


def test_roll_pad_and_cumsum_are_boxes_that_round_trip() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(Boundaries(), torch.randn(2, 5, 6, 3), torch.randint(0, 4, (2, 7)))
    assert d.opaque_count == 0
    ops = _ops(d)
    assert ops.count("roll") == 1 and ops.count("pad") == 4 and ops.count("cumsum") == 2
    modes = sorted(b.prim.mode for b in d.boxes() if b.prim.op == "pad")
    assert modes == ["constant", "constant", "reflect", "replicate"]


class Unsupported(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.roll(x, 3), F.pad(x, (1, 1), mode="circular")  # a flattened roll; circular padding (now a box)


def test_what_the_boxes_cannot_say_stays_opaque_and_exact() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = _fresh_round_trip(Unsupported(), torch.randn(2, 5))
    assert d.opaque_count == 1  # the flattened roll; the circular padding is a pad box
    assert [b.prim.mode for b in d.boxes() if b.prim.op == "pad"] == ["circular"]


class Vision(nn.Module):
    """ConvNeXt/MobileViT-style pieces: group norm, interpolation, adaptive pooling, functions met opaque before."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(2, 4)
        self.plain = nn.GroupNorm(4, 4, affine=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.plain(self.norm(x))
        y = F.interpolate(y, scale_factor=2, mode="nearest")
        y = F.interpolate(y, size=(5, 7), mode="bilinear", align_corners=False)
        z = F.adaptive_avg_pool2d(y, (3, 2)) + F.adaptive_max_pool2d(y, (3, 2))
        act = torch.rsqrt(z.abs() + 1) + F.softplus(z) + F.hardswish(z) + F.hardsigmoid(z) + F.relu6(z) + F.mish(z)
        more = F.leaky_relu(z) * F.elu(z) + torch.erf(z) + torch.sin(z) * torch.cos(z) + torch.square(z)
        return act, more, z / (y.mean(-1)[..., :3, None] + 2)


def test_group_norm_resampling_and_functions_are_boxes_that_round_trip() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(Vision(), torch.randn(2, 4, 6, 5))
    assert d.opaque_count == 0
    ops = _ops(d)
    assert ops.count("groupnorm") == 2 and ops.count("interpolate") == 2 and ops.count("divide") == 1
    assert {"adaptive_avgpool", "adaptive_maxpool"} <= set(ops)
    functions = {b.prim.function for b in d.boxes() if b.prim.op == "elementwise"}
    assert {"rsqrt", "softplus", "hardswish", "hardsigmoid", "relu6", "mish", "leaky_relu", "elu", "erf", "sin", "cos",
            "square"} <= functions
    assert sum(p.numel() for p in d.to_torch().parameters()) == 8  # the affine group norm's weight and bias


class Router(nn.Module):
    """A mixture-of-experts router (Mixtral, Qwen2-MoE): top-k experts, their weights renormalised, tokens sorted by expert."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Linear(6, 5, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        probs = torch.softmax(self.gate(x), dim=-1)
        weights, experts = torch.topk(probs, 2, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        ranked, order = torch.sort(probs, dim=1, descending=True)
        return weights, experts, ranked, order, torch.argsort(probs, dim=-1, stable=True)


def test_top_k_and_sort_routing_are_boxes_that_round_trip() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(Router(), torch.randn(2, 7, 6))
    assert d.opaque_count == 0
    ops = _ops(d)
    assert ops.count("topk") == 1 and ops.count("sort") == 2 and ops.count("divide") == 1


class GroupRouter(nn.Module):
    """DeepSeek-V3's router: unsorted top-k over the best expert groups (a mask scattered in place), the chosen scores
    gathered back."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Linear(6, 8, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.gate(x).sigmoid()
        groups = scores.view(-1, 2, 4).topk(2, dim=-1)[0].sum(-1)
        best = torch.topk(groups, k=1, dim=-1, sorted=False)[1]
        mask = torch.zeros_like(groups)
        mask.scatter_(1, best, 1)
        allowed = mask[:, :, None].expand(-1, 2, 4).reshape(-1, 8)
        chosen = torch.topk(scores.masked_fill(~allowed.bool(), 0.0), k=3, dim=-1, sorted=False)[1]
        return scores.gather(1, chosen), torch.gather(scores[:, None, :].expand(-1, 3, -1), 2, chosen[:, :, None])


def test_unsorted_top_k_scatter_and_gather_along_an_axis_are_boxes_that_round_trip() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(GroupRouter(), torch.randn(7, 6))
    assert d.opaque_count == 0
    ops = _ops(d)
    assert ops.count("topk") == 3 and ops.count("gather") == 2 and ops.count("scatter") == 1
    assert sorted(b.prim.ordered for b in d.boxes() if b.prim.op == "topk") == [False, False, True]


class RelativeBias(nn.Module):
    """Swin's and LeViT's relative-position biases: a learned table read at a constant buffer of positions."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(7, 2))
        self.register_buffer("index", torch.randint(0, 7, (4, 4)))
        self.biases = nn.Parameter(torch.randn(2, 5))
        self.register_buffer("idxs", torch.randint(0, 5, (4, 4)))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        bias = self.table[self.index.view(-1)].view(4, 4, 2).permute(2, 0, 1)
        return scores + bias + self.biases[:, self.idxs]


def test_a_table_read_at_constant_positions_is_a_gather_that_round_trips() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(RelativeBias(), torch.randn(3, 2, 4, 4))
    assert d.opaque_count == 0
    assert _ops(d).count("gather") == 2
    wrapped = RelativeBias()
    wrapped.index[0, 0] = -1  # a negative position (torch counts it from the end): the gather at 6, from the start
    d = _fresh_round_trip(wrapped, torch.randn(3, 2, 4, 4))
    assert d.opaque_count == 0 and _ops(d).count("gather") == 2


class Interleaved(nn.Module):
    """Mamba-2's groups shared by heads (``B.repeat_interleave(h // g, dim=2)``) and Canine's per-character copies."""

    def forward(self, b: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return b.repeat_interleave(3, dim=2) * 2, torch.repeat_interleave(b[0, 0, :, 0], 2), ids.repeat_interleave(2, -1)


def test_repeat_interleave_by_a_number_is_a_copy_and_a_merge_that_round_trips() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(Interleaved(), torch.randn(2, 5, 4, 3), torch.randint(0, 9, (2, 5)))
    assert d.opaque_count == 0
    assert _ops(d).count("expand") == 3


class StatefulProduct(nn.Module):
    """A gated delta rule's first chunk: queries times a state that starts as a constant (batch read positionally)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("state", torch.randn(2, 3, 4, 5))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return q @ self.state + torch.zeros(2, 3, 6, 4) @ q.transpose(-1, -2)[..., :5]


def test_a_product_with_a_constant_operand_is_an_einsum_that_round_trips() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(StatefulProduct(), torch.randn(2, 3, 6, 4))
    assert d.opaque_count == 0
    assert _ops(d).count("einsum") == 2


class ComputedWeights(nn.Module):
    """Convolutions whose weight is computed from parameters: BiT's weight standardisation, wav2vec2's weight-normed
    grouped positional convolution (``nn.utils.weight_norm``: ``torch._weight_norm(v, g, dim)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.standardised = nn.Parameter(torch.randn(6, 3, 3, 3))
        self.direction = nn.Parameter(torch.randn(6, 3, 3))
        self.gain = nn.Parameter(torch.randn(1, 1, 3))
        self.bias = nn.Parameter(torch.randn(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.standardised
        w = w - w.mean(dim=(1, 2, 3), keepdim=True)
        w = w / (w.square().mean(dim=(1, 2, 3), keepdim=True) + 1e-6).sqrt()
        y = F.conv2d(x, w, None, 2, 1).flatten(2)  # b 6 16
        normed = torch._weight_norm(self.direction, self.gain, 2)
        z = F.conv1d(y, normed, self.bias, padding=1, groups=2)
        return z + F.conv1d(y, normed * 2, stride=2, groups=2).sum(-1, keepdim=True)


def test_a_convolution_with_a_computed_weight_is_one_box_taking_it_as_a_wire_that_round_trips() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(ComputedWeights(), torch.randn(2, 3, 8, 8))
    assert d.opaque_count == 0
    ops = _ops(d)
    # 2-d and both grouped 1-d: one box each taking the weight as a wire (see computed_weight_convolution)
    assert ops.count("conv_with_weight") == 3
    assert "conv_tensor" not in ops and "conv" not in ops and ops.count("weight_norm") == 1
    assert ops.count("einsum") == 3  # the standardisation's means alone (the 1-d convolutions were two more)


class Extremes(nn.Module):
    """RWKV's running maximum of exponents, Hiera's max pooling over a window axis, a router's best expert, q/k/v unbound."""

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        running = torch.maximum(state, x[:, 0]) - torch.minimum(x[:, 1], state)
        pooled = x.max(dim=1).values[:, None, :] + x.min(dim=1, keepdim=True)[0]
        best, where = x.max(dim=-1)
        q, k, v = x[:, :3].unbind(1)
        return running, pooled, best * q.sum(-1, keepdim=True), where, torch.max(k, v), x.min(1)[1]


def test_maximum_minimum_max_along_an_axis_and_unbind_are_boxes_that_round_trip() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(Extremes(), torch.randn(2, 4, 5), torch.randn(2, 5))
    assert d.opaque_count == 0, d.opaque
    ops = _ops(d)
    assert ops.count("extremum") == 3 and ops.count("topk") == 3 and ops.count("argmax") == 2


class ResidualCodebooks(nn.Module):
    """EnCodec's residual vector quantizer: each codebook's nearest entries stacked, then decoded codebook by codebook
    (``for i, codes in enumerate(stacked)``: an unbind of an index tensor, whose pieces are indices into a codebook)."""

    def __init__(self) -> None:
        super().__init__()
        self.books = nn.ModuleList(nn.Embedding(6, 4) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual, codes = x, []
        for book in self.books:
            nearest = ((residual[:, :, None] - book.weight) ** 2).sum(-1).argmin(-1)
            residual = residual - book(nearest)
            codes.append(nearest)
        out = torch.full((), 0.0)
        for i, picked in enumerate(torch.stack(codes)):
            out = out + self.books[i](picked)
        return out


def test_unbind_of_indices_keeps_their_range_and_is_a_box_that_round_trips() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(ResidualCodebooks(), torch.randn(2, 5, 4))
    assert d.opaque_count == 0, d.opaque  # was an opaque unbind: 'cannot compose identity on ... [6]'
    picks = [b.prim for b in d.boxes() if b.prim.op == "index"]
    assert len(picks) == 3 and all(p.dtype == "index" and p.range == 6 for p in picks)

class Bounded(nn.Module):
    """PhiMoE's sparse mixer clamps by tensors; Inkling's local windows are ``x.unfold``."""

    def forward(self, x: torch.Tensor, lo: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.clamp(x, min=lo), x.clamp(lo, lo + 1), x.unfold(-1, 3, 2) * 2, x.unfold(1, 2, 1)


def test_clamp_by_tensors_and_sliding_windows_are_boxes_that_round_trip() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(Bounded(), torch.randn(2, 5, 7), torch.randn(2, 5, 1))
    assert d.opaque_count == 0, d.opaque
    ops = _ops(d)
    assert ops.count("extremum") == 1 and ops.count("clamp") == 1 and ops.count("conv_tensor") == 2


class WindowMeans(nn.Module):
    """Granite Speech's pooling by 2 in time (``unfold(1, 2, 2).mean(-1)``), a moving average of 3, and near misses: the
    windows read twice, the mean keeping its wire."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w = x.unfold(1, 2, 1)
        return (x.unfold(1, 2, 2).mean(-1), x.unfold(-1, 3, 1).mean(dim=-1), w.mean(-1) + w.sum(-1),
                x.unfold(1, 2, 2).mean(-1, keepdim=True))


def test_means_of_sliding_windows_are_average_pools() -> None:
    torch.manual_seed(0)
    model = WindowMeans()
    d = _fresh_round_trip(model, torch.randn(2, 8, 6))
    assert d.opaque_count == 0, d.opaque
    ops = _ops(d)
    assert ops.count("avgpool") == 2 and ops.count("conv_tensor") == 2, ops
    x = torch.randn(3, 12, 6, requires_grad=True)  # at another batch and length
    module = d.to_torch(b=3, t=12)
    y = x.detach().clone().requires_grad_(True)
    with torch.no_grad():
        for got, want in zip(module(x), model(x)):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    sum(t.sum() for t in model(x)).backward()
    sum(t.sum() for t in module(y)).backward()
    torch.testing.assert_close(y.grad, x.grad)


class OpenClamps(nn.Module):
    """Mamba 2's ``clamp(dt, dt_min, inf)``; clamps by numbers bounding nothing (``-inf`` below, ``inf`` above) and a
    near miss bounding everything (``-inf`` above)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inf = float("inf")
        return x.clamp(0.5, inf), torch.clamp(x, min=-inf), x.clamp_max(inf), x.clamp_min(-inf) * 2, x.clamp(max=-inf)


def test_clamps_by_infinite_numbers_are_no_boxes() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4) * 3
    d = _fresh_round_trip(OpenClamps(), x)
    assert d.opaque_count == 0, d.opaque
    labels = sorted(b.prim.label() for b in d.boxes() if b.prim.op == "arithmetic")
    assert labels == ["max(·, 0.5)", "min(·, -inf)"], labels
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    sum(t.sum() for t in OpenClamps()(xs[0])[:4]).backward()
    sum(t.sum() for t in d.to_torch()(xs[1])[:4]).backward()
    torch.testing.assert_close(xs[1].grad, xs[0].grad)


class Clippable(nn.Module):
    """Gemma 4's ClippableLinear: clamps by one-entry buffers, ``±inf`` until a checkpoint sets them (``finite``: set),
    and near misses that bound: ``-inf`` above, a parameter of ``-inf`` below."""

    def __init__(self, finite: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        inf = torch.tensor(float("inf"))
        self.register_buffer("input_min", torch.tensor(-0.5) if finite else -inf)
        self.register_buffer("input_max", torch.tensor(0.5) if finite else inf)
        self.register_buffer("output_min", -inf)
        self.register_buffer("output_max", inf)
        self.floor = nn.Parameter(-inf.clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = torch.clamp(self.linear(torch.clamp(x, self.input_min, self.input_max)), self.output_min, self.output_max)
        return y, x.clamp(max=self.output_min), torch.clamp(x, min=self.floor)


def test_clamps_by_constant_infinities_are_no_boxes() -> None:
    torch.manual_seed(0)
    for finite, clamps in ((False, 0), (True, 1)):  # the near misses' 2 stay; the set buffers' clamp too
        model = Clippable(finite)
        x = torch.randn(2, 5, 4) * 3
        d = _fresh_round_trip(model, x)
        assert d.opaque_count == 0, d.opaque
        assert _ops(d).count("extremum") == 2 and _ops(d).count("clamp") == clamps
        module = d.to_torch()
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        sum(t.sum() for t in model(xs[0])).backward()
        sum(t.sum() for t in module(xs[1])).backward()
        torch.testing.assert_close(xs[1].grad, xs[0].grad)

class RelativeShift(nn.Module):
    """Funnel's relative attention: einsums of a live query with positional tensors computed from constants and
    parameters (no operand of some einsums is live)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(6, 2, 3))
        self.register_buffer("positions", torch.randn(4, 6))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        r = torch.einsum("td,dnh->tnh", self.positions, self.kernel)
        return torch.einsum("bind,snd->bnis", q, r)


def test_einsums_of_constants_and_parameters_are_einsums_that_round_trip() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(RelativeShift(), torch.randn(2, 5, 2, 3))
    assert d.opaque_count == 0, d.opaque
    assert _ops(d).count("einsum") == 2


class Reductions(nn.Module):
    """Norms as SwinV2, ConvNeXtV2 and YOSO take them (F.normalize, a global response norm, p = 1), log-sum-exp as Reformer."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        unit = F.normalize(x, dim=-1)
        grn = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        grn = x * (grn / (grn.mean(dim=-1, keepdim=True) + 1e-6))
        angle = torch.acos(0.9 * torch.tanh((unit * unit.roll(1, 1)).sum(-1)))
        return unit, grn, x.norm(p=1, dim=1), torch.logsumexp(x, dim=-1, keepdim=True) - x, angle


def test_norms_and_log_sum_exp_are_boxes_that_round_trip() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(Reductions(), torch.randn(2, 3, 4, 5))
    assert d.opaque_count == 0
    ops = _ops(d)
    assert ops.count("vector_norm") == 3 and ops.count("logsumexp") == 1
    assert sorted(b.prim.p for b in d.boxes() if b.prim.op == "vector_norm") == [1.0, 2.0, 2.0]


class Spectral(nn.Module):
    """FNet's token mixing (the real part of a 2-d transform) and a learned complex filter between rfft and irfft."""

    def __init__(self) -> None:
        super().__init__()
        self.filter = nn.Parameter(torch.randn(4, 6, dtype=torch.cfloat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.fft.fftn(x, dim=(-2, -1)).real + torch.fft.ifft(torch.fft.fft(x, dim=1), dim=1, norm="ortho").imag
        return mixed + torch.fft.irfft(torch.fft.rfft(x, dim=1) * self.filter, n=x.shape[1], dim=1)


def test_fourier_transforms_and_complex_wires_are_boxes_that_round_trip() -> None:
    torch.manual_seed(0)
    model = Spectral()
    d = _fresh_round_trip(model, torch.randn(2, 7, 6))
    assert d.opaque_count == 0
    ops = _ops(d)
    assert ops.count("fourier") == 5 and ops.count("complex_part") == 2 and ops.count("complex_multiply") == 1
    lowered = d.to_torch()
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
    assert any(p.is_complex() for p in lowered.parameters())


class MixedArithmetic(nn.Module):
    """Floats with 0/1 masks and counts (YOSO, ConvBERT's ``torch.multiply``), and SwiftFormer's repeat of a size-1 wire."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ints = mask.long()
        y = x * ints[:, :, None] + torch.multiply(x, x) - mask[:, :, None] / (ints[:, :, None] + 1.0)
        z = (y - ints[:, :, None]) + ints[:, None, :1]
        return y, z, y.mean(1, keepdim=True).repeat(1, x.shape[1], 1), y.repeat(1, 1, 1)


def test_float_with_integer_arithmetic_and_repeats_of_unit_wires_are_boxes_that_round_trip() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(MixedArithmetic(), torch.randn(2, 5, 3), torch.rand(2, 5) > 0.5)
    assert d.opaque_count == 0
    ops = _ops(d)
    assert ops.count("cast") >= 4 and "expand" in ops


class Columns(nn.Module):
    """ConvBERT's span windows (F.unfold with a (k, 1) kernel) and MobileViT's patches folded back (F.unfold, F.fold)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spans = F.unfold(x[..., :1], (3, 1), padding=(1, 0))
        patches = F.unfold(x, 2, stride=2)
        return spans, F.fold(patches * 2, x.shape[-2:], 2, stride=2) + F.fold(F.unfold(x, 3, padding=1), x.shape[-2:], 3,
                                                                          padding=1)


def test_unfold_and_fold_are_windows_that_round_trip() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(Columns(), torch.randn(2, 3, 6, 4))
    assert d.opaque_count == 0
    ops = _ops(d)
    assert ops.count("conv_tensor") == 3 and ops.count("conv_tensor_t") == 2


class Masks(nn.Module):
    """Masks as inputs: filled scores (masked_fill), a where with a number on either side, and their logic."""

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, ...]:
        scores = x @ x.transpose(-1, -2)
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
        allowed = causal & keep[:, None, :] | ~keep[:, :, None]
        filled = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        return filled, torch.where(keep[..., None], x, 0.0), torch.where(x > 0, -1.0, x), torch.logical_xor(keep, keep[:, :1])


def test_where_masked_fill_and_mask_logic_are_boxes_that_round_trip() -> None:
    torch.manual_seed(0)
    keep = torch.rand(2, 5) > 0.3
    d = _fresh_round_trip(Masks(), torch.randn(2, 5, 3), keep)
    assert d.opaque_count == 0
    ops = _ops(d)
    assert ops.count("where") >= 3 and ops.count("logic") >= 4


class LearnedSlopes(nn.Module):
    """xIELU-style (Apertus): a one-entry parameter, through a function, read as one number on each branch of a where."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.randn(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x * F.softplus(self.alpha), x)


def test_a_one_entry_tensor_read_as_a_number_lowers() -> None:
    d = _fresh_round_trip(LearnedSlopes(), torch.randn(2, 3))
    assert d.opaque_count == 0 and "view" in _ops(d)


def test_the_internals_worked_example_runs() -> None:
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "internals.md").read_text(encoding="utf-8")
    section = page[page.index("## Worked example: adding `roll`"):]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    exec(compile(block, "docs/internals.md (worked example)", "exec"), {"__name__": "__docs__"})  # noqa: S102 - our own docs


def test_opaque_call_gets_integer_inputs_in_their_recorded_dtype() -> None:
    """An int32 tensor is an index wire (lowered as int64); an opaque kernel that needs equal dtypes
    (scatter_add into an int32 buffer) gets it cast back, so the lowered module runs and equals the model."""

    class Counts(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            idx = x.topk(3, dim=-1).indices
            counts = torch.zeros(2, 8, 8, dtype=torch.int32)
            counts.scatter_add_(-1, idx, idx.ge(0).to(torch.int32))
            return x.masked_fill(counts.ne(0), 0.0)

    x = torch.randn(2, 8, 8)
    d = ncd.trace(Counts(), x)
    fresh = torch.randn(2, 8, 8)
    torch.testing.assert_close(d.to_torch()(fresh), Counts()(fresh))


def test_min_and_max_of_two_tensors_keep_their_sense() -> None:
    """``torch.min(x, eps)`` (aten.min.other, Apertus's xIELU) is the smaller entry, ``torch.max`` the larger."""

    class MinMax(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("eps", torch.tensor(-1e-6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.expm1(torch.min(x, self.eps)) + 3 * torch.max(x, self.eps)

    d = ncd.trace(MinMax(), torch.randn(2, 5, 4))
    assert d.opaque_count == 0
    fresh = torch.randn(2, 5, 4)
    torch.testing.assert_close(d.to_torch()(fresh), MinMax()(fresh))


def test_log2_is_an_elementwise_box_with_autograds_gradient() -> None:
    """SAM 3's log-scale box deltas ``sign(d) * log2(|d| + 1) / 3``: ``log2`` was opaque (no rule)."""

    class LogScale(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sign(x) * torch.log2(torch.abs(x) + 1.0) / 3.0

    d = ncd.trace(LogScale(), torch.randn(2, 5, 4))
    assert d.opaque_count == 0 and any(b.prim.label() == "log₂" for b in d.boxes())
    fresh = torch.randn(2, 5, 4, requires_grad=True)
    fresh2 = fresh.detach().clone().requires_grad_(True)
    got, want = d.to_torch()(fresh), LogScale()(fresh2)
    torch.testing.assert_close(got, want)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(fresh.grad, fresh2.grad)
