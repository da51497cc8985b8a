"""Operators that were opaque boxes or whose diagrams ncd's own JSON reader refused: each case compares the lowered
module (and the diagram read back from its JSON, untrusted) with the model itself on the traced and a fresh input."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

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


_TARGETS = torch.randint(0, 5, (2, 5, 6), generator=torch.Generator().manual_seed(3))

#: operators that were opaque boxes and are now boxes of their own (a row of ncd.prims.binary_functions.BINARY or of
#: ncd.prims.elementwise.ROWS)
BOXED: dict[str, tuple[Fn, str]] = {
    "atan2": (torch.atan2, "binary_function"),
    "hypot": (torch.hypot, "binary_function"),
    "logaddexp": (torch.logaddexp, "binary_function"),
    "logaddexp2": (torch.logaddexp2, "binary_function"),
    "fmod": (torch.fmod, "binary_function"),
    "fmod_number": (lambda a, b: torch.fmod(a * b, 0.7), "binary_function"),
    "copysign": (torch.copysign, "binary_function"),
    "copysign_number": (lambda a, b: torch.copysign(a + b, -1.0), "binary_function"),
    "fmax_broadcast": (lambda a, b: torch.fmax(a, b[:, :1]), "binary_function"),
    "fmin_nan": (lambda a, b: torch.fmin(a, torch.where(b > 1, float("nan"), b)), "binary_function"),
    "atan2_reversed_broadcast": (lambda a, b: torch.atan2(b[0, 0], a), "binary_function"),
    "floor_ceil": (lambda a, b: torch.floor(3 * a) * b + torch.ceil(3 * b) * a, "elementwise"),
    # positions that repeat (summed there); a scatter_reduce of the sum is the same box
    "scatter_add": (lambda a, b: a.scatter_add(1, _TARGETS, b), "scatter_write"),
    "scatter_reduce_sum": (lambda a, b: a.scatter_reduce(1, _TARGETS, b * a, "sum"), "scatter_write"),
    "scatter_add_narrower": (lambda a, b: a.scatter_add(1, _TARGETS[:, :3], b[:, :3]), "scatter_write"),
    # drawn as their definitions (ncd.trace.boxes_definitions)
    "addr": (lambda a, b: torch.addr(a[0, :, :5], a[1, 0, :5], b[1, 0, :5]), "einsum"),
    "count_nonzero": (lambda a, b: a * torch.count_nonzero(a.round(), -1).unsqueeze(-1) + b * torch.count_nonzero(b > 0),
                      "count"),
    "nansum": (lambda a, b: torch.nansum(torch.where(a > 1, float("nan"), a) * b, -1), "where"),
    "nansum_kept": (lambda a, b: torch.nansum(torch.where(a > 1, float("nan"), a) * b, (0, 2), keepdim=True) + b, "where"),
    "isnan": (lambda a, b: torch.where(torch.isnan(torch.log(a)), b, a), "where"),  # (NaN where a < 0)
}


def _gradients(model: torch.nn.Module, lowered: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    """The lowered module's parameter gradients (under one weighted sum of the output) are autograd's on the model."""
    want, got = model(*inputs), lowered(*inputs)
    weights = torch.linspace(-1, 1, want.numel()).reshape(want.shape)
    mine, theirs = list(model.parameters()), list(lowered.parameters())
    assert len(mine) == len(theirs)
    want_grads = torch.autograd.grad((want.nan_to_num() * weights).sum(), mine)
    got_grads = torch.autograd.grad((got.nan_to_num() * weights).sum(), theirs)
    for p, g in zip(mine, want_grads):
        twins = [k for k, q in enumerate(theirs) if q.shape == p.shape and torch.equal(q, p)]
        assert any(torch.allclose(got_grads[k], g, rtol=1e-5, atol=1e-6, equal_nan=True) for k in twins), tuple(p.shape)


def check_boxed(f: Fn, op: str, exact: bool = True) -> None:
    """``f`` of two linears traces with no opaque box and a box ``op``; the lowered module (and the one read back from
    the diagram's JSON, untrusted) equals the model on the traced and a fresh input (``exact``: bit for bit, else to
    rounding), with autograd's parameter gradients; the matmul FLOPs are the flop counter's."""
    model = _Two(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *_floats(0))
    assert d.opaque_count == 0, d.opaque
    assert op in {b.prim.op for b in d.boxes()}
    tolerance = {"rtol": 0.0, "atol": 0.0} if exact else {"rtol": 1e-5, "atol": 1e-6}
    lowered = d.to_torch()
    for seed in (0, 1):
        got, want = lowered(*_floats(seed)), model(*_floats(seed))
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, equal_nan=True, **tolerance)  # exact: the very call, bit for bit
    _gradients(model, lowered, _floats(1))
    again = ncd.load_json(d.to_json())  # untrusted: no opaque call at all
    lowered_again = again.to_torch()
    lowered_again.load_state_dict(d.state_dict(lowered_again))
    torch.testing.assert_close(lowered_again(*_floats(1)), model(*_floats(1)), equal_nan=True, **tolerance)
    counter = FlopCounterMode(display=False)  # (it counts the two linears: entrywise functions cost it nothing)
    with counter:
        model(*_floats(0))
    assert ncd.cost(d).forward_matmul == counter.get_total_flops() > 0


@pytest.mark.parametrize("name", sorted(BOXED))
def test_these_operators_are_boxes_equal_to_the_model_with_autograds_gradients(name: str) -> None:
    check_boxed(*BOXED[name])


def test_the_backward_diagram_of_a_function_of_two_tensors_is_autograds() -> None:
    """``ncd.backward`` of ``atan2(a, b)`` woven over a broadcast axis, lowered, gives autograd's ``∂a``, ``∂b``."""
    from ncd.prims.binary_functions import BinaryFunction

    d = ncd.Identity.of("t m, m") >> BinaryFunction("hypot")
    back = ncd.backward(d)
    assert {b.prim.label() for b in back.boxes() if b.prim.op == "binary_gradient"} == {"∂a", "∂b"}


class _Extremes(torch.nn.Module):
    """``x.max()`` and ``x.min()`` over every entry, of rounded values (ties share the gradient evenly in torch)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = self.a(a).round()
        return x * x.max() + self.b(b) * x.min()


def test_the_extreme_of_every_entry_is_an_amax_with_the_models_tie_gradients() -> None:
    model = _Extremes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *_floats(0))
    assert d.opaque_count == 0, d.opaque  # (was two opaque calls: aten.max.default, aten.min.default)
    lowered = d.to_torch()
    for seed in (0, 1):
        torch.testing.assert_close(lowered(*_floats(seed)), model(*_floats(seed)), rtol=0, atol=0)
    _gradients(model, lowered, _floats(1))
    tied = (3 * torch.ones(2, 5, 6), torch.zeros(2, 5, 6))  # x equal over its 10 rows: the extremes are 10-way ties
    _gradients(model, lowered, tied)


class _Messages(torch.nn.Module):
    """A graph layer: messages along edges (an input) summed into their receiving nodes with ``index_add``, and the
    degrees counted the same way (a constant source at live positions)."""

    def __init__(self) -> None:
        super().__init__()
        self.message = torch.nn.Linear(12, 6)

    def forward(self, nodes: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        src, dst = edges[0], edges[1]
        messages = torch.relu(self.message(torch.cat([nodes[src], nodes[dst]], dim=-1)))
        incoming = torch.zeros_like(nodes).index_add(0, dst, messages)
        degree = torch.zeros(nodes.shape[0]).index_add(0, dst, torch.ones(dst.shape[0])).clamp(min=1)
        return incoming / degree[:, None] + nodes.index_add(1, torch.tensor([0, 5, 0]), nodes[:, :3] * 2)


def test_index_add_is_a_scatter_adding_the_slices_with_autograds_gradients() -> None:
    def graph(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(7, 6, generator=g), torch.randint(0, 7, (2, 12), generator=g)

    model = _Messages()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *graph(0))
    assert d.opaque_count == 0, d.opaque  # (was three opaque index_add calls)
    assert sum(b.prim.op == "scatter_write" for b in d.boxes()) == 3
    lowered = d.to_torch()
    for seed in (0, 1):
        torch.testing.assert_close(lowered(*graph(seed)), model(*graph(seed)), rtol=0, atol=0)
    _gradients(model, lowered, graph(1))
    nodes, edges = graph(1)
    edges[1, 3] = 7  # a node that is not there: the model and the lowered module both refuse it
    for module in (model, lowered):
        with pytest.raises((IndexError, RuntimeError), match="out of range|out of bounds"):
            module(nodes, edges)


def test_count_nonzero_of_integers_over_two_wires_is_a_count_per_wire() -> None:
    model = _Ints(lambda t: torch.count_nonzero(t % 3, (0, 1)) + torch.count_nonzero(t, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *_ints(0))
    assert d.opaque_count == 0, d.opaque
    lowered = d.to_torch()
    for seed in (0, 1):
        got, want = lowered(*_ints(seed)), model(*_ints(seed))
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_bitwise_and_or_xor_of_two_integer_tensors_are_index_arithmetic() -> None:
    """``t | u``, ``t ^ u``, ``t & u`` of integer tensors (negative ones too); masks still meet as logic (``∧``)."""
    class Bits(torch.nn.Module):
        def forward(self, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            return (t | u) + (t ^ u.flip(-1)) * torch.bitwise_and(t, u) + ((t > 0) & (u > 0)).long()

    def pair(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(-50, 100, (2, 6), generator=g), torch.randint(-50, 100, (2, 6), generator=g)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(Bits(), *pair(0))
    assert d.opaque_count == 0, d.opaque  # (was three opaque calls: __or__, __xor__, bitwise_and)
    assert {"|", "xor", "&", "∧"} <= {b.prim.label() for b in d.boxes()}  # ("^" is a power)
    lowered = ncd.load_json(d.to_json()).to_torch()
    for seed in (0, 1, 2):
        got, want = lowered(*pair(seed)), Bits()(*pair(seed))
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_bitwise_operators_of_an_integer_tensor_and_a_number_are_arithmetic_boxes() -> None:
    """``t & 7``, ``| 8``, ``^ 5``, ``>> 2``, ``<< 3``, ``& -4`` in int64 and int32, negative entries too."""
    class Bits(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return ((t & 7) | 8) + (t ^ 5) * (t >> 2) + ((t % 16) << 3) + torch.bitwise_and(t, -4)

    for dtype in (torch.int64, torch.int32):
        def ints(seed: int, dtype: torch.dtype = dtype) -> torch.Tensor:
            return torch.randint(-50, 100, (2, 6), generator=torch.Generator().manual_seed(seed)).to(dtype)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = ncd.trace(Bits(), ints(0))
        assert d.opaque_count == 0, d.opaque  # (was six opaque calls)
        lowered = ncd.load_json(d.to_json()).to_torch()
        for seed in (0, 1, 2):
            got, want = lowered(ints(seed)), Bits()(ints(seed))
            assert got.dtype == want.dtype and torch.equal(got, want)


def test_bitwise_not_of_integers_is_minus_t_minus_one_and_of_masks_logic() -> None:
    class Inverted(torch.nn.Module):
        def forward(self, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            return (~t) * 2 + (~t.to(torch.int32)).long() + (~m).long()

    def pair(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(-50, 100, (2, 6), generator=g), torch.rand(2, 6, generator=g) > 0.5

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(Inverted(), *pair(0))
    assert d.opaque_count == 0, d.opaque  # (was two opaque bitwise_not calls)
    assert "¬" in {b.prim.label() for b in d.boxes()}
    lowered = d.to_torch()
    ends = (torch.tensor([[-2**63, 2**63 - 1, 0, -1, 5, 7]] * 2), torch.ones(2, 6, dtype=torch.bool))  # wrapping alike
    for inputs in (pair(0), pair(1), ends):
        got, want = lowered(*inputs), Inverted()(*inputs)
        assert got.dtype == want.dtype and torch.equal(got, want)
