"""Pure operators a traced model leaves opaque load from an untrusted file and compute what PyTorch computes.

``ncd.load_json(text)`` (untrusted) accepts an opaque box only for an operator on
``ncd.prims.opaque_allowlist``; each of these was refused before, so a traced model's own JSON could not be read
back.  The reference is the model itself, on the traced input and on a fresh one; the untrusted file's operators are
checked against torch's schemas (no ``out=`` overload, no write, no random draw).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import ncd
from ncd.errors import SchemaError
from ncd.prims.opaque import Opaque
from ncd.prims.opaque_allowlist import check_allowed, side_effects


class _Call(torch.nn.Module):
    def __init__(self, f: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.f = f

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.f(*args)


_CASES: dict[str, tuple[Callable[..., torch.Tensor], Callable[[], tuple[torch.Tensor, ...]], str]] = {
    "channel_shuffle": (lambda x: F.channel_shuffle(x, 2), lambda: (torch.randn(1, 4, 3, 3),), "channel_shuffle"),
    "soft-target cross_entropy": (lambda x, y: F.cross_entropy(x, y.softmax(-1)),
                                  lambda: (torch.randn(3, 5), torch.randn(3, 5)), "cross_entropy_loss"),
    "nll_loss over an image": (lambda x, t: F.nll_loss(x.log_softmax(1), t),
                               lambda: (torch.randn(2, 4, 3, 3), torch.randint(0, 4, (2, 3, 3))), "nll_loss_nd"),
    "stft": (lambda x: torch.stft(x, 8, hop_length=2, window=torch.hann_window(8), return_complex=True).abs(),
             lambda: (torch.randn(2, 32),), "stft"),
    "special_entr": (lambda x: torch.special.entr(x.abs()), lambda: (torch.randn(3, 4),), "special_entr"),
    "special_xlog1py": (lambda x, y: torch.special.xlog1py(x, y.abs()), lambda: (torch.randn(3, 4), torch.randn(3, 4)),
                        "special_xlog1py"),
    "special_i1": (torch.special.i1, lambda: (torch.randn(3, 4),), "special_i1"),
    "special_ndtr": (torch.special.ndtr, lambda: (torch.randn(3, 4),), "special_ndtr"),
    "special_erfcx": (torch.special.erfcx, lambda: (torch.randn(3, 4),), "special_erfcx"),
    "quantile": (lambda x: torch.quantile(x, 0.3, dim=-1), lambda: (torch.randn(3, 5),), "quantile"),
    "quantiles by a tensor": (lambda x: torch.quantile(x, torch.tensor([0.25, 0.75]), dim=-1, interpolation="midpoint"),
                              lambda: (torch.randn(3, 5),), "quantile"),
    "nanquantile": (lambda x: torch.nanquantile(x, 0.3, dim=-1), lambda: (torch.randn(3, 5),), "nanquantile"),
    "renorm": (lambda x: torch.renorm(x, 2, 0, 1.0), lambda: (torch.randn(3, 5),), "renorm"),
    "mode": (lambda x: torch.mode(x.round(), -1).values, lambda: (torch.randn(3, 5),), "mode"),
    "max_pool1d with indices": (lambda x: F.max_pool1d(x, 2, return_indices=True)[1].float() + F.max_pool1d(x, 2),
                                lambda: (torch.randn(1, 2, 8),), "max_pool1d_with_indices"),
    "linalg.multi_dot": (lambda a, b, c: torch.linalg.multi_dot([a, b, c]),
                         lambda: (torch.randn(2, 3), torch.randn(3, 4), torch.randn(4, 2)), "linalg_multi_dot"),
    "cartesian_prod": (torch.cartesian_prod, lambda: (torch.randn(3), torch.randn(2)), "cartesian_prod"),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_a_traced_pure_opaque_call_loads_untrusted_and_runs_as_the_model(case: str) -> None:
    f, make, name = _CASES[case]
    torch.manual_seed(0)
    model, inputs = _Call(f), make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *inputs)
    targets = {box.prim.target for box in d.boxes() if box.prim.op == "opaque"}
    assert any(t.split(".")[1] == name for t in targets), targets  # still opaque: the file names the operator
    loaded = ncd.load_json(d.to_json())  # untrusted
    lowered = loaded.to_torch()
    lowered.load_state_dict(d.state_dict(lowered))
    for args in (inputs, make()):
        torch.testing.assert_close(lowered(*args), model(*args))


@pytest.mark.parametrize("target", ["aten.quantile.out", "aten.renorm.out", "aten.mode.values", "aten.stft.center",
                                    "aten.linalg_multi_dot.out", "aten.channel_shuffle.out", "aten.special_zeta.out"])
def test_the_added_operators_out_variants_stay_refused_and_their_pure_overloads_have_no_side_effects(target: str) -> None:
    name, overload = target.split(".")[1:]
    if overload == "center":  # the padded overload: pure too (its pad_mode is a word torch checks)
        assert side_effects(target) == []
        check_allowed(target)
        return
    assert side_effects(target)  # torch's schema says it writes into an out= tensor
    with pytest.raises(Exception, match="writes"):
        check_allowed(target)
    assert side_effects(f"aten.{name}.default") == []


def test_a_file_calling_an_added_operator_with_out_is_refused_at_load() -> None:
    box = Opaque("aten.renorm.out", "b:3 k:5", "b:3 k:5", args=(("$in", 0), 2, 0, 1.0), kwargs=(("out", ("$in", 0)),))
    with pytest.raises(SchemaError, match="renorm.out"):
        ncd.load_json(box.to_json())


@pytest.mark.parametrize("target", ["aten.special_legendre_polynomial_p.n_scalar", "aten.special_laguerre_polynomial_l.n_scalar",
                                    "aten.special_legendre_polynomial_p.default"])
def test_a_polynomial_torch_computes_in_n_steps_per_entry_is_refused(target: str) -> None:
    """review50 (stop 50): 0c7e601 allowed Legendre's and Laguerre's polynomials, which torch computes by n steps of
    their recurrence per entry; ``n`` is a number the file writes (a float: 1e9 passes the whole-number bound): a traced
    ``legendre_polynomial_p(x, 3)`` edited to n = 4e6 took 2.1 s on 64 entries, 1e9 over 100 s (a hang)."""
    box = Opaque(target, "m:64", "m:64", args=(("$in", 0), 1e9))
    with pytest.raises(SchemaError, match="allowlist"):
        ncd.load_json(box.to_json())


def test_combinations_whose_r_the_file_chooses_is_refused() -> None:
    """review50 (stop 50): 0c7e601 allowed ``combinations``; torch makes all n**r index tuples (masks of n**r
    entries) before keeping the sorted ones, and r is a number the file writes: r = 5 of a 40-entry input took 1.9 GB
    and 17 s, of 64 entries ~20 GB (the machine's memory)."""
    box = Opaque("aten.combinations.default", "m:64", "c:7624512 r:5", args=(("$in", 0), 5))
    with pytest.raises(SchemaError, match="allowlist"):
        ncd.load_json(box.to_json())
