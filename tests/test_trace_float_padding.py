"""A float mask made from a boolean input, ``0`` at the kept keys and ``-inf`` at the others, is read as a padding
mask of that input (:mod:`ncd.trace.attention`): ``nn.MultiheadAttention``'s ``key_padding_mask`` (``True`` at the
padded keys) is drawn as one padding box on the scores, keeping the keys where the input is ``False``; the model's
``where``, views and expansion of the mask and the scores' sum with it are not drawn.

Each traced model is compared with the original model (torch runs both) on the traced input, on fresh inputs (a row
of queries all of whose keys are padded among them) and at other sizes.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.prims.attention import PaddingMaskOp
from ncd.prims.gather import CompareOp
from ncd.prims.structure import AddOp


def _trace(model: nn.Module, *inputs: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d: ncd.TracedDiagram = ncd.trace(model, *inputs)
    return d


def _count(d: ncd.TracedDiagram, kind: type) -> int:
    return sum(isinstance(box.prim, kind) for box in d.boxes())


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(x, src_key_padding_mask=pad)
        return out


def _pad(b: int, t: int, seed: int) -> torch.Tensor:
    pad = torch.rand(b, t, generator=torch.Generator().manual_seed(seed)) > 0.6
    pad[0, :] = False
    return pad


def test_a_key_padding_mask_is_a_padding_box_and_equals_the_model() -> None:
    """Two layers, a padding box each (on main: the mask's sum with the scores and its ``> -inf`` test, from a
    ``where``, two views and an expansion); equal to the model at the traced sizes and at other batches and lengths.
    (A batch row with every key padded: torch's encoder gives NaN there, the lowered module 0, as on main.)"""
    torch.manual_seed(0)
    model = _Encoder().eval()
    x, pad = torch.randn(2, 6, 16), _pad(2, 6, 0)
    pad[1, -2:] = True
    d = _trace(model, x, pad)
    assert _count(d, PaddingMaskOp) == 1  # (the layers are one repetition)
    assert _count(d, CompareOp) == 0 and _count(d, AddOp) == 2  # the two residual sums only
    with torch.no_grad():
        for y, p in ((x, pad), (torch.randn(2, 6, 16), _pad(2, 6, 1))):
            torch.testing.assert_close(d.to_torch()(y, p), model(y, p), atol=1e-5, rtol=1e-5)
        for b, t in ((3, 6), (1, 4), (4, 9)):
            y, p = torch.randn(b, t, 16), _pad(b, t, b + t)
            torch.testing.assert_close(d.to_torch(b=b, t=t)(y, p), model(y, p), atol=1e-5, rtol=1e-5)


class _Additive(nn.Module):
    """Scaled dot-product attention given a float mask built from a boolean input: ``-inf`` (``fill``) where the
    input is ``True`` (``kept=False``) or ``False``."""

    def __init__(self, fill: float, kept: bool) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.fill, self.kept = fill, kept

    def forward(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        masked = ~keys if self.kept else keys
        mask = torch.zeros(b, t).masked_fill(masked, self.fill)[:, None, None, :]
        out: torch.Tensor = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out


def test_a_float_mask_of_zeros_and_minus_infinity_is_read_either_way_round() -> None:
    """``-inf`` where the input is ``True`` or where it is ``False``: a padding box, equal to the model (a row all
    masked too); ``-1e9`` in place of ``-inf`` is not such a mask: it stays a sum with the scores (and a padding of
    its finite entries), equal too."""
    torch.manual_seed(1)
    x = torch.randn(2, 5, 8)
    keys = torch.tensor([[True, True, False, True, False], [False, True, True, True, True]])
    for fill, kept, read in ((float("-inf"), False, True), (float("-inf"), True, True), (-1e9, False, False)):
        model = _Additive(fill, kept).eval()
        d = _trace(model, x, keys)
        assert _count(d, PaddingMaskOp) == 1 and _count(d, CompareOp) == (0 if read else 1), (fill, kept)
        none = torch.zeros_like(keys) if kept else torch.ones_like(keys)  # every key masked in the first row
        none[1] = keys[1]
        with torch.no_grad():
            for y, p in ((x, keys), (torch.randn(2, 5, 8), keys.flip(1)), (x, none)):
                torch.testing.assert_close(d.to_torch()(y, p), model(y, p), atol=1e-5, rtol=1e-5, equal_nan=True)
            if read:  # (the sum holds the mask made at the traced sizes: refused at others)
                y, p = torch.randn(3, 7, 8), torch.rand(3, 7) > 0.5
                torch.testing.assert_close(d.to_torch(b=3, t=7)(y, p), model(y, p), atol=1e-5, rtol=1e-5,
                                           equal_nan=True)


class _TwoMasks(nn.Module):
    """Two attentions, each given its own float mask made from the boolean input ``keys``: ``-inf`` where ``keys`` is
    ``True`` in the first; in the second, by the operations of the first (``same``) or ``-inf`` where it is
    ``False``."""

    def __init__(self, same: bool) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.same = same

    def forward(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        first = torch.zeros(b, t).masked_fill(keys, float("-inf"))[:, None, None, :]
        second = torch.zeros(b, t).masked_fill(keys if self.same else ~keys, float("-inf"))[:, None, None, :]
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=first)
        out: torch.Tensor = F.scaled_dot_product_attention(h, k, v, attn_mask=second)
        return out


def _counted_runs(monkeypatch: object) -> list[int]:
    """A list that gets an entry at each re-run of recorded operations (:func:`ncd.trace.live_masks._run`)."""
    from ncd.trace import live_masks

    runs: list[int] = []
    run = live_masks._run

    def counted(*args: object, **kwargs: object) -> object:
        runs.append(1)
        return run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(live_masks, "_run", counted)  # type: ignore[attr-defined]
    return runs


def test_a_mask_made_again_by_the_same_operations_is_read_once_and_another_on_its_own(monkeypatch: object) -> None:
    """Each layer of ``nn.TransformerEncoder`` makes its own float mask from the same input by the same operations:
    the second is read as the first was, its operations not re-run (the re-runs counted); a second mask made by other
    operations (kept where the input is ``True``) is proven on its own.  Both equal to the model, on the traced input
    and on fresh ones."""
    runs = _counted_runs(monkeypatch)
    torch.manual_seed(2)
    x = torch.randn(2, 5, 8)
    keys = torch.tensor([[True, False, False, True, False], [False, True, False, False, False]])
    counts = {}
    for same in (True, False):
        runs.clear()
        model = _TwoMasks(same).eval()
        d = _trace(model, x, keys)
        counts[same] = len(runs)
        assert _count(d, PaddingMaskOp) == 2 and _count(d, CompareOp) == 0, same
        with torch.no_grad():
            for y, p in ((x, keys), (torch.randn(2, 5, 8), keys.flip(1)), (torch.randn(2, 5, 8), ~keys.flip(0))):
                torch.testing.assert_close(d.to_torch()(y, p), model(y, p), atol=1e-5, rtol=1e-5, equal_nan=True)
    # the same operations: the first mask's proof only (on main 14 re-runs, here 7); other operations: both proofs (13)
    assert 0 < counts[True] < counts[False]


def test_a_float_mask_of_other_numbers_is_declined_without_running_its_operations_again(monkeypatch: object) -> None:
    """A float mask holding other numbers than ``0`` and ``-inf`` (``-1e9`` at the masked keys) is not read, and its
    operations are not re-run to find that out (its traced value says so: the first probe is the traced input); a
    mask of ``0`` and ``-inf`` made by the same operations still is (re-run to prove it).  Both equal to the model."""
    runs = _counted_runs(monkeypatch)
    torch.manual_seed(3)
    x = torch.randn(2, 5, 8)
    keys = torch.tensor([[True, False, True, True, False], [False, True, False, True, True]])
    counted_runs = {}
    for fill in (-1e9, float("-inf")):
        runs.clear()
        model = _Additive(fill, False).eval()
        d = _trace(model, x, keys)
        counted_runs[fill] = len(runs)
        assert _count(d, CompareOp) == (1 if fill == -1e9 else 0), fill
        with torch.no_grad():
            for y, p in ((x, keys), (torch.randn(2, 5, 8), keys.flip(1))):
                torch.testing.assert_close(d.to_torch()(y, p), model(y, p), atol=1e-5, rtol=1e-5, equal_nan=True)
    assert counted_runs[-1e9] == 0 and counted_runs[float("-inf")] > 0, counted_runs
