"""Sampling an image at given positions: ``F.grid_sample`` (bilinear, nearest, bicubic; zeros, border, reflection).

* ``GridSample("y x", "q p", "k")`` reads the spatial axes ``y x`` of its first input at the positions its second
  input holds — one coordinate pair per position, along ``k`` (``x`` first, then ``y``, in ``[-1, 1]``, as torch
  reads a grid): ``"y x, q p k:2 -> q p"``.  Woven over a batch on both inputs (deformable attention's batch × heads),
  over channels on the image only, and over more positions on the grid only, it is one ``F.grid_sample`` call: the
  shared wires are torch's batch, the image's own its channels, the grid's own more output rows.
* Its backward (:class:`GridSampleGradOp`, ``∂``) is ATen's ``grid_sampler_2d_backward`` (``3d``): the gradient of
  the image and of the positions at once, from the image, the positions and the cotangent.

Deformable DETR and its kin (grounding-dino, rt_detr, d_fine, mask2former, …) call it once per feature level; it was
an opaque box.  One module holds every rule of the family.

>>> import ncd, torch
>>> import torch.nn.functional as F
>>> d = ncd.Identity.of("n c y x, n q p k:2") >> GridSample("y x", "q p", "k")
>>> str(d.cod)
'n c q p'
>>> x, grid = torch.randn(2, 3, 5, 6), torch.rand(2, 4, 7, 2) * 2 - 1
>>> torch.equal(d.to_torch(n=2, c=3, y=5, x=6, q=4, p=7)(x, grid), F.grid_sample(x, grid, align_corners=False))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type, TypeLike, parse_axis
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.ir.size import size_text
from ncd.prims.resampling import _segment

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["GridSampleOp", "GridSampleGradOp", "GridSample", "MODES", "PADDINGS"]

#: interpolation modes, by ATen's number (``grid_sampler``'s ``interpolation_mode``)
MODES = ("bilinear", "nearest", "bicubic")
#: padding modes, by ATen's number (``padding_mode``)
PADDINGS = ("zeros", "border", "reflection")


@dataclass(frozen=True)
class GridSampleOp(Primitive):
    """The image axes ``axes`` (2 or 3) read at ``positions`` (as many axes), whose coordinates run along
    ``coordinate`` (of size ``len(axes)``, the last axis first): ``F.grid_sample``."""

    axes: Segment
    positions: Segment
    coordinate: Axis
    mode: str = "bilinear"
    padding: str = "zeros"
    align_corners: bool = False

    op: ClassVar[str] = "grid_sample"
    family: ClassVar[str] = "sampling"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.always

    def __post_init__(self) -> None:
        what = f"grid sample of '{self.axes}' at '{self.positions}'"
        n = len(self.axes)
        if n not in (2, 3) or len(self.positions) != n:
            raise ParseError(f"{what}: takes 2 or 3 image axes and as many position axes")
        names = [*self.axes.names, *self.positions.names, self.coordinate.name]
        if self.axes.repeated or self.positions.repeated or self.coordinate.name in [*self.axes.names,
                                                                                       *self.positions.names]:
            raise ParseError(f"{what}: the image axes, the position axes and the coordinate {self.coordinate.name}"
                             f" need names of their own, not {' '.join(names)}")
        if self.coordinate.size != n:
            raise SizeError(f"{what}: the coordinate axis {self.coordinate.name} holds one coordinate per image axis"
                            f" ({n}), not {size_text(self.coordinate.size)}")
        if self.mode not in MODES or self.padding not in PADDINGS:
            raise ParseError(f"{what}: mode {self.mode!r} must be one of {', '.join(MODES)} and padding"
                             f" {self.padding!r} one of {', '.join(PADDINGS)}")
        if self.mode == "bicubic" and n != 2:
            raise ParseError(f"{what}: bicubic sampling takes 2 image axes, not {n}")
        if any(seg.dtype != "float" for seg in (self.axes, self.positions)):
            raise ParseError(f"{what}: samples float images at float positions")

    def grid(self) -> Segment:
        return Segment((*self.positions.axes, self.coordinate))

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes, self.grid())), Type((self.positions,))

    def label(self) -> str:
        return {"bilinear": "bilin", "nearest": "near", "bicubic": "bicub"}[self.mode] + " @"

    def hint(self) -> str:
        return "sampled"


@dataclass(frozen=True)
class GridSampleGradOp(GridSampleOp):
    """The backward of :class:`GridSampleOp` (same fields): ``(image, positions, cotangent) -> (∂image, ∂positions)``
    (ATen's ``grid_sampler_2d_backward``)."""

    op: ClassVar[str] = "grid_sample_grad"
    family: ClassVar[str] = "derivative"
    weave_policy = weaving.never

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes, self.grid(), self.positions)), Type((self.axes, self.grid()))

    def label(self) -> str:
        return "∂" + super().label()

    def hint(self) -> str:
        return "d_sampled"


def GridSample(axes: TypeLike, positions: TypeLike, coordinate: str | Axis, mode: str = "bilinear",
               padding: str = "zeros", align_corners: bool = False) -> Box:
    """Read the image ``axes`` at the ``positions`` a grid holds along ``coordinate`` (``F.grid_sample``)."""
    seg = _segment(axes, "grid sample")
    coord = parse_axis(coordinate) if isinstance(coordinate, str) else coordinate
    if coord.size.free_symbols:  # ``"k"``: one coordinate per image axis
        coord = coord.resized(len(seg))
    return Box.make(GridSampleOp(seg, _segment(positions, "grid sample"), coord, mode, padding, align_corners))


# -- lowering ----------------------------------------------------------------------------------------------------------
def _sizes(ctx: RuleContext, axes: tuple[Axis, ...] | Segment) -> list[int]:
    return [ctx.int(a.size, f"axis {a.name}") for a in axes]


def _call_options(prim: GridSampleOp) -> str:
    return f"mode={prim.mode!r}, padding_mode={prim.padding!r}, align_corners={prim.align_corners}"


def _groups(ctx: RuleContext | CostContext) -> tuple[list[int], list[int], list[int]]:
    """The woven wires on both inputs (torch's batch), on the image only (its channels), on the grid only (rows)."""
    woven = ctx.woven
    shared = [w for w, o in enumerate(woven) if o.dom_pos[0] is not None and o.dom_pos[1] is not None]
    channels = [w for w, o in enumerate(woven) if o.dom_pos[0] is not None and o.dom_pos[1] is None]
    rows = [w for w, o in enumerate(woven) if o.dom_pos[0] is None and o.dom_pos[1] is not None]
    return shared, channels, rows


def _moved(ctx: RuleContext, j: int, front: list[int], hint: str) -> str:
    """Input ``j`` with the woven axes ``front`` (in that order) just before its own axes, which keep their order."""
    layout = ctx.markers("dom", j)
    n = len(layout)
    want = [("woven", w) for w in front] + [m for m in layout if m[0] == "own"]
    var = ctx.args[j].var
    if layout == want:
        return var
    src = tuple(layout.index(m) - n for m in want)
    axes = tuple(ctx.woven[w].axis for w in front) + ctx.box.dom[j].axes
    return ctx.em.assign(hint, f"torch.movedim({var}, {src}, {tuple(range(-n, 0))})", axes, kind="view")


def _product(values: list[int]) -> int:
    result = 1
    for v in values:
        result *= v
    return result


def _join(values: list[int]) -> str:
    return ", ".join(str(v) for v in values)


@LOWERING.rule(GridSampleOp)
def lower_grid_sample(prim: GridSampleOp, ctx: RuleContext) -> list[str]:
    """One ``F.grid_sample``: the wires woven on both inputs are its batch, those on the image only its channels,
    those on the grid only more output rows (each output entry is computed as torch computes it)."""
    woven = ctx.woven
    shared, channels, rows = _groups(ctx)
    if len(shared) + len(channels) + len(rows) != len(woven):
        raise ctx.fail("a wire woven around it reaches neither the image nor the grid")
    n = len(prim.axes)
    image, positions = _sizes(ctx, prim.axes), _sizes(ctx, prim.positions)
    size = {w: ctx.int(woven[w].axis.size, f"axis {woven[w].axis.name}") for w in range(len(woven))}
    x = _moved(ctx, 0, shared + channels, "image")
    grid = _moved(ctx, 1, shared + rows, "grid")
    kx, kg = len(shared) + len(channels) + n, len(shared) + len(rows) + n + 1
    lead = ctx.em.fresh("lead")
    ctx.em.line(f"{lead} = torch.broadcast_shapes({x}.shape[:-{kx}], {grid}.shape[:-{kg}])")
    s, c, r = [size[w] for w in shared], [size[w] for w in channels], [size[w] for w in rows]
    xs = f"{x}.expand(*{lead}, {_join([*s, *c, *image])}).reshape(-1, {_product(c)}, {_join(image)})"
    gs = (f"{grid}.expand(*{lead}, {_join([*s, *r, *positions, n])})"
          f".reshape(-1, {_product(r) * positions[0]}, {_join([*positions[1:], n])})")
    sampled = ctx.em.assign("sampled", f"F.grid_sample({xs}, {gs}, {_call_options(prim)})", (), comment="")
    out = f"{sampled}.view(*{lead}, {_join([*s, *c, *r, *positions])})"
    layout = ctx.markers("cod", 0)
    have = [("woven", w) for w in (*shared, *channels, *rows)] + [("own", k) for k in range(n)]
    if have == layout:
        return [out]
    m = len(layout)
    return [f"torch.movedim({out}, {tuple(range(-m, 0))}, {tuple(layout.index(mk) - m for mk in have)})"]


@LOWERING.rule(GridSampleGradOp)
def lower_grid_sample_grad(prim: GridSampleGradOp, ctx: RuleContext) -> list[str]:
    """ATen's ``grid_sampler_{2,3}d_backward`` on the three inputs broadcast over their leading wires, each one
    channel: the gradient of the image and of the positions for every leading entry apart."""
    x, grid, g = (v.var for v in ctx.args)
    n = len(prim.axes)
    image, positions = _sizes(ctx, prim.axes), _sizes(ctx, prim.positions)
    lead = ctx.em.fresh("lead")
    ctx.em.line(f"{lead} = torch.broadcast_shapes({x}.shape[:-{n}], {grid}.shape[:-{n + 1}], {g}.shape[:-{n}])")
    xs = f"{x}.expand(*{lead}, {_join(image)}).reshape(-1, 1, {_join(image)})"
    gs = f"{grid}.expand(*{lead}, {_join([*positions, n])}).reshape(-1, {_join([*positions, n])})"
    cs = f"{g}.expand(*{lead}, {_join(positions)}).reshape(-1, 1, {_join(positions)})"
    dx, dgrid = ctx.em.fresh("d_image"), ctx.em.fresh("d_grid")
    ctx.em.line(f"{dx}, {dgrid} = torch.ops.aten.grid_sampler_{n}d_backward({cs}, {xs}, {gs}, {MODES.index(prim.mode)},"
                f" {PADDINGS.index(prim.padding)}, {prim.align_corners}, [True, True])")
    return [f"{dx}.view(*{lead}, {_join(image)})", f"{dgrid}.view(*{lead}, {_join([*positions, n])})"]


# -- costs and backward ------------------------------------------------------------------------------------------------
def _folded(ctx: CostContext, j: int, front: list[int], batch: int) -> Tensor:
    """Input ``j`` as the lowering hands it to ATen, its first ``batch`` wires of ``front`` one dim, the others
    another: a view where its wires fold so, else a copy."""
    t = ctx.inputs[j]
    woven = [ctx.woven[w].axis.name for w in front]
    own = list(ctx.box.dom[j].names)
    if t.merges([woven[:batch], woven[batch:], *[[a] for a in own]]):
        return t
    return ctx.new(t.axes, order=[*woven, *own], grad=t.grad)


def _per_entry(prim: GridSampleOp) -> int:
    """Operations per output entry: the weighted sum of the neighbours read (2, 4, 16 or 8 of them)."""
    neighbours: dict[str, int] = {"bilinear": 2 ** len(prim.axes), "nearest": 1, "bicubic": 16}
    return 2 * neighbours[prim.mode]


@COST.rule(GridSampleOp)
def cost_grid_sample(prim: GridSampleOp, ctx: CostContext) -> list[Tensor]:
    """The FLOP counter counts none; autograd keeps the image and the grid as ATen receives them (folded: a view, or
    a copy where the wires do not fold)."""
    woven = ctx.woven
    shared, channels, rows = _groups(ctx)
    x = _folded(ctx, 0, shared + channels, len(shared))
    grid = _folded(ctx, 1, shared + rows, len(shared))
    if ctx.grad:
        ctx.save(x, grid)
    order = [woven[w].axis.name for w in (*shared, *channels, *rows)] + list(prim.positions.names)
    ctx.other(_per_entry(prim) * ctx.numel(), 2 * _per_entry(prim) * ctx.numel() if ctx.grad else sympy.Integer(0))
    return [ctx.new(ctx.out_axes[0], order=order)]


@COST.rule(GridSampleGradOp)
def cost_grid_sample_grad(prim: GridSampleGradOp, ctx: CostContext) -> list[Tensor]:
    """Two new tensors, nothing kept (no second derivatives)."""
    ctx.other(2 * _per_entry(prim) * ctx.inputs[2].numel, sympy.Integer(0))
    return [ctx.output(0), ctx.output(1)]


@BACKWARD.rule(GridSampleOp)
def backward_grid_sample(prim: GridSampleOp, box: Box, builder: object) -> BoxBackward:
    """Both gradients from the stored image and grid and the cotangent: one ``∂`` box."""
    grad = GridSampleGradOp(prim.axes, prim.positions, prim.coordinate, prim.mode, prim.padding, prim.align_corners)
    return BoxBackward((("in", 0), ("in", 1)), Box(grad))


BACKWARD.unsupported(GridSampleGradOp, SECOND_ORDER)


# -- drawing -----------------------------------------------------------------------------------------------------------
@DRAWING.rule(GridSampleOp, GridSampleGradOp)
def draw_grid_sample(prim: GridSampleOp, ctx: Layout, box: Box) -> Frag:
    """On the resampling trapezoid: ``bilin @`` (the image read at the grid's positions)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.pictograms_more import CONV_FILL
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), fill=CONV_FILL, shape="trapezoid", name=prim.op)


# -- import recognition: ncd.trace.boxes_resampling --------------------------------------------------------------------
IMPORT.known(GridSampleOp, aten=("aten.grid_sampler", "aten.grid_sampler_2d", "aten.grid_sampler_3d"),
             by="ncd.trace.boxes_resampling")
IMPORT.unsupported(GridSampleGradOp, NOT_TRACED)
