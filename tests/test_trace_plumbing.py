"""Runs of reshapes and transposes with no arithmetic between are drawn as at most a split, a crossing and a merge
(:mod:`ncd.trace.plumbing`): ``nn.MultiheadAttention``'s ``view(t, b*h, k) -> transpose -> view(b, h, t, k)`` is a
split of the width into heads and a crossing, with no wire holding the batch times the heads.

Each traced model is compared with the original model (torch runs both) on the traced input and on inputs of other
sizes.
"""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.opaque import ViewOp
from ncd.prims.structure import TransposeOp


def _trace(model: nn.Module, *inputs: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d: ncd.TracedDiagram = ncd.trace(model, *inputs)
    return d


def _movements(d: ncd.TracedDiagram) -> int:
    return sum(isinstance(box.prim, (ViewOp, TransposeOp)) for box in d.boxes())


class _SeqFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.attn(x, x, x, need_weights=False)[0]
        return out


def test_attention_heads_are_never_merged_with_the_batch() -> None:
    """Sequence-first ``nn.MultiheadAttention`` (t=5, b=3, 4 heads): no wire has size b*h = 12 (before: the
    ``q:12`` wire of ``view(t, b*h, k)`` between two views and a transpose); lowered, it equals the model at the
    traced and other sizes."""
    torch.manual_seed(0)
    model = _SeqFirst().eval()
    x = torch.randn(5, 3, 16)
    d = _trace(model, x)
    sizes = [a.size for box in d.boxes() for typ in (box.dom, box.cod) for seg in typ for a in seg.axes]
    assert not [s for s in sizes if {str(v) for v in s.free_symbols} == {"b"} and s.subs({v: 3 for v in s.free_symbols}) == 12]
    # the packed projection's q k v parts are slices of its width (plumbing_parts), then q, k, v: a split and a
    # crossing each; the output: a crossing and a merge before the output projection, which acts on the width alone
    # (18 boxes before: view, view, transpose, view; view, transpose and view for each of q, k, v, a renaming view for
    # k and v; transpose, view, view; 10 with the parts' split and crossing before their selects); 8 while the crossings
    # of q, k, v and of the output were boxes, now the einsums' order of their axes (ncd.trace.crossings)
    assert _movements(d) == 4
    for t, b in ((5, 3), (7, 2), (4, 1)):
        y = torch.randn(t, b, 16)
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch(t=t, b=b)(y), model(y), atol=1e-5, rtol=1e-5)


def test_a_transformer_layer_draws_fewer_boxes_and_equals_the_model() -> None:
    """A two-layer ``nn.TransformerEncoder`` with a padding mask: the runs of q, k, v (view, transpose, view, and
    the keys' renaming view) take a split and a crossing each, the mask's (view, view, expand, view, view, view) none
    (read as a padding mask of the input, :mod:`ncd.trace.attention`); the input projection is applied before the
    batch-first transpose, its q k v parts are slices of its width (the transpose joins their runs), and the output
    projection after its output's crossing and merge, which join the transposes around it: 9 movement boxes where
    there were 25; 5 since the crossings of q, k, v and of the output are the einsums' order of their axes."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()

    class Padded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model

        def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.encoder(x, src_key_padding_mask=pad)
            return out

    wrapped = Padded().eval()
    x = torch.randn(2, 6, 16)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    d = _trace(wrapped, x, pad)
    assert _movements(d) == 5
    fresh = torch.randn(2, 6, 16)
    with torch.no_grad():
        for y in (x, fresh):
            torch.testing.assert_close(d.to_torch()(y, pad), wrapped(y, pad), atol=1e-5, rtol=1e-5)


class _Chain(nn.Module):
    """``x * 2``, then a run of reshapes and transposes, then ``+ 1``."""

    def __init__(self, moves: list[tuple[str, tuple[int, ...]]]) -> None:
        super().__init__()
        self.moves = moves

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _moved(x * 2, self.moves) + 1


def _random_moves(shape: tuple[int, ...], rng: random.Random) -> list[tuple[str, tuple[int, ...]]]:
    moves: list[tuple[str, tuple[int, ...]]] = []
    for _ in range(rng.randint(2, 6)):
        what = rng.choice(["reshape", "permute", "permute", "unsqueeze", "squeeze"])
        if what == "reshape":  # split one axis or merge two neighbours
            k = rng.randrange(len(shape))
            n = shape[k]
            factors = [f for f in range(2, n) if n % f == 0]
            if factors and (len(shape) < 2 or rng.random() < 0.5):
                f = rng.choice(factors)
                shape = shape[:k] + (f, n // f) + shape[k + 1:]
            elif len(shape) >= 2:
                k = min(k, len(shape) - 2)
                shape = shape[:k] + (shape[k] * shape[k + 1],) + shape[k + 2:]
            else:
                continue
            moves.append((what, shape))
        elif what == "permute":
            order = list(range(len(shape)))
            rng.shuffle(order)
            shape = tuple(shape[k] for k in order)
            moves.append((what, tuple(order)))
        elif what == "unsqueeze":
            k = rng.randint(0, len(shape))
            shape = shape[:k] + (1,) + shape[k:]
            moves.append((what, (k,)))
        else:
            ones = [k for k, n in enumerate(shape) if n == 1]
            if ones:
                k = rng.choice(ones)
                shape = shape[:k] + shape[k + 1:]
                moves.append((what, (k,)))
    return moves


@pytest.mark.parametrize("seed", range(12))
def test_a_random_run_of_reshapes_and_transposes_equals_the_model(seed: int) -> None:
    """Random runs of reshapes, permutations and size-1 wires between two arithmetic steps: the lowered diagram
    equals the model (on the traced and a fresh input), and the run takes at most three boxes (split, crossing,
    merge)."""
    rng = random.Random(seed)
    shape = rng.choice([(2, 6, 4), (3, 4, 6), (2, 12), (4, 2, 3, 2)])
    moves = _random_moves(shape, rng)
    model = _Chain(moves).eval()
    x = torch.randn(*shape)
    d = _trace(model, x)
    assert _movements(d) <= 3, moves
    for y in (x, torch.randn(*shape)):
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch()(y), model(y))


def _moved(y: torch.Tensor, moves: list[tuple[str, tuple[int, ...]]]) -> torch.Tensor:
    for what, args in moves:
        if what == "reshape":
            y = y.reshape(args)
        elif what == "permute":
            y = y.permute(args)
        elif what == "unsqueeze":
            y = y.unsqueeze(args[0])
        else:
            y = y.squeeze(args[0])
    return y


class _Projected(nn.Module):
    """``x * 2``, moves, a Linear on the last wire, moves, ``+ 1``: the Linear with no arithmetic around it."""

    def __init__(self, before: list[tuple[str, tuple[int, ...]]], width: int, out: int,
                 after: list[tuple[str, tuple[int, ...]]]) -> None:
        super().__init__()
        self.before, self.after = before, after
        self.lin = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _moved(self.lin(_moved(x * 2, self.before)), self.after) + 1


def _shape_after(shape: tuple[int, ...], moves: list[tuple[str, tuple[int, ...]]]) -> tuple[int, ...]:
    return tuple(_moved(torch.zeros(shape), moves).shape)


def test_the_attention_output_projection_is_a_crossing_and_a_merge() -> None:
    """``b h p k -> permute -> reshape(p*b, h*k) -> Linear -> view(p, b, m) -> transpose`` (torch's attention output,
    batch first; 4 boxes of plumbing): the Linear commutes with the moving of the other wires, so it is drawn as a
    crossing and a merge ``h k -> m`` before the Linear on ``b p m``; equal to the model at the traced input and a
    fresh one."""
    torch.manual_seed(0)
    b, h, p, k = 3, 4, 5, 2
    before: list[tuple[str, tuple[int, ...]]] = [("permute", (2, 0, 1, 3)), ("reshape", (p * b, h * k))]
    after: list[tuple[str, tuple[int, ...]]] = [("reshape", (p, b, h * k)), ("permute", (1, 0, 2))]
    model = _Projected(before, h * k, h * k, after).eval()
    x = torch.randn(b, h, p, k)
    d = _trace(model, x)
    assert _movements(d) == 2
    for y in (x, torch.randn(b, h, p, k)):
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch()(y), model(y))


@pytest.mark.parametrize("seed", range(16))
def test_a_linear_between_random_runs_equals_the_model(seed: int) -> None:
    """A Linear on the last wire between two random runs of reshapes and transposes (moved through one of them when
    that fuses the runs, kept where it is when a run cuts its wire): the lowered diagram equals the model on the traced
    and a fresh input, and draws no more plumbing than the runs' own canonical forms (3 boxes each)."""
    rng = random.Random(100 + seed)
    shape = rng.choice([(2, 6, 4), (3, 4, 6), (2, 12), (4, 2, 3, 2)])
    before = _random_moves(shape, rng)
    mid = _shape_after(shape, before)
    if seed % 2:  # end on a merge of the last wires, as attention does before its output projection
        mid = mid[:-2] + (mid[-2] * mid[-1],) if len(mid) >= 2 else mid
        before = before + [("reshape", mid)]
    out = rng.choice([mid[-1], 5])
    after = _random_moves(mid[:-1] + (out,), rng)
    model = _Projected(before, mid[-1], out, after).eval()
    x = torch.randn(*shape)
    d = _trace(model, x)
    assert _movements(d) <= 6, (before, after)
    for y in (x, torch.randn(*shape)):
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch()(y), model(y), atol=1e-5, rtol=1e-5)


class _Reshapes(nn.Module):
    """Reshapes in a row with no crossing: ``unsqueeze`` then a reshape back (Gated DeltaNet's decays), and heads
    split then merged into another width (``q l -> m d -> r``), each value read only by the next reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h = self.proj(x)
        same = h.unsqueeze(-1).reshape(b, t, 24).view(b, t, 3, 8)  # one view, 24 -> 3 8 (the first two: none)
        other = h.view(b, t, 4, 6).view(b, t, 2, 12).reshape(b, t, 3, 8)  # one view, 24 -> 3 8
        return same * other


def test_reshapes_in_a_row_are_one_view_or_none() -> None:
    """A run of reshapes with no transpose is one view from its input to its output (one that ends where it began,
    none): 2 movement boxes where the split-and-merge form (or the run as recorded) drew 5; lowered, it equals the
    model at the traced and other sizes."""
    torch.manual_seed(0)
    model = _Reshapes().eval()
    d = _trace(model, torch.randn(2, 5, 8))
    assert _movements(d) == 2
    for b, t in ((2, 5), (3, 7), (1, 4)):
        y = torch.randn(b, t, 8)
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch(t=t, b=b)(y), model(y))
