"""Bounded windows over the token axis: a causal convolution's (or a token shift's) last positions as a state.

A causal 1-D convolution over the token axis (``★k`` padded by ``d(k-1)`` on both sides, stride 1,
then its first ``t`` outputs kept: Mamba's depthwise ``conv1d``) reads, for one new position, the
``d(k-1)`` positions before it and nothing else.  Those positions are a **window state** ``W``:

* the prefill pads its input by ``d(k-1)`` zeros in front and saves the last ``d(k-1)`` positions (``→W_i``);
* the step loads them (``W_i→``), joins the new position after them (``⧺``, ``d(k-1)+1`` positions),
  saves the last ``d(k-1)`` again and runs the convolution **unpadded**: one output, the new position's.
  The slice that kept the first ``t`` outputs keeps that one.

A **token shift** (RWKV's ``x_{t-1}``: the token axis padded by ``L`` in front and ``-L`` behind) reads the
position ``L`` before the new one: the same window state of ``L`` positions, and the step keeps the first position of
the joined window in place of the pad.

Both are ordinary boxes (pad, slice, concat, save, load), so the derived diagrams draw, cost and lower as usual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import sympy

from ncd.inference.errors import DecodeError
from ncd.inference.sites import resize
from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq, Weave
from ncd.ir.size import Size, size_text, sizes_equal
from ncd.prims.convolution import ConvOp, window_size
from ncd.prims.movement import ConcatOp, SliceOp
from ncd.prims.padding import PadOp
from ncd.prims.structure import CopyOp, DeleteOp, LoadOp, SaveOp

__all__ = ["window_of", "conv_window", "shift_window", "pick", "prefill_window", "step_window", "step_conv"]


def window_of(prim: object, tokens: frozenset[str], where: str) -> tuple[str, int] | None:
    """``(token axis, past positions read)`` of a causal convolution or a token shift over a token axis, else ``None``."""
    return conv_window(prim, tokens, where) or shift_window(prim, tokens, where)


def shift_window(prim: object, tokens: frozenset[str], where: str) -> tuple[str, int] | None:
    """``(token axis, L)`` of a pad shifting the token axis by ``L`` (``x_{t-L}``), else ``None``; an error for a pad of
    the token axis that is not such a shift (it reads later positions, or grows the axis)."""
    if not isinstance(prim, PadOp):
        return None
    moved = [j for j, a in enumerate(prim.axes.axes) if a.name in tokens and (prim.before[j] or prim.after[j])]
    if not moved:
        return None
    j = moved[0]
    name, before, after = prim.axes.axes[j].name, prim.before[j], prim.after[j]
    others = [k for k in range(len(prim.axes)) if k != j and (prim.before[k] or prim.after[k])]
    if len(moved) > 1 or others or prim.mode != "constant" or prim.value != 0 or before <= 0 or after != -before:
        raise DecodeError(f"{where}: pads the token axis {name} by {before} in front and {after} behind"
                          f"{' (and other axes)' if others or len(moved) > 1 else ''}, {prim.mode} {prim.value};"
                          " a step derives a shift by L with zeros (L in front, -L behind: x_{t-L}) only")
    return name, before


def step_shift(prim: PadOp, axis: str) -> Diagram:
    """The step's token shift: the first (oldest) position of the joined window."""
    k = prim.axes.index(axis)
    whole = prim.axes.axes[k].size
    return pick(prim.axes, k, sympy.Integer(0), sympy.Integer(1)) if sympy.simplify(whole - 1) != 0 \
        else Identity(Type((prim.axes,)))


def conv_window(prim: object, tokens: frozenset[str], where: str) -> tuple[str, int] | None:
    """``(token axis, positions before the new one it reads)`` of a convolution over a token axis, else ``None``;
    an error when it runs over the token axis but is not causal (stride, padding) or is not 1-D."""
    if not isinstance(prim, ConvOp):
        return None
    spatial = prim.dom_axes.axes[1:]
    if not any(a.name in tokens for a in spatial):
        return None
    if prim.ndim != 1:
        raise DecodeError(f"{where}: a {prim.ndim}-D convolution over the token axis; a step derives 1-D causal ones")
    k, s, p, d = prim.kernel[0], prim.stride[0], prim.padding[0], prim.dilation[0]
    if s != 1 or p != d * (k - 1):
        raise DecodeError(f"{where}: a convolution over the token axis {spatial[0].name} with kernel {k}, stride {s},"
                          f" padding {p}, dilation {d} is not causal; a step derives the convolution padded by"
                          f" dilation*(kernel-1) = {d * (k - 1)} whose first outputs are kept")
    return spatial[0].name, d * (k - 1)


def pick(segment: Segment, k: int, start: Size, stop: Size) -> Diagram:
    """``start:stop`` of axis ``k`` of ``segment`` (the slice woven over the other axes)."""
    axis = segment.axes[k]
    out: Diagram = Box(SliceOp(axis, start, stop, sympy.Integer(1), dataclasses.replace(axis, size=stop - start)))
    for j in range(k + 1, len(segment)):  # weave the slice over the other wires, after then before
        out = Weave(out, segment.axes[j], (j - k,), (j - k,))
    for j in reversed(range(k)):
        out = Weave(out, segment.axes[j], (0,), (0,))
    return out


def _resized(segment: Segment, k: int, size: Size) -> Segment:
    return segment.with_axes(segment.axes[:k] + (dataclasses.replace(segment.axes[k], size=size),) + segment.axes[k + 1:])


def state_segment(segment: Segment, axis: str, held: int) -> Segment:
    """The window state's wire: ``segment`` with the token axis holding ``held`` positions."""
    return _resized(segment, segment.index(axis), sympy.Integer(held))


def prefill_window(segment: Segment, axis: str, held: int, key: str, index: Size | None) -> Diagram:
    """Copy the conv's input, pad it by ``held`` zeros in front and save its last ``held`` positions."""
    k = segment.index(axis)
    length = segment.axes[k].size
    zeros = tuple(held if j == k else 0 for j in range(len(segment)))
    padded = _resized(segment, k, length + held)
    kept = state_segment(segment, axis, held)
    return Seq.of(
        Box(CopyOp(Type((segment,)))),
        Par.of(Seq.of(Box(PadOp(segment, zeros, (0,) * len(segment), output=padded)),
                      pick(padded, k, length, length + held),
                      Box(SaveOp(Type((kept,)), key, index)), Box(DeleteOp(Type((kept,))))),
               Identity(Type((segment,)))),
    )


def step_window(segment: Segment, axis: str, held: int, key: str, index: Size | None) -> tuple[Diagram, Segment]:
    """Load the ``held`` past positions, join the new one after them, save the last ``held``; the joined wire goes on."""
    k = segment.index(axis)
    new = segment.axes[k]
    if sympy.simplify(new.size - 1) != 0:
        raise DecodeError(f"step: the convolution's input carries {size_text(new.size)} new positions of {axis}, not 1")
    past = state_segment(segment, axis, held)
    whole_axis = dataclasses.replace(new, size=sympy.Integer(held + 1))
    whole = _resized(segment, k, whole_axis.size)
    join = ConcatOp((past.axes[k], new), whole_axis, Segment(segment.axes[:k]), Segment(segment.axes[k + 1:]))
    body = Seq.of(
        Par.of(Box(LoadOp(Type((past,)), key, index)), Identity(Type((segment,)))),
        Box(join),
        Box(CopyOp(Type((whole,)))),
        Par.of(Seq.of(pick(whole, k, sympy.Integer(1), sympy.Integer(held + 1)),
                      Box(SaveOp(Type((past,)), key, index)), Box(DeleteOp(Type((past,))))),
               Identity(Type((whole,)))),
    )
    return body, whole


def step_conv(prim: ConvOp, held: int) -> ConvOp:
    """The step's convolution: over the ``held + 1`` positions of the window, unpadded, one output position."""
    time_in, time_out = prim.dom_axes.axes[1], prim.cod_axes.axes[1]
    return dataclasses.replace(
        prim,
        dom_axes=prim.dom_axes.with_axes((prim.dom_axes.axes[0], dataclasses.replace(time_in, size=sympy.Integer(held + 1)))),
        cod_axes=prim.cod_axes.with_axes((prim.cod_axes.axes[0], dataclasses.replace(time_out, size=sympy.Integer(1)))),
        padding=(0,),
    )


def at_length(prim: ConvOp | SliceOp, mapping: Mapping[str, Size], default: Any) -> ConvOp | SliceOp:
    """A convolution or a slice of a diagram traced at a fixed length, at the lengths its input wire now carries
    (the prefill of any prompt): a convolution's outputs follow its inputs, a slice of the first positions keeps
    as many as its (token) output axis now has."""
    if isinstance(prim, ConvOp):
        dom = prim.dom_axes.with_axes(dataclasses.replace(a, size=mapping.get(a.name, a.size)) for a in prim.dom_axes.axes)
        cod = [prim.cod_axes.axes[0]]
        for a, b, k, s, p, d in zip(dom.axes[1:], prim.cod_axes.axes[1:], prim.kernel, prim.stride, prim.padding,
                                    prim.dilation):
            cod.append(dataclasses.replace(b, size=window_size(a.size, k, s, p, d, what=b.name)))
        return dataclasses.replace(prim, dom_axes=dom, cod_axes=prim.cod_axes.with_axes(cod))
    new = resize(prim, mapping, default)
    assert isinstance(new, SliceOp)
    if new.output is not prim.output and prim.start == 0 and prim.step == 1 and sizes_equal(prim.stop, prim.output.size):
        new = dataclasses.replace(new, stop=new.output.size)
    return new


def trim(prim: SliceOp, where: str) -> SliceOp:
    """The step's slice keeping a causal convolution's first outputs: its one output."""
    if not (prim.start == 0 and prim.step == 1):
        raise DecodeError(f"{where}: keeps {size_text(prim.start)}:{size_text(prim.stop)} of a padded convolution over"
                          f" the token axis; only the first t outputs (a causal convolution) have a step")
    one = sympy.Integer(1)
    return dataclasses.replace(prim, axis=dataclasses.replace(prim.axis, size=one), stop=one,
                               output=dataclasses.replace(prim.output, size=one))
