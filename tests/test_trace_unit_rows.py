"""A model traced with a batch or a length of one, lowered at other sizes: reading the first row (``x[:1]``,
``x[:, :1]``, ``narrow``) and reading every row look alike at the traced size (torch records no slice of a whole
axis), so the check against the model must tell them apart: the lowered module equals the model there, or is refused;
never a module that is silently wrong."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch

import ncd
from ncd.errors import RunError, TraceError


class Rows(torch.nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


CASES = {  # name: (what the model computes, traced shape, other sizes)
    "first_position": (lambda x: x + x[:, :1], (2, 1, 8), {"t": 7}),
    "first_entry": (lambda x: x * x[:, :1, :1], (1, 1, 8), {"t": 4}),
    "first_sample": (lambda x: x * x[:1], (1, 3, 8), {"b": 3}),
    "first_sample_narrow": (lambda x: x * x.narrow(0, 0, 1), (1, 3, 8), {"b": 3}),
    # reading every row, the sizes read from the input: lowered and equal
    "every_sample": (lambda x: x * x[:x.shape[0]], (1, 3, 8), {"b": 3}),
    "every_sample_len": (lambda x: x * x[:len(x)].tanh(), (1, 3, 8), {"b": 3}),
    "batch_sum": (lambda x: x.sum(0), (1, 3, 8), {"b": 3}),
}


class Embedded(torch.nn.Module):
    """Token ids embedded, then the first sample's (``first='b'``) or the first position's (``'t'``) rows read."""

    def __init__(self, first: str) -> None:
        super().__init__()
        self.first = first
        self.embed = torch.nn.Embedding(50, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.embed(ids)
        return h + (h[:1] if self.first == "b" else h[:, :1])


@pytest.mark.parametrize(("first", "shape", "sizes"), [("b", (1, 5), {"b": 3}), ("t", (2, 1), {"t": 6}),
                                                      ("t", (1, 1), {"t": 5}), ("t", (1, 1), {"b": 3, "t": 5}),
                                                      ("b", (1, 1), {"b": 3})])
def test_ids_of_one_row_lowered_at_other_sizes_are_refused(first: str, shape: tuple[int, int],
                                                            sizes: dict[str, int]) -> None:
    torch.manual_seed(0)
    model = Embedded(first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randint(2, 50, shape), axes="b t")
        with pytest.raises(TraceError, match="differs from the model"):
            d.to_torch(**sizes)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_row_of_one_lowered_at_other_sizes_is_equal_or_refused(name: str) -> None:
    fn, shape, sizes = CASES[name]
    torch.manual_seed(0)
    model = Rows(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(*shape), axes="b t m")
        b, t, m = shape
        x = torch.randn(sizes.get("b", b), sizes.get("t", t), m)
        try:
            lowered = d.to_torch(**sizes)
        except TraceError as error:
            assert "differs from the model" in str(error)
            return
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x))
    assert name.startswith(("every", "batch"))  # (the first-row readings are refused: they cannot be lowered)


class Masked(torch.nn.Module):
    """``x`` scaled by a mask's first sample (``first='b'``) or first position (``'t'``), or, where the whole mask is
    set (``guarded``: a branch the model takes on the mask's values), by the mask's first sample."""

    def __init__(self, first: str, guarded: bool = False) -> None:
        super().__init__()
        self.first, self.guarded = first, guarded

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.guarded:
            if mask.all():
                return x * mask[:1].unsqueeze(-1)
            return x * mask.unsqueeze(-1)
        return x * (mask[:1] if self.first == "b" else mask[:, :1]).unsqueeze(-1)


def _mask(shape: tuple[int, int], dtype: torch.dtype, ones: bool) -> torch.Tensor:
    mask = torch.ones(shape, dtype=torch.bool)
    if not ones:
        mask.view(-1)[1::3] = False
    return mask.to(dtype)


@pytest.mark.parametrize("dtype", [torch.bool, torch.long])
@pytest.mark.parametrize("ones", [True, False])
@pytest.mark.parametrize(("first", "shape", "sizes"), [("b", (1, 5), {"b": 3}), ("t", (2, 1), {"t": 6}),
                                                      ("b", (1, 1), {"b": 3, "t": 4})])
def test_a_mask_of_one_row_lowered_at_other_sizes_is_refused(first: str, shape: tuple[int, int], sizes: dict[str, int],
                                                             ones: bool, dtype: torch.dtype) -> None:
    # a bool (or 0/1) mask grown for the check as equal copies hid the first-row reading: lowered at b=3 the module
    # scaled every sample by its own mask, the model by the first sample's (silently wrong on any other mask)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(Masked(first), torch.randn(*shape, 4), _mask(shape, dtype, ones), axes=["b t m", "b t"])
        with pytest.raises(TraceError, match="differs from the model"):
            d.to_torch(**sizes)


def test_a_mask_read_by_a_branch_lowered_at_other_sizes_stays_equal_where_the_branch_holds() -> None:
    # the check's flipped mask entry takes the other branch, which the lowered module's guard refuses: the check
    # compares on copies of the traced mask instead (where the branch holds, the first sample's mask is every sample's)
    torch.manual_seed(0)
    model = Masked("b", guarded=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(1, 5, 4), torch.ones(1, 5, dtype=torch.bool), axes=["b t m", "b t"])
        lowered = d.to_torch(b=3)
    x, mask = torch.randn(3, 5, 4), torch.ones(3, 5, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(lowered(x, mask), model(x, mask))
        mask[1, 2] = False
        with pytest.raises(RunError, match="guard"):
            lowered(x, mask)


class FixedPart(torch.nn.Module):
    """Reads a fixed part of an axis as long as the traced size (``x[:2]`` traced at a batch of two: no slice recorded),
    by a mean or a largest entry, which copies equal to the entries they copy leave as they are."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.embed = torch.nn.Embedding(50, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "ids":
            h: torch.Tensor = self.embed(x)
            return h - h[:, :4].mean(1, keepdim=True)
        if self.how == "batch":
            return x - x[:2].mean(0)
        if self.how == "least":  # the least |x| of the first three positions: larger copies keep it
            return x - x.abs()[:, :3].amin(1, keepdim=True)
        if self.how == "negated":
            return x - (-x.abs())[:, :3].amax(1, keepdim=True)
        if self.how == "least rows":
            return x * x[:2].abs().amin(0)
        return x * x[:, :3].amax(1, keepdim=True)


@pytest.mark.parametrize(("how", "shape", "sizes"), [("batch", (2, 3, 4), {"b": 4}), ("batch", (2, 3, 4), {"b": 6}),
                                                    ("largest", (2, 3, 4), {"t": 6}), ("largest", (2, 3, 4), {"t": 5}),
                                                    ("ids", (2, 4), {"t": 8}), ("least", (2, 3, 4), {"t": 6}),
                                                    ("least", (2, 3, 4), {"t": 5}), ("negated", (2, 3, 4), {"t": 6}),
                                                    ("least rows", (2, 3, 4), {"b": 4})])
def test_a_fixed_part_as_long_as_the_traced_axis_lowered_at_other_sizes_is_refused(how: str, shape: tuple[int, ...],
                                                                                    sizes: dict[str, int]) -> None:
    # the check grew the inputs by equal copies (0 1 0 1): the mean of the first two rows, or the largest of the first
    # three positions, was the same over every row, so the module lowered at b=4 (t=6) passed the check and averaged
    # every row where the model averages two: silently wrong on any other input
    torch.manual_seed(0)
    model = FixedPart(how)
    x = torch.randint(0, 50, shape) if how == "ids" else torch.randn(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x, axes="b t" if how == "ids" else "b t m")
        with pytest.raises(TraceError, match="differs from the model"):
            d.to_torch(**sizes)
