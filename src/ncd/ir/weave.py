"""The weave: a diagram broadcast over one extra axis (:class:`Weave`, made by :meth:`Diagram.weave`), possibly
*inner* (some input segments shared by every instance), and :func:`unweave`, what a chain of weaves broadcasts.

>>> import ncd
>>> w = ncd.Softmax("x").weave("b")
>>> type(w).__name__, str(w.dom)
('Weave', 'b x')
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import sympy

from ncd.errors import TypeMismatchError
from ncd.ir.axes import Axis, Type
from ncd.ir.checks import _nest, _set, describe
from ncd.ir.diagram import Diagram
from ncd.ir.size import Substitution

__all__ = ["Weave", "unweave"]


@functools.lru_cache(maxsize=8192)
def _woven_types(dom: Type, cod: Type, axis: Axis, dom_pos: tuple[int | None, ...], cod_pos: tuple[int, ...]
                 ) -> tuple[Type, Type]:
    """A weave's types: ``axis`` inserted at each position of its inner types.  Equal weaves share them (a chain of
    10,000 woven boxes makes a few distinct types, not 20,000): their hashes are computed once, and comparisons of
    the types of neighbouring parts (``same``, memo keys) find the very same object."""
    return (Type(tuple(s if p is None else s.insert(p, axis) for s, p in zip(dom, dom_pos))),
            Type(tuple(s.insert(p, axis) for s, p in zip(cod, cod_pos))))


@dataclass(frozen=True, repr=False)
class Weave(Diagram):
    """``inner`` broadcast over ``axis``.

    ``dom_pos[j]`` is where the axis sits in input segment ``j`` (``None``: that segment
    does not carry it and is shared by every instance — inner broadcasting);
    ``cod_pos[j]`` is where it sits in output segment ``j``.  Indexing the axis after the
    operation equals indexing it before (what ``torch.vmap`` does).
    """

    inner: Diagram
    axis: Axis
    dom_pos: tuple[int | None, ...]
    cod_pos: tuple[int, ...]

    def __post_init__(self) -> None:
        inner = self.inner
        if len(self.dom_pos) != len(inner.dom) or len(self.cod_pos) != len(inner.cod):
            raise TypeMismatchError(
                f"weave over {self.axis.name}: {len(self.dom_pos)} input and {len(self.cod_pos)} output positions"
                f" given for {describe(inner)} of type '{inner.dom}' -> '{inner.cod}'"
            )
        if inner.dom and all(p is None for p in self.dom_pos):
            raise TypeMismatchError(
                f"weave over {self.axis.name}: no input segment of {describe(inner)} carries the axis"
            )
        pairs = (*zip(self.dom_pos, inner.dom.segments), *zip(self.cod_pos, inner.cod.segments))
        for p, seg in pairs:
            if p is not None and not 0 <= p <= len(seg.axes):
                raise TypeMismatchError(
                    f"weave over {self.axis.name}: position {p} is outside segment '{seg}' of {describe(inner)}"
                )
        name = self.axis.name
        for p, seg in pairs:
            if p is not None:
                for a in seg.axes:
                    if a.name == name:
                        raise TypeMismatchError(f"weave over {name}: segment '{seg}' of {describe(inner)} already"
                                                f" has an axis {name}; rename one of them")
        dom, cod = _woven_types(inner.dom, inner.cod, self.axis, self.dom_pos, self.cod_pos)
        _set(self, dom=dom, cod=cod)
        _nest(self, inner.nesting())

    def children(self) -> tuple[Diagram, ...]:
        return (self.inner,)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Diagram:
        if not mapping:
            return self
        if not isinstance(mapping, Substitution):
            return Weave(self.inner.subs(mapping), self.axis.subs(mapping), self.dom_pos, self.cod_pos)
        # positions and names do not change under a substitution: the checks of __post_init__ still hold
        node = Weave.__new__(Weave)
        _set(node, inner=self.inner.subs(mapping), axis=self.axis.subs(mapping), dom_pos=self.dom_pos,
             cod_pos=self.cod_pos, dom=self.dom.subs(mapping), cod=self.cod.subs(mapping), _nesting=self.nesting())
        return node

    def _own_symbols(self) -> set[sympy.Symbol]:
        return set(self.axis.size.free_symbols)


def unweave(diagram: Diagram) -> tuple[Diagram, tuple[Weave, ...]]:
    """What a chain of weaves broadcasts, and the weaves, outermost first.

    >>> import ncd
    >>> core, weaves = unweave(ncd.Softmax("x").weave("b", "h"))
    >>> core.text(), [w.axis.name for w in weaves]
    ('◁', ['b', 'h'])
    """
    weaves: list[Weave] = []
    while isinstance(diagram, Weave):
        weaves.append(diagram)
        diagram = diagram.inner
    return diagram, tuple(weaves)
