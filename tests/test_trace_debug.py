"""Why a box is opaque: the ``ncd.trace`` logger (``NCD_TRACE_DEBUG=1``) names, per opaque box, the rule that declined
(its reason) or raised (its error and traceback) — a missing import in a rule no longer looks like an unsupported op."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest
import torch

import ncd
from ncd.trace import convert


class Rolled(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.roll(x, 1).digamma().exp()  # roll without dims: declined; digamma: no rule


@pytest.fixture(autouse=True)
def _rules_loaded() -> None:
    """The rules registered before a test replaces one (the first trace of a process registers them: it would overwrite
    the replacement, and the replacement's undoing would then remove the real rule)."""
    from ncd.trace.idioms import load_rules

    load_rules()


def _trace(model: torch.nn.Module, x: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, x)


def _opaque_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ncd.trace" and r.getMessage().startswith("opaque box")]


def test_each_opaque_box_says_which_rule_declined_and_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="ncd.trace"):
        d = _trace(Rolled(), torch.randn(2, 3, 5))
    records = _opaque_records(caplog)
    assert d.opaque_count == len(records) == 2  # one record per opaque box
    roll, digamma = records
    assert roll.startswith("opaque box aten.roll.default at the top level (test_trace_debug.py:")
    assert "rule ncd.trace.boxes.roll declined: a roll of the flattened tensor" in roll
    assert "no rule for aten.digamma" in digamma


def test_a_rule_that_raises_is_reported_with_its_error_and_traceback(caplog: pytest.LogCaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(conv: convert.Converter, node: convert.Node) -> None:
        raise NameError("name 'ElementwiseOp' is not defined")  # what a forgotten import looks like

    monkeypatch.setitem(convert.RULES, "aten.exp", broken)
    with caplog.at_level(logging.DEBUG, logger="ncd.trace"):
        d = _trace(Rolled(), torch.randn(2, 3, 5))
    (exp,) = [m for m in _opaque_records(caplog) if "aten.exp" in m]
    assert d.opaque_count == 3
    assert "broken raised NameError: name 'ElementwiseOp' is not defined (at test_trace_debug.py:" in exp
    tracebacks = [r for r in caplog.records if r.exc_info and r.exc_info[0] is NameError]
    assert tracebacks and "on aten.exp.default" in tracebacks[0].getMessage()


def test_a_decline_made_from_an_error_names_that_error(caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def guarded(conv: convert.Converter, node: convert.Node) -> None:
        try:
            raise ImportError("cannot import name 'Fourier'")
        except Exception as error:
            raise convert.Decline(str(error)) from None

    monkeypatch.setitem(convert.RULES, "aten.exp", guarded)
    with caplog.at_level(logging.DEBUG, logger="ncd.trace"):
        _trace(Rolled(), torch.randn(2, 3, 5))
    (exp,) = [m for m in _opaque_records(caplog) if "aten.exp" in m]
    assert "guarded declined: cannot import name 'Fourier' (after ImportError at test_trace_debug.py:" in exp


def test_silent_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ncd.trace"):
        _trace(Rolled(), torch.randn(2, 3, 5))
    assert not [r for r in caplog.records if r.name == "ncd.trace"]


def test_the_environment_variable_prints_the_reasons_to_stderr() -> None:
    code = ("import torch, ncd, warnings\n"
            "warnings.simplefilter('ignore')\n"
            "class M(torch.nn.Module):\n"
            "    def forward(self, x):\n"
            "        return torch.roll(x, 1)\n"
            "ncd.trace(M(), torch.randn(2, 3))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "NCD_TRACE_DEBUG": "1"})
    assert run.returncode == 0, run.stderr
    assert "ncd.trace: opaque box aten.roll.default at the top level" in run.stderr
    assert "a roll of the flattened tensor" in run.stderr
