"""Red-team findings on models users write (stop 19): each is compared with the original model on a fresh input.

* a cast between integer types (``.long()`` of int32 ids, ``.int()`` of int64 positions, ``.int()`` of a mask) was a
  wire, or lowered as ``int64``: the lowered module computed on in the other type, so its arithmetic did not wrap
  around where the model's did (or did where the model's did not), and its outputs had the other type; a uint8 id
  read ``.long()`` into an Embedding traced, but its lowered module raised (the Embedding got the uint8 tensor).
  Each is now a ``cast`` box of the model's type.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

import ncd


def _trace(model: nn.Module, *inputs: torch.Tensor) -> ncd.trace.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *inputs)


def _same(model: nn.Module, lowered: nn.Module, *inputs: torch.Tensor) -> None:
    """The lowered module's outputs are the model's, of the same dtypes, entry for entry."""
    with torch.no_grad():
        got, want = tree_leaves(lowered(*inputs)), tree_leaves(model(*inputs))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        assert torch.equal(g, w)


class Widened(nn.Module):
    """int32 ids widened before arithmetic that overflows int32 (a hash of the ids, as n-gram embeddings compute)."""

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wide = ids.long()
        return wide * 1_000_003 * 1_000_003, (wide * 7919) % 1000


def test_a_widened_integer_computes_on_in_the_wider_type() -> None:
    # before, ``.long()`` was a wire: the lowered module multiplied the int32 ids, wrapping around, and returned int32
    model = Widened()
    ids = torch.randint(0, 30_000, (2, 7), dtype=torch.int32)
    lowered = _trace(model, ids).to_torch()
    _same(model, lowered, torch.randint(0, 30_000, (2, 7), dtype=torch.int32))


class Narrowed(nn.Module):
    """Positions and a mask cast to int32 (HF's ``mask.int()``, ``.type_as(mask)``), then int32 arithmetic."""

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = (ids != 0).int()
        positions = torch.cumsum(mask, dim=1).type_as(mask) * mask
        big = (x > 0).int() * 65536 * 65536 + 3  # wraps around in int32: 3 where x > 0
        return positions, big, ids.to(torch.int32) * 2


def test_integers_narrowed_to_int32_compute_in_int32() -> None:
    # before, ``(x > 0).int()`` lowered as int64 (so the product did not wrap: 2**32 + 3), and ``ids.to(int32)`` and
    # ``type_as(mask)`` were wires (int64 outputs)
    model = Narrowed()
    ids, x = torch.randint(0, 5, (2, 6)), torch.randn(2, 6)
    _same(model, _trace(model, ids, x).to_torch(), torch.randint(0, 5, (2, 6)), torch.randn(2, 6))


class ByteIds(nn.Module):
    """uint8 ids shifted (wrapping around in uint8) and read ``.long()`` into an Embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.embed((ids + 200).long())
        return out


def test_a_uint8_id_read_long_into_an_embedding_lowers_and_runs() -> None:
    # before, the lowered module raised RunError: the Embedding got the uint8 tensor (``.long()`` was a wire)
    torch.manual_seed(0)
    model = ByteIds()
    lowered = _trace(model, torch.tensor([[10, 100, 30]], dtype=torch.uint8)).to_torch()
    _same(model, lowered, torch.tensor([[100, 0, 255]], dtype=torch.uint8))
