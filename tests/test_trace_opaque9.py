"""Operators ATen composes from others that were opaque boxes (``var_mean``, ``std_mean``, ``nanmean``,
``pairwise_distance``, ``round(decimals=k)``, ``kron``, ``block_diag``, ``scatter_reduce`` of the mean,
``index_add`` with ``alpha``, ``index_copy``, ``isin``): each is drawn as its parts
(:mod:`ncd.trace.boxes_composed`), and the lowered module, the diagram read back from its JSON (untrusted) and the
gradients are compared with the model's own on the traced and a fresh input."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import ncd
from tests.test_trace_opaque8 import _TARGETS, _Two, check_boxed

Fn = Callable[..., torch.Tensor]


def _floats(seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 5, 6, generator=g, dtype=dtype), torch.randn(2, 5, 6, generator=g, dtype=dtype)


def _nan(a: torch.Tensor) -> torch.Tensor:
    return torch.where(a > 0.8, float("nan"), a)


#: name -> (function, a primitive its diagram holds, exact: the lowered module equals the model bit for bit)
CASES: dict[str, tuple[Fn, str, bool]] = {
    "var_mean": (lambda a, b: torch.var_mean(a, -1)[0][..., None] * torch.var_mean(b, 1)[1][:, None], "einsum", False),
    "var_mean_kept_correction": (lambda a, b: sum(torch.var_mean(a * b, dim=(0, 2), correction=0, keepdim=True)) + b,
                                 "einsum", False),
    "var_mean_every_entry": (lambda a, b: a * torch.var_mean(b)[0] - torch.var_mean(a, unbiased=False)[1], "einsum",
                             False),
    "var_mean_only_the_mean_read": (lambda a, b: a - torch.var_mean(b, -1, keepdim=True)[1], "einsum", False),
    "std_mean": (lambda a, b: torch.std_mean(a, 1)[0][:, None] * b + torch.std_mean(b, 1)[1][:, None], "vector_norm",
                 False),
    "nanmean": (lambda a, b: torch.nanmean(_nan(a) * b, -1), "where", True),
    "nanmean_kept": (lambda a, b: torch.nanmean(_nan(a), (0, 2), keepdim=True) * b, "where", True),
    "nanmean_every_entry": (lambda a, b: torch.nanmean(_nan(a + b)) * b, "where", True),
    "pairwise_distance": (lambda a, b: F.pairwise_distance(a, b), "vector_norm", True),
    "pairwise_distance_p1_kept": (lambda a, b: F.pairwise_distance(a, b[0], p=1.0, eps=1e-3, keepdim=True) * a,
                                  "vector_norm", True),
    "round_decimals": (lambda a, b: torch.round(a * 3, decimals=2) * b, "elementwise", True),
    "round_negative_decimals": (lambda a, b: torch.round(a * 300, decimals=-1) + b, "elementwise", True),
    "kron": (lambda a, b: torch.kron(a[0], b[1, :2, :3]), "multiply", True),
    "kron_ranks": (lambda a, b: torch.kron(a, b[0, 0]), "multiply", True),
    "block_diag": (lambda a, b: torch.block_diag(a[0], b[1, :2, :3]), "concat", True),
    "scatter_reduce_mean": (lambda a, b: a.scatter_reduce(1, _TARGETS, b, "mean"), "scatter_write", True),
    "scatter_reduce_mean_without_self": (lambda a, b: a.scatter_reduce(1, _TARGETS[:, :3], b[:, :3] * a[:, :3], "mean",
                                                                       include_self=False), "scatter_write", True),
    "scatter_reduce_sum_without_self": (lambda a, b: a.scatter_reduce(1, _TARGETS[:, :2], b[:, :2], "sum",
                                                                      include_self=False), "scatter", True),
    "index_add_alpha": (lambda a, b: a.index_add(1, torch.tensor([0, 3, 0]), b[:, :3], alpha=-0.5), "scatter_write", True),
    "index_copy": (lambda a, b: a.index_copy(1, torch.tensor([4, 0, 2]), b[:, :3] * a[:, 1:4]), "scatter_write", True),
    "block_diag_vectors": (lambda a, b: torch.block_diag(a[0, 0], b[1], a[1, :1, :2]) * 2, "concat", True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_these_composed_operators_are_their_parts_equal_to_the_model_with_autograds_gradients(name: str) -> None:
    check_boxed(*CASES[name])


def test_round_with_decimals_in_float64_is_the_models_bit_for_bit_and_half_types_stay_opaque() -> None:
    """float64 rounds in float64 (the parts are exact); float16's kernel rounds ``x · 10ᵏ`` in float32 first, which
    the parts in float16 would not: that call stays an opaque box, the lowered module still the model's."""
    model = _Two(lambda a, b: torch.round(a * 7, decimals=3) - b).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *_floats(0, torch.float64))
    assert d.opaque_count == 0, d.opaque
    for seed in (0, 1):
        torch.testing.assert_close(d.to_torch()(*_floats(seed, torch.float64)), model(*_floats(seed, torch.float64)),
                                   rtol=0, atol=0)
    huge = _Two(lambda a, b: torch.round(a * 7, decimals=400) - b)  # 10⁴⁰⁰: no float holds it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = ncd.trace(huge, *_floats(0))
    assert dict(h.opaque) == {"aten.round.decimals": 1} and not [w for w in caught if "failed" in str(w.message)]
    torch.testing.assert_close(h.to_torch()(*_floats(1)), huge(*_floats(1)), rtol=0, atol=0, equal_nan=True)
    half = _Two(lambda a, b: torch.round(a * 7, decimals=3) - b).half()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = ncd.trace(half, *_floats(0, torch.float16))
    assert dict(h.opaque) == {"aten.round.decimals": 1}
    torch.testing.assert_close(h.to_torch()(*_floats(1, torch.float16)), half(*_floats(1, torch.float16)), rtol=0, atol=0)


def test_index_add_scaled_by_no_power_of_two_across_wires_stays_opaque_and_the_model_s() -> None:
    """ATen's ``index_add`` fuses ``x + α·s`` into one rounding where ``x`` has other wires: with ``α = 0.3`` the parts
    (``s · α`` then the sum) round otherwise, so the call stays one opaque box (and the lowered module the model's)."""
    model = _Two(lambda a, b: a.index_add(1, torch.tensor([0, 3, 0]), b[:, :3], alpha=0.3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *_floats(0))
    assert dict(d.opaque) == {"aten.index_add.default": 1}
    torch.testing.assert_close(d.to_torch()(*_floats(1)), model(*_floats(1)), rtol=0, atol=0)


class _Special(torch.nn.Module):
    """GroundingDINO's ``torch.isin(input_ids, special_tokens)``, the flags weighting the ids' embeddings."""

    def __init__(self, test: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.test, self.embed = test, torch.nn.Embedding(20, 4)
        self.register_buffer("special", torch.tensor([3, 7, 11]))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids) * self.test(ids, self.special)[..., None]


@pytest.mark.parametrize("test", [lambda ids, s: torch.isin(ids, s), lambda ids, s: torch.isin(ids, s.view(3, 1), invert=True),
                                  lambda ids, s: torch.isin(ids, 7), lambda ids, s: torch.isin(ids, ids[:, :3].flip(0))])
def test_isin_is_a_comparison_with_every_test_element_and_any_over_them(test: Callable[..., torch.Tensor]) -> None:
    model = _Special(test)
    ids = [torch.randint(0, 20, (2, 9), generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, ids[0])
    assert d.opaque_count == 0, d.opaque
    lowered = ncd.load_json(d.to_json()).to_torch()  # untrusted: no opaque call at all
    lowered.load_state_dict(d.state_dict(lowered))
    for x in ids + [torch.full((2, 9), 7)]:
        torch.testing.assert_close(d.to_torch()(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(lowered(x), model(x), rtol=0, atol=0)


class _Matrices(torch.nn.Module):
    def __init__(self, f: Fn) -> None:
        super().__init__()
        self.f, self.linear = f, torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(self.linear(x))


def _spd(a: torch.Tensor) -> torch.Tensor:
    return a @ a.mT + torch.eye(3)


class _TrainedNorm(torch.nn.Module):
    def __init__(self, track: bool) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(3, track_running_stats=track)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


#: opaque calls real traced models hold that ncd's own JSON reader refused (not on the allowlist): pure tensor functions
PURE: dict[str, Callable[[], torch.nn.Module]] = {
    "slogdet": lambda: _Matrices(lambda a: torch.linalg.slogdet(a)[0] * torch.linalg.slogdet(a)[1]),
    "det_logdet": lambda: _Matrices(lambda a: torch.linalg.det(a) + torch.logdet(_spd(a))),
    "matrix_exp": lambda: _Matrices(torch.matrix_exp),
    "histc": lambda: _Matrices(lambda a: torch.histc(a, 5, -1, 1)),
    "antialiased_resize": lambda: _Matrices(lambda a: F.interpolate(a[None], size=(5, 2), mode="bilinear", antialias=True)
                                            + F.interpolate(a[None], size=(5, 2), mode="bicubic", antialias=True)),
    "inverse_solve_cholesky": lambda: _Matrices(lambda a: torch.linalg.inv(_spd(a)) + torch.linalg.solve(_spd(a), a)
                                                + torch.linalg.cholesky(_spd(a))),
    "batch_norm_training_without_statistics": lambda: _TrainedNorm(False).train(),
}


@pytest.mark.parametrize("name", sorted(PURE))
def test_ncd_s_own_json_of_these_pure_opaque_calls_loads_untrusted_and_runs(name: str) -> None:
    model = PURE[name]()
    inputs = [torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    if isinstance(model, _TrainedNorm):
        inputs = [x[:, 0] for x in inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, inputs[0])
        assert d.opaque_count > 0  # (still opaque: the file names the operator)
        loaded = ncd.load_json(d.to_json())  # untrusted: every opaque target must be on the allowlist
        lowered = loaded.to_torch()
        lowered.load_state_dict(d.state_dict(lowered))
    for x in inputs:
        torch.testing.assert_close(lowered(x), model(x), rtol=1e-5, atol=1e-5, equal_nan=True)


def test_a_batch_norm_updating_running_statistics_is_refused_from_an_untrusted_file() -> None:
    """Training with running statistics writes into the box's inputs (the statistics): not a pure function."""
    model = _TrainedNorm(True).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(4, 3))
    assert dict(d.opaque) == {"aten.batch_norm.default": 1}
    with pytest.raises(ncd.NCDError, match="updates running statistics in place"):
        ncd.load_json(d.to_json())
    ncd.load_json(d.to_json(), trust=True)  # a file the user trusts loads


class _SelectedKeys(torch.nn.Module):
    """glm5_next's mask from an indexer's top keys: ``zeros(int32).scatter_add_(-1, safe, valid.int())``, then ``≠ 0``
    (invalid picks, -1 where the scores are masked, clamped into range and counted 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        scores = (self.q(x) @ self.k(x).mT).masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        top = scores.topk(3, -1).indices
        top = torch.where(torch.isinf(scores.gather(-1, top)), -1, top)
        valid = top.ge(0) & top.lt(n)
        counts = torch.zeros(x.shape[0], n, n, dtype=torch.int32)
        counts.scatter_add_(-1, top.clamp(0, n - 1), valid.to(torch.int32))
        return torch.where(counts.ne(0), scores, -1e4).softmax(-1) @ x + counts.float().sum(-1, keepdim=True)


def test_integers_added_at_positions_are_a_scatter_write_of_integers_with_the_count_s_range() -> None:
    """An integer ``scatter_add`` (was opaque: glm5_next, glm5_next_text) is a ``ScatterWrite`` of integers: its range
    that of ``x`` plus the source's largest at every position (here ``1 + 3·1``: a count of 0…3); the lowered module
    computes in int32 as the model, equal on a fresh input with autograd's gradients, and its JSON loads untrusted."""
    from ncd.prims.writes import ScatterWriteOp
    from tests.test_trace_opaque8 import _gradients

    model = _SelectedKeys()
    inputs = [torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, inputs[0])
    assert d.opaque_count == 0, d.opaque
    (write,) = [b.prim for b in d.boxes() if isinstance(b.prim, ScatterWriteOp)]
    assert write.dtype == "index" and write.result_range() == 4
    lowered = d.to_torch()
    again = ncd.load_json(d.to_json()).to_torch()  # untrusted
    again.load_state_dict(d.state_dict(again))
    for x in inputs:
        torch.testing.assert_close(lowered(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    _gradients(model, lowered, (inputs[1],))
    assert len(list(ncd.backward(d).boxes())) > 0  # (no gradient through the count)


class _TokensPerExpert(torch.nn.Module):
    """A router's count of tokens per expert: ``zeros(e, long).scatter_add(0, top, ones_like(top))`` (a constant
    source at live positions)."""

    def __init__(self) -> None:
        super().__init__()
        self.router = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.router(x).topk(2, -1).indices.reshape(-1)
        counts = torch.zeros(4, dtype=torch.long).scatter_add(0, top, torch.ones_like(top))
        return x * counts.float().max() + counts[:1].float()


def test_a_count_of_ones_at_live_positions_is_a_scatter_write_of_integers() -> None:
    from ncd.prims.writes import ScatterWriteOp

    model = _TokensPerExpert()
    inputs = [torch.randn(5, 8, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, inputs[0])
    assert d.opaque_count == 0, d.opaque
    (write,) = [b.prim for b in d.boxes() if isinstance(b.prim, ScatterWriteOp)]
    assert write.dtype == "index" and write.result_range() == 11  # 0 … 10 tokens' picks (5 tokens × 2)
    for x in inputs:
        torch.testing.assert_close(d.to_torch()(x), model(x), rtol=0, atol=0)


class _SpecialBlocks(torch.nn.Module):
    """GroundingDINO's blocks between special tokens: the previous one by ``cummax`` of their positions (``-1``
    elsewhere), the next by ``cummin`` of the flipped ones (``n`` elsewhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(20, 4)
        self.register_buffer("special", torch.tensor([3, 7]))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, n = ids.shape
        special = torch.isin(ids, self.special)
        positions = torch.arange(n).unsqueeze(0).expand(b, -1)
        previous = torch.cummax(torch.where(special, positions, torch.full((), -1)), dim=1)[0]
        later = torch.where(special, positions, torch.tensor(n))
        following = torch.flip(torch.cummin(torch.flip(later, dims=[1]), dim=1)[0], dims=[1])
        return self.embed(ids) * (following - previous)[..., None]


def test_running_extremes_of_integers_are_boxes_keeping_their_range() -> None:
    """``cummax``/``cummin`` of integer positions (were opaque: GroundingDINO, MM-GroundingDINO) are running
    ``max≤``/``min≤`` boxes of integers, equal to the model on ids with the special tokens anywhere, gradients and all."""
    from ncd.prims.cumulative import CumulativeOp
    from tests.test_trace_opaque8 import _gradients

    model = _SpecialBlocks()
    ids = [torch.randint(0, 20, (2, 9), generator=torch.Generator().manual_seed(seed)) for seed in (0, 1, 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, ids[0])
    assert d.opaque_count == 0, d.opaque
    assert sorted(b.prim.function for b in d.boxes() if isinstance(b.prim, CumulativeOp)) == ["max", "min"]
    again = ncd.load_json(d.to_json()).to_torch()  # untrusted
    again.load_state_dict(d.state_dict(again))
    for x in ids + [torch.full((2, 9), 3), torch.full((2, 9), 5)]:
        torch.testing.assert_close(d.to_torch()(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    _gradients(model, d.to_torch(), (ids[1],))
    assert len(list(ncd.backward(d).boxes())) > 0
