"""readback (stop 52): numbers a model computes from its input's sizes through doors the sized numbers did not watch --
slice bounds (``x[:, :t // 2]``), a pad by ``(4 - t % 4) % 4`` drawn as a constant, ``torch.tensor(x.size(1))``,
``torch.tensor(x.shape)``, ``t >> 1``, ``math.log2(t)``, ``int(t / 4)``, ``bool(t - 6)``, ``round(t / 4)``,
``math.ceil(t / 4)``, ``int(t * 1.5)``, ``torch.roll(x, t // 3, 1)``. Traced at one size, the traced diagram itself
refused or equalled the model at others, but its pickle and JSON read-back lowered there computing the traced number
(0.01-6.8 off the model, or a wrong shape) with only the read-back's generic warning. Now each path at each other size
either equals the model run at that size or raises an ncd error (a held size naming the model's line, or a guard);
``t >> k`` and ``t << k`` are followed as ``t // 2**k`` and ``t * 2**k``."""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import ncd
from ncd.errors import NCDError


def _half(x: torch.Tensor) -> torch.Tensor:
    h = x.size(0) // 2
    return x[:h] + x[h:2 * h]


CASES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "half": _half,
    "half_t": lambda x: x[:, :x.size(1) // 2] * 2,
    "pad_to_4": lambda x: F.pad(x, (0, 0, 0, (4 - x.size(1) % 4) % 4)),
    "size_tensor": lambda x: x * torch.tensor(x.size(1)),
    "shape_tensor": lambda x: x / torch.tensor(x.shape).prod(),
    "bitshift": lambda x: x * (x.size(1) >> 1),
    "log2": lambda x: x * math.log2(x.size(1)),
    "trunc_div": lambda x: x * int(x.size(1) / 4),
    "bool": lambda x: x * bool(x.size(1) - 6),
    "round": lambda x: x * round(x.size(1) / 4),
    "ceil": lambda x: x[:, :math.ceil(x.size(1) / 4)],
    "float_times": lambda x: x[:, :int(x.size(1) * 1.5) - 4],
    "and": lambda x: x * (x.size(1) & 3),
    "roll": lambda x: torch.roll(x, x.size(1) // 3, 1),  # (a shift in a list)
}
#: the ones the diagram follows: every path lowers at every size
FOLLOWED = ("bitshift",)
SIZES = ((4, 8), (2, 5), (3, 7), (2, 4))


class _Sizes(nn.Module):
    def __init__(self, read: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.read = read
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read(self.lin(x))


def _paths(d: ncd.TracedDiagram) -> dict[str, Callable[[], object]]:
    return {"traced": lambda: d, "pickle": lambda: pickle.loads(pickle.dumps(d)), "json": lambda: ncd.load_json(d.to_json())}


def _lowered(model: nn.Module, d: ncd.TracedDiagram, b: int, t: int) -> dict[str, bool]:
    """Per path: whether it lowered at ``b``, ``t`` (and then it equals the model run there); an ncd error (at lowering
    or at the call: a guard) is a refusal."""
    out = {}
    x = torch.randn(b, t, 4)
    for name, path in _paths(d).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (a read-back warns at other sizes: no model to check)
            try:
                module = path().to_torch(b=b, t=t)  # type: ignore[attr-defined]
                module.load_state_dict(d.state_dict(module))
                with torch.no_grad():
                    got = module(x)
            except NCDError:
                out[name] = False
                continue
        with torch.no_grad():
            want = model(x)
        assert got.shape == want.shape, f"{name} at b={b}, t={t}: {tuple(got.shape)}, the model {tuple(want.shape)}"
        torch.testing.assert_close(got, want, msg=f"{name} at b={b}, t={t}")
        out[name] = True
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_read_back_at_other_sizes_is_refused_or_equal(name: str) -> None:
    torch.manual_seed(0)
    model = _Sizes(CASES[name]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(2, 6, 4), axes="b t m")
    for b, t in SIZES:
        lowered = _lowered(model, d, b, t)
        if name in FOLLOWED:
            assert lowered == {"traced": True, "pickle": True, "json": True}, (b, t, lowered)


def test_a_held_number_names_the_models_line() -> None:
    torch.manual_seed(0)
    model = _Sizes(CASES["size_tensor"]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(2, 6, 4), axes="b t m")
    back = pickle.loads(pickle.dumps(d))
    with pytest.raises(NCDError, match=r"t.*test_trace_readback_sizes\.py:\d+"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back.to_torch(t=7)
