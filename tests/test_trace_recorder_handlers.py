"""The recorder keeps each operator's pre-dispatch handler while it records (``dispatch._handlers_kept``): the same
recording as torch's own handler, made at every call, gives; and nothing of it is left in torch afterwards."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import ncd
from ncd.render import to_svg

record = importlib.import_module("ncd.trace.record")
dispatch = importlib.import_module("ncd.trace.dispatch")
capture = importlib.import_module("ncd.trace.capture")

PRE = torch._C.DispatchKey.PreDispatch
OPS = (torch.ops.aten.linear.default, torch.ops.aten.relu.default, torch.ops.aten.add.Tensor,
       torch.ops.aten.view.default, torch.ops.aten.scaled_dot_product_attention.default)


class Block(nn.Module):
    """Linear maps, a size read into a view, attention, an in-place write through a slice and a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.out = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(torch.relu(x)).view(b, t, 3, 2, 4).unbind(2)
        a = nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = self.out(a.transpose(1, 2).reshape(b, t, 8)) * t ** -0.5
        h[:, 0] += 1.0
        out: torch.Tensor = h + x
        return out


class Fails(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.relu(self.lin(x))
        raise ValueError("the model's own error")


@contextlib.contextmanager
def _torchs_handlers() -> Iterator[None]:
    """Record with torch's per-call handler (the kept handlers switched off): the reference."""
    saved = dispatch._handlers_kept

    @contextlib.contextmanager
    def none(*_: Any) -> Iterator[None]:
        yield

    dispatch._handlers_kept = none
    try:
        yield
    finally:
        dispatch._handlers_kept = saved


def _recorded(model: nn.Module, x: torch.Tensor) -> list[tuple[Any, ...]]:
    got = record.record(model, (x,), {}, capture._Flat(model))
    return [(n.name, n.kind, str(n.target), n.live, n.line, n.stack, repr(n.sized),
             tuple(n.value.shape) if isinstance(n.value, torch.Tensor) else None) for n in got.nodes]


def _left_behind() -> list[str]:
    return [str(op) for op in OPS if PRE in op._dispatch_cache]


def test_kept_handlers_record_what_torchs_handlers_record() -> None:
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(2, 5, 8)
    with _torchs_handlers():
        want = _recorded(model, x)
    got = _recorded(model, x)
    assert got == want
    assert any("scaled_dot_product_attention" in n[2] for n in got)
    assert any(n[6] != "None" for n in got)  # the size read is followed into the view
    with _torchs_handlers():
        svg = to_svg(ncd.trace(model, x))
    assert to_svg(ncd.trace(model, x)) == svg


def test_nothing_is_left_in_torch_after_a_recording() -> None:
    original = torch._ops.OpOverload.__dict__["_get_dispatch"]
    model, x = Block().eval(), torch.randn(2, 5, 8)
    ncd.trace(model, x)
    assert _left_behind() == []
    assert torch._ops.OpOverload.__dict__["_get_dispatch"] is original
    with pytest.raises(ValueError, match="the model's own error"):
        record.record(Fails(), (torch.randn(2, 4),), {}, capture._Flat(Fails()))
    assert _left_behind() == []
    assert torch._ops.OpOverload.__dict__["_get_dispatch"] is original
    # torch's own pre-dispatch machinery still works afterwards: an operator handed to a pre-dispatch mode
    with torch.no_grad():
        lin = nn.Linear(8, 8)
        got = torch.export.export(lin, (torch.randn(2, 8),), strict=False)
    assert any("linear" in str(n.target) for n in got.graph.nodes)


class Literals(nn.Module):
    """``torch.tensor`` in the forward (SEW-D's scale ``torch.sqrt(torch.tensor(d, dtype=float))``, once per layer): its own
    ``empty`` and copy reach the pre-dispatch key with the Python key excluded, where torch resolves the kernel anew."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(4):
            x = self.lin(x) / torch.sqrt(torch.tensor(x.size(-1), dtype=torch.float))
        return x


def test_torchs_kernel_for_calls_under_the_python_key_excluded_is_resolved_once_per_operator() -> None:
    torch.manual_seed(0)
    model, x = Literals().eval(), torch.randn(2, 5, 8)
    asked: list[str] = []
    overload: Any = torch._ops.OpOverload
    original = overload._get_dispatch

    def counted(op: Any, key: Any) -> Any:
        if key == PRE:
            asked.append(str(op))
        return original(op, key)

    with _torchs_handlers():
        want = _recorded(model, x)
    overload._get_dispatch = counted  # (what the kept handlers' torch_handler asks torch)
    try:
        got = _recorded(model, x)
    finally:
        overload._get_dispatch = original
    assert got == want  # the same recording as torch's handlers give
    assert asked and len(asked) == len(set(asked))  # each operator's kernel asked once (was: at each of the 4 calls)
    lowered = ncd.trace(model, x).to_torch()
    torch.testing.assert_close(lowered(x), model(x))
