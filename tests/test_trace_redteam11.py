"""redteam11: a traced model whose tensors are held in floating-point types other than the one it computes in (a
float16 layer or scale inside a float32 model, a float64 model), read back from JSON or printed as source.

Before, the read-back module and the printed source held every tensor in torch's default type: a float16 scale in a
float32 model was loaded as float32, so ``x.half() * w`` computed in float32 what the model rounds to float16 (0.0008
off, no warning); a float16 ``Linear`` or a float64 model raised at the first call. Each check compares against the
model itself."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.errors import SchemaError


class HalfScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4).half())
        self.l = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l((x.half() * self.w).float())


class HalfLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(4, 4).half()
        self.n = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.n(self.l(x.half()).float().softmax(-1))


def _traced(model: nn.Module, x: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model.eval(), x)


def _printed(traced: ncd.TracedDiagram) -> nn.Module:
    namespace: dict[str, object] = {}
    exec(compile(traced.to_source(), "<ncd source>", "exec"), namespace)  # noqa: S102 - the generated source
    module = namespace[traced.name]()  # type: ignore[operator]
    assert isinstance(module, nn.Module)
    module.load_state_dict(traced.state_dict(module))
    return module.eval()


@pytest.mark.parametrize("cls", [HalfScale, HalfLayer])
def test_a_float16_tensor_in_a_float32_model_keeps_its_type_read_back_and_printed(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(3, 4) * 3
    traced = _traced(model, x)
    want = model(x)
    read = ncd.load_json(traced.to_json()).to_torch()
    read.load_state_dict(traced.state_dict(read))
    for module in (read, _printed(traced)):
        held = {str(t.dtype) for t in module.state_dict().values()}
        assert held == {"torch.float16", "torch.float32"}
        fresh = torch.randn(3, 4) * 3
        torch.testing.assert_close(module(x), want, rtol=0, atol=0)
        torch.testing.assert_close(module(fresh), model(fresh), rtol=0, atol=0)


def test_a_float64_model_prints_source_in_float64() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)).double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    printed = _printed(_traced(model, x))
    assert {t.dtype for t in printed.state_dict().values()} == {torch.float64}
    torch.testing.assert_close(printed(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("entry", [[0, "int64"], [9, "float16"], [0, "__class__"], ["0", "float16"], [0]])
def test_a_crafted_type_entry_is_refused(entry: list[object]) -> None:
    torch.manual_seed(0)
    data = json.loads(_traced(HalfScale(), torch.randn(3, 4)).to_json())
    pairs = data["diagram"]["meta"]["tuple"]
    (types,) = [p for p in pairs if p["tuple"][0] == "types"]
    types["tuple"][1] = {"tuple": [{"tuple": entry}]}
    with pytest.raises(SchemaError):
        ncd.load_json(json.dumps(data)).to_torch()
