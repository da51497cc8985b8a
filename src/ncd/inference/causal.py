"""Which axes a causal diagram is decoded over: the token axis, the names it is renamed to, the causal masks' query
and key axes and their sliding windows, and the checks that the diagram is causal and unambiguous by names alone.

:func:`ncd.inference.derive.derive` reads these before it walks the diagram; ``ncd.decode`` finds the token axis here.
"""

from __future__ import annotations

from ncd.inference.errors import DecodeError
from ncd.inference.windows import (
    window_of,
)
from ncd.ir.axes import Axis
from ncd.ir.diagram import Box, Diagram
from ncd.ir.size import Size, sizes_equal
from ncd.prims.attention import CausalMaskOp
from ncd.prims.opaque import ViewOp
from ncd.prims.scan import ScanOp
from ncd.prims.softmax import SoftmaxOp
from ncd.prims.structure import RenameOp

__all__ = ["causal_axes", "require_causal", "token_axis", "token_names", "windows_of"]


def windows_of(diagram: Diagram) -> dict[str, Size]:
    """The sliding window of the causal masks, by key axis (an error if one key axis has two)."""
    found: dict[str, Size] = {}
    for b in diagram.boxes():
        if isinstance(b.prim, CausalMaskOp):
            name, window = b.prim.key.name, b.prim.window
            if name in found and (window is None or not sizes_equal(found[name], window)) or \
                    window is None and any(isinstance(c.prim, CausalMaskOp) and c.prim.key.name == name
                                           and c.prim.window is not None for c in diagram.boxes()):
                raise DecodeError(f"causal masks over the key axis {name} have different windows; name their key axes apart")
            if window is not None:
                found[name] = window
    return found


def causal_axes(diagram: Diagram) -> tuple[frozenset[str], frozenset[str]]:
    """The query and key axes of every causal mask in ``diagram``."""
    queries, keys = set(), set()
    for b in diagram.boxes():
        if isinstance(b.prim, CausalMaskOp):
            queries.add(b.prim.query.name)
            keys.add(b.prim.key.name)
    return frozenset(queries), frozenset(keys)


def require_causal(diagram: Diagram, tokens: frozenset[str] = frozenset()) -> frozenset[str]:
    """The key axes of ``diagram``'s causal masks; an error if it has none, no scan (a recurrence) and no convolution or
    shift over the ``tokens`` axes (a window of past positions)."""
    _, keys = causal_axes(diagram)
    if not keys and not any(isinstance(b.prim, ScanOp) or _windowed(b, tokens) for b in diagram.boxes()):
        raise DecodeError(
            "decode: the diagram has no causal mask (◸), so a new token's dependence on earlier positions is not"
            " stated; decode needs a causal model (e.g. heads_attention(..., mask='causal'))"
        )
    return keys


def _windowed(box: Box, tokens: frozenset[str]) -> bool:
    try:
        return window_of(box.prim, tokens, box.text()) is not None
    except DecodeError:
        return True  # over the token axis, but not causal: the walk says why


def _require_unambiguous(diagram: Diagram, token: Axis, keys: frozenset[str]) -> None:
    """Refuse what names alone cannot tell apart: a token name that is also another input's wire, or an attention
    over a key axis that no causal mask covers (a bidirectional or cross attention sharing the key's name)."""
    names = token_names(diagram, token.name)
    others = {a.name for seg in diagram.dom for a in seg.axes if a.name != token.name} & names
    if others:
        raise DecodeError(f"decode: the inputs '{diagram.dom}' carry {', '.join(sorted(others))}, which the token axis"
                          f" {token.name} is also renamed to; decode follows wires by name, so rename one of them")
    masks = sum(1 for b in diagram.boxes() if isinstance(b.prim, CausalMaskOp))
    softmaxes = [b for b in diagram.boxes() if isinstance(b.prim, SoftmaxOp) and b.prim.axis.name in keys]
    if len(softmaxes) > masks:
        raise DecodeError(
            f"decode: {len(softmaxes)} softmaxes over the key axes {', '.join(sorted(keys))} but {masks} causal mask(s):"
            " an attention over those keys is not causal (bidirectional, or cross attention sharing the key's name),"
            " so a new token's step cannot be derived from the diagram"
        )


def token_axis(diagram: Diagram, name: str | None = None) -> Axis:
    """The token axis: ``name`` if given, else the item axis of the first input (``~t`` in ``~t [v]``)."""
    for seg in diagram.dom:
        for a in seg.axes:
            if (name is None and a.is_item) or a.name == name:
                return a
    if name is not None:
        raise DecodeError(f"decode: the axis {name!r} is not an input wire of '{diagram.dom}'")
    raise DecodeError(f"decode: no item axis (such as ~t) among the inputs '{diagram.dom}'; name the token axis,"
                      " e.g. ncd.decode(d, tokens='t')")


def token_names(diagram: Diagram, token: str) -> frozenset[str]:
    """``token`` and every name it is renamed to (queries ``y``, keys ``x``)."""
    names = {token}
    changed = True
    while changed:
        changed = False
        for b in diagram.boxes():
            pairs: list[tuple[str, str | None]] = []
            if isinstance(b.prim, RenameOp):
                pairs = [(a.name, n) for a, n in zip(b.prim.segment.axes, b.prim.names)]
            elif isinstance(b.prim, ViewOp):
                pairs = [(n, _renamed_by_view(b.prim, n)) for n in b.prim.source.names]
            for old, new in pairs:
                if old in names and new is not None and new not in names:
                    names.add(new)
                    changed = True
    return frozenset(names)


def _renamed_by_view(prim: ViewOp, name: str) -> str | None:
    """What a view calls the axis ``name`` of its source, when it keeps it whole (same size), else ``None``."""
    source, target = prim.source, prim.target
    k = source.names.index(name)
    if name in target.names and sizes_equal(target.axis(name).size, source.axes[k].size):
        return name
    if len(source) == len(target) and all(sizes_equal(a.size, b.size) for a, b in zip(source.axes, target.axes)):
        return target.axes[k].name
    return None
