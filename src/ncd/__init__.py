"""ncd — neural circuit diagrams as software: build, run, draw, import and analyse.

>>> import ncd
>>> attn = ncd.Einsum("y k h, x k h -> y x h") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
>>> str(attn.dom), str(attn.cod)
('y k h, x k h', 'y x h')
"""

from __future__ import annotations

from ncd.errors import (
    InputError,
    LoweringError,
    NCDError,
    ParseError,
    SchemaError,
    SizeError,
    TypeMismatchError,
)
from ncd.ir.axes import Axis, Segment, Type, parse_axis, parse_type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq, Weave, repeat
from ncd.prims.elementwise import (
    GELU,
    Exp,
    Log,
    Multiply,
    ReLU,
    Scale,
    Sigmoid,
    SiLU,
    Sqrt,
    Square,
    Tanh,
    elementwise,
)
from ncd.prims.linear import Einsum, Linear, Unit
from ncd.prims.softmax import Softmax
from ncd.prims.structure import Add, Copy, Delete, Load, Save, Swap, Transpose, residual

__version__ = "0.1.0"

__all__ = [
    "NCDError", "ParseError", "SizeError", "TypeMismatchError", "SchemaError", "LoweringError", "InputError",
    "Axis", "Segment", "Type", "parse_axis", "parse_type",
    "Diagram", "Identity", "Box", "Seq", "Par", "Weave", "Block", "Repeat", "repeat",
    "Linear", "Einsum", "Unit", "Softmax", "Scale", "Multiply", "elementwise",
    "ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "Exp", "Log", "Square", "Sqrt",
    "Copy", "Delete", "Add", "Swap", "Transpose", "Save", "Load", "residual",
    "block", "load_json",
]


# -- more primitive families (one import line and one __all__ line per family) --
# -- prims: normalization --
# -- prims: convolution and pooling --
# -- prims: movement (bind, unbind, concat, index, slice, squeeze) --
# -- prims: embedding, masks, dropout --
# -- interpreters: draw --
# -- interpreters: cost and backward --
# -- interpreters: trace --


def block(name: str, diagram: Diagram, **meta: object) -> Block:
    """A fenced, named block around ``diagram`` (one submodule when lowered)."""
    return diagram.block(name, **meta)


def load_json(text: str) -> Diagram:
    """Read a diagram written by ``Diagram.to_json`` (never executes code)."""
    from ncd.ir.serialize import load_json as _load

    return _load(text)
