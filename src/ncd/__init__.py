"""ncd — neural circuit diagrams as software: build, run, draw, import and analyse.

>>> import ncd
>>> attn = ncd.Einsum("y k h, x k h -> y x h") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
>>> str(attn.dom), str(attn.cod)
('y k h, x k h', 'y x h')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd.errors import (
    InputError,
    LimitError,
    LoweringError,
    NCDError,
    ParseError,
    RunError,
    SchemaError,
    SizeError,
    TraceError,
    TypeMismatchError,
)
from ncd.ir.axes import Axis, Segment, Type, parse_axis, parse_type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Seq
from ncd.ir.weave import Weave
from ncd.ir.repetition import Repeat, repeat
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
from ncd.prims.structure import Add, Copy, Delete, Load, Rename, Save, Swap, Transpose, residual

__version__ = "0.1.0"

__all__ = [
    "NCDError", "ParseError", "SizeError", "TypeMismatchError", "SchemaError", "LoweringError", "InputError", "TraceError",
    "LimitError", "RunError",
    "Axis", "Segment", "Type", "parse_axis", "parse_type",
    "Diagram", "Identity", "Box", "Seq", "Par", "Weave", "Block", "Repeat", "repeat",
    "Linear", "Einsum", "Unit", "Softmax", "Scale", "Multiply", "elementwise",
    "ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "Exp", "Log", "Square", "Sqrt",
    "Copy", "Delete", "Add", "Swap", "Transpose", "Rename", "Save", "Load", "residual",
    "block", "load_json",
]


# -- more primitive families (one import line and one __all__ line per family) --
# -- prims: normalization --
from ncd.prims.normalization import BatchNorm, LayerNorm, RMSNorm  # noqa: E402
__all__ += ["LayerNorm", "RMSNorm", "BatchNorm"]
# -- prims: convolution and pooling --
from ncd.prims.convolution import Conv, ConvolutionTensor, ConvolutionTensorT, ConvTranspose  # noqa: E402
from ncd.prims.pooling import AdaptiveAvgPool, AvgPool, MaxPool  # noqa: E402

__all__ += ["ConvolutionTensor", "ConvolutionTensorT", "Conv", "ConvTranspose", "MaxPool", "AvgPool", "AdaptiveAvgPool"]
# -- prims: movement (bind, unbind, concat, index, slice, squeeze) --
from ncd.prims.movement import Bind, Concat, Flatten, Index, Slice, Squeeze, Unbind, Unsqueeze  # noqa: E402
__all__ += ["Bind", "Flatten", "Unbind", "Concat", "Index", "Slice", "Squeeze", "Unsqueeze"]
# -- prims: embedding, masks, dropout --
from ncd.prims.attention import CausalMask, PaddingMask  # noqa: E402
from ncd.prims.embedding import Embedding, Unembed  # noqa: E402
from ncd.prims.regularization import Dropout  # noqa: E402
__all__ += ["Embedding", "Unembed", "CausalMask", "PaddingMask", "Dropout"]
# -- prims: constants (learned tensors, sinusoidal positions) --
from ncd.prims.constant import Parameter, Sinusoidal  # noqa: E402

__all__ += ["Parameter", "Sinusoidal"]
# -- prims: scan (a recurrence over a time axis) --
from ncd.prims.scan import Scan  # noqa: E402

__all__ += ["Scan"]
# -- interpreters: draw --
from ncd.render import draw  # noqa: E402

__all__ += ["draw"]
# -- interpreters: cost and backward --
from ncd.analysis import backward, cost  # noqa: E402
__all__ += ["cost", "backward"]
# -- distributed: meshes, placements, collectives --
from ncd.distributed import Mesh, ShardingError, shard  # noqa: E402
__all__ += ["Mesh", "shard", "ShardingError"]
# -- interpreters: trace --
from ncd.trace import TracedDiagram, trace  # noqa: E402
__all__ += ["trace", "TracedDiagram"]
# -- interpreters: inference (prefill, one-token step, caches) --
from ncd.inference import decode  # noqa: E402

__all__ += ["decode"]


def block(name: str, diagram: Diagram, **meta: object) -> Block:
    """A fenced, named block around ``diagram`` (one submodule when lowered)."""
    return diagram.block(name, **meta)


if TYPE_CHECKING:
    from ncd import zoo as zoo


def __getattr__(name: str) -> object:
    """Lazy sub-packages: ``ncd.zoo`` is imported on first use."""
    if name == "zoo":
        import importlib

        return importlib.import_module("ncd.zoo")
    raise AttributeError(f"module 'ncd' has no attribute {name!r}")


def load_json(text: str | bytes, *, trust: bool = False) -> Diagram:
    """Read a diagram written by ``Diagram.to_json`` (never executes code).

    Safe by default: an opaque box may call only the pure tensor operators of
    ``ncd.prims.opaque_allowlist``, and sizes, nesting and lengths are checked against
    ``ncd.limits``; ``trust=True`` lifts the operator allowlist for files you trust.  Every
    problem raises an ``ncd.SchemaError`` (or ``ncd.LimitError``) naming the JSON path.
    """
    from ncd.ir.serialize import load_json as _load

    return _load(text, trust=trust)
# -- interpreters: IO-aware costs (memory hierarchies) --
from ncd.iomodel import Hierarchy, io, online_softmax  # noqa: E402

__all__ += ["Hierarchy", "io", "online_softmax"]
# -- prims: the ends of an axis (roll, pad), cumulative sums --
from ncd.prims.cumulative import CumSum  # noqa: E402
from ncd.prims.padding import Pad, Roll  # noqa: E402

__all__ += ["Roll", "Pad", "CumSum"]
# -- prims: ranking (top-k, sort), resampling (interpolation, adaptive max pooling), group norm, division --
from ncd.prims.division import Divide  # noqa: E402
from ncd.prims.groupnorm import GroupNorm  # noqa: E402
from ncd.prims.ranking import Sort, TopK  # noqa: E402
from ncd.prims.resampling import AdaptiveMaxPool, Interpolate  # noqa: E402

__all__ += ["TopK", "Sort", "Interpolate", "AdaptiveMaxPool", "GroupNorm", "Divide"]
# -- prims: reductions to a number per position (vector norm, log-sum-exp, product, median), weight norm --
from ncd.prims.median import Median  # noqa: E402
from ncd.prims.product import Prod  # noqa: E402
from ncd.prims.reduction import LogSumExp, VectorNorm  # noqa: E402

from ncd.prims.weightnorm import WeightNorm  # noqa: E402

__all__ += ["VectorNorm", "LogSumExp", "Prod", "Median", "WeightNorm"]
# -- prims: Fourier transforms and complex wires --
from ncd.prims.fourier import ComplexConjugate, ComplexMultiply, ComplexPart, ComplexView, Fourier  # noqa: E402

__all__ += ["Fourier", "ComplexPart", "ComplexConjugate", "ComplexMultiply", "ComplexView"]
# -- prims: selection entry by entry (where, masked fill) --
from ncd.prims.selection import Logic, Where  # noqa: E402

__all__ += ["Where", "Logic"]
# -- prims: a leaky ReLU with learned slopes --
from ncd.prims.prelu import PReLU  # noqa: E402

__all__ += ["PReLU"]
