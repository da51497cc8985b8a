"""Operators the corpus met opaque, now boxes: log-sigmoid (xLSTM's gates, in a loop folded into a scan), average
pooling that excludes the padding
(PoolFormer), ``index_select`` (XLNet, M2M-100), ``linalg.norm`` (OWL-ViT), ``tile`` and ``repeat`` of wires of several
entries (SAM 2), ``select`` of an integer tensor (LayoutLM's ``bbox[..., k]``).  Each: no opaque box, and the lowered
module equals the model on the traced inputs and on fresh ones (integers too)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd


def round_trip(model: nn.Module, *inputs: torch.Tensor, fresh: tuple[torch.Tensor, ...]) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model.eval(), *inputs)
    lowered = d.to_torch()
    with torch.no_grad():
        for args in (inputs, fresh):
            got, want = lowered(*args), model(*args)
            for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
    return d


def _ops(d: ncd.TracedDiagram) -> list[str]:
    return [b.prim.op for b in d.boxes()]


class Gates(nn.Module):
    """PoolFormer's token mixer (average over 3×3, the padding not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.pool(x) - x)


def test_pooling_without_the_padding_is_a_box() -> None:
    d = round_trip(Gates(), torch.randn(2, 3, 5, 5), fresh=(4 * torch.randn(2, 3, 5, 5),))
    assert d.opaque_count == 0
    pools = [b.prim for b in d.boxes() if b.prim.op == "avgpool"]
    assert len(pools) == 1 and not pools[0].count_include_pad


class GatedLoop(nn.Module):
    """xLSTM's matrix memory in miniature: log-sigmoid forget gates, a per-head outer-product state and a read-out
    scaled by ``1/sqrt(head dim)`` inside a Python time loop (which folds into one scan)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.f = nn.Linear(6, 16), nn.Linear(6, 16), nn.Linear(6, 16), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, 2, 8) for proj in (self.q, self.k, self.v))
        f = F.logsigmoid(self.f(x))
        c = torch.zeros(b, 2, 8, 8)
        ys = []
        for i in range(t):
            c = torch.exp(f[:, i])[..., None, None] * c + k[:, i, :, :, None] * v[:, i, :, None, :]
            ys.append((q[:, i, :, None, :] @ c).squeeze(-2) / math.sqrt(8))
        return torch.stack(ys, 1)


def test_log_sigmoid_gates_fold_into_a_scan_whose_scale_size_is_a_default() -> None:
    """The scale inside the scan's body is read as ``1/sqrt(size)`` (head size 8: an irrational factor, which is drawn
    as a size's power; a rational one such as 1/sqrt(9) stays a number): that size is among the diagram's defaults (it
    was left unbound, and the lowered module failed)."""
    torch.manual_seed(0)
    d = round_trip(GatedLoop(), torch.randn(2, 5, 6), fresh=(torch.randn(2, 5, 6),))
    assert d.opaque_count == 0
    assert any(getattr(b.prim, "function", "") == "log_sigmoid" for b in d.boxes())
    (scan,) = [b.prim for b in d.boxes() if b.prim.op == "scan"]
    scales = [b.prim.factor for b in scan.body.boxes() if b.prim.op == "scale"]
    assert any(s.free_symbols for s in scales)
    assert {str(s) for s in scales[0].free_symbols} <= set(dict(d.as_block().get("defaults", ())))


class Selected(nn.Module):
    """XLNet's ``index_select`` at constant positions (``arange``), and one at live positions."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 4)

    def forward(self, x: torch.Tensor, ids: torch.Tensor, at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shifted = torch.index_select(x, 1, torch.arange(3))  # the first 3 of 5 positions
        read = self.embed(ids).index_select(1, at)  # a tensor read at live positions along an inner wire
        return shifted * 2, read


def test_index_select_is_a_gather() -> None:
    ids = torch.tensor([[1, 3, 0, 2], [2, 2, 1, 0]])
    d = round_trip(Selected(), torch.randn(2, 5, 4), ids, torch.tensor([3, 0, 1]),
                   fresh=(torch.randn(2, 5, 4), torch.tensor([[0, 1, 3, 3], [1, 0, 2, 2]]), torch.tensor([1, 1, 2])))
    assert d.opaque_count == 0
    assert _ops(d).count("gather") == 2


class Normalised(nn.Module):
    """OWL-ViT's ``x / linalg.norm(x, ord=2, dim=-1, keepdim=True)`` and a 1-norm along an inner wire."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (x / torch.linalg.norm(x, ord=2, dim=-1, keepdim=True), torch.linalg.norm(x, ord=1, dim=1),
                torch.linalg.norm(x, dim=(1, 2)))


def test_vector_norms_of_linalg_norm_are_boxes() -> None:
    d = round_trip(Normalised(), torch.randn(2, 3, 4), fresh=(torch.randn(2, 3, 4),))
    assert d.opaque_count == 0
    assert sorted(b.prim.p for b in d.boxes() if b.prim.op == "vector_norm") == [1.0, 2.0, 2.0]


class Tiled(nn.Module):
    """SAM 2's window position embedding tiled over the image, and ``repeat`` of a wire of several entries."""

    def __init__(self) -> None:
        super().__init__()
        self.window = nn.Parameter(torch.randn(1, 4, 2, 3))
        self.pos = nn.Parameter(torch.randn(1, 4, 6, 6))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x + self.pos + self.window.tile([1, 1, 3, 2]), x.repeat(1, 2, 1, 1), x.tile((2,))


def test_tile_and_repeat_copy_a_wire_of_several_entries() -> None:
    d = round_trip(Tiled(), torch.randn(2, 4, 6, 6), fresh=(torch.randn(2, 4, 6, 6),))
    assert d.opaque_count == 0


class Boxes(nn.Module):
    """LayoutLM: each coordinate of ``bbox`` (integers) read with ``bbox[:, :, k]`` and embedded."""

    def __init__(self) -> None:
        super().__init__()
        self.x = nn.Embedding(10, 4)
        self.y = nn.Embedding(10, 4)

    def forward(self, bbox: torch.Tensor) -> torch.Tensor:
        return self.x(bbox[:, :, 0]) + self.y(bbox[:, :, 1]) + self.x(bbox[:, :, 2])


def test_select_of_an_integer_tensor_keeps_its_range() -> None:
    bbox = torch.randint(0, 10, (2, 3, 4))
    d = round_trip(Boxes(), bbox, fresh=(torch.randint(0, 10, (2, 3, 4)),))
    assert d.opaque_count == 0
    picks = [b.prim for b in d.boxes() if b.prim.op == "index"]
    assert len(picks) == 3 and all(p.dtype == "index" and p.range == 10 for p in picks)


class Standardised(nn.Conv2d):
    """BiT's weight-standardised convolution: each output channel's weights normalised by ``batch_norm`` in training
    mode on a batch of one (no running statistics, no affine parameters)."""

    def __init__(self) -> None:
        super().__init__(3, 4, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.0,
                         eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, None, self.stride, self.padding)


def test_weight_standardisation_is_a_layer_norm_of_the_weight() -> None:
    d = round_trip(Standardised(), torch.randn(2, 3, 5, 5), fresh=(torch.randn(2, 3, 5, 5),))
    assert d.opaque_count == 0 and [b.prim.op for b in d.boxes()].count("conv_with_weight") == 1  # the weight a wire
    norms = [b.prim for b in d.boxes() if b.prim.op == "layernorm"]
    assert len(norms) == 1 and not norms[0].affine and norms[0].eps == 1e-6 and int(norms[0].axes.axes[0].size) == 27


class StandardisedConv(nn.Module):
    """BiT's weight-standardised 2-d convolutions: the weight is computed (a layer norm of each output channel's
    weights) and convolved as a wire; the second is grouped and strided."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.Conv2d(6, 4, 3, stride=2, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.first, self.second):
            w = conv.weight
            w = F.batch_norm(w.reshape(1, w.shape[0], -1), None, None, training=True, momentum=0.0, eps=1e-6).reshape_as(w)
            x = F.conv2d(x, w, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return x


def test_a_convolution_of_a_computed_weight_takes_it_as_a_wire() -> None:
    """One box ``(x, W) -> y`` lowered to ``F.conv2d`` (BiT's 53 convolutions were opaque); costs equal measurement
    (flop counter, saved tensors) and the backward diagram equals autograd's gradients."""
    from ncd.torch.measure import measure

    torch.manual_seed(0)
    model = StandardisedConv()
    x = torch.randn(2, 3, 8, 8)
    d = round_trip(model, x, fresh=(torch.randn(2, 3, 8, 8),))
    assert d.opaque_count == 0 and [b.prim.op for b in d.boxes()].count("conv_with_weight") == 2
    from ncd.torch.verify import compare_gradients

    block = d.as_block()
    report, measured = ncd.cost(block), measure(block, inputs=(x,))
    assert (report.forward_matmul, report.activation_bytes) == (measured.forward_flops, measured.activation_bytes)
    pairs = compare_gradients(block, inputs=(x,))
    assert [name for name, _, _ in pairs] == ["input 0"] + [name for name, _ in d.to_torch().named_parameters()]
    for name, got, want in pairs:
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")


class WeightNormedUpsampling(nn.Module):
    """EnCodec's and DAC's upsampling: weight-normed transposed convolutions (``parametrizations.weight_norm``), the
    second strided, grouped, output-padded and dilated, then a 2-d one."""

    def __init__(self) -> None:
        super().__init__()
        norm = nn.utils.parametrizations.weight_norm
        self.first = norm(nn.ConvTranspose1d(4, 6, 4, stride=2))
        self.second = norm(nn.ConvTranspose1d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2))
        self.flat = norm(nn.ConvTranspose2d(4, 3, 2, stride=2, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.second(torch.tanh(self.first(x)))
        return self.flat(y.unflatten(-1, (2, -1)))


def test_a_transposed_convolution_of_a_computed_weight_takes_it_as_a_wire() -> None:
    """A weight-normed ``ConvTranspose`` is one ``(x, W) -> y`` box lowered to ``F.conv_transpose*d`` (EnCodec's four
    upsampling layers were opaque); equal to the model, and its costs equal measurement."""
    from ncd.torch.measure import measure

    torch.manual_seed(0)
    model = WeightNormedUpsampling()
    x = torch.randn(2, 4, 7)
    d = round_trip(model, x, fresh=(torch.randn(2, 4, 7),))
    assert d.opaque_count == 0
    boxes = [b.prim for b in d.boxes() if b.prim.op == "conv_with_weight"]
    assert [(p.transposed, p.output_padding, int(p.groups)) for p in boxes] == [(True, (0,), 1), (True, (1,), 2),
                                                                                 (True, (0, 0), 1)]
    block = d.as_block()
    report, measured = ncd.cost(block), measure(block, inputs=(x,))
    assert (report.forward_matmul, report.activation_bytes) == (measured.forward_flops, measured.activation_bytes)


def test_a_weight_norm_is_one_box_of_its_direction_and_gain() -> None:
    """``parametrizations.weight_norm``'s ``torch._weight_norm(v, g, dim)`` is one ``g·v/‖v‖`` box reading the gain as
    the parametrization keeps it (``o 1 1``; was a norm, a view, a ratio, a broadcast and a product): equal to the
    model, its costs equal measurement."""
    from ncd.torch.measure import measure

    torch.manual_seed(0)
    norm = nn.utils.parametrizations.weight_norm
    model = nn.Sequential(norm(nn.ConvTranspose1d(4, 6, 4, stride=2)), nn.Tanh(),
                          norm(nn.Conv1d(6, 4, 3), dim=2), norm(nn.Conv1d(4, 2, 1, bias=False)))  # a gain along the kernel
    x = torch.randn(2, 4, 7)
    d = round_trip(model, x, fresh=(torch.randn(2, 4, 7),))
    ops = [b.prim for b in d.boxes()]
    norms = [p for p in ops if p.op == "weight_norm"]
    assert [(p.keep, [int(a.size) for a in p.gain.axes]) for p in norms] == [(0, [4, 1, 1]), (2, [1, 1, 3]),
                                                                              (0, [2, 1, 1])]
    assert not {"vector_norm", "divide"} & {p.op for p in ops}
    block = d.as_block()
    report, measured = ncd.cost(block), measure(block, inputs=(x,))
    assert (report.forward_matmul, report.activation_bytes) == (measured.forward_flops, measured.activation_bytes)


def test_a_weight_normed_convolution_reads_its_weight_without_a_renaming_box() -> None:
    """The weight norm of a convolution's weight names its wires as the ``★·W`` box reads them (output channels, input
    channels per group, kernel): no view box renames them in between (EnCodec drew 36), for a convolution, a grouped one
    with the gain along the kernel (wav2vec2's positional convolution) and a transposed one; the lowered module equals
    the model, and at another length too (the positions are still sized by ``t``)."""
    torch.manual_seed(0)
    norm = nn.utils.parametrizations.weight_norm
    model = nn.Sequential(norm(nn.Conv1d(4, 6, 3, stride=2)), nn.Tanh(), norm(nn.Conv1d(6, 6, 3, groups=2), dim=2),
                          nn.Tanh(), norm(nn.ConvTranspose1d(6, 4, 4, stride=2))).eval()
    x = torch.randn(2, 4, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x, axes="b c t")
    assert _ops(d).count("weight_norm") == 3 and _ops(d).count("conv_with_weight") == 3
    normed = [b.cod.segments[0] for b in d.boxes() if b.prim.op == "weight_norm"]
    assert [b.dom.segments[1] for b in d.boxes() if b.prim.op == "conv_with_weight"] == normed  # each weight as normed
    assert not [b for b in d.boxes() if b.prim.op == "view" and b.dom.segments[0] in normed]
    for length in (16, 24):
        x = torch.randn(2, 4, length)
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch(t=length)(x), model(x), atol=1e-5, rtol=1e-4)


class OneFrame(nn.Module):
    """EnCodec's ``torch.stack(encoded_frames)`` of its one frame, a stack of one tensor at the end, and one of a tensor
    that already has a size-1 wire."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = torch.tanh(x)
        return torch.stack([h]) * 2, torch.stack([h], dim=-1), torch.stack((h[:, None],), 1).sum(0)


def test_a_stack_of_one_tensor_reads_it_with_a_new_wire() -> None:
    """Was an opaque ``stack`` (the concatenation rule needs two tensors): EnCodec's last opaque box."""
    torch.manual_seed(0)
    d = round_trip(OneFrame(), torch.randn(2, 3), fresh=(torch.randn(2, 3),))
    assert d.opaque_count == 0


class PositionIds(nn.Module):
    """RoBERTa's position ids from the padding, ``(cumsum(mask) + past) * mask + pad``, and ``k // 2 - ids % 3``: integer
    tensor with integer tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.positions = nn.Embedding(12, 4)

    def forward(self, ids: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = ids.ne(1).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) + 0) * mask
        return self.positions(positions.long() + 1), k // 2 - ids % 3


def test_integer_tensor_arithmetic_is_a_box() -> None:
    torch.manual_seed(0)
    ids, k = torch.randint(0, 5, (2, 7)), torch.randint(0, 9, (2, 7))
    d = round_trip(PositionIds(), ids, k, fresh=(torch.randint(0, 5, (2, 7)), torch.randint(0, 9, (2, 7))))
    assert d.opaque_count == 0
    assert sorted(b.prim.label() for b in d.boxes() if b.prim.op == "index_arithmetic") == ["×", "−"]
    assert [str(b.cod) for b in d.boxes() if b.prim.label() == "mod 3"] == ["[3]"]  # ids % 3 < 3 (its ends gave [2])


class Spread(nn.Module):
    """xLSTM's multi-head layer norm reads ``x.var(-1, keepdim=True, unbiased=False)``; the other forms of var and std."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x.var(dim=-1, keepdim=True, unbiased=False), torch.var(x, dim=(1, 3)),
                x.std(-2, correction=0, keepdim=True), x.var(-1))


def test_variance_is_the_boxes_of_its_definition() -> None:
    d = round_trip(Spread(), torch.randn(2, 3, 4, 5), fresh=(3 + 2 * torch.randn(2, 3, 4, 5),))
    # std: the deviations' 2-norm (no root of a sum of squares: its gradient at equal entries is NaN, torch's is 0)
    assert d.opaque_count == 0 and _ops(d).count("einsum") == 7 and _ops(d).count("vector_norm") == 1
    assert _ops(d).count("elementwise") == 0


class MaskedWrites(nn.Module):
    """``llm_input_ids[image_mask] = 0`` (Gemma 3, PaliGemma, Kimi: index_put with a boolean mask), a pad id written
    into long ids, and a number written into floats."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 3)

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        llm = ids.clone()
        llm[ids == 7] = 0
        padded = ids.clone()
        padded[ids == 3] = 5
        y = x.clone()
        y[x > 0.5] = -1.0
        return self.embed(llm), padded, y


def test_a_write_at_a_boolean_mask_is_a_selection() -> None:
    torch.manual_seed(0)
    d = round_trip(MaskedWrites(), torch.randint(0, 10, (2, 6)), torch.randn(2, 6),
                   fresh=(torch.randint(0, 10, (2, 6)), torch.randn(2, 6)))
    assert d.opaque_count == 0 and _ops(d).count("where") == 1 and _ops(d).count("index_arithmetic") == 3


class Positions(nn.Module):
    """M2M-100's sinusoidal table read with ``index_select`` at position ids computed from the padding, and RoBERTa's
    token-type buffer (integers) gathered at them."""

    def __init__(self) -> None:
        super().__init__()
        a = torch.arange(20.0)[:, None] * torch.exp(-torch.arange(3.0))[None]
        self.register_buffer("table", torch.cat([a.sin(), a.cos()], 1), persistent=False)
        self.register_buffer("token_types", torch.zeros(1, 20, dtype=torch.long), persistent=False)
        self.types = nn.Embedding(2, 6)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids.ne(1).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + 1
        types = torch.gather(self.token_types.expand(ids.shape[0], -1), 1, positions)
        return self.table.index_select(0, positions.view(-1)).view(*ids.shape, -1) + self.types(types)


def test_a_constant_table_read_at_computed_positions_is_a_gather() -> None:
    d = round_trip(Positions(), torch.randint(0, 5, (2, 7)), fresh=(torch.randint(0, 5, (2, 7)),))
    assert d.opaque_count == 0
    gathers = [b.prim for b in d.boxes() if b.prim.op == "gather"]
    assert sorted(g.dtype for g in gathers) == ["float", "index"]


class ReversedWindows(nn.Module):
    """Inkling's short convolution: windows of the sequence read backwards (``unfold(...).flip(-1)``), and relative
    logits gathered at constant positions (a buffer of offsets)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("offsets", torch.tensor([[2, 1, 0], [3, 2, 1]]).repeat(3, 1)[:5], persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        windows = F.pad(x, (2, 0)).unfold(-1, 3, 1).flip(-1)  # b c t 3
        logits = x[:, 0, :5, None].expand(-1, -1, 4)  # b 5 4
        return windows, torch.gather(logits, 2, self.offsets.expand(x.shape[0], -1, -1))


def test_flip_and_a_gather_at_constant_positions_are_boxes() -> None:
    d = round_trip(ReversedWindows(), torch.randn(2, 3, 6), fresh=(torch.randn(2, 3, 6),))
    assert d.opaque_count == 0 and "flip" in _ops(d) and "gather" in _ops(d)


class Router(nn.Module):
    """Switch Transformers' router: the chosen expert as a one-hot row, multiplied into the probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.gate(x).softmax(-1)
        chosen = F.one_hot(probs.argmax(-1), num_classes=4)
        return probs * chosen, chosen


def test_one_hot_is_a_box() -> None:
    torch.manual_seed(0)
    d = round_trip(Router(), torch.randn(2, 5, 6), fresh=(torch.randn(2, 5, 6),))
    assert d.opaque_count == 0 and _ops(d).count("one_hot") == 1


class Guarded(nn.Module):
    """FSMT's ``if not padding_mask.any()`` (a guard on a box, not an opaque call) and ``all`` over some wires."""

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padding = ids.eq(1)
        y = x if not padding.any() else x.masked_fill(padding[..., None], 0.0)
        return y, (ids > 0).all(-1, keepdim=True)


def test_any_and_all_of_a_mask_are_boxes() -> None:
    torch.manual_seed(0)
    d = round_trip(Guarded(), torch.randn(2, 5, 3), torch.randint(2, 6, (2, 5)),
                   fresh=(torch.randn(2, 5, 3), torch.randint(2, 6, (2, 5))))
    assert d.opaque_count == 0 and _ops(d).count("any") == 2


class MaskFunction(nn.Module):
    """transformers' mask functions read the padding mask and packed-sequence ids at ``arange`` indices placed on axes
    of their own, ``mask[batch[:, None, None, None], kv[None, None, None, :]]`` (every entry where it is); and indices
    placed out of order, ``ids[batch[None, :], kv[:, None]]``, which transpose instead."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = mask.shape
        batch, kv = torch.arange(b), torch.arange(t)
        keep = mask.bool()[batch[:, None, None, None], kv[None, None, None, :]]  # b 1 1 t
        same = ids[batch[:, None, None], kv[None, :, None]] == ids[batch[:, None, None], kv[None, None, :]]  # b t t
        scores = torch.einsum("btm,bsm->bts", x, x)[:, None].masked_fill(~keep | ~same[:, None], -1e4)
        return scores.softmax(-1), ids[batch[None, :], kv[:, None]]


def test_a_mask_read_at_placed_aranges_is_a_reshape() -> None:
    def inputs(seed: int) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(seed)
        mask = torch.ones(2, 5, dtype=torch.long)
        mask[0, :1 + seed] = 0
        return torch.randn(2, 5, 4, generator=gen), mask, torch.randint(0, 2, (2, 5), generator=gen).cumsum(-1)

    d = round_trip(MaskFunction(), *inputs(0), fresh=inputs(1))
    assert d.opaque == (("aten.index.Tensor", 1),)  # the transposing read only


class WindowMask(nn.Module):
    """transformers' padding mask read at a sliding window's keys in a cached step (``mask[batch_idx, kv_idx]`` with
    ``kv_idx = arange(kv_length) + kv_offset``, masking_utils.padding_mask_function); ``keys`` given: positions that
    are not one run (stay a gather, opaque)."""

    def __init__(self, keys: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.keys = keys

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = mask.shape
        kv = torch.tensor(self.keys) if self.keys else torch.arange(4) + (t - 4)
        keep = mask.bool()[torch.arange(b)[:, None, None, None], kv[None, None, None, :]]  # b 1 1 4
        scores = torch.einsum("bqm,bkm->bqk", x, x)[:, None, :, -4:].masked_fill(~keep, -1e4)
        return scores.softmax(-1)


def test_a_mask_read_at_a_window_of_placed_aranges_is_a_slice_and_a_reshape() -> None:
    """fixes: Mistral's sliding-window cached step read its padding mask at ``kv_idx = arange(4) + 2`` (an opaque
    ``aten.index.Tensor`` that untrusted ``load_json`` refuses); now the slice ``2:6`` placed, equal to the model on
    fresh masks, also read back from untrusted JSON; positions that are not one run stay opaque (equal)."""
    def inputs(seed: int) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(seed)
        mask = torch.randint(0, 2, (2, 6), generator=gen)
        mask[:, -1] = 1
        return torch.randn(2, 6, 3, generator=gen), mask

    model = WindowMask()
    d = round_trip(model, *inputs(0), fresh=inputs(1))
    assert d.opaque_count == 0
    read = ncd.load_json(d.to_json())
    back = read.to_torch()
    with torch.no_grad():
        for seed in (1, 2):
            torch.testing.assert_close(back(*inputs(seed)), model(*inputs(seed)))
    for diagram in (d, read):  # the window's positions are the traced length's (t - 4): held, as the constant index was
        with pytest.raises(ncd.TraceError, match="t=7|'t': 7"):
            diagram.to_torch(b=2, t=7)
    d = round_trip(WindowMask((1, 3, 4, 5)), *inputs(0), fresh=inputs(1))
    assert d.opaque == (("aten.index.Tensor", 1),)


class Packed(nn.Module):
    """transformers' packed-sequence test: where ``position_ids`` do not step by one, a new sequence starts
    (``diff`` with ``prepend``); and a second difference of floats."""

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.diff(positions, prepend=positions[:, :1] - 1, dim=-1)
        return (steps != 1).cumsum(-1), torch.diff(x, n=2, dim=1)


def test_diff_is_slices_and_a_subtraction() -> None:
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3], [3, 4, 5, 6, 7, 8, 9]])
    fresh = torch.tensor([[0, 1, 0, 1, 2, 0, 1], [5, 6, 7, 0, 1, 2, 3]])
    d = round_trip(Packed(), positions, torch.randn(2, 6, 3), fresh=(fresh, torch.randn(2, 6, 3)))
    assert d.opaque_count == 0
