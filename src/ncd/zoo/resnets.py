"""The identity (pre-activation bottleneck) ResNet of the paper's Figure 26.

``Block(s, N)`` takes ``n_in`` channels at resolution ``X`` to ``n_out`` channels at ``X/s``:
a first residual unit whose shared pre-activation (BatchNorm, ReLU) feeds a strided
bottleneck ``★1 → ★3 → ★1`` (width ``n_b = n_out/4``) and a strided ``★1`` projection, then
``N − 1`` identity units ``λ = 1 … N−1``, each with its own weights.

>>> import ncd.zoo
>>> d = ncd.zoo.resnet()
>>> str(d.dom), str(d.cod)
('c x y:x', 'k')
"""

from __future__ import annotations

from collections.abc import Sequence

import ncd
from ncd.zoo._model import model

__all__ = ["resnet", "identity_block"]


def _activate(channels: str, spatial: str) -> ncd.Diagram:
    """BatchNorm & Activate: batch statistics per channel, then ``➤R➤``."""
    return ncd.BatchNorm(f"{channels} {spatial}") >> ncd.ReLU()


def identity_block(n_in: str, n_out: str, s: int, X: str) -> ncd.Diagram:
    """``Block(s, N)``: ``n_in x y`` at size ``X`` -> ``n_out x y`` at size ``X/s``."""
    here = f"x:{X} y:{X}"
    there = f"x:({X})/{s} y:({X})/{s}" if s != 1 else here
    nb = f"nb:({n_out})/4"

    def conv(a: str, b: str, kernel: int, at: str, stride: int = 1) -> ncd.Diagram:
        return ncd.Conv(f"{a} {at} -> {b} x y", kernel=kernel, stride=stride, padding=kernel // 2)

    bottleneck = (
        conv(n_in, nb, 1, here, s) >> _activate(nb, there) >> conv(nb, nb, 3, there) >> _activate(nb, there)
        >> conv(nb, n_out, 1, there)
    )
    first = _activate(n_in, here) >> ncd.residual(bottleneck.block("ResidualComponent"), conv(n_in, n_out, 1, here, s))
    unit = ncd.residual((
        _activate(n_out, there) >> conv(n_out, nb, 1, there) >> _activate(nb, there) >> conv(nb, nb, 3, there)
        >> _activate(nb, there) >> conv(nb, n_out, 1, there)
    ).block("ResidualComponent"))
    return first >> ncd.repeat(unit.block("IdentityUnit"), "l", 1, "N", name="IdentityUnits")


def resnet(N: int = 3, n_mu: Sequence[int] = (16, 64, 128, 256), c: int = 3, x: int = 32, k: int = 10) -> ncd.Block:
    """Identity ResNet (Figure 26): ``★3`` to ``n_1``, ``Block(1, N)``, ``Block(2, N)``, ``Block(2, N)``, BatchNorm & ReLU,
    global average pooling, **L₊** to ``k`` classes and a softmax.

    ``n_mu`` are the widths ``n_1 … n_4``; ``c`` the input channels; ``x`` the (square) image size, divisible by 4.
    """
    if len(n_mu) != 4:
        raise ncd.SizeError(f"resnet: n_mu must give the four widths n_1 … n_4, not {tuple(n_mu)}")
    stem = ncd.Conv("c x y -> n1 x y", kernel=3, padding=1)
    blocks = (
        identity_block("n1", "n2", 1, "x").block("Block1")
        >> identity_block("n2", "n3", 2, "x").block("Block2")
        >> identity_block("n3", "n4", 2, "x/2").block("Block3")
    )
    end = "x:x/4 y:x/4"
    head = (
        _activate("n4", end).block("BatchNormActivate")
        >> ncd.AdaptiveAvgPool(end, 1).block("AvgPool")
        >> ncd.Linear("n4 x:1 y:1 -> k", bias=True).block("Linear")
        >> ncd.Softmax("k").block("SoftMax")
    )
    sizes = dict(zip(("n1", "n2", "n3", "n4"), n_mu))
    return model("IdentityResNet", (ncd.Identity.of("c x y:x") >> stem >> blocks >> head), N=N, c=c, x=x, k=k, **sizes)
