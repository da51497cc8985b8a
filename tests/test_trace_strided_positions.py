"""``as_strided`` reads (:mod:`ncd.trace.strided`): the entries of ``x`` that a read's addresses hold, found at the
read's size (a permuted contiguous ``x`` without a map of its whole memory), against a brute-force search of ``x``'s
own addresses, and the traced read against the model."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

import ncd
from ncd.trace.strided import _addresses, _kept_leading, _kept_leading_linear, _positions


def _addresses_of(x: torch.Tensor) -> list[int]:
    """The address of each entry of ``x`` (in its flat order), one by one from its strides."""
    return [int(x.storage_offset()) + sum(i * int(s) for i, s in zip(idx, x.stride()))
            for idx in itertools.product(*(range(n) for n in x.shape))]


@pytest.mark.parametrize("seed", range(4))
def test_the_entries_an_as_strided_read_holds_equal_a_search_of_the_input_s_addresses(seed: int) -> None:
    rng = random.Random(seed)
    checked = permuted = outside = 0
    for _ in range(150):
        shape = [rng.randint(1, 4) for _ in range(rng.randint(1, 4))]
        size = int(torch.tensor(shape).prod())
        memory = torch.randn(size * rng.randint(1, 3) + 2 + rng.randint(0, 3))
        x = memory[rng.randint(0, 2):][:size].reshape(shape)
        pick = rng.random()
        if pick < 0.5:
            x = x.permute(rng.sample(range(len(shape)), len(shape)))
        elif pick < 0.65:
            x = x[..., :1].expand(*x.shape[:-1], 3)
        dims = rng.randint(0, 3)
        sizes = [rng.randint(1, 4) for _ in range(dims)]
        steps = [rng.randint(0, 5) for _ in range(dims)]
        offset = rng.randint(0, 3)
        if offset + sum((n - 1) * s for n, s in zip(sizes, steps)) >= memory.numel():
            continue
        view = memory.as_strided(sizes, steps, offset)
        for kind in (torch.int32, torch.int64):
            read = _addresses(view, kind)
            assert read.dtype == kind
            assert torch.equal(read.long(), torch.arange(memory.numel()).as_strided(sizes, steps, offset))
            positions, out = _positions(x, memory.numel(), read, kind)
            mine = _addresses_of(x)
            assert out == any(int(a) not in mine for a in read.reshape(-1).tolist())
            if not out:  # each position an entry of x at the address read (one of them, where x repeats entries)
                assert [mine[p] for p in positions.reshape(-1).tolist()] == read.reshape(-1).tolist()
                assert torch.equal(x.reshape(-1)[positions.long()], view)
                checked += 1
                permuted += not x.is_contiguous()
            else:
                outside += 1
    assert checked > 50 and permuted > 10 and outside > 10


def test_a_read_of_windows_from_a_transposed_tensor_traces_equal_to_the_model() -> None:
    class Windows(torch.nn.Module):  # longformer's chunks: overlapping windows read from a transposed projection
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = (x * 2).transpose(1, 2)  # (b, t, c) -> (b, c, t): a permuted contiguous tensor
            w = h.as_strided((h.shape[0], h.shape[1], 3, 4), (h.stride(0), h.stride(1), 2 * h.stride(2), h.stride(2)))
            return w.sum(-1)

    x = torch.randn(2, 8, 3)
    d = ncd.trace(Windows(), x)
    module = d.to_torch()
    for inp in (x, torch.randn(2, 8, 3)):
        assert torch.allclose(module(inp), Windows()(inp), atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_the_leading_axes_a_read_keeps_from_strides_equal_those_from_its_positions(seed: int) -> None:
    rng = random.Random(seed)
    kept = compared = 0
    for _ in range(400):
        shape = [rng.choice((1, 2, 3, 4)) for _ in range(rng.randint(2, 4))]
        x = torch.randn(int(torch.tensor(shape).prod()) + 2 + rng.randint(0, 6))[rng.randint(0, 2):][
            :int(torch.tensor(shape).prod())].reshape(shape)
        entries = x.untyped_storage().nbytes() // x.element_size()
        sizes = [x.shape[d] if rng.random() < 0.7 else rng.randint(1, 4) for d in range(rng.randint(1, len(shape) + 1))
                 if d < len(shape)] + [rng.randint(1, 3)] * rng.randint(0, 1)
        contiguous = [int(torch.tensor(shape[d + 1:]).prod()) if d + 1 < len(shape) else 1 for d in range(len(shape))]
        steps = [contiguous[d] if d < len(shape) and rng.random() < 0.7 else rng.randint(0, 5) for d in range(len(sizes))]
        offset = int(x.storage_offset()) + rng.randint(0, 2)
        if offset + sum((n - 1) * s for n, s in zip(sizes, steps)) >= entries:
            continue
        out = x.as_strided(sizes, steps, offset)
        positions, outside = _positions(x, entries, _addresses(out, torch.int64), torch.int64)
        if outside or not out.numel():
            continue
        want = _kept_leading(x, out, positions)
        assert _kept_leading_linear(x, out) == want, (shape, sizes, steps, offset)
        compared += 1
        kept += want > 0
    assert compared > 100 and kept > 20
