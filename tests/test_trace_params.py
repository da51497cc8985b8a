"""A lowered traced model has exactly the original's parameters: unread ones kept under ``unused``, tied ones one
parameter, a parameter read in pieces or through a computation one parameter (not each piece a parameter of its own)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd


def traced(model: nn.Module, *inputs: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model.eval(), *inputs)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Unread(nn.Module):
    """XLNet's ``mask_emb``: a parameter read only when a mask is given; two tied unread parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.mask_emb = nn.Parameter(torch.randn(1, 1, 6))
        self.head = nn.Module()
        self.head.weight = nn.Parameter(torch.randn(3, 6))
        self.tail = nn.Module()
        self.tail.weight = self.head.weight  # tied, and read by nobody

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Pieces(nn.Module):
    """A hyper-connection: ``base`` read in two pieces (the first one its first rows), ``scale`` unbound."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(6, 8)
        self.base = nn.Parameter(torch.randn(8))
        self.scale = nn.Parameter(torch.randn(2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre_logits, post_logits = self.mix(x).split(4, dim=-1)
        pre_b, post_b = self.base.split(4, dim=-1)
        pre_scale, post_scale = self.scale.unbind(0)
        return torch.sigmoid(pre_logits * pre_scale + pre_b), torch.sigmoid(post_logits * post_scale + post_b)


class JoinedBiases(nn.Module):
    """WavLM's attention: the three projections' biases concatenated, then taken apart again by the kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = torch.cat((self.q.bias, self.k.bias, self.v.bias))
        b_q, b_k, b_v = bias.chunk(3)
        q, k, v = F.linear(x, self.q.weight, b_q), F.linear(x, self.k.weight, b_k), F.linear(x, self.v.weight, b_v)
        return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v


def test_unread_parameters_are_kept_under_their_names_and_tied_ones_stay_one() -> None:
    model = Unread()
    x = torch.randn(2, 5, 6)
    d = traced(model, x)
    lowered = d.to_torch()
    assert count(lowered) == count(model) == 6 * 6 + 6 + 6 + 18
    kept = dict(lowered.named_parameters(remove_duplicate=False))
    torch.testing.assert_close(kept["unused.mask_emb"], model.mask_emb.detach())
    assert kept["unused.head.weight"] is kept["unused.tail.weight"]  # tied in the model, one parameter here
    torch.testing.assert_close(lowered(x), model(x))
    # the state dict the trace gives loads into a fresh lowering of the same diagram, unread parameters and all
    again = d.to_torch()
    with torch.no_grad():
        for p in again.parameters():
            p.zero_()
    again.load_state_dict(d.state_dict(again))
    torch.testing.assert_close(dict(again.named_parameters())["unused.mask_emb"], model.mask_emb.detach())
    torch.testing.assert_close(again(x), model(x))


def test_a_parameter_read_in_pieces_is_one_parameter() -> None:
    model = Pieces()
    x = torch.randn(2, 5, 6)
    d = traced(model, x)
    lowered = d.to_torch()
    assert count(lowered) == count(model)
    shapes = sorted(tuple(p.shape) for p in lowered.parameters())
    assert shapes == sorted(tuple(p.shape) for p in model.parameters())  # base (8,) and scale (2,) whole, once each
    for got, want in zip(lowered(x), model(x)):
        torch.testing.assert_close(got, want)
    fresh = torch.randn(2, 5, 6)
    for got, want in zip(lowered(fresh), model(fresh)):
        torch.testing.assert_close(got, want)


def test_biases_joined_and_taken_apart_are_the_original_biases() -> None:
    model = JoinedBiases()
    x = torch.randn(2, 5, 8)
    d = traced(model, x)
    assert d.opaque_count == 0  # each projection a linear map plus its bias wire
    lowered = d.to_torch()
    assert count(lowered) == count(model)
    torch.testing.assert_close(lowered(x), model(x))
    # training the lowered module trains the three biases: each is one parameter, read through the concatenation
    lowered(x).sum().backward()
    grads = [p.grad for p in lowered.parameters() if p.shape == (8,)]
    assert len(grads) == 3 and all(g is not None for g in grads)


@pytest.mark.parametrize("tie", [True, False])
def test_tied_embeddings_stay_one_parameter(tie: bool) -> None:
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(11, 6)
            self.head = nn.Linear(6, 11, bias=False)
            if tie:
                self.head.weight = self.wte.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.wte(ids)))

    model = LM()
    ids = torch.randint(0, 11, (2, 4))
    lowered = traced(model, ids).to_torch()
    assert count(lowered) == count(model) == 66 * (1 if tie else 2)
    torch.testing.assert_close(lowered(ids), model(ids))


def test_a_table_read_at_every_row_is_not_kept_twice() -> None:
    """OWL-ViT's ``position_embedding(position_ids)`` with ``position_ids = arange(n)``: every row, in order — the
    lowered module holds the table once (not again under ``unused``)."""

    class Positions(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.position = nn.Embedding(5, 4)
            self.register_buffer("ids", torch.arange(5), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.position(self.ids)

    model = Positions()
    x = torch.randn(2, 5, 4)
    lowered = traced(model, x).to_torch()
    assert count(lowered) == count(model) == 20
    assert not any(n.startswith("unused.") for n, _ in lowered.named_parameters())
    torch.testing.assert_close(lowered(x), model(x))


class ConstantWeights(nn.Module):
    """Learned boxes reading constants as their weights: a literal slope, a buffer as a linear map and as a norm's
    scale, a computed identity; a parameter too."""

    map: torch.Tensor
    scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.register_buffer("map", torch.randn(8, 8))
        self.register_buffer("scale", torch.rand(8) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.prelu(self.fc(x), torch.tensor([0.25]))
        h = F.layer_norm(F.linear(h, self.map), (8,), self.scale)
        return F.linear(h, torch.eye(8) * 2)


def test_constants_read_as_weights_are_buffers_not_parameters() -> None:
    """A constant a learned box reads (a buffer, a literal) is no parameter of the lowered module (was: F.prelu with a
    literal slope +1 parameter, here +137): the same parameters as the model, the constants among its buffers, no
    gradient for them; at another batch too."""
    model = ConstantWeights()
    x = torch.randn(2, 3, 8)
    d = traced(model, x)
    for lowered, inputs in ((d.to_torch(), x), (d.to_torch(b=3), torch.randn(3, 3, 8))):
        assert count(lowered) == count(model) == 72
        assert sum(b.numel() for b in lowered.buffers()) == 64 + 8 + 1 + 64
        torch.testing.assert_close(lowered(inputs), model(inputs))
        lowered(inputs).sum().backward()
        model(inputs).sum().backward()
        got = {n: p.grad for n, p in lowered.named_parameters()}
        want = [p.grad for p in model.parameters()]
        assert len(got) == len(want)
        for g, w in zip(got.values(), want):
            torch.testing.assert_close(g, w)
        model.zero_grad()


class _FrozenPositions(nn.Module):
    """A sinusoidal table stored as a parameter that requires no gradient (Marian's, FSMT's), beside a learned map."""

    def __init__(self) -> None:
        super().__init__()
        self.positions = nn.Embedding(8, 4)
        self.positions.weight.requires_grad_(False)
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(x + self.positions(torch.arange(x.shape[1])))
        return out


@pytest.mark.parametrize("tokens", [5, 8])  # 8: every row read in order, a copy of the table (Whisper's positions)
def test_a_parameter_requiring_no_gradient_requires_none_lowered(tokens: int) -> None:
    torch.manual_seed(0)
    model = _FrozenPositions()
    x = torch.randn(2, tokens, 4)
    lowered = traced(model, x).to_torch()
    assert count(lowered) == count(model)
    torch.optim.SGD([p for p in lowered.parameters() if p.requires_grad], lr=0.1).zero_grad()
    cot = torch.randn(2, tokens, 4)
    (model(x) * cot).sum().backward()
    (lowered(x) * cot).sum().backward()
    want = sorted((tuple(p.shape), p.grad is None) for p in model.parameters())
    got = sorted((tuple(p.shape), p.grad is None) for p in lowered.parameters())
    assert got == want  # the table has no gradient in either; the map's weight and bias have one in both
    assert sorted(tuple(p.shape) for p in lowered.parameters() if not p.requires_grad) == [(8, 4)]


def test_unread_compares_each_parameter_with_the_traced_tensors_it_could_equal_as_comparing_all_does() -> None:
    """:func:`ncd.trace.params.unread` compares a parameter only with traced tensors of its first entry: the same
    answer as comparing it with every traced tensor of its shape and dtype (copies equal to it, equal up to one entry,
    a NaN, -0.0 against 0.0, another dtype, an empty parameter, views of one)."""
    from ncd.trace.params import unread

    torch.manual_seed(0)
    model = nn.Module()
    values = {
        "ones": torch.ones(4), "zeros": torch.zeros(4), "neg_zero": torch.tensor([-0.0, 1.0, 2.0, 3.0]),
        "random": torch.randn(4), "copied": torch.randn(3, 4), "near": torch.randn(3, 4), "nan": torch.full((4,), 1.5),
        "halved": torch.ones(4, dtype=torch.float16), "ints": torch.arange(4.0), "empty": torch.zeros(0),
        "scalar": torch.tensor(2.5), "viewed": torch.randn(2, 4), "late_nan": torch.ones(4),
    }
    values["nan"][0] = float("nan")
    values["late_nan"][3] = float("nan")
    for name, value in values.items():
        model.register_parameter(name, nn.Parameter(value.clone(), requires_grad=value.is_floating_point()))
    near = values["near"].clone()
    near[2, 3] += 1
    traced_tensors = (
        (torch.ones(4), torch.tensor([0.0, 1.0, 2.0, 3.0]), values["copied"].clone(), near, values["nan"].clone()),
        (torch.ones(4, dtype=torch.float32), torch.zeros(4, dtype=torch.float64), torch.arange(4.0),
         torch.tensor(2.5), model.viewed.detach()[1], values["late_nan"].clone(), torch.randn(4)),
    )

    def every(model: nn.Module) -> list[str]:  # the definition: storage shared, or equal to a tensor of its shape
        flat = [t for group in traced_tensors for t in group]
        storages = {t.untyped_storage().data_ptr() for t in flat}
        return [name for name, p in model.named_parameters(remove_duplicate=False)
                if not (p.untyped_storage().nbytes() and (p.untyped_storage().data_ptr() in storages or any(
                    t.shape == p.shape and t.dtype == p.dtype and torch.equal(t, p.detach()) for t in flat)))]

    got = [name for name, _ in unread(model, traced_tensors)]
    assert got == every(model)
    assert got == ["zeros", "random", "near", "nan", "halved", "empty", "late_nan"]


def test_first_entry_read_from_memory_is_the_one_item_reads() -> None:
    """:func:`ncd.trace.params._first` reads a plain CPU tensor's first entry from its memory: the number ``item()``
    gives for entry (0, ..., 0), for every dtype it reads so, views at an offset, transposed and negated views, a
    NaN and -0.0; an empty tensor, one whose storage was freed (as FSDP frees a shard's) and a tensor subclass are read
    otherwise (or not at all), never from memory outside their storage."""
    from ncd.trace.params import _UNREAD, _first

    torch.manual_seed(0)
    base = torch.randn(5, 6)
    cases = [base, base[2:, 3:], base.T, base[1], torch.tensor([-0.0, 1.0]), torch.tensor([float("nan")]),
             torch.randn(3, dtype=torch.float64)[1:], torch.arange(-5, 5)[3:], torch.arange(7, dtype=torch.int32)[2:],
             torch.tensor([-3, 2], dtype=torch.int16), torch.tensor([-3, 2], dtype=torch.int8),
             torch.tensor([250, 2], dtype=torch.uint8), torch.tensor([False, True])[1:], torch.tensor(4.5),
             nn.Parameter(torch.randn(3, 2)), torch._neg_view(torch.randn(4)), torch.randn(4).half(),
             torch.randn(4).bfloat16(), torch.randn(3, dtype=torch.complex64).conj()]
    for t in cases:
        want = t.detach()[(0,) * t.dim()].item()
        got = _first(t, t.untyped_storage())
        assert type(got) is type(want) and (got == want or (got != got and want != want)), (t, got, want)
        assert repr(got) == repr(want)  # (-0.0 stays -0.0)
        assert _first(t) == want or want != want  # (without its storage: read as indexed)
    assert _first(torch.zeros(0), torch.zeros(0).untyped_storage()) is _UNREAD
    freed = torch.randn(8)[4:]
    freed.untyped_storage().resize_(0)
    assert _first(freed, freed.untyped_storage()) is _UNREAD  # (as indexed: torch refuses to read it)

    class Held(torch.Tensor):
        pass

    held = torch.randn(3).as_subclass(Held)
    assert _first(held, held.untyped_storage()) == held[0].item()


def test_unread_decides_plain_parameters_without_their_storage_as_with_it() -> None:
    """:func:`ncd.trace.params.unread` decides a plain CPU parameter from its data pointer (no storage object made):
    the same answer as reading its storage — a parameter that is a view at an offset of a traced tensor's memory, or
    whose memory a traced tensor views, reads it; one whose storage was freed (as FSDP frees a shard's, at an offset
    too), an empty one on memory of its own (numpy's), a negated view, and float64, integer and bool ones are decided
    as the storage says."""
    import numpy as np

    from ncd.trace.params import unread

    torch.manual_seed(0)
    memory = torch.randn(6, 4)
    shared = torch.randn(5, 4)
    model = nn.Module()
    params = {
        "offset_view": nn.Parameter(memory[2:4]),  # a view at an offset of a traced tensor's memory: read
        "viewed": nn.Parameter(shared.clone()),  # a traced tensor views it: read
        "freed": nn.Parameter(torch.randn(8)[4:]),  # freed below: unread
        "freed_whole": nn.Parameter(torch.randn(3)),
        "numpy_empty": nn.Parameter(torch.from_numpy(np.empty((0, 4), dtype=np.float32))),
        "negated": nn.Parameter(torch._neg_view(torch.ones(4)), requires_grad=False),
        "doubles": nn.Parameter(torch.arange(4.0, dtype=torch.float64)),
        "ints": nn.Parameter(torch.arange(3, 7), requires_grad=False),
        "bools": nn.Parameter(torch.tensor([True, False]), requires_grad=False),
        "copied": nn.Parameter(torch.full((2, 4), 3.0)),
        "other": nn.Parameter(torch.full((2, 4), 4.0)),
    }
    for name, p in params.items():
        model.register_parameter(name, p)
    with torch.no_grad():
        model.freed.untyped_storage().resize_(0)
        model.freed_whole.untyped_storage().resize_(0)
    traced_tensors = ((memory, model.viewed.detach()[1:3], torch.zeros(0, 4), -torch.ones(4)),
                      (torch.arange(4.0, dtype=torch.float64), torch.tensor([3, 4, 5, 6]), torch.tensor([True, False]),
                       torch.full((2, 4), 3.0), torch.zeros(4), torch.zeros(3)))

    def every(model: nn.Module) -> list[str]:  # the definition: storage shared, or equal to a tensor of its shape
        flat = [t for group in traced_tensors for t in group]
        storages = {t.untyped_storage().data_ptr() for t in flat if t.untyped_storage().nbytes()}
        return [name for name, p in model.named_parameters(remove_duplicate=False)
                if not (p.untyped_storage().nbytes() and (p.untyped_storage().data_ptr() in storages or any(
                    t.shape == p.shape and t.dtype == p.dtype and torch.equal(t, p.detach()) for t in flat)))]

    got = [name for name, _ in unread(model, traced_tensors)]
    assert got == every(model)
    assert got == ["freed", "freed_whole", "numpy_empty", "other"]
