"""The decode rules (:data:`ncd.ir.rules.DECODE`): how each box is rebuilt in the prefill and the one-token step.

A box acts on each position of the token axis alone unless its rule says otherwise: it is rebuilt at the sizes
its wires carry (one new token in the step).  Boxes that read the token axis itself have rules of their own: a
scan over the tokens carries its state, a causal convolution or a token shift keeps a window of past positions, a
causal mask lets the one new query see every cached key, learned, sinusoidal and rotary positions are taken at
``c : c+1``.  The rules read the walk's internals; the table loads this module on first use (``RuleTable(home=...)``).
"""

from __future__ import annotations

import dataclasses

from ncd.inference.derive import _Walk, _Wire
from ncd.inference.errors import DecodeError
from ncd.inference.sites import resize
from ncd.inference.windows import conv_window, shift_window, step_conv, step_shift, trim
from ncd.ir.axes import Type
from ncd.ir.diagram import Box, Diagram, Identity
from ncd.ir.primitive import Primitive
from ncd.ir.rules import DECODE
from ncd.ir.size import Size, sizes_equal
from ncd.prims.attention import CausalMaskOp
from ncd.prims.constant import SinusoidalOp
from ncd.prims.convolution import ConvOp
from ncd.prims.movement import SliceOp
from ncd.prims.opaque import OpaqueOp
from ncd.prims.padding import PadOp
from ncd.prims.rotary import RotaryOp
from ncd.prims.scan import ScanOp
from ncd.prims.structure import RenameOp

__all__ = ["Rebuilt"]


Rebuilt = tuple[Diagram, list[_Wire]]


@DECODE.by_kind("linear", "multilinear", "nonlinear", "structural",
                what="position-wise: rebuilt at the wires' sizes (one new token in the step)")
def _positionwise(prim: Primitive, walk: _Walk, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> Rebuilt:
    walk.guard(node, wires)
    return walk.resized(node, wires, mapping)


@DECODE.rule(OpaqueOp)
def _opaque(prim: OpaqueOp, walk: _Walk, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> Rebuilt:
    if {a.name for seg in node.dom + node.cod for a in seg.axes} & walk.tokens:
        raise DecodeError(
            f"{node.text()}: an opaque box on the token wires runs only at the traced sizes ('{node.dom}' ->"
            f" '{node.cod}'), so neither a one-token step nor the cache before it can be derived; the importer"
            " must turn it into diagram boxes first"
        )
    return _positionwise(prim, walk, node, wires, mapping)


@DECODE.rule(ScanOp)
def _scan(prim: ScanOp, walk: _Walk, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> Rebuilt:
    if prim.axis.name in walk.tokens:  # a recurrence over the tokens: its state is carried between steps
        return walk.scan(node, mapping)
    return _positionwise(prim, walk, node, wires, mapping)


@DECODE.rule(ConvOp)
def _conv(prim: ConvOp, walk: _Walk, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> Rebuilt:
    if walk.mode == "step" and prim.cod_axes.axes[1:2] \
            and (window := conv_window(prim, walk.tokens, node.text())) is not None:  # a causal convolution's step
        new = Box(step_conv(prim, window[1]), node.label, node.source)
        walk.trims.add(prim.cod_axes.axes[1].name)
        return new, [_Wire(new.cod[0])]
    walk.guard(node, wires)
    if walk.length is not None:
        return walk.traced_length(node, wires, mapping)
    return walk.resized(node, wires, mapping)


@DECODE.rule(PadOp)
def _pad(prim: PadOp, walk: _Walk, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> Rebuilt:
    if walk.mode == "step" and (window := shift_window(prim, walk.tokens, node.text())) is not None:  # a token shift
        shifted = step_shift(resize(prim, mapping, walk.default_size), window[0])  # type: ignore[arg-type]
        return shifted, [_Wire(seg) for seg in shifted.cod]
    return _positionwise(prim, walk, node, wires, mapping)


@DECODE.rule(SliceOp)
def _slice(prim: SliceOp, walk: _Walk, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> Rebuilt:
    if walk.mode == "step" and prim.axis.name in walk.trims:  # the slice after a causal convolution's step
        walk.trims.discard(prim.axis.name)
        new = Box(trim(prim, node.text()), node.label, node.source)
        return new, [_Wire(new.cod[0])]
    walk.guard(node, wires)
    if walk.length is not None:
        return walk.traced_length(node, wires, mapping)
    if walk.mode == "step" and prim.output.name in walk.tokens:  # positions of a learned table: taken at c : c+1
        return walk.positions_slice(node, wires, mapping)
    return walk.resized(node, wires, mapping)


@DECODE.rule(CausalMaskOp)
def _causal(prim: CausalMaskOp, walk: _Walk, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> Rebuilt:
    walk.guard(node, wires)
    if walk.mode != "step" or prim.query.name not in walk.tokens:  # a mask over other axes acts on each token alone
        return walk.resized(node, wires, mapping)
    if not sizes_equal(mapping.get(prim.query.name, prim.query.size), walk.new):
        raise DecodeError(f"{node.text()}: a step of more than one token needs an offset causal mask")
    return Identity(Type(tuple(w.segment for w in wires))), wires  # one query sees every cached key


@DECODE.rule(SinusoidalOp)
def _sinusoidal(prim: SinusoidalOp, walk: _Walk, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> Rebuilt:
    walk.guard(node, wires)
    if walk.mode == "step" and prim.segment.axes[0].name in walk.tokens:
        return walk.positions_table(node)
    return walk.resized(node, wires, mapping)


@DECODE.rule(RotaryOp)
def _rotary(prim: RotaryOp, walk: _Walk, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> Rebuilt:
    walk.guard(node, wires)
    if walk.mode != "step" or prim.position.name not in walk.tokens:
        return walk.resized(node, wires, mapping)
    full = frozenset().union(*(w.full for w in wires)) if wires else frozenset()
    if prim.position.name in full:
        raise DecodeError(f"{node.text()}: rotates positions of a cached key axis {prim.position.name}; the step"
                          " needs the rotation before the cache")
    rotated = dataclasses.replace(resize(prim, mapping, walk.default_size), offset=prim.offset + walk.past)  # type: ignore[call-arg]
    new = Box(rotated, node.label, node.source)
    return new, [_Wire(new.cod[0], full & frozenset(new.cod[0].names))]


@DECODE.rule(RenameOp)
def _rename(prim: RenameOp, walk: _Walk, node: Box, wires: list[_Wire], mapping: dict[str, Size]) -> Rebuilt:
    walk.guard(node, wires)
    new_prim = resize(prim, mapping, walk.default_size)
    assert isinstance(new_prim, RenameOp)
    renamed = {a.name: n for a, n in zip(new_prim.segment.axes, new_prim.names)}
    new = Box(new_prim, node.label, node.source)
    return new, [_Wire(new.cod[0], frozenset(renamed.get(n, n) for n in wires[0].full))]
