"""``nn.MultiheadAttention`` recorded lean (``ncd.trace.mha``): fewer recorded operators, the module's values.

Each call shape (self-, cross- and three-input attention, sequence or batch first, padding and attention masks of
either kind, the causal hint, no biases) is traced and its lowered module compared with the model on the traced input
and a fresh one; the recording is checked to hold torch's packed-projection plumbing no more.  Where the lean forward may not
stand for the module's (a subclass's forward, a lean forward made to differ), the module's own forward is recorded.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

import ncd
from ncd.trace.capture import capture
from ncd.trace.registry import op_name

E, H = 16, 4


class Attend(nn.Module):
    def __init__(self, batch_first: bool, inputs: str, bias: bool = True, **call: Any) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(E, H, batch_first=batch_first, bias=bias)
        self.inputs, self.call = inputs, call

    def forward(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, pad: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        key, value = {"self": (x, x), "cross": (y, y), "three": (y, z)}[self.inputs]
        n = key.shape[1 if self.att.batch_first else 0]
        pad, mask = pad[:, :n], mask[:, :n]
        kwargs = {k: {"pad": pad, "mask": mask}.get(v, v) for k, v in self.call.items()}
        out: torch.Tensor = self.att(x, key, value, need_weights=False, **kwargs)[0]
        return out


def _inputs(batch_first: bool, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    b, t, s = 2, 5, 7
    shape = (lambda n: (b, n, E)) if batch_first else (lambda n: (n, b, E))
    x, y, z = torch.randn(*shape(t), generator=g), torch.randn(*shape(s), generator=g), torch.randn(*shape(s), generator=g)
    pad = torch.zeros(b, s, dtype=torch.bool)
    pad[1, -2 - seed:] = True
    mask = torch.randn(t, s, generator=g) > 1.0
    return x, y, z, pad, mask


CASES = [
    ("self", {}), ("self", {"key_padding_mask": "pad"}), ("cross", {"key_padding_mask": "pad"}),
    ("three", {}), ("cross", {"attn_mask": "mask"}), ("cross", {"attn_mask": "mask", "key_padding_mask": "pad"}),
    ("self", {"attn_mask": "causal", "is_causal": True}), ("self", {"attn_mask": "causal", "key_padding_mask": "pad",
                                                                     "is_causal": True}),
]


def _model(batch_first: bool, inputs: str, call: dict[str, Any], bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    call = dict(call)
    if call.get("attn_mask") == "causal":
        call["attn_mask"] = torch.triu(torch.full((5, 5), float("-inf")), diagonal=1)
    return Attend(batch_first, inputs, bias, **call).eval()


def _calls(model: nn.Module, args: tuple[torch.Tensor, ...]) -> list[str]:
    return [op_name(n.target)[0] for n in capture(model, args, {}, "dispatch").nodes if n.kind == "call"]


def _check_lowered(model: nn.Module, batch_first: bool) -> ncd.TracedDiagram:
    args = _inputs(batch_first, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *args)
    lowered = d.to_torch()
    for seed in (0, 1):
        given = _inputs(batch_first, seed)
        with torch.no_grad():
            want, got = model(*given), lowered(*given)
        assert torch.allclose(got, want, atol=1e-5), (seed, (got - want).abs().max())
    return d


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(("inputs", "call"), CASES)
def test_lean_attention_computes_the_module(batch_first: bool, inputs: str, call: dict[str, Any]) -> None:
    model = _model(batch_first, inputs, call)
    calls = _calls(model, _inputs(batch_first, 0))
    assert "aten.scaled_dot_product_attention" in calls
    # torch's packed projection (unflatten, select) and per-head reshapes are not what is recorded
    assert not {"aten.unflatten", "aten.select", "aten.contiguous"} & set(calls), calls
    d = _check_lowered(model, batch_first)
    assert d.opaque_count == 0


def test_lean_attention_without_biases() -> None:
    model = _model(True, "self", {"key_padding_mask": "pad"}, bias=False)
    assert "aten.select" not in _calls(model, _inputs(True, 0))
    _check_lowered(model, True)


def test_a_lean_forward_computing_otherwise_is_not_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard: a lean forward whose values differ from the module's on the traced input (here made to, by
    shifting it) is not what the diagram computes; the module's own forward is recorded instead."""
    from ncd.trace import mha

    lean = mha._lean
    monkeypatch.setattr(mha, "_lean", lambda *args: lean(*args) + 1e-3)
    model = _model(False, "self", {"key_padding_mask": "pad"})
    assert "aten.select" in _calls(model, _inputs(False, 0))  # (torch's own plumbing, recorded)
    _check_lowered(model, False)


class Doubled(nn.MultiheadAttention):
    def forward(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        out, weights = super().forward(*args, **kwargs)
        return 2 * out, weights


def test_a_subclass_forward_is_its_own() -> None:
    model = _model(True, "cross", {"key_padding_mask": "pad"})
    torch.manual_seed(0)
    doubled = Doubled(E, H, batch_first=True).eval()
    doubled.load_state_dict(model.att.state_dict())
    model.att = doubled
    assert "aten.select" in _calls(model, _inputs(True, 0))
    _check_lowered(model, True)


class ScaledByLength(nn.Module):
    """A size read before the attention and used after it (``out / t``): ncd's own run of the module's forward, the
    proof outside the recording, reads its sizes plain and without the mode following sizes (``sizes_plain``), which is
    back for the model's calls after it (the model's division follows the length)."""

    def __init__(self) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(E, H, batch_first=True)
        self.inside: list[tuple[type, int]] = []

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        from ncd.trace.shapes import sizes_plain

        t = x.shape[1]
        with sizes_plain():  # (as the proof's run: a plain int, one torch-function mode fewer)
            self.inside.append((type(x.shape[1]), torch._C._len_torch_function_stack()))
        self.inside.append((type(x.shape[1]), torch._C._len_torch_function_stack()))
        out: torch.Tensor = self.att(x, x, x, key_padding_mask=pad, need_weights=False)[0]
        return out / t


def test_the_proof_run_leaves_the_sizes_followed() -> None:
    torch.manual_seed(0)
    model = ScaledByLength().eval()
    g = torch.Generator().manual_seed(0)
    x, pad = torch.randn(2, 5, E, generator=g), torch.zeros(2, 5, dtype=torch.bool)
    pad[1, -2:] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "aten.select" not in _calls(model, (x, pad))  # recorded lean
    (plain, fewer), (sized, modes) = model.inside[:2]
    assert plain is int and sized is not int and fewer == modes - 1  # while recording: inside, plain; after, followed
    model.inside.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the fast path's padded-rows warning)
        d = ncd.trace(model, x, pad)
    assert d.opaque_count == 0 and not d.fixed
    for t in (3, 8):  # the division by the length, lowered at other lengths, is the model's there
        y, mask = torch.randn(2, t, E, generator=g), torch.zeros(2, t, dtype=torch.bool)
        mask[0, -1:] = True
        with torch.no_grad():
            want, got = model(y, mask), d.to_torch(t=t)(y, mask)
        assert torch.allclose(got, want, atol=1e-5), (t, (got - want).abs().max())
