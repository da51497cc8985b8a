"""Triangular solves as one box (ncd.trace.triangular): forward substitution with growing slices is not unrolled,
``solve_triangular`` is no opaque box, and near misses stay as recorded (still equal)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import ncd
from ncd.prims.triangular import TriangularInverseOp


class Substitution(torch.nn.Module):
    """The chunked delta rule's forward substitution (Kimi / Bailing / GLM-5-Next; Qwen3.5 when exporting)."""

    def __init__(self, zeroed: str = "masked_fill", step: str = "delta") -> None:
        super().__init__()
        self.zeroed, self.step = zeroed, step

    def forward(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # k: (b, h, n, 4), v: (b, h, n, 7)
        n = k.shape[-2]
        scores = k @ k.transpose(-1, -2)
        if self.zeroed == "masked_fill":
            attn = -scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(), 0)
        elif self.zeroed == "tril":
            attn = -scores.tril(-1)
        else:  # the diagonal kept: not strictly lower triangular
            attn = -scores.tril(0)
        for i in range(1, n):
            row = attn[..., i, :i].clone()
            sub = attn[..., :i, :i].clone()
            if self.step == "delta":
                attn[..., i, :i] = row + (row.unsqueeze(-1) * sub).sum(-2)
            else:  # another recurrence over the same slices
                attn[..., i, :i] = row - (row.unsqueeze(-1) * sub).sum(-2)
        return (attn + torch.eye(n)) @ v


def _trace(model: torch.nn.Module, *inputs: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *inputs)


def _inputs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, n, 4, generator=g) / 3, torch.randn(2, 3, n, 7, generator=g)


def _inverses(d: ncd.Diagram) -> int:
    return sum(isinstance(b.prim, TriangularInverseOp) for b in d.boxes())


@pytest.mark.parametrize("zeroed", ["masked_fill", "tril"])
def test_forward_substitution_is_one_inverse_box_whatever_the_rows(zeroed: str) -> None:
    model = Substitution(zeroed)
    short, long = _trace(model, *_inputs(5)), _trace(model, *_inputs(16))
    assert _inverses(short) == _inverses(long) == 1
    assert len(list(short.boxes())) == len(list(long.boxes()))  # never unrolled: the count does not grow with n
    assert dict(short.opaque) == {}  # tril is a band box (ncd.prims.band)
    for d, n in ((short, 5), (long, 16)):
        module = d.to_torch()
        for seed in (1, 2):  # fresh inputs
            k, v = _inputs(n, seed)
            torch.testing.assert_close(module(k, v), model(k, v), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("zeroed, step", [("diagonal", "delta"), ("masked_fill", "other")])
def test_a_substitution_of_another_matrix_or_step_stays_as_recorded(zeroed: str, step: str) -> None:
    model = Substitution(zeroed, step)
    d = _trace(model, *_inputs(5))
    assert _inverses(d) == 0
    k, v = _inputs(5, 3)
    torch.testing.assert_close(d.to_torch()(k, v), model(k, v), atol=1e-5, rtol=1e-4)


class Solve(torch.nn.Module):
    """Gated DeltaNet's solves (Qwen3.5, Qwen3-Next, OLMo-Hybrid): ``solve_triangular`` of two right-hand sides."""

    def __init__(self, upper: bool = False) -> None:
        super().__init__()
        self.upper = upper

    def forward(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        system = (k @ k.transpose(-1, -2)) * 0.5
        values = torch.linalg.solve_triangular(system, v, upper=self.upper, unitriangular=True)
        keys = torch.linalg.solve_triangular(system, k.exp(), upper=self.upper, unitriangular=True)
        return values.sum(-1, keepdim=True) * keys.sum(-1, keepdim=True)


def test_solve_triangular_is_an_inverse_box_and_a_product() -> None:
    model = Solve()
    d = _trace(model, *_inputs(6))
    assert d.opaque_count == 0 and _inverses(d) == 2
    module = d.to_torch()
    for seed in (1, 2):
        k, v = _inputs(6, seed)
        torch.testing.assert_close(module(k, v), model(k, v), atol=1e-5, rtol=1e-4)


def test_an_upper_triangular_solve_stays_opaque() -> None:
    model = Solve(upper=True)
    d = _trace(model, *_inputs(6))
    assert _inverses(d) == 0 and dict(d.opaque) == {"aten.linalg_solve_triangular.default": 2}
    k, v = _inputs(6, 1)
    torch.testing.assert_close(d.to_torch()(k, v), model(k, v), atol=1e-5, rtol=1e-4)


def test_a_recording_without_values_keeps_its_steps() -> None:
    """A large model is recorded on the meta device (shapes only): nothing to prove a rewrite on, so none is made."""
    from ncd.trace.capture import capture
    from ncd.trace.triangular import solve_triangular_loops

    for model in (Substitution(), Solve()):
        captured = capture(model, _inputs(5), {}, "dispatch")
        for node in captured.nodes:
            if node.live and isinstance(node.value, torch.Tensor):
                node.value = node.value.to("meta")
        assert solve_triangular_loops(captured) is captured


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_the_closeness_of_the_proofs_is_allclose(dtype: torch.dtype) -> None:
    """The proofs' closeness (its cheaper bound check first, then ``allclose``) answers what ``torch.allclose`` answers
    on batches of matrices, contiguous or transposed, with errors near the bound, NaN, infinities and -0."""
    from ncd.trace.triangular import _close, _closeness, _scale

    gen = torch.Generator().manual_seed(0)
    answers = set()
    for shape in [(3, 5), (2, 3, 64, 128), (2, 32, 1, 64, 128), (40, 40, 41)]:
        for trial in range(12):
            want = (torch.randn(shape, generator=gen, dtype=torch.float64) * 10 ** (trial % 4)).to(dtype)
            if trial % 3 == 0:
                want = want.transpose(-1, -2).contiguous().transpose(-1, -2)  # as LAPACK leaves a solve
            atol = 1e-5 * max(1.0, float(want.abs().max()))
            bound = atol + 1e-4 * want.double().abs()
            most = 0.9 if trial % 2 else 1.01  # every error within its bound, or some a little beyond
            got = (want.double() + bound * most * torch.rand(shape, generator=gen, dtype=torch.float64)
                   * torch.randint(0, 2, shape, generator=gen) * (2 * torch.randint(0, 2, shape, generator=gen) - 1))
            got = got.to(dtype)
            flat = got.view(-1) if got.is_contiguous() else None
            if trial == 5 and flat is not None:
                flat[7] = float("nan")
            if trial == 4 and flat is not None:
                flat[3], want.view(-1)[3] = float("inf"), float("inf")
            if trial == 7 and flat is not None:
                want.view(-1)[11] = float("inf")
            if trial == 8 and flat is not None:
                flat[2], want.view(-1)[2] = -0.0, 0.0
            expected = bool(torch.allclose(got, want, rtol=1e-4, atol=atol))
            assert _close(got, want, atol) == expected, (shape, trial)
            answers.add(expected)
        for trial in range(4):  # every error within atol / 2 (the largest error read first decides), but NaN or inf
            want = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
            atol = 1e-5 * max(1.0, float(want.abs().max()))
            spread = atol / 3 if trial else 2e-6  # (within the smallest tolerance's half: no scale read)
            got = (want.double() + spread * (2 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1)).to(dtype)
            flat, wanted = got.view(-1), want.view(-1)
            if trial == 1:
                flat[5] = float("nan")
            if trial == 2:
                flat[4], wanted[4] = float("inf"), float("inf")
            if trial == 3:
                flat[6] = float("-inf")
            expected = bool(torch.allclose(got, want, rtol=1e-4, atol=atol))
            assert _close(got, want, atol) == expected, (shape, "small", trial)
            answers.add(expected)
            # the proofs' closeness at want's own scale, read only when some error is beyond the smallest tolerance's half
            finite = _scale(want) if math.isfinite(_scale(want)) else float(want.nan_to_num(0, 0, 0).abs().max())
            at_scale = bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5 * finite))
            assert _closeness(got, want) == at_scale, (shape, "scale", trial)
    assert answers == {True, False}


class SegmentSum(torch.nn.Module):
    """Mamba2's segment sum over the chunks (a cumulative sum of a strictly lower-triangular matrix's rows), exp'd and
    applied: with two chunks its result equals forward substitution's (F = M when M has two rows), with three not."""

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # a: (b, h, n), v: (b, h, n, 5)
        n = a.shape[-1]
        x = a[..., None].expand(*a.shape, n).masked_fill(~torch.tril(torch.ones(n, n, dtype=torch.bool), -1), 0)
        s = torch.cumsum(x, dim=-2).masked_fill(~torch.tril(torch.ones(n, n, dtype=torch.bool), 0), -torch.inf)
        return torch.exp(s) @ v


@pytest.mark.parametrize("n", [2, 3])
def test_a_cumulative_sum_equal_to_the_inverse_on_two_rows_is_drawn_as_one(n: int) -> None:
    """Two rows prove nothing about a substitution (any step keeping M equals it): the cumulative sum stays one, and
    the lowered module equals the model on fresh values (and another number of rows, where an inverse would not)."""
    model = SegmentSum()
    g = torch.Generator().manual_seed(0)
    d = _trace(model, -torch.rand(2, 3, n, generator=g), torch.randn(2, 3, n, 5, generator=g))
    assert _inverses(d) == 0
    assert any(type(b.prim).__name__ == "CumSumOp" for b in d.boxes())
    lowered = d.to_torch()
    a, v = -torch.rand(2, 3, n, generator=g), torch.randn(2, 3, n, 5, generator=g)
    torch.testing.assert_close(lowered(a, v), model(a, v))


def test_a_substitution_of_more_rows_than_the_leading_block_is_still_one_inverse() -> None:
    """More rows than the leading block solved first (ncd.trace.triangular._LEADING): the substitution's leading rows
    are the closed form's, so it is still read as one inverse, equal to the model on fresh values."""
    from ncd.trace.triangular import _LEADING

    n = _LEADING + 8
    model = Substitution()
    k, v = _inputs(n)
    d = _trace(model, k / 2, v)
    assert _inverses(d) == 1
    k2, v2 = _inputs(n, seed=3)
    torch.testing.assert_close(d.to_torch()(k2 / 2, v2), model(k2 / 2, v2), atol=1e-4, rtol=1e-4)


class NudgedSubstitution(torch.nn.Module):
    """Forward substitution plus ``1e-9`` on each row solved, applied without the identity: of keys about 1e-3 (the
    matrix's entries about 1e-7), 0.5 % off the closed form; of unit keys, within rounding of it."""

    def forward(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = k.shape[-2]
        attn = -(k @ k.transpose(-1, -2)).masked_fill(torch.ones(n, n, dtype=torch.bool).triu(), 0)
        for i in range(1, n):
            row = attn[..., i, :i].clone()
            sub = attn[..., :i, :i].clone()
            attn[..., i, :i] = row + (row.unsqueeze(-1) * sub).sum(-2) + 1e-9
        return attn @ v


def test_a_near_miss_of_small_entries_stays_as_recorded() -> None:
    """The proofs' absolute tolerance follows the entries' size: under a fixed 1e-5, a substitution of entries about
    1e-7 was the closed form whatever it added, and its lowered module 0.5 % off the model's."""
    model = NudgedSubstitution()
    k, v = _inputs(6)
    d = _trace(model, k * 1e-3, v)
    assert _inverses(d) == 0
    k2, v2 = _inputs(6, seed=3)
    want = model(k2 * 1e-3, v2)
    torch.testing.assert_close(d.to_torch()(k2 * 1e-3, v2), want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
