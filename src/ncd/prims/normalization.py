"""Normalisation: layer, RMS and batch normalisation (a circle touched by the normalised axes).

The rule for which axes are reduced is always explicit:

* :func:`LayerNorm` / :func:`RMSNorm` take the axes they normalise over (``"m"``, ``"c x y"``);
  their learned weight (and bias) lives on exactly those axes.  The box's domain is those
  axes, so composing it after ``"b t m"`` weaves it over ``b t``: every token is normalised
  on its own, as the paper's convention says.
* :func:`BatchNorm` keeps one mean and variance per **channel** and reduces over *every other
  axis of its domain and every implicit leading batch dimension* of the lowered module's
  inputs.  ``BatchNorm("c x y")`` on a module called with ``(N, c, x, y)`` tensors is
  ``nn.BatchNorm2d(c)``.  When the diagram names its batch axis, put it in the domain and
  name the channel: ``BatchNorm("b c x y", channel="c")``.  Batch normalisation cannot be
  *woven* (broadcast) over an axis, because weaving means "independently for each index"
  while batch statistics mix those indices; lowering a woven batch norm is an error that
  says which axis to add to its domain.

>>> import ncd
>>> str((ncd.Identity.of("b t m") >> ncd.LayerNorm("m")).cod)
'b t m'
>>> ncd.BatchNorm("c x y").prim.params()["weight"]
(c,)
>>> ncd.BatchNorm("b c x y", channel="c").prim.reduced
('b', 'x', 'y')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type, parse_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import IMPORT
from ncd.ir.size import Size

__all__ = ["LayerNormOp", "RMSNormOp", "BatchNormOp", "LayerNorm", "RMSNorm", "BatchNorm", "axes_segment"]


def axes_segment(axes: str | Segment, what: str) -> Segment:
    """One segment of distinct float axes, read from text such as ``"c x y"``."""
    if isinstance(axes, Segment):
        seg = axes
    else:
        if not isinstance(axes, str):
            raise ParseError(f"{what}: axes must be text such as 'm' or 'c x y', not {type(axes).__name__} {axes!r}")
        typ = parse_type(axes)
        if len(typ) != 1:
            raise ParseError(f"{what}: axes {axes!r} must be one segment (no commas)")
        seg = typ[0]
    if not seg.axes:
        raise ParseError(f"{what}: needs at least one axis to normalise over")
    if seg.dtype != "float":
        raise ParseError(f"{what}: normalises float tensors, not '{seg}'")
    if len(set(seg.names)) != len(seg.names):
        raise ParseError(f"{what}: an axis occurs twice in '{seg}'")
    return seg


def _check_eps(eps: float, what: str) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < float("inf"):
        raise ParseError(f"{what}: eps must be a finite non-negative number, not {eps!r}")


@dataclass(frozen=True)
class LayerNormOp(Primitive):
    """Normalise to zero mean and unit variance over ``axes``; learned weight/bias over ``axes``."""

    axes: Segment
    eps: float = 1e-5
    affine: bool = True
    bias: bool = True

    op: ClassVar[str] = "layernorm"
    weave_policy = weaving.own_last
    family: ClassVar[str] = "normalization"
    kind: ClassVar[Kind] = "nonlinear"
    learned: ClassVar[bool] = True

    def __post_init__(self) -> None:
        axes_segment(self.axes, "layernorm")
        _check_eps(self.eps, "layernorm")

    def signature(self) -> tuple[Type, Type]:
        t = Type((self.axes,))
        return t, t

    def params(self) -> dict[str, tuple[Size, ...]]:
        shapes: dict[str, tuple[Size, ...]] = {}
        if self.affine:
            shapes["weight"] = self.axes.sizes
            if self.bias:
                shapes["bias"] = self.axes.sizes
        return shapes

    def label(self) -> str:
        return "LN"


@dataclass(frozen=True)
class RMSNormOp(Primitive):
    """Divide by the root mean square over ``axes`` (no centring); learned weight over ``axes``."""

    axes: Segment
    eps: float = 1e-6
    affine: bool = True

    op: ClassVar[str] = "rmsnorm"
    weave_policy = weaving.own_last
    family: ClassVar[str] = "normalization"
    kind: ClassVar[Kind] = "nonlinear"
    learned: ClassVar[bool] = True

    def __post_init__(self) -> None:
        axes_segment(self.axes, "rmsnorm")
        _check_eps(self.eps, "rmsnorm")

    def signature(self) -> tuple[Type, Type]:
        t = Type((self.axes,))
        return t, t

    def params(self) -> dict[str, tuple[Size, ...]]:
        return {"weight": self.axes.sizes} if self.affine else {}

    def label(self) -> str:
        return "RMS"


@dataclass(frozen=True)
class BatchNormOp(Primitive):
    """Per-``channel`` statistics over the other axes of ``axes`` and all implicit batch dimensions.

    ``channel`` is the position of the channel axis in ``axes``.  In training the batch
    statistics are used and the running estimates (buffers ``running_mean``,
    ``running_var``) are updated with ``momentum``; in evaluation the running estimates are
    used, exactly as ``nn.BatchNorm1d/2d/3d``.
    """

    axes: Segment
    channel: int = 0
    eps: float = 1e-5
    momentum: float = 0.1
    affine: bool = True
    track_running_stats: bool = True

    op: ClassVar[str] = "batchnorm"
    weave_policy = weaving.always
    family: ClassVar[str] = "normalization"
    kind: ClassVar[Kind] = "nonlinear"
    learned: ClassVar[bool] = True

    def __post_init__(self) -> None:
        axes_segment(self.axes, "batchnorm")
        _check_eps(self.eps, "batchnorm")
        if isinstance(self.channel, bool) or not isinstance(self.channel, int) or not 0 <= self.channel < len(self.axes):
            raise ParseError(f"batchnorm: channel position {self.channel!r} is not an axis of '{self.axes}'")
        if isinstance(self.momentum, bool) or not isinstance(self.momentum, (int, float)) or not 0 <= self.momentum <= 1:
            raise ParseError(f"batchnorm: momentum must lie in [0, 1], not {self.momentum!r}")

    def signature(self) -> tuple[Type, Type]:
        t = Type((self.axes,))
        return t, t

    @property
    def channel_axis(self) -> Axis:
        return self.axes.axes[self.channel]

    @property
    def reduced(self) -> tuple[str, ...]:
        """The named axes the statistics are taken over (implicit batch dimensions come on top)."""
        return tuple(a.name for k, a in enumerate(self.axes) if k != self.channel)

    def params(self) -> dict[str, tuple[Size, ...]]:
        return {"weight": (self.channel_axis.size,), "bias": (self.channel_axis.size,)} if self.affine else {}

    def buffers(self) -> dict[str, tuple[Size, ...]]:
        """Running statistics (not learned, but saved with the module)."""
        if not self.track_running_stats:
            return {}
        return {"running_mean": (self.channel_axis.size,), "running_var": (self.channel_axis.size,)}

    def label(self) -> str:
        return "BN"


def LayerNorm(axes: str, eps: float = 1e-5, affine: bool = True, bias: bool = True, name: str | None = None) -> Box:
    """Layer normalisation over ``axes`` (e.g. ``"m"`` or ``"c x y"``), woven over every other axis.

    ``affine`` adds a learned weight over ``axes``; ``bias`` (with ``affine``) a learned bias.
    """
    return Box.make(LayerNormOp(axes_segment(axes, "layernorm"), float(eps), bool(affine), bool(bias)), name)


def RMSNorm(axes: str, eps: float = 1e-6, affine: bool = True, name: str | None = None) -> Box:
    """RMS normalisation over ``axes``: ``x / sqrt(mean(x²) + eps) * weight``."""
    return Box.make(RMSNormOp(axes_segment(axes, "rmsnorm"), float(eps), bool(affine)), name)


def BatchNorm(
    axes: str,
    channel: str | None = None,
    eps: float = 1e-5,
    momentum: float = 0.1,
    affine: bool = True,
    track_running_stats: bool = True,
    name: str | None = None,
) -> Box:
    """Batch normalisation on a tensor with axes ``axes``, one mean/variance per ``channel``.

    ``channel`` defaults to the first axis of ``axes``.  Statistics are taken over the other
    axes of ``axes`` **and** over every implicit leading batch dimension: ``BatchNorm("c x y")``
    is ``nn.BatchNorm2d(c)`` on ``(N, c, x, y)`` inputs; ``BatchNorm("c")`` is
    ``nn.BatchNorm1d(c)`` on ``(N, c)``; with a named batch axis write
    ``BatchNorm("b c x y", channel="c")``.
    """
    seg = axes_segment(axes, "batchnorm")
    if channel is None:
        position = 0
    else:
        hits = [k for k, a in enumerate(seg) if a.name == channel]
        if not hits:
            raise ParseError(f"batchnorm: channel axis {channel!r} is not among its axes '{seg}'")
        position = hits[0]
    return Box.make(BatchNormOp(seg, position, float(eps), float(momentum), bool(affine), bool(track_running_stats)), name)


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(LayerNormOp, aten=("aten.layer_norm",))
IMPORT.known(RMSNormOp, aten=("aten.rms_norm",), by="ncd.trace.convert")
IMPORT.known(BatchNormOp, aten=("aten.batch_norm",))
