"""Operators that were opaque boxes or whose diagrams ncd's own JSON reader refused: each case compares the lowered
module (and the diagram read back from its JSON, untrusted) with the model itself on the traced and a fresh input."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import ncd

Fn = Callable[..., torch.Tensor]


class _Two(torch.nn.Module):
    """``f(linear(a), linear(b))``: two live float operands."""

    def __init__(self, f: Fn) -> None:
        super().__init__()
        self.f, self.a, self.b = f, torch.nn.Linear(6, 6), torch.nn.Linear(6, 6)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.f(self.a(a), self.b(b))


class _Ints(torch.nn.Module):
    def __init__(self, f: Fn) -> None:
        super().__init__()
        self.f = f

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.f(t)


class _Unpool(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool, self.unpool = torch.nn.Conv2d(2, 2, 1), torch.nn.MaxPool2d(2, return_indices=True), \
            torch.nn.MaxUnpool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unpool(*self.pool(self.conv(x)))


def _floats(seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)


def _ints(seed: int) -> tuple[torch.Tensor, ...]:
    return (torch.randint(-50, 100, (2, 6), generator=torch.Generator().manual_seed(seed)),)


def _image(seed: int) -> tuple[torch.Tensor, ...]:
    return (torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(seed)),)


#: models whose opaque calls load_json refused as not on the allowlist (redteam7: ``__lshift__``, ``count_nonzero``)
JSON_CASES: dict[str, tuple[torch.nn.Module, Callable[[int], tuple[torch.Tensor, ...]]]] = {
    "nansum": (_Two(lambda a, b: torch.nansum(a, -1)), _floats),
    "addr": (_Two(lambda a, b: torch.addr(a[0, :, :5], a[1, 0, :5], b[1, 0, :5])), _floats),
    "block_diag": (_Two(lambda a, b: torch.block_diag(a[0], b[0])), _floats),
    "cosine_similarity": (_Two(lambda a, b: F.cosine_similarity(a, b, dim=-1)), _floats),
    "pairwise_distance": (_Two(lambda a, b: F.pairwise_distance(a, b)), _floats),
    "count_nonzero": (_Two(lambda a, b: a + torch.count_nonzero(a > 0, -1).unsqueeze(-1)), _floats),
    "and_or_xor": (_Ints(lambda t: (t & 7) | (t ^ 5) | (t ^ t.flip(-1))), _ints),
    "shifts": (_Ints(lambda t: (t << 2) + (t >> 1)), _ints),
    "max_unpool": (_Unpool(), _image),
}


@pytest.mark.parametrize("name", sorted(JSON_CASES))
def test_ncd_s_own_json_of_these_calls_loads_untrusted_and_runs(name: str) -> None:
    model, inputs = JSON_CASES[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *inputs(0))
        loaded = ncd.load_json(d.to_json())  # untrusted: every opaque target must be on the allowlist
        lowered = loaded.to_torch()
        lowered.load_state_dict(d.state_dict(lowered))  # (a file holds no weights: the traced ones)
    for seed in (0, 1):
        got, want = lowered(*inputs(seed)), model(*inputs(seed))
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
