"""Sequential composition with type checking, automatic weaving and size unification.

``f >> g`` requires ``f.cod`` to equal ``g.dom``.  When it does not, ``g`` is *fitted*:
each of its input segments is matched by axis name against the corresponding segment of
``f.cod``; axes of ``f.cod`` that ``g`` does not use must lie before or after the axes it
uses, and ``g`` is broadcast (woven) over them — exactly the paper's convention that an
operation is broadcast over every wire it does not touch.  Where a matched axis has a bare
symbol as size on one side, the symbol is bound to the other side's size everywhere.  Any
other difference is a :class:`~ncd.errors.TypeMismatchError` naming both boxes, the axes
and the sizes.

>>> import ncd
>>> d = ncd.Linear("m -> k h") >> ncd.Softmax("k")
>>> str(d.cod)
'k h'
>>> (ncd.Identity.of("b t m") >> ncd.Linear("m -> n")).cod
Type('b t n')
"""

from __future__ import annotations

import sympy

from ncd.errors import TypeMismatchError
from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Diagram, Identity, Par, Seq, Weave, _woven_types, describe
from ncd.ir.size import size_text, sizes_equal
from ncd.limits import limits

__all__ = ["then", "fit", "mismatch"]


def mismatch(left: Diagram, right: Diagram, detail: str) -> TypeMismatchError:
    """The error for ``left >> right`` whose types disagree."""
    return TypeMismatchError(
        f"cannot compose {describe(left, 'output')}\n  with {describe(right, 'input')}:\n"
        f"  output of the first: '{_sized(left.cod)}'\n  input of the second: '{_sized(right.dom)}'\n  {detail}"
    )


def _sized(typ: Type) -> str:
    """Axes with their sizes (``k=4``); a scalar segment is ``()``, an empty type ``(nothing)``."""
    return ", ".join((" ".join(_axis_text(a) for a in seg) or "()") + _tag(seg) for seg in typ) or "(nothing)"


def _axis_text(axis: Axis) -> str:
    text = size_text(axis.size)
    return axis.name if text == axis.name else f"{axis.name}={text}"


def _tag(seg: Segment) -> str:
    return f" [{seg.dtype}]" if seg.dtype != "float" else ""


def then(left: Diagram, right: Diagram) -> Diagram:
    if not isinstance(right, Diagram):
        raise TypeMismatchError(f"cannot compose {describe(left)} with {type(right).__name__} {right!r}: not a diagram")
    if left.cod.same(right.dom):
        return Seq.of(left, right)
    fitted, left_map = _fit(right, left.cod, left)
    return Seq.of(left.subs(left_map) if left_map else left, fitted)


def fit(diagram: Diagram, target: Type, left: Diagram | None = None) -> tuple[Diagram, dict[sympy.Symbol, sympy.Expr]]:
    """Weave ``diagram`` over the axes of ``target`` it does not use, so that its domain is ``target``.

    Returns the woven diagram (with its placeholder sizes adopted from ``target``) and the
    bindings that the *left* side needs (its bare-symbol sizes that ``diagram`` fixes).
    """
    fitted, left_map = _fit(diagram, target, left)
    return fitted, left_map


Maps = tuple[Diagram, dict[sympy.Symbol, sympy.Expr]]


def _fit(diagram: Diagram, target: Type, left: Diagram | None) -> Maps:
    """Fit ``diagram`` to ``target``: returns it woven and substituted, and the left side's map.

    Sizes are unified per side: a bare symbol on the right (a placeholder such as ``x`` in
    ``LayerNorm("c x")``) adopts the left's size *within the right diagram only*; a bare symbol
    on the left adopts the right's size on the left.  A parallel composition is fitted part by
    part, so each part is woven only over the axes its own segments carry.
    """
    if isinstance(diagram, Par) and len(diagram.dom) == len(target) and not diagram.dom.same(target):
        parts: list[Diagram] = []
        left_map: dict[sympy.Symbol, sympy.Expr] = {}
        offset = 0
        for part in diagram.parts:
            n = len(part.dom)
            piece = Type(target.segments[offset : offset + n])
            fitted, lm = _fit(part, piece.subs(left_map), left)
            for key, value in lm.items():
                if key in left_map and not sizes_equal(left_map[key], value):
                    raise mismatch(left or Identity(target), diagram,
                                   f"size {key} would be {size_text(left_map[key])} and {size_text(value)} at once")
                left_map[key] = value
            parts.append(fitted)
            offset += n
        return Par.of(*parts), left_map
    if len(target) == len(diagram.dom):
        quick = _prefixed(diagram, target)
        if quick is not None:
            return quick, {}
    ctx = _Left(left, target)  # what errors name as the first side (the identity on ``target`` if none is given)
    dom = diagram.dom
    if len(dom) != len(target):
        raise mismatch(ctx.diagram(), diagram, f"the first gives {len(target)} segment(s), the second takes {len(dom)}")
    mapping: dict[sympy.Symbol, sympy.Expr] = {}  # the right side's placeholders
    left_mapping: dict[sympy.Symbol, sympy.Expr] = {}
    prefix: list[Axis] = []
    suffix: list[Axis] = []
    carried: list[dict[str, int]] = []  # per segment: woven axis name -> index in target segment
    known: dict[str, Axis] = {}  # the axes of prefix and suffix by name
    for j, (want, have) in enumerate(zip(target, dom)):
        if want.dtype != have.dtype:
            raise mismatch(ctx.diagram(), diagram, f"segment {j} holds {want.dtype} values but {have.dtype} values are expected")
        matched = _match(want, have)
        if matched is None:
            missing = [a.name for a in have.axes if a.name not in want.names]
            why = (
                f"axis {', '.join(missing)} of the second is not in segment {j} ('{want}') of the first"
                if missing
                else f"the axes of segment {j} come in another order ('{want}' against '{have}'); add a transpose"
            )
            raise mismatch(ctx.diagram(), diagram, why)
        for t_index, h_index in enumerate(matched):
            if h_index is None:
                continue
            a, b = want.axes[t_index], have.axes[h_index]
            if a.size is b.size and not left_mapping and not mapping:
                continue  # the same size, nothing to unify (the usual case: a box fitted to the wires it reads)
            _unify_sizes(a.size, b.size, left_mapping, mapping, ctx, diagram, f"axis {a.name}")
        if want.dtype == "index" and not sizes_equal(want.range, have.range):
            _unify_sizes(want.range, have.range, left_mapping, mapping, ctx, diagram,
                         f"the index range of segment {j}")
        used = [i for i, h in enumerate(matched) if h is not None]
        extras: dict[str, int] = {}
        for i, h in enumerate(matched):
            if h is not None:
                continue
            axis = want.axes[i]
            if used and used[0] < i < used[-1]:
                raise mismatch(ctx.diagram(), diagram, f"axis {axis.name} of segment {j} lies between axes the second"
                               " uses; transpose it out first")
            if axis.name in extras:
                raise mismatch(ctx.diagram(), diagram, f"axis {axis.name} occurs twice among the axes to broadcast over")
            extras[axis.name] = i
            side = prefix if (not used or i < used[0]) else suffix
            if axis.name in known:
                if not known[axis.name].same(axis):
                    raise mismatch(ctx.diagram(), diagram, f"axis {axis.name} has size {size_text(known[axis.name].size)} in one"
                                   f" segment and {size_text(axis.size)} in another")
            else:
                side.append(axis)
                known[axis.name] = axis
        carried.append(extras)
    woven = [a.subs(left_mapping) for a in prefix + suffix] if left_mapping else prefix + suffix
    result = diagram.subs(mapping) if mapping else diagram
    if not woven:
        return result, left_mapping
    own_cod = [list(seg.names) for seg in result.cod]
    # Final layouts: inputs exactly as in target; outputs prefix + own + suffix.
    final_cod = [[a.name for a in prefix] + names + [a.name for a in suffix] for names in own_cod]
    depth = result.nesting()
    names = {a.name for a in woven}
    # The positions below are within their segments and some input carries each axis, by construction: a weave is
    # built without repeating those checks (a tenth of a trace's fitting), unless an axis woven would also be an own
    # axis of the box (or the weave too deep), whose error the checked construction raises as it always did.
    checked = depth + len(woven) > limits().nesting or any(
        n in carried[j] for j, seg in enumerate(result.dom) for n in seg.names) or any(
        n in names for seg in result.cod for n in seg.names)
    inner_names: set[str] = set()
    for axis in reversed(woven):
        name = axis.name
        inner_names.add(name)
        dom_pos: list[int | None] = []
        for j, want in enumerate(target):
            extras = carried[j]
            if name not in extras:
                dom_pos.append(None)
                continue
            # where it sits among the wires the inner weave keeps (the box's own and the axes woven inside it)
            axes = want.axes
            dom_pos.append(sum(1 for i in range(extras[name]) if axes[i].name not in extras or axes[i].name in inner_names))
        cod_pos = tuple(_slot(out, own_cod[j], len(prefix), name, inner_names) for j, out in enumerate(final_cod))
        if checked:
            result = Weave(result, axis, tuple(dom_pos), cod_pos)
            continue
        depth += 1
        node = Weave.__new__(Weave)
        dom, cod = _woven_types(result.dom, result.cod, axis, tuple(dom_pos), cod_pos)
        node.__dict__.update(inner=result, axis=axis, dom_pos=tuple(dom_pos), cod_pos=cod_pos, dom=dom, cod=cod,
                             _nesting=depth)
        result = node
    return result, left_mapping


def _prefixed(diagram: Diagram, target: Type) -> Diagram | None:
    """The usual fit, found without the general walk: each segment of ``target`` is the box's input (the very same
    axes) after axes of other names (those of every segment in one order, the same axis objects where two segments
    have one), and no output has those names.  The box is woven over them in front of every input that has them and
    of every output, as the general walk weaves it; ``None`` in any other case (the walk decides, and raises)."""
    woven: dict[str, Axis] = {}  # the axes to weave over, in the order the walk meets them
    carried: list[set[str]] = []
    for want, have in zip(target.segments, diagram.dom.segments):
        axes, own = want.axes, have.axes
        k = len(axes) - len(own)
        if k < 0 or want.dtype != have.dtype or want.range is not have.range:
            return None
        for a, b in zip(axes[k:], own):
            if a is not b:
                return None
        names = {a.name for a in axes[:k]}
        if len(names) < k or any(a.name in names for a in own):
            return None
        last = -1
        for a in axes[:k]:  # in the order of the axes met before (each weave then sits in front of the inner ones)
            if a.name in woven:
                if woven[a.name] is not a:
                    return None
                at = list(woven).index(a.name)
                if at < last:
                    return None
                last = at
            else:
                woven[a.name] = a
                last = len(woven) - 1
        carried.append(names)
    depth = diagram.nesting()
    if not woven or depth + len(woven) > limits().nesting \
            or any(a.name in woven for seg in diagram.cod for a in seg.axes):
        return None
    result = diagram
    cod_pos = (0,) * len(diagram.cod)
    for name, axis in reversed(woven.items()):
        depth += 1
        dom_pos = tuple(0 if name in names else None for names in carried)
        node = Weave.__new__(Weave)
        dom, cod = _woven_types(result.dom, result.cod, axis, dom_pos, cod_pos)
        node.__dict__.update(inner=result, axis=axis, dom_pos=dom_pos, cod_pos=cod_pos, dom=dom, cod=cod, _nesting=depth)
        result = node
    return result


class _Left:
    """The left side a fit's error names: ``left``, or else the identity on ``target``, built only when an error is
    raised (most fits succeed, and building it was a tenth of fitting a box)."""

    __slots__ = ("left", "target")

    def __init__(self, left: Diagram | None, target: Type) -> None:
        self.left, self.target = left, target

    def diagram(self) -> Diagram:
        return self.left if self.left is not None else Identity(self.target)


def _is_woven_slot(k: int, names: list[str], own: list[str], n_prefix: int) -> bool:
    return k < n_prefix or k >= n_prefix + len(own)


def _slot(names: list[str], own: list[str], n_prefix: int, axis: str, inner: set[str]) -> int:
    """Index of woven ``axis`` in an output layout restricted to own axes and inner woven axes."""
    position = 0
    for k, n in enumerate(names):
        woven_slot = _is_woven_slot(k, names, own, n_prefix)
        if woven_slot and n == axis:
            return position
        if not woven_slot or n in inner:
            position += 1
    raise AssertionError(axis)


def _match(want: Segment, have: Segment) -> list[int | None] | None:
    """For each axis of ``want``, the index of the axis of ``have`` it matches (in order), or ``None``."""
    result: list[int | None] = [None] * len(want.axes)
    start = 0
    for h_index, axis in enumerate(have.axes):
        for t_index in range(start, len(want.axes)):
            if want.axes[t_index].name == axis.name:
                result[t_index] = h_index
                start = t_index + 1
                break
        else:
            return None
    return result


def _unify_sizes(
    a: sympy.Expr,
    b: sympy.Expr,
    left_map: dict[sympy.Symbol, sympy.Expr],
    right_map: dict[sympy.Symbol, sympy.Expr],
    left: _Left,
    right: Diagram,
    what: str,
) -> None:
    """Make size ``a`` (left) and ``b`` (right) equal, adopting a bare symbol on either side."""
    a2, b2 = a.xreplace(left_map), b.xreplace(right_map)
    if sizes_equal(a2, b2):
        return
    if isinstance(b2, sympy.Symbol):
        right_map[b2] = a2
    elif isinstance(a2, sympy.Symbol) and a2 not in b2.free_symbols:
        left_map[a2] = b2
    else:
        raise mismatch(left.diagram(), right, f"{what} has size {size_text(a)} in the first and {size_text(b)} in the second")
