"""redteam12: an LSTM with projections (an opaque ``aten.lstm.input`` call) reads back from untrusted JSON when its
own arguments switch dropout off; a crafted call that could draw (training with a positive rate, or a rate that is
no number) is still refused."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.opaque_allowlist import check_allowed


def _traced(model: nn.Module, x: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, x)


@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "dropout": 0.3}, {"num_layers": 2, "bidirectional": True}])
def test_a_projected_lstm_reads_back_untrusted_equal_to_the_model(kw: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = nn.LSTM(5, 6, proj_size=3, batch_first=True, **kw).eval()  # type: ignore[arg-type]
    x = torch.randn(2, 4, 5)
    traced = _traced(model, x)
    read = ncd.load_json(traced.to_json()).to_torch()
    read.load_state_dict(traced.state_dict(read))
    for inp in (x, torch.randn(2, 4, 5)):
        out, (h, c) = model(inp)
        got = read(inp)
        for a, b in zip(got, (out, h, c)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _call(target: str, dropout: object, train: object) -> tuple[object, ...]:
    head = (("$in", 0), [("$in", 1), ("$in", 2)], [("$in", 3)], True, 2)
    if target == "aten.lstm.data":
        head = (("$in", 0), ("$in", 9)) + head[1:]
        return head + (dropout, train, False)
    return head + (dropout, train, False, True)


@pytest.mark.parametrize("target", ["aten.lstm.input", "aten.lstm.data"])
def test_a_recurrent_call_is_allowed_only_when_its_arguments_switch_dropout_off(target: str) -> None:
    check_allowed(target, _call(target, 0.3, False))
    check_allowed(target, _call(target, 0.0, True))
    check_allowed(target, _call(target, 0, True))
    for dropout, train in [(0.3, True), (float("nan"), True), ("0", True), (None, True), (0.3, "False"),
                           (0.3, 0), (0.3, None), (True, True), (0.3, [False])]:
        with pytest.raises(ncd.ParseError, match="draws from the global random state"):
            check_allowed(target, _call(target, dropout, train))
    for short in (None, (), _call(target, 0.0, False)[:-1], _call(target, 0.0, False) + (False,)):
        with pytest.raises(ncd.ParseError, match="draws from the global random state"):
            check_allowed(target, short)  # type: ignore[arg-type]
    with pytest.raises(ncd.ParseError, match="draws from the global random state"):
        check_allowed("aten.native_dropout.default", (("$in", 0), 0.0, False))  # not a recurrent layer: by name


def test_a_crafted_training_lstm_call_in_json_is_refused_untrusted() -> None:
    torch.manual_seed(0)
    traced = _traced(nn.LSTM(5, 6, proj_size=3, num_layers=2, dropout=0.3, batch_first=True).eval(),
                     torch.randn(2, 4, 5))
    text = traced.to_json()
    data = json.loads(text)
    found = []

    def walk(o: object) -> None:
        if isinstance(o, dict):
            if o.get("op") == "opaque" and "lstm" in str(o.get("fields", {}).get("target")):
                found.append(o)
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(data)
    assert len(found) == 1
    ncd.load_json(json.dumps(data))  # as traced (eval): allowed
    args = found[0]["fields"]["args"]["tuple"]
    assert args[6] is False and args[5] == 0.3, args
    args[6] = True  # training with dropout 0.3: draws
    with pytest.raises(ncd.SchemaError, match="draws from the global random state"):
        ncd.load_json(json.dumps(data))
    ncd.load_json(json.dumps(data), trust=True)  # a file the user trusts may
