"""Where woven (broadcast) axes sit around a box, and whether a box is lowered with them in place.

A box inside a chain of :class:`~ncd.ir.diagram.Weave` nodes sees its inputs with extra
axes: ``woven[w].dom_pos[j]`` is where woven axis ``w`` sits in input ``j`` (``None``: that
input is shared), ``cod_pos[j]`` where it sits in output ``j``.  :class:`WeaveView` reads
those layouts; :func:`lowers_in_place` is the *one* decision, taken from the primitive's
declared :attr:`~ncd.ir.primitive.Primitive.weave_policy`, of whether the box runs on the
woven layout directly or whether the woven axes are first moved to the front (and back
after).  Code generation and the cost analysis both ask this function, so they agree by
construction — nothing is decided by running a lowering rule.

The policies below are pure functions of the layout (never of sizes):

>>> import ncd
>>> from ncd.ir.diagram import unweave
>>> inner, woven = unweave(ncd.Identity.of("b t m") >> ncd.LayerNorm("m"))
>>> lowers_in_place(inner, woven)
True
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from ncd.errors import LoweringError

if TYPE_CHECKING:
    from ncd.ir.axes import Axis
    from ncd.ir.diagram import Box
    from ncd.ir.primitive import Primitive

__all__ = ["Side", "WovenAxis", "WeaveView", "WeavePolicy", "lowers_in_place", "uniform", "never", "always", "same_layouts",
           "same_inputs_and_output", "input_like_output", "woven_kept", "same_weave", "trailing", "own_last",
           "mask_aligned", "einsum_letters", "einsum_letters_error"]

Side = Literal["dom", "cod"]
Marker = tuple[str, int]


class WovenAxis(Protocol):
    """A woven axis: a :class:`~ncd.ir.diagram.Weave` node or the code generator's record of one."""

    @property
    def axis(self) -> Axis: ...

    @property
    def dom_pos(self) -> tuple[int | None, ...]: ...

    @property
    def cod_pos(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class WeaveView:
    """A box with its woven axes (outermost first): the layout of every input and output."""

    box: Box
    woven: Sequence[WovenAxis]

    def markers(self, side: Side, j: int) -> list[Marker]:
        """Layout of input (``side="dom"``) or output ``j``: ``("own", k)`` or ``("woven", w)`` per axis."""
        own = (self.box.dom if side == "dom" else self.box.cod)[j]
        layout: list[Marker] = [("own", k) for k in range(len(own))]
        for w in reversed(range(len(self.woven))):
            pos = (self.woven[w].dom_pos if side == "dom" else self.woven[w].cod_pos)[j]
            if pos is not None:
                layout.insert(pos, ("woven", w))
        return layout

    def own_dims(self, side: Side, j: int) -> list[int]:
        """Negative dims of the box's own axes in the full layout of input/output ``j``."""
        layout = self.markers(side, j)
        n = len(layout)
        dims = {k: i - n for i, (kind, k) in enumerate(layout) if kind == "own"}
        return [dims[k] for k in range(len(dims))]

    def sides(self) -> list[tuple[Side, int]]:
        return [("dom", j) for j in range(len(self.box.dom))] + [("cod", j) for j in range(len(self.box.cod))]


WeavePolicy = Callable[[WeaveView], bool]


def lowers_in_place(box: Box, woven: Sequence[WovenAxis]) -> bool:
    """Whether ``box`` is lowered (and costed) on its woven layout directly.

    True without woven axes; otherwise the weave must be *uniform* (every woven axis keeps
    its side of the box's own axes, in the same order, everywhere) and the primitive's
    ``weave_policy`` must accept the layout.
    """
    if not woven:
        return True
    return _in_place(box.prim, tuple((w.dom_pos, w.cod_pos) for w in woven))


@functools.lru_cache(maxsize=4096)
def _in_place(prim: Primitive, positions: tuple[tuple[tuple[int | None, ...], tuple[int, ...]], ...]) -> bool:
    """:func:`lowers_in_place` for a primitive and the positions of its woven axes (all the decision reads:
    a box's types are its primitive's signature, and policies read layouts, never sizes or labels)."""
    from ncd.ir.diagram import Box

    view = WeaveView(Box(prim), tuple(_Positions(dom, cod) for dom, cod in positions))
    return uniform(view) and type(prim).weave_policy(view)


@dataclass(frozen=True)
class _Positions:
    """A woven axis as the layout sees it: its position in each input and output."""

    dom_pos: tuple[int | None, ...]
    cod_pos: tuple[int, ...]

    @property
    def axis(self) -> Axis:
        raise TypeError("a weave policy reads the layout (positions), never the woven axis itself")


def uniform(view: WeaveView) -> bool:
    """Every woven axis keeps its place (before or after the box's own axes, in the same order)
    in every input that carries it and in every output.

    Weave-aware rules are written for such weaves (the ones composition builds); any other
    weave — an axis that moves, or sits between the box's own axes — is lowered generically.
    """

    def sides(layout: list[Marker]) -> list[tuple[int, str]] | None:
        own = [i for i, (kind, _) in enumerate(layout) if kind == "own"]
        result = []
        for i, (kind, w) in enumerate(layout):
            if kind != "woven":
                continue
            if own and own[0] < i < own[-1]:
                return None
            result.append((w, "before" if not own or i < own[0] else "after"))
        return result

    layouts = [sides(view.markers(side, j)) for side, j in view.sides()]
    known = [layout for layout in layouts if layout is not None]
    if len(known) != len(layouts):
        return False
    full = max(known, key=len)
    return all(layout == [x for x in full if x in layout] for layout in known)


# -- policies -------------------------------------------------------------------------------------
def never(view: WeaveView) -> bool:
    """The woven axes are always moved to the front first (the default)."""
    return False


def always(view: WeaveView) -> bool:
    """The lowering handles any uniform weave in place (elementwise functions, einsum letters, ...)."""
    return True


def same_layouts(view: WeaveView) -> bool:
    """Every input has the same layout (``a + b``, ``a * b`` without broadcasting by position)."""
    first = view.markers("dom", 0)
    return all(view.markers("dom", j) == first for j in range(len(view.box.dom)))


def same_inputs_and_output(view: WeaveView) -> bool:
    """Every input and output has the same layout."""
    first = view.markers("dom", 0)
    return all(view.markers(side, j) == first for side, j in view.sides())


def input_like_output(view: WeaveView) -> bool:
    """The first input is laid out like the first output (masks, ...)."""
    return view.markers("dom", 0) == view.markers("cod", 0)


def woven_kept(view: WeaveView) -> bool:
    """The woven axes sit at the same positions in the input and the output (transposes)."""
    woven_in = [m for m in enumerate(view.markers("dom", 0)) if m[1][0] == "woven"]
    woven_out = [m for m in enumerate(view.markers("cod", 0)) if m[1][0] == "woven"]
    return woven_in == woven_out


def _collapsed(view: WeaveView, side: Side, j: int) -> list[object]:
    """The layout with the run of the box's own axes collapsed to one marker."""
    out: list[object] = []
    for kind, k in view.markers(side, j):
        if kind == "woven":
            out.append(k)
        elif not out or out[-1] != "own":
            out.append("own")
    return out


def same_weave(view: WeaveView) -> bool:
    """Every input and output has the same woven axes around one contiguous block of own axes."""
    for side, j in view.sides():
        dims = view.own_dims(side, j)
        if dims and dims != list(range(dims[0], dims[0] + len(dims))):
            return False
    shapes = [_collapsed(view, side, j) for side, j in view.sides()]
    # a scalar own segment has no marker: compare the woven order only, plus where "own" sits when present
    first = [m for m in shapes[0] if m != "own"]
    if any([m for m in shape if m != "own"] != first for shape in shapes):
        return False
    return len({shape.index("own") for shape in shapes if "own" in shape}) <= 1


def trailing(view: WeaveView) -> bool:
    """Own axes last on both sides, woven axes in the same order before them (``nn.Embedding``)."""
    dom, cod = view.markers("dom", 0), view.markers("cod", 0)
    woven_dom = [m for m in dom if m[0] == "woven"]
    woven_cod = [m for m in cod if m[0] == "woven"]
    return woven_dom == dom[: len(woven_dom)] and woven_cod == cod[: len(woven_cod)] and woven_dom == woven_cod


def own_last(view: WeaveView) -> bool:
    """The input's own axes are its last ones and the output is laid out like it (``nn.LayerNorm``)."""
    n = len(view.box.dom[0])
    return view.own_dims("dom", 0) == list(range(-n, 0)) and input_like_output(view)


def mask_aligned(view: WeaveView) -> bool:
    """Scores laid out like the output, and the mask's axes in the scores' order (padding masks)."""
    if not input_like_output(view):
        return False
    want, have = view.markers("dom", 0), view.markers("dom", 1)
    return [m for m in want if m in have] == have


def einsum_letters(count: int, box: Box, names: Sequence[str], used: Collection[str] = ()) -> list[str]:
    """``count`` of torch.einsum's 52 subscript letters (``a``-``z``, ``A``-``Z``, in that order) not in ``used``: every
    lowering that spells an einsum takes its letters here.  Too few is :func:`einsum_letters_error` naming ``box`` and
    the axes ``names`` (torch refuses more than 52 letters in both its string and its sublist forms)."""
    spare = [c for c in string.ascii_letters if c not in used]
    if count > len(spare):
        raise einsum_letters_error(box, list(names), count + len(string.ascii_letters) - len(spare))
    return spare[:count]


def einsum_letters_error(box: Box, names: list[str], count: int | None = None) -> LoweringError:
    """The error for a box whose einsum (its own axes and those woven around it) needs more than torch.einsum's 52
    subscript letters (``count``: how many, when not one per name): it names the box, its axes and the limit."""
    from ncd.ir.diagram import describe

    shown = " ".join(names[:12]) + (f" … {names[-1]}" if len(names) > 12 else "")
    return LoweringError(f"{describe(box)}: its einsum needs {count or len(names)} distinct letters (axes {shown}), more"
                         " than the 52 letters torch.einsum accepts; split the box or merge axes (e.g. with Reshape) before it")
