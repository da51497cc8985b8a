"""Sinusoidal position tables computed in a model's forward, drawn as the ``∿`` box of their sizes.

A model that builds its positions from its input's length (``arange(t)``, ``sin``/``cos`` written into alternate
columns) records a constant table of the traced length: drawn as a constant, the lowered module holds that length
only.  When the recorded table equals the sinusoidal encoding of *Attention Is All You Need* (interleaved: ``sin``
in even columns, ``cos`` in odd ones, base 10000) over its rows and columns, entry by entry, it is drawn as
:class:`~ncd.prims.constant.SinusoidalOp` over the same wires: a function of the sizes, so a traced model lowers at
other lengths and batches.  Tables laid out otherwise (``cat([sin, cos])``) stay constants (a lowering at other sizes
is refused, naming them).

>>> import torch
>>> from ncd.trace.positions import sinusoidal_table
>>> table = sinusoidal_table(5, 4)
>>> angles = torch.tensor([3.0, 3.0, 0.03, 0.03], dtype=torch.float64)  # position 3 at the two frequencies
>>> torch.allclose(table[3], torch.stack([angles[0].sin(), angles[1].cos(), angles[2].sin(), angles[3].cos()]))
True
>>> is_sinusoidal(table[None]), is_sinusoidal(table.roll(1, 0)), is_sinusoidal(table[:1])
(True, False, False)
"""

from __future__ import annotations

import math

import torch

__all__ = ["sinusoidal_table", "is_sinusoidal"]

BASE = 10000.0


def sinusoidal_table(rows: int, width: int, base: float = BASE) -> torch.Tensor:
    """``PE[t, 2i] = sin(t / base^(2i/m))``, ``PE[t, 2i+1] = cos(t / base^(2i/m))`` in float64."""
    t = torch.arange(rows, dtype=torch.float64)[:, None]
    f = torch.exp(torch.arange(0, width, 2, dtype=torch.float64) * (-math.log(base) / width))
    table = torch.zeros(rows, width, dtype=torch.float64)
    table[:, 0::2] = torch.sin(t * f)
    table[:, 1::2] = torch.cos(t * f)
    return table


def is_sinusoidal(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` (leading size-1 axes aside) is the sinusoidal table of its rows and (even) columns, at
    least two rows (one row, position 0, is also other tables' first row)."""
    values = tensor
    while values.dim() > 2 and values.shape[0] == 1:
        values = values[0]
    if values.dim() != 2 or not values.is_floating_point() or values.device.type == "meta":
        return False
    rows, width = (int(s) for s in values.shape)
    if rows < 2 or width < 2 or width % 2:
        return False
    # row 0 first: the table's is exactly sin 0, cos 0, ... = 0, 1, 0, 1, ...; ``allclose`` holds on the whole only if it
    # holds there (it is entrywise), and most tables read here are not the encoding (a rotary embedding's cos and sin,
    # 18 of them in glm4_moe_lite, 0.09 ms each to refuse against a table made for each): refused from that row alone
    # (``allclose``'s test in float64, spelt out: no tensor made for a row of a few numbers; NaN is close to nothing)
    values = values.detach()
    if not all(a == b or abs(a - b) <= 1e-5 + 1e-5 * b for a, b in zip(values[0].tolist(), _START * (width // 2))):
        return False
    want = sinusoidal_table(rows, width)
    return bool(torch.allclose(values.to(torch.float64), want, atol=1e-5, rtol=1e-5))


#: Row 0 of every sinusoidal table, two columns at a time: ``sin 0``, ``cos 0``
_START = (0.0, 1.0)
