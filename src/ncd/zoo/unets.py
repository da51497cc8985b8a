"""The U-Net of the paper's Figure 27 (with padding), skip tensors carried by Save/Load ``C_λ``.

Sizes follow the legend: ``x_λ = x·2^(1−λ)``; channels ``c_λ = c·2^(λ−1)`` for ``λ ≥ 1`` (64, 128,
…, 1024 as in Ronneberger et al.; the figure's legend writes ``64·2^λ``), ``c_0`` input
channels, ``y`` output classes; the image's two item axes (the figure's double wire ``x̄``)
are ``h w``.  The figure's up-scale repetition (``λ = 1 … 3``) is followed,
as in the original U-Net, by loading ``C_1``, a last double convolution and the ``★1`` head.
"""

from __future__ import annotations

import ncd
from ncd.zoo._model import model

__all__ = ["unet"]


def _double(c_in: str, c_out: str, at: str) -> ncd.Diagram:
    """Double Convolution: ``★3 ➤R➤ ★3 ➤R➤`` with padding 1 (the resolution is kept)."""
    return (
        ncd.Conv(f"{c_in} {at} -> {c_out} h w", kernel=3, padding=1) >> ncd.ReLU()
        >> ncd.Conv(f"{c_out} {at} -> {c_out} h w", kernel=3, padding=1) >> ncd.ReLU()
    ).block("DoubleConvolution")


def _at(level: str) -> str:
    return f"~h:x*2**(1-({level})) ~w:x*2**(1-({level}))"


def _channels(level: str) -> str:
    return f"c*2**(({level})-1)"


def _down(level: str, c_in: str) -> ncd.Diagram:
    c = f"ch:{_channels(level)}"
    return (
        ncd.Identity.of(f"{c_in} {_at(level)}") >> _double(c_in, c, _at(level))
        >> ncd.Save(f"{c} {_at(level)}", "C", level) >> ncd.MaxPool(_at(level), 2)
    ).block("DownScaleBlock")


def _up_concat(level: str) -> ncd.Diagram:
    """Load ``C_level`` and concatenate it with the upsampled tensor along the channels."""
    c = f"ch:{_channels(level)}"
    wires = f"{c} {_at(level)}"
    both = ncd.Identity.of(wires) @ ncd.Load(wires, "C", level)
    return both >> ncd.Concat(f"{c}, {c} -> cat:2*{_channels(level)}")  # woven over the pixels (diagonalised)


def unet(c0: int = 1, c: int = 64, x: int = 64, y: int = 2) -> ncd.Block:
    """U-Net: four down-scale blocks (double ``★3``, save ``C_λ``, max-pool), a bottom double convolution,
    up-scale blocks (load ``C_λ``, concatenate, double ``★3``, ``★ᵀ2``) and a ``★1`` head to ``y`` classes.

    ``x`` is the image size (divisible by 16; 512 in the figure, smaller by default), ``c0`` the input channels.
    """
    first = _down("1", "c0")
    down = ncd.repeat(lambda lam: _down(str(lam), f"ch:{_channels(f'{lam}-1')}"), "l", 2, 5, name="Down")
    bottom = (
        _double(f"ch:{_channels('4')}", f"ch:{_channels('5')}", _at("5"))
        >> ncd.ConvTranspose(f"ch:{_channels('5')} {_at('5')} -> ch:{_channels('4')} h w", kernel=2, stride=2)
    ).block("Bottom")

    def up(lam: object) -> ncd.Diagram:
        level = f"5-{lam}"
        return (
            _up_concat(level) >> _double(f"cat:2*{_channels(level)}", f"ch:{_channels(level)}", _at(level))
            >> ncd.ConvTranspose(f"ch:{_channels(level)} {_at(level)} -> ch:{_channels(f'4-{lam}')} h w", kernel=2, stride=2)
        ).block("UpScaleBlock")

    head = (
        _up_concat("1") >> _double(f"cat:2*{_channels('1')}", f"ch:{_channels('1')}", _at("1"))
        >> ncd.Conv(f"ch:{_channels('1')} {_at('1')} -> y h w", kernel=1)
    ).block("Head")
    body = ncd.Identity.of(f"c0 {_at('1')}") >> first >> down >> bottom >> ncd.repeat(up, "l", 1, 4, name="Up") >> head
    return model("UNet", body, c0=c0, c=c, x=x, y=y)
