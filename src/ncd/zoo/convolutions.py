"""One learned convolution covering the paper's extensions: 1-D or 2-D, stride, padding,
dilation, groups (depthwise), transposed, and 1×1.

>>> import ncd.zoo
>>> d = ncd.zoo.convolution()
>>> str(d.dom), str(d.cod)
('c x y', 'd x:x-2 y:y-2')
>>> str(ncd.zoo.convolution(dims=1, stride=2, padding=1).cod)
'd x:x/2'
>>> str(ncd.zoo.convolution(transposed=True, kernel=2, stride=2).cod)
'd x:2*x y:2*y'
"""

from __future__ import annotations

import ncd
from ncd.zoo._model import model

__all__ = ["convolution"]


def convolution(
    c: int = 3, d: int = 8, x: int = 16, y: int = 16,
    *, dims: int = 2, kernel: int = 3, stride: int = 1, padding: int = 0, dilation: int = 1, groups: int | str = 1,
    transposed: bool = False, bias: bool = True,
) -> ncd.Block:
    """A learned convolution ``★k`` from ``c`` to ``d`` channels over ``dims`` spatial axes (``x``, then ``y``).

    ``groups`` may be a number or a size (``groups="c"`` with ``d`` a multiple of ``c`` is a
    depthwise convolution); ``kernel=1`` is the 1×1 convolution, a linear map over channels
    woven over the pixels; ``transposed=True`` gives ``★ᵀk``.
    """
    if dims not in (1, 2):
        raise ncd.ParseError(f"convolution: dims must be 1 or 2, not {dims!r}")
    spatial = "x" if dims == 1 else "x y"
    spec = f"c {spatial} -> d {spatial}"
    if transposed:
        box = ncd.ConvTranspose(spec, kernel=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                                bias=bias)
    else:
        box = ncd.Conv(spec, kernel=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
    sizes = {"c": c, "d": d, "x": x} | ({"y": y} if dims == 2 else {})
    return model("Convolution", box, **sizes)
