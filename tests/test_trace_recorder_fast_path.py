"""The recorder's fast path for plain calls (``_Recording.call``, ``refs_of``) records what its full path (``_call``)
records, within a budget, without one and over it (switched to meta mid-way); and the model's line of a call
(``capture.user_line``, remembered per instruction) is the line that made it."""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import ncd
from ncd.render import to_svg

record = importlib.import_module("ncd.trace.record")
recording = importlib.import_module("ncd.trace.recording")
operators = importlib.import_module("ncd.trace.operators")
capture = importlib.import_module("ncd.trace.capture")


class Mixed(nn.Module):
    """Plain calls among the others: parameters read directly and through modules, keyword arguments, constants made
    in the forward, tuple results, a view written in place and read again, a detach, a buffer, sizes read into views."""

    def __init__(self, write: bool = True) -> None:
        super().__init__()
        self.write = write
        self.qkv = nn.Linear(8, 24)
        self.w = nn.Parameter(torch.randn(8, 8))
        self.register_buffer("scale", torch.full((8,), 0.5))
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(torch.relu(x)).view(b, t, 3, 2, 4).unbind(2)
        a = nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                       attn_mask=mask[:, None, None, :])
        h = a.transpose(1, 2).reshape(b, t, 8) @ self.w * self.scale
        if self.write:
            h[:, 0] += torch.ones(8)
        top = h.topk(2, dim=-1)[0] if self.write else h[..., :2]  # (indices: computed from values, not on meta)
        parts = torch.split(h, [3, 5], dim=-1)
        g = torch.cat([parts[1], parts[0]], dim=-1).detach() + h
        out: torch.Tensor = self.norm(g).softmax(dim=-1) * top.sum(-1, keepdim=True) + 1
        return out


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 5, 8, generator=g), torch.rand(2, 5, generator=g) > 0.2


@contextlib.contextmanager
def _full_path_only() -> Iterator[None]:
    """Every call through ``_call``, as before the fast path: the reference."""
    cls: Any = recording._Recording
    saved = cls.call

    space: dict[str, Any] = {"operators": operators}  # (made of no file of the user's: the model's line is the caller's)
    exec(compile("def full(self, func, args, kwargs):\n    return self._call(operators._operator(func), func, args, kwargs)\n",
                 "<full path>", "exec"), space)
    cls.call = space["full"]
    try:
        yield
    finally:
        cls.call = saved


def _recorded(model: nn.Module, args: tuple[Any, ...], budget: float | None = None) -> list[tuple[Any, ...]]:
    flat = capture._Flat(model)
    got = record._record(model, args, {}, flat, meta=False, budget=budget)

    def ref(a: Any) -> Any:
        if isinstance(a, capture.Node):
            return a.name
        if isinstance(a, (tuple, list)):
            return tuple(ref(v) for v in a)
        if isinstance(a, dict):
            return tuple((k, ref(v)) for k, v in a.items())
        return repr(a) if not isinstance(a, torch.Tensor) else (tuple(a.shape), str(a.dtype))

    return [(n.name, n.kind, str(n.target), ref(n.args), ref(n.kwargs), n.live, n.line, n.guard, n.stack, n.source,
             repr(n.sized), (tuple(n.value.shape), str(n.value.dtype), n.value.device.type)
             if isinstance(n.value, torch.Tensor) else repr(n.value)) for n in got.nodes]


@pytest.mark.parametrize("budget", [None, 1e12], ids=["real", "budget"])  # (on meta every call takes the full path)
def test_the_fast_path_records_what_the_full_path_records(budget: float | None) -> None:
    torch.manual_seed(0)
    model, args = Mixed().eval(), _inputs()
    with _full_path_only():
        want = _recorded(model, args, budget)
    got = _recorded(model, args, budget)
    assert got == want
    assert sum(n[1] == "call" for n in got) > 20
    assert any("topk" in n[2] for n in got) and any(n[1] == "parameter" for n in got)


def test_the_fast_path_records_what_the_full_path_records_over_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget of no work: the first call on values of the inputs (a relu, plain) switches the recording to meta."""
    torch.manual_seed(0)
    model, args = Mixed(write=False).eval(), _inputs()
    monkeypatch.setattr(recording, "WORK_PER_CALL", 0.0)
    switched: list[bool] = []
    switch = recording.switch

    def counted(rec: Any) -> bool:
        switched.append(switch(rec))
        return switched[-1]

    monkeypatch.setattr(recording, "switch", counted)
    with _full_path_only():
        want = _recorded(model, args, 0.0)
    got = _recorded(model, args, 0.0)
    assert switched == [True, True]  # (once a recording: the full path's, then the fast path's)
    assert got == want
    assert any(n[-1][2] == "meta" for n in got)
    assert got[2][2] == "aten.relu.default" and got[2][-1][2] == "meta"
    with _full_path_only():
        svg = to_svg(ncd.trace(model, *args))
    assert to_svg(ncd.trace(model, *args)) == svg


def test_the_line_of_each_call_is_the_models_line_in_a_long_forward() -> None:
    """A forward of 300 lines (the line of an instruction is read from the code's line table; it is remembered per
    instruction), traced twice; one instruction at two lines of another function."""
    body = "".join(f"    x = x * {1 + k / 1000} + {k / 100}\n" for k in range(300))
    source = f"def forward(self, x):\n{body}    return torch.tanh(x)\n"
    space: dict[str, Any] = {"torch": torch}
    exec(compile(source, "long_forward.py", "exec"), space)  # (a file name of the user's: not torch's nor ncd's)
    model = type("Long", (nn.Module,), {"forward": space["forward"]})().eval()
    x = torch.randn(2, 3)
    for _ in range(2):
        got = [n for n in record.record(model, (x,), {}, capture._Flat(model)).nodes if n.kind == "call"]
        assert [n.line for n in got] == [f"long_forward.py:{2 + k // 2}" for k in range(600)] + ["long_forward.py:302"]

    def twice(x: torch.Tensor) -> torch.Tensor:
        y = torch.sin(x)
        return torch.sin(y)

    line = inspect.getsourcelines(twice)[1]
    holder = type("Twice", (nn.Module,), {"forward": lambda self, x: twice(x)})().eval()
    got = [n for n in record.record(holder, (x,), {}, capture._Flat(holder)).nodes if n.kind == "call"]
    assert [n.line for n in got] == [f"test_trace_recorder_fast_path.py:{line + 1}",
                                     f"test_trace_recorder_fast_path.py:{line + 2}"]
