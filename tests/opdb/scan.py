"""Samples for the scan (a recurrence over a time axis), against loops written with ``torch`` here."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import TypeMismatchError
from tests.opdb import error, sample


def rnn_step() -> ncd.Diagram:
    """``h' = tanh(W h + x)``, returned as the next state and the step's output."""
    return (ncd.Linear("h -> h", name="W") @ ncd.Identity.of("h")) >> ncd.Add() >> ncd.Tanh() >> ncd.Copy("h")


def rnn(p: dict[str, torch.Tensor], xs: tuple[torch.Tensor, ...], reverse: bool = False) -> tuple[torch.Tensor, ...]:
    h, x = xs
    w = p["l_w.weight"]
    outs = {}
    order = range(x.shape[-2] - 1, -1, -1) if reverse else range(x.shape[-2])
    for t in order:
        h = torch.tanh(h @ w.T + x[..., t, :])
        outs[t] = h
    return h, torch.stack([outs[t] for t in range(x.shape[-2])], dim=-2)


def decay(p: dict[str, torch.Tensor], xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``s' = a * s + x_t`` (a constant ``a`` read by every step), the output ``s' * s'``; time second in ``x`` and ``y``."""
    a, s, x = xs
    ys = []
    for t in range(x.shape[-2]):
        s = a * s + x[..., t, :]
        ys.append(s * s)
    return s, torch.stack(ys, dim=-2)


def decay_step() -> ncd.Diagram:
    update = (ncd.Einsum("c, c -> c") @ ncd.Identity.of("c")) >> ncd.Add()
    return update >> ncd.Copy("c") >> (ncd.Identity.of("c") @ (ncd.Copy("c") >> ncd.Einsum("c, c -> c")))


sample("scan", "rnn", lambda: ncd.Scan(rnn_step(), "t", carry=1), {"t": 5, "h": 4}, lambda p, x: rnn(p, x),
       dom="h, t h", cod="h, t h")
sample("scan", "reverse", lambda: ncd.Scan(rnn_step(), "t", carry=1, reverse=True), {"t": 4, "h": 3},
       lambda p, x: rnn(p, x, reverse=True))
sample("scan", "const-state-input", lambda: ncd.Scan(decay_step(), "t", consts=1, carry=1), {"t": 6, "c": 3},
       decay, dom="c, c, t c", cod="c, t c")
error("scan", "state-type", lambda: ncd.Scan(ncd.Linear("h -> k") @ ncd.Identity.of("x"), "t", carry=1),
      r"scan over t: state 0 enters the body as 'h' but leaves it as 'k'; a state keeps its type", TypeMismatchError)
error("scan", "time-in-body", lambda: ncd.Scan(ncd.Identity.of("h") @ ncd.Identity.of("t h"), "t", carry=1),
      r"scan over t: the body's tensor 't h' already has an axis t", TypeMismatchError)
error("scan", "positions", lambda: ncd.Scan(rnn_step(), "t", carry=1, x_pos=[3]),
      r"scan over t: position 3 of the time axis is outside 'h'", TypeMismatchError)
