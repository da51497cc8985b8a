"""Repeated layers converted once (``ncd.trace.reuse``): the same diagram, tensors and lowered module as walking every
layer, checked against the walk itself and against the original model."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.scan import ScanOp
from ncd.render import to_svg
from ncd.trace import reuse


class Block(nn.Module):
    def __init__(self, width: int, shift: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)
        self.register_buffer("offset", torch.full((width,), shift))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(self.norm(x)))) + self.offset


class Stack(nn.Module):
    def __init__(self, shifts: list[float], width: int = 8, every: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(width, s) for s in shifts)
        self.every = every  # return every layer's output (the layers then do not fold into a repetition)

    def forward(self, x: torch.Tensor) -> Any:
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(torch.tanh(x))
        return tuple(outs) if self.every else x


def _traced(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], shared: bool,
            monkeypatch: pytest.MonkeyPatch) -> tuple[Any, int]:
    copies = []
    original = reuse.Repeats._copy

    def counting(self: reuse.Repeats, record: Any, span: Any) -> bool:
        done = original(self, record, span)
        copies.append(done)
        return done

    monkeypatch.setattr(reuse, "ENABLED", shared)
    monkeypatch.setattr(reuse.Repeats, "_copy", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *args, **kwargs), sum(copies)


def _compare(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> int:
    return _compared(model, args, kwargs, monkeypatch)[0]


def _compared(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
              ) -> tuple[int, Any]:
    """The diagram with layers copied is the walk's (same drawing, opaque boxes and tensors): how many were copied, and
    that diagram."""
    model.eval()
    walked, none = _traced(model, args, kwargs, False, monkeypatch)
    shared, copied = _traced(model, args, kwargs, True, monkeypatch)
    assert none == 0
    assert to_svg(shared) == to_svg(walked)
    assert shared.opaque == walked.opaque
    assert len(shared.tensors) == len(walked.tensors)
    for a, b in zip(shared.tensors, walked.tensors):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)
    return copied, shared


def _copied_and_equal(model: nn.Module, x: torch.Tensor, copies: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`_compared` on ``model(x)`` with ``copies`` layers copied, and the lowered diagram equal to the model on a
    fresh input of ``x``'s shape."""
    copied, traced = _compared(model, (x,), {}, monkeypatch)
    assert copied == copies
    lowered = traced.to_torch()
    fresh = torch.randn_like(x)
    with torch.no_grad():
        torch.testing.assert_close(lowered(fresh), model(fresh))



def _stacked_copied_and_equal(layer: Callable[[int], nn.Module], layers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`_copied_and_equal` on ``layers`` layers ``layer(8)`` in a row, on a ``(2, 5, 8)`` input."""
    torch.manual_seed(0)
    model = nn.Sequential(*(layer(8) for _ in range(layers)))
    _copied_and_equal(model, torch.randn(2, 5, 8), layers - 1, monkeypatch)

@pytest.mark.parametrize("every", [False, True])
def test_identical_layers_are_copied_and_equal(every: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = Stack([0.5] * 5, every=every)
    x = torch.randn(2, 3, 8)
    copied, traced = _compared(model, (x,), {}, monkeypatch)
    assert copied >= 2
    lowered = traced.to_torch()
    fresh = torch.randn(2, 3, 8)
    torch.testing.assert_close(lowered(fresh), model(fresh))


def test_layers_holding_other_constants_are_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = Stack([0.5, 0.5, 0.5, 0.25, 0.5])  # layer 3's buffer differs: never a copy of layer 1
    x = torch.randn(2, 3, 8)
    lowered = _compared(model, (x,), {}, monkeypatch)[1].to_torch()
    fresh = torch.randn(2, 3, 8)
    torch.testing.assert_close(lowered(fresh), model(fresh))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_transformers_layers_are_copied_and_equal(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    tiny = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=100, max_position_embeddings=64,
                num_hidden_layers=5)
    if family == "bert":
        model = transformers.BertModel(transformers.BertConfig(**tiny))
    else:
        model = transformers.LlamaModel(transformers.LlamaConfig(**tiny, num_key_value_heads=2, use_cache=False))
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, :2] = 0
    assert _compare(model, (ids,), {}, monkeypatch) >= 2
    # the mask input read as booleans once before every layer (attention.prepare): each layer's attention reads it
    assert _compare(model, (ids,), {"attention_mask": mask}, monkeypatch) >= 2
    traced = _traced(model, (ids,), {}, True, monkeypatch)[0]
    fresh = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        got, want = traced.to_torch()(fresh), model(fresh).last_hidden_state
    torch.testing.assert_close(got[0] if isinstance(got, tuple) else got, want, atol=1e-4, rtol=1e-4)
    masked = _traced(model, (ids,), {"attention_mask": mask}, True, monkeypatch)[0]
    other = torch.ones(2, 8, dtype=torch.long)
    other[1, :3] = 0
    with torch.no_grad():
        got, want = masked.to_torch()(fresh, attention_mask=other), model(fresh, attention_mask=other).last_hidden_state
    torch.testing.assert_close((got[0] if isinstance(got, tuple) else got)[other.bool()], want[other.bool()], atol=1e-4,
                               rtol=1e-4)


class Attention(nn.Module):
    """Heads split and merged back (the converter's notes of splits and merges), scaled by the head size."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, m = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, m // self.heads).unbind(2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * (m // self.heads) ** -0.5
        y = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, t, m)
        x = x + self.out(y)
        return x + self.down(torch.relu(self.up(self.norm(x))))


class Encoder(nn.Module):
    def __init__(self, layers: int, width: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(width, width)
        self.layers = nn.ModuleList(Attention(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return x


@pytest.mark.parametrize("layers", [2, 3])
def test_layers_adding_to_the_notes_are_copied_and_equal(layers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first layer's walk records the heads' split and merge and the scale's head size (the converter's notes, the
    namer's names): the second reads them as the first did, so it is a copy, and the diagram is the walk's."""
    torch.manual_seed(0)
    model = Encoder(layers)
    x = torch.randn(2, 5, 16)
    _copied_and_equal(model, x, layers - 1, monkeypatch)


def test_a_logged_read_answers_anew_and_changes_nothing() -> None:
    """regroup's logged answer is asked again against the notes as they are now: a merge recorded since then changes
    the answer of a later split (and the asking writes nothing)."""
    from types import SimpleNamespace

    from ncd.trace.idioms_wires import regroup, regroup_again
    from ncd.trace.naming import Namer

    conv = SimpleNamespace(namer=Namer())
    conv.namer.claim("b", 2)
    conv.namer.claim("m", 12)
    conv.namer.reads = []
    split = regroup(conv, ["b", "m"], (2, 12), (2, 3, 4))  # type: ignore[arg-type]
    ((fn, args, answer),) = conv.namer.reads
    assert fn is regroup_again and answer == tuple(split)
    assert regroup_again(*args) == answer  # nothing changed: the same answer
    conv.namer.reads = None
    conv.__dict__["_merges"]["m"] = [("u", 3), ("z", 4)]  # m recorded as a merge of other wires since
    conv.namer.claim("u", 3)
    conv.namer.claim("z", 4)
    notes = {k: dict(v) for k, v in conv.__dict__.items() if k.startswith("_")}
    sizes = dict(conv.namer.size_of)
    assert regroup_again(*args) != answer
    assert {k: dict(v) for k, v in conv.__dict__.items() if k.startswith("_")} == notes
    assert conv.namer.size_of == sizes


@pytest.mark.parametrize("layers", [2, 3])
def test_a_first_layer_reading_the_input_is_copied_and_equal(layers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first layer reads a model input, the second the first one's output (of an operation): alike where both are
    live values of one shape and dtype, so the second is a copy (the walk's diagram), as it is when an embedding comes
    first (test_layers_adding_to_the_notes_are_copied_and_equal)."""
    torch.manual_seed(0)
    model = Stack([0.5] * layers)
    x = torch.randn(2, 3, 8)
    _copied_and_equal(model, x, layers - 1, monkeypatch)


def test_a_padded_transformer_encoder_reading_its_input_is_copied_and_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's own encoder (sequence first: its first layer transposes the input itself) with a padding mask."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(6, 2, 16)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[0, -2:] = True
    copied, traced = _compared(model, (x,), {"src_key_padding_mask": pad}, monkeypatch)
    assert copied == 1
    lowered = traced.to_torch()
    fresh, other = torch.randn(6, 2, 16), torch.zeros(2, 6, dtype=torch.bool)
    other[1, -3:] = True
    with torch.no_grad():
        torch.testing.assert_close(lowered(fresh, src_key_padding_mask=other),
                                   model(fresh, src_key_padding_mask=other), atol=1e-5, rtol=1e-5)


class Masked(nn.Module):
    """Causal attention whose scores are masked by a number (``masked_fill(·, -inf)``): the box holds a constant made of
    the operation's arguments, not any recorded value."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, -1)
        n = x.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool).triu(1)
        scores = (q @ k.transpose(-1, -2)).masked_fill(causal, float("-inf"))
        return x + self.out(scores.softmax(-1) @ v)


@pytest.mark.parametrize("layers", [2, 3])
def test_layers_holding_a_constant_made_of_arguments_are_copied_and_equal(layers: int,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _stacked_copied_and_equal(Masked, layers, monkeypatch)


class Rotated(nn.Module):
    """RoFormer's rotation: each half of a position table repeated pairwise (``chunk``, ``stack``, ``reshape_as``)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        sin, cos = table.chunk(2, -1)
        sin = torch.stack([sin, sin], -1).reshape_as(table)
        cos = torch.stack([cos, cos], -1).reshape_as(table)
        return self.lin(x) * cos + x * sin


class Interleaved(nn.Module):
    """Layers reading one table computed from a parameter alone (its first rows, viewed), as RoFormer's encoder does."""

    def __init__(self, layers: int, width: int = 8) -> None:
        super().__init__()
        self.table = nn.Embedding(16, width)
        self.layers = nn.ModuleList(Rotated(width) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = self.table(torch.arange(x.shape[2]))[None, None]
        for layer in self.layers:
            x = layer(x, table)
        return x


@pytest.mark.parametrize("layers", [2, 3])
def test_layers_stacking_one_table_read_once_are_copied_and_equal(layers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table is read once, as the model reads it (one embedding, not one per way a layer reads it: the views every
    layer reads are decided after all their readers), and the layers after the first are copies (``stack``'s parts,
    made for the call, are not left bound)."""
    torch.manual_seed(0)
    model = Interleaved(layers).eval()
    x = torch.randn(2, 3, 5, 8)
    copied, traced = _compared(model, (x,), {}, monkeypatch)
    assert copied == layers - 1
    lowered = traced.to_torch()
    assert sum(isinstance(m, nn.Embedding) for m in lowered.modules()) == \
        sum(isinstance(m, nn.Embedding) for m in model.modules())
    fresh = torch.randn(2, 3, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(lowered(fresh), model(fresh))
        torch.testing.assert_close(lowered(x), model(x))


class Biased(nn.Module):
    """Attention scores ``β·bias + α·(q @ kᵀ)`` by ``baddbmm`` (BLOOM's ALiBi), the bias given to every layer."""

    def __init__(self, width: int, beta: float) -> None:
        super().__init__()
        self.qk, self.out = nn.Linear(width, 2 * width), nn.Linear(width, width)
        self.beta = beta

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k = self.qk(x).chunk(2, -1)
        scores = bias.baddbmm(q, k.transpose(1, 2), beta=self.beta, alpha=0.5)
        return x + self.out(scores.softmax(-1) @ x)


class BiasedStack(nn.Module):
    def __init__(self, layers: int, beta: float, width: int = 8) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Biased(width, beta) for _ in range(layers))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, bias)
        return x


@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0])
def test_layers_of_baddbmm_are_copied_and_equal(beta: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """``baddbmm``'s rule draws a product and a sum of steps it makes for the call: they are not left bound, so the
    second layer is a copy (the walk's diagram)."""
    torch.manual_seed(0)
    model = BiasedStack(2, beta).eval()
    x, bias = torch.randn(2, 5, 8), torch.randn(2, 5, 5)
    copied, traced = _compared(model, (x, bias), {}, monkeypatch)
    assert copied == 1
    lowered = traced.to_torch()
    fresh, other = torch.randn(2, 5, 8), torch.randn(2, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(lowered(fresh, other), model(fresh, other))


class Reordered(nn.Module):
    """A layer reading its positions in a fixed order by ``index_select`` (drawn by the rule of ``aten.index``)."""

    def __init__(self, width: int, length: int) -> None:
        super().__init__()
        self.norm, self.inner, self.outer = nn.LayerNorm(width), nn.Linear(width, width), nn.Linear(width, width)
        self.register_buffer("order", torch.arange(length - 1, -1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer(torch.relu(self.inner(self.norm(x)).index_select(1, self.order)))


@pytest.mark.parametrize("layers", [2, 3])
def test_layers_of_index_select_are_copied_and_equal(layers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``index_select``'s rule hands a node it makes to ``index``'s: not left bound, so later layers are copies."""
    torch.manual_seed(0)
    model = nn.Sequential(*(Reordered(8, 5) for _ in range(layers))).eval()
    x = torch.randn(2, 5, 8)
    _copied_and_equal(model, x, layers - 1, monkeypatch)


class LearnedQueries(nn.Module):
    """DETR's decoder: the first layer's target is learned queries repeated over the batch (a computation on parameters
    alone, recorded at no source line), the next layer's the first one's output."""

    def __init__(self, width: int = 16, queries: int = 5) -> None:
        super().__init__()
        self.query = nn.Embedding(queries, width)
        layer = nn.TransformerDecoderLayer(width, 2, 32, dropout=0.0, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, 2)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        target = self.query.weight[None].repeat(memory.shape[0], 1, 1)
        return self.decoder(target, memory)


def test_a_first_layer_reading_learned_queries_is_copied_and_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes alike but for the source line recorded (none for a computation on parameters): the second layer is a copy
    (the walk's diagram); a line is compared only where it is drawn (a guard's)."""
    torch.manual_seed(0)
    model = LearnedQueries().eval()
    memory = torch.randn(2, 6, 16)
    copied, traced = _compared(model, (memory,), {}, monkeypatch)
    assert copied == 1
    lowered = traced.to_torch()
    fresh = torch.randn(2, 6, 16)
    with torch.no_grad():
        torch.testing.assert_close(lowered(fresh), model(fresh), atol=1e-5, rtol=1e-5)


class Recurrent(nn.Module):
    """A gated recurrence over the positions in a Python loop (folded into one scan), between two projections."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.into, self.out = nn.Linear(width, width), nn.Linear(width, width)
        self.decay = nn.Parameter(torch.rand(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.into(x)
        a = torch.sigmoid(self.decay)
        h = x.new_zeros(x.shape[0], x.shape[2])
        outs = []
        for t in range(x.shape[1]):
            h = a * h + u[:, t]
            outs.append(torch.tanh(h))
        return x + self.out(torch.stack(outs, 1))


class RecurrentStack(nn.Module):
    def __init__(self, layers: int, width: int = 6) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Recurrent(width) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


@pytest.mark.parametrize("layers", [2, 3])
def test_layers_of_a_folded_loop_are_copied_and_equal(layers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each layer's loop is a scan of its own (each its own loop object): their bodies correspond, so the later layers
    are copies."""
    torch.manual_seed(0)
    model = RecurrentStack(layers)
    x = torch.randn(2, 5, 6)
    copied, traced = _compared(model, (x,), {}, monkeypatch)
    assert copied == layers - 1
    assert traced.opaque_count == 0 and any(isinstance(b.prim, ScanOp) for b in traced.boxes())  # loops drawn as scans
    fresh = torch.randn(2, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(traced.to_torch()(fresh), model(fresh))


class Mixer(nn.Module):
    """Single-head attention, causal or over every position."""

    def __init__(self, width: int, causal: bool) -> None:
        super().__init__()
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        if self.causal:
            n = x.shape[-2]
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        y: torch.Tensor = self.out(scores.softmax(-1) @ v)
        return y


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.down(torch.nn.functional.gelu(self.up(self.norm(x))))
        return y


class Mixed(nn.Module):
    def __init__(self, width: int, causal: bool) -> None:
        super().__init__()
        self.mixer, self.mlp = Mixer(width, causal), MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(x)
        return x + self.mlp(x)


class MixedStack(nn.Module):
    def __init__(self, causal: list[bool], width: int = 8) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Mixed(width, c) for c in causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


@pytest.mark.parametrize(("causal", "copies"), [([True, False], 1), ([False, True, True], 2),
                                                ([True, False, True, False], 3)])
def test_layers_differing_in_attention_copy_their_mlp_and_are_equal(causal: list[bool], copies: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers of causal and full attention do not correspond as wholes; their MLPs do, and the later ones are copies
    (a layer alike an earlier one as a whole is one copy)."""
    torch.manual_seed(0)
    _copied_and_equal(MixedStack(causal), torch.randn(2, 5, 8), copies, monkeypatch)


def test_parts_alone_are_not_matched_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reuse, "SUBMODULES", False)
    torch.manual_seed(0)
    _copied_and_equal(MixedStack([True, False]), torch.randn(2, 5, 8), 0, monkeypatch)


class Global(Mixed):
    """A layer class of its own (full attention), beside :class:`Mixed` (causal)."""


def test_layers_of_different_classes_copy_their_mlp_and_are_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = MixedStack([True, True])
    model.layers[1] = Global(8, False)
    _copied_and_equal(model, torch.randn(2, 5, 8), 1, monkeypatch)


def test_a_copied_part_draws_boxes_of_its_own() -> None:
    """A part copied from an earlier layer (the MLP of a full-attention layer after a causal one) takes boxes of its
    own, as the walk makes them: the template's objects at two places of one page were laid out once and placed
    twice with one footprint id (T5's checker: the first norm's text spilling out of the second's box)."""
    from collections import Counter

    from ncd.render import layout
    from ncd.render.check import problems
    from ncd.render.model import Footprint

    torch.manual_seed(0)
    model = MixedStack([True, False]).eval()
    d = ncd.trace(model, torch.randn(2, 5, 8))
    boxes = list(d.boxes())
    assert len({id(b) for b in boxes}) == len(boxes)
    drawing = layout(d)
    assert not [k for k, n in Counter(f.id for f in drawing.of(Footprint)).items() if n > 1]
    assert problems(drawing) == []


@pytest.mark.parametrize("layers", [2, 3])
def test_copied_layers_left_unfolded_draw_boxes_of_their_own(layers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole layers copied but not folded into a repetition (each layer's output is read) are at places of their own
    on the page: each box an object of its own (as walking every layer makes them), no footprint id twice, and the
    drawing the walk's."""
    from collections import Counter

    from ncd.render import layout
    from ncd.render.check import problems
    from ncd.render.model import Footprint

    torch.manual_seed(0)
    model = Stack([0.5] * layers, every=True).eval()
    copied, d = _compared(model, (torch.randn(2, 5, 8),), {}, monkeypatch)
    assert copied == layers - 1
    boxes = list(d.boxes())
    assert len(boxes) >= 9 * layers - 1  # each layer's 7 boxes, its output's tanh and (but the last's) copy
    assert len({id(b) for b in boxes}) == len(boxes)
    assert len({id(b.prim) for b in boxes}) == len(boxes)
    drawing = layout(d)
    assert not [k for k, n in Counter(f.id for f in drawing.of(Footprint)).items() if n > 1]
    assert problems(drawing) == []


class Acting(Block):
    """:class:`Block` with an activation of its choosing: layers alike in pattern, differing in one box."""

    def __init__(self, width: int, act: Any) -> None:
        super().__init__(width, 0.5)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.act(self.up(self.norm(x)))) + self.offset


def _wired(model: nn.Module, x: torch.Tensor, once: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    from ncd.trace import wiring_fold as wiring

    monkeypatch.setattr(wiring, "LAYERS_ONCE", once)
    taken = []
    original = wiring._equal

    def counting(known: Any, leaves: Any) -> bool:  # True: a layer takes an earlier layer's body
        done = original(known, leaves)
        taken.append(done)
        return done

    monkeypatch.setattr(wiring, "_equal", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    monkeypatch.undo()
    return d, sum(taken)


@pytest.mark.parametrize("every", [False, True])
@pytest.mark.parametrize("acts", [["relu"] * 4, ["relu", "tanh", "relu", "tanh"], ["relu", "relu", "tanh", "tanh"]])
def test_a_layer_wired_as_an_earlier_one_takes_its_body_and_is_equal(acts: list[str], every: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer whose steps are an earlier layer's (equal diagrams, values of the same segments, in the same pattern)
    takes that layer's wired body; one differing in a box (its activation) is wired on its own.  The diagram, its
    drawing and lowered source are those of wiring every layer, each box at a place of its own."""
    torch.manual_seed(0)
    model = Stack([0.5] * len(acts), every=every).eval()
    model.layers = nn.ModuleList(Acting(8, getattr(torch, a)) for a in acts)
    x = torch.randn(2, 5, 8)
    wired, none = _wired(model, x, False, monkeypatch)
    once, taken = _wired(model, x, True, monkeypatch)
    assert none == 0
    assert taken == len(acts) - len(set(acts))  # every layer after the first of its activation
    assert once.body == wired.body
    assert to_svg(once) == to_svg(wired)
    assert once.to_torch().ncd_source == wired.to_torch().ncd_source
    out, expected = once.to_torch()(x), model(x)
    for a, b in zip(out if every else (out,), expected if every else (expected,)):
        torch.testing.assert_close(a, b)
    boxes = list(once.boxes())
    assert len({id(b) for b in boxes}) == len(boxes)


class CastMask(nn.Module):
    """Longformer's / LED's mask: a constant of flags cast to the scores' dtype (``mask.type_as(x)``, drawn as a
    constant), scaling each layer's update."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(x.shape[0], x.shape[1], dtype=torch.bool)
        keep[:, 0] = False
        return x + self.proj(x) * keep.type_as(x)[:, :, None]


@pytest.mark.parametrize("layers", [2, 3])
def test_layers_casting_a_constant_to_a_value_type_are_copied_and_equal(layers: int,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _stacked_copied_and_equal(CastMask, layers, monkeypatch)


class Banded(nn.Module):
    """A large table (256 kB, a buffer: a constant compared between layers) read through a view of most of it, then a
    few rows and columns of that; ``poke``: the column made 2 (none: -1), inside the rows and columns read."""

    def __init__(self, width: int, poke: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)
        band = torch.ones(64, 1024)
        if poke >= 0:
            band[:, poke] = 2.0
        self.register_buffer("band", band)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.band[:48]
        return x + self.proj(x) * top[:x.shape[1], :x.shape[2]]


@pytest.mark.parametrize(("pokes", "copies"), [([-1, -1, -1], 2), ([-1, -1, 3], 1), ([3, -1, 3], 1)])
def test_layers_reading_views_of_a_large_constant_are_copied_only_where_it_is_equal(
        pokes: list[int], copies: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layers' constants are compared whole once, as words, and their views by where they sit (reuse_match
    ._equal_entries): a layer whose constant differs in one column is walked, and every diagram is the walk's."""
    torch.manual_seed(0)
    model = nn.Sequential(*(Banded(8, p) for p in pokes))
    x = torch.randn(2, 5, 8)
    _copied_and_equal(model, x, copies, monkeypatch)


class Filled(nn.Module):
    """A large constant the forward makes by expanding one number (256 kB read from a 4-byte memory, strides 0: as
    longformer's diagonal scores of zeros), then a few rows and columns of it; ``fill``: that number."""

    def __init__(self, width: int, fill: float) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)
        self.fill = fill

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = x.new_full((), self.fill).expand(64, 1024)
        return x + self.proj(x) * table[:x.shape[1], :x.shape[2]]


@pytest.mark.parametrize(("fills", "copies"), [([1.5, 1.5, 1.5], 2), ([1.5, 1.5, 2.5], 1), ([1.5, 2.5, 1.5], 1),
                                               ([0.0, -0.0, 0.0], 2)])
def test_layers_reading_a_large_expanded_number_are_copied_only_where_it_is_equal(
        fills: list[float], copies: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layers' expanded numbers (a memory of 4 bytes, not a whole number of words, read 65,536 times) are compared
    as the bytes of their memories, once (reuse_match._equal_entries), not entry by entry: a layer whose number differs
    is walked (-0.0 against 0.0: other bits, then compared entry by entry, equal), and every diagram is the walk's."""
    from ncd.trace import reuse_match

    proven: list[set[tuple[int, int]]] = []
    made = reuse_match._Match.__init__

    def kept(self: Any, *args: Any) -> None:
        made(self, *args)
        proven.append(self.proven)

    monkeypatch.setattr(reuse_match._Match, "__init__", kept)
    torch.manual_seed(0)
    model = nn.Sequential(*(Filled(8, f) for f in fills))
    _copied_and_equal(model, torch.randn(2, 5, 8), copies, monkeypatch)
    assert any(proven) == (copies > 0)  # a pair of 4-byte memories proven equal by their bytes (the first layer's)


class Gated(nn.Module):
    """A conformer's convolution module's gate: a projection to twice the width halved by ``F.glu``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.nn.functional.glu(self.up(x), dim=-1))


@pytest.mark.parametrize("layers", [2, 3])
def test_layers_of_glu_are_copied_and_equal(layers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*(Gated(8) for _ in range(layers)))
    x = torch.randn(2, 5, 8)
    _copied_and_equal(model, x, layers - 1, monkeypatch)
