"""``ncd.trace``: real models become diagrams that lower back to the same function.

Every model here is checked against itself: the traced diagram, lowered with
``to_torch()``, must give ``model(x)`` (allclose); the number of opaque boxes is pinned.
"""

from __future__ import annotations

import logging
import sys
import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.ir.diagram import Block, Repeat


def traced(model: nn.Module, *args: torch.Tensor, axes: object = None, **kwargs: torch.Tensor) -> ncd.TracedDiagram:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model.eval(), *args, axes=axes, **kwargs)


def round_trip(model: nn.Module, *args: torch.Tensor, atol: float = 1e-5, **kwargs: torch.Tensor) -> ncd.TracedDiagram:
    d = traced(model, *args, **kwargs)
    lowered = d.to_torch()
    inputs = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    got = lowered(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    with torch.no_grad():
        out = model(*args, **kwargs)
    want = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=atol, rtol=1e-4)
    return d


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(8, 32), nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(x)))


def test_mlp_is_linear_relu_linear_with_a_residual() -> None:
    d = round_trip(MLP(), torch.randn(3, 8))
    assert d.opaque_count == 0
    ops = [b.prim.op for b in d.boxes()]
    assert ops.count("linear") == 2 and "add" in ops and ops.count("elementwise") == 1
    assert str(d.dom) == "b m:8" and str(d.cod) == "b m:8" and dict(d.get("defaults")) == {"b": 3}


def test_user_axis_names_flow_through_linear_maps() -> None:
    d = traced(MLP(), torch.randn(3, 5, 8), axes="b ~t m")
    linear = next(b for b in d.boxes() if b.prim.op == "linear")
    assert str(linear.prim.dom_axes) == "m:8" and str(linear.prim.cod_axes) == "f:32"
    assert [a.name for a in d.cod[0].axes] == ["b", "t", "m"] and d.cod[0].axes[1].is_item


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(torch.relu(self.conv(x))).flatten(1))


def test_cnn_round_trip_and_conv_box() -> None:
    d = round_trip(CNN(), torch.randn(2, 3, 8, 8))
    assert {"conv", "maxpool", "linear"} <= {b.prim.op for b in d.boxes()}
    assert d.opaque_count == 0


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pw2(nn.functional.gelu(self.pw1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


def test_convnext_block_has_no_opaque_box() -> None:
    d = round_trip(ConvNeXtBlock(), torch.randn(2, 8, 6, 6))
    assert d.opaque_count == 0
    ops = {b.prim.op for b in d.boxes()}
    assert {"conv", "layernorm", "linear", "transpose", "parameter", "multiply", "add"} <= ops


class MoE(nn.Module):
    """A dense mixture of experts: softmax gate weighting every expert's output."""

    def __init__(self, m: int = 8, n_experts: int = 3) -> None:
        super().__init__()
        self.gate = nn.Linear(m, n_experts)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(m, 16), nn.GELU(), nn.Linear(16, m)) for _ in range(n_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.gate(x), dim=-1)
        outs = torch.stack([e(x) for e in self.experts], dim=-1)
        return torch.einsum("btme,bte->btm", outs, weights)


def test_mixture_of_experts_round_trip() -> None:
    d = round_trip(MoE(), torch.randn(2, 5, 8))
    assert any(b.prim.op == "softmax" for b in d.boxes())
    assert d.opaque == ()  # stack: a concatenation of size-1 wires
    assert any(b.prim.op == "concat" for b in d.boxes())


def test_repeated_layers_fold_into_one_repetition_with_their_own_parameters() -> None:
    model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(4)])
    d = round_trip(model, torch.randn(2, 8))
    repeats = [n for n in d.walk() if isinstance(n, Repeat)]
    assert len(repeats) == 1 and repeats[0].count() == 4
    lowered = d.to_torch()
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())


def test_module_hierarchy_becomes_blocks_titled_by_path_and_class() -> None:
    d = traced(MLP().__class__(), torch.randn(2, 8))
    assert isinstance(d, Block) and d.name == "MLP"


def test_data_dependent_control_flow_is_an_ncd_error() -> None:
    class Branchy(nn.Module):  # a number read into Python (a truth value is guarded: tests/test_trace_guards.py)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum().item() > 0 else x - 1

    with pytest.raises(ncd.NCDError, match="control flow depends on the values of the inputs"):
        ncd.trace(Branchy(), torch.randn(3))


def test_a_refused_trace_says_why_without_torchs_logs(capfd: pytest.CaptureFixture[str]) -> None:
    class Branchy(nn.Module):  # refused by torch.export, which prints its partial graph to stderr
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Branchy.calls += 1
            print("the model's own line", file=sys.stderr)  # written during export: passed on, once per call
            return x[: int(x.sum().item() > 0) + 1]

    class Mismatched(nn.Module):  # raises on its inputs: torch's fake tensors log the meta kernel's traceback
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(5, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.linear(x)
            return out

    filters = {name: list(logging.getLogger(name).filters) for name in ("torch._subclasses.fake_tensor", "torch.export._trace")}
    said = []
    mismatch = (r"the model itself raises on these inputs under torch\.no_grad, as ncd\.trace runs it "
                r"\(RuntimeError: mat1 and mat2 shapes cannot be multiplied")
    for model, why in ((Branchy(), "control flow depends on the values of the inputs"), (Mismatched(), mismatch)):
        with pytest.raises(ncd.TraceError, match=why):
            ncd.trace(model, torch.randn(2, 4))
        said.append(capfd.readouterr().err)
    assert said == ["the model's own line\n" * Branchy.calls, ""] and Branchy.calls > 1, said
    assert {name: list(logging.getLogger(name).filters) for name in filters} == filters  # the user's logging is as it was


def test_unknown_operators_become_opaque_boxes_with_one_warning() -> None:
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.i0e(x).digamma()

    x = torch.randn(2, 5)
    with pytest.warns(UserWarning, match=r"2 operator\(s\) drawn as opaque boxes: digamma.default ×1, special_i0e.default ×1"):
        d = ncd.trace(Odd(), x)
    labels = [b.prim.label() for b in d.boxes() if b.prim.op == "opaque"]
    assert labels == ["special_i0e (b m → b m)", "digamma (b m → b m)"]
    torch.testing.assert_close(d.to_torch()(x), Odd()(x))


def test_traced_diagram_survives_json_and_reloads_parameters() -> None:
    model = MLP()
    x = torch.randn(3, 8)
    d = traced(model, x)
    again = ncd.load_json(d.as_block().to_json())
    assert again == d
    module = again.to_torch()
    module.load_state_dict(d.state_dict(module))
    torch.testing.assert_close(module(x), model(x))


def test_bad_axes_name_the_input() -> None:
    with pytest.raises(ncd.NCDError, match=r"axes 'b t m' for input 'x' name 3 axes, but it has shape \(3, 8\)"):
        ncd.trace(MLP(), torch.randn(3, 8), axes={"x": "b t m"})


def test_cli_writes_the_diagram_of_a_factory(tmp_path, capsys) -> None:
    from ncd.cli import main

    out = tmp_path / "mlp.json"
    assert main(["trace", "tests.test_trace:MLP", "--input", "3x8", "--axes", "b m", "-o", str(out)]) == 0
    diagram = ncd.load_json(out.read_text())
    assert diagram == traced(MLP(), torch.randn(3, 8), axes="b m")
    assert main(["trace", "tests.test_trace:MLP", "--input", "3x8"]) == 0
    assert "MLP: b m:8 -> b m:8" in capsys.readouterr().out
    assert main(["trace", "tests.test_trace:nothing", "--input", "3x8"]) == 2
    assert "has no callable 'nothing'" in capsys.readouterr().err
