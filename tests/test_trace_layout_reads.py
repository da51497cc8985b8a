"""numel (stop 50): sizes a model reads through other doors than ``x.shape``/``x.size()``/``x.numel()`` --
``torch.numel(x)``, ``x.nelement()``, ``x.nbytes``, ``divmod(t, 2)`` (followed as expressions of the sizes), and
``x.stride(0)``, ``x.storage_offset()``, ``x.untyped_storage()``, ``len(x.unbind(1))`` (held, as ``len(x)`` is).
Traced at one size, the traced diagram, its pickle and its JSON read-back lowered at another either equal the model
or raise an ncd error.  Before, the pickle and read-back of every one of them ran 0.005-0.3 off the model, with only
the generic read-back warning."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import ncd
from ncd.errors import NCDError
from tests.test_trace_readback_sizes import _paths, _Sizes  # (a layer reading sizes; the three read-back paths)

FOLLOWED: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "torch.numel": lambda x: x / torch.numel(x),
    "nelement": lambda x: x / x.nelement(),
    "nbytes": lambda x: x / x.nbytes,
    "divmod": lambda x: x / divmod(x.shape[1], 2)[0],
}
HELD: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "stride": lambda x: x / x.stride(0),
    "strides": lambda x: x / x.stride()[0],
    "storage_offset": lambda x: x[:, 1:] / (1 + x[:, 1:].storage_offset()),
    "untyped_storage": lambda x: x / x.untyped_storage().nbytes(),
    "len_unbind": lambda x: x / len(x.unbind(1)),
    "torch.unbind": lambda x: x / len(torch.unbind(x, 1)),
    "split": lambda x: x / len(x.split(2, 1)),  # type: ignore[no-untyped-call]
    "chunk": lambda x: x / len(x.chunk(10, dim=1)),
    "iterated": lambda x: x / sum(1 for _ in x.transpose(0, 1)),
    "shape_numel": lambda x: x.sum(-1, keepdim=True) / x.shape.numel(),  # (torch.Size's product: a plain int)
    "size_numel": lambda x: x.sum(-1, keepdim=True) / x.size().numel(),  # (the same product, of x.size())
}


def _equal_or_refused(model: nn.Module, d: ncd.TracedDiagram, b: int, t: int) -> dict[str, bool]:
    """Per path: whether it lowered (and then equals the model at ``b``, ``t``); an ncd error is a refusal."""
    lowered = {}
    x = torch.randn(b, t, 4)
    for name, path in _paths(d).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (a read-back warns at other sizes: no model to check)
            try:
                module = path().to_torch(b=b, t=t)  # type: ignore[attr-defined]
            except NCDError:
                lowered[name] = False
                continue
        module.load_state_dict(d.state_dict(module))
        with torch.no_grad():
            torch.testing.assert_close(module(x), model(x), msg=f"{name} at b={b}, t={t}")
        lowered[name] = True
    return lowered


@pytest.mark.parametrize("name", sorted(FOLLOWED))
def test_a_size_read_another_way_is_followed(name: str) -> None:
    torch.manual_seed(0)
    model = _Sizes(FOLLOWED[name]).eval()
    d = ncd.trace(model, torch.randn(2, 5, 4), axes="b t m")
    assert d.fixed == (), d.fixed
    # (divmod's floor(t/2) is written to JSON as sympy prints it, which the reader reads since 5671894)
    assert _equal_or_refused(model, d, 3, 7) == {"traced": True, "pickle": True, "json": True}


def test_both_parts_of_a_divmod_are_followed() -> None:
    torch.manual_seed(0)
    model = _Sizes(lambda x: x * divmod(x.shape[1], 2)[1] + divmod(7, x.shape[1])[0]).eval()
    d = ncd.trace(model, torch.randn(2, 5, 4), axes="b t m")
    assert {held for held, _ in d.fixed} == {("t",)}, d.fixed  # (a scale by Mod(t, 2) is not drawn: held)
    assert any("Mod(t, 2)" in box for _, box in d.fixed) and any("floor(7/t)" in box for _, box in d.fixed), d.fixed
    assert _equal_or_refused(model, d, 3, 5) == {"traced": True, "pickle": True, "json": True}


@pytest.mark.parametrize("name", sorted(HELD))
def test_a_size_read_from_the_layout_is_held_and_refused_without_the_model(name: str) -> None:
    torch.manual_seed(0)
    model = _Sizes(HELD[name]).eval()
    d = ncd.trace(model, torch.randn(2, 5, 4), axes="b t m")
    assert any("t" in held for held, _ in d.fixed), d.fixed
    assert _equal_or_refused(model, d, 3, 7) == {"traced": False, "pickle": False, "json": False}
    with pytest.raises(ncd.TraceError, match=r"test_trace_layout_reads.py:\d+ the model turned .* into a plain int"):
        pickle.loads(pickle.dumps(d)).to_torch(b=2, t=7)
    # at the traced sizes every path equals the model
    assert _equal_or_refused(model, d, 2, 5) == {"traced": True, "pickle": True, "json": True}
