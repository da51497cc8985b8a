"""The diagram IR: axes, types, diagrams, primitives and the checker.  Imports no torch."""

from ncd.ir.axes import Axis, Segment, Type, as_axis, as_type, parse_axis, parse_segment, parse_type
from ncd.ir.compose import fit, then
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Seq, describe
from ncd.ir.primitive import PRIMITIVES, Primitive
from ncd.ir.repetition import Repeat, repeat
from ncd.ir.size import evaluate, size, symbol
from ncd.ir.weave import Weave, unweave

__all__ = [
    "Axis", "Segment", "Type", "as_axis", "as_type", "parse_axis", "parse_segment", "parse_type",
    "fit", "then", "Block", "Box", "Diagram", "Identity", "Par", "Repeat", "Seq", "Weave", "describe",
    "repeat", "unweave", "PRIMITIVES", "Primitive", "evaluate", "size", "symbol",
]
