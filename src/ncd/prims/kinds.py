"""Family rule builders: a linear or multilinear primitive's backward, derived from its ``kind``.

The paper's reading of backpropagation is that derivatives are linear maps; for a primitive that is
itself linear (``kind = "linear"``) or linear in each input separately (``kind = "multilinear"``)
the backward follows from one piece of data, registered beside the primitive:

* :func:`transpose` — a linear primitive gives its **transpose**, a diagram ``∂cod -> ∂dom``;
  the backward applies it to the cotangent and stores nothing (a primitive linear in its data given
  index inputs — a gather at positions — names those inputs ``stored``: the transpose reads them first);
* :func:`partials` — a multilinear primitive gives, for each input ``i``, the diagram
  ``(∂cod, x_j for j ≠ i) -> ∂x_i`` (the product with every other factor held fixed); the backward
  stores the inputs (when there is more than one) and routes the cotangent and the other factors
  to each partial.

Both register in :data:`ncd.ir.rules.BACKWARD` and record the primitive in :data:`DERIVED`, which the
coverage test reads to check that every such primitive's backward is derived from its kind.

>>> from ncd.ir.rules import load
>>> load()
>>> DERIVED["einsum"], DERIVED["roll"]
('multilinear', 'linear')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ncd.ir.axes import Type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, BoxBackward

__all__ = ["transpose", "partials", "DERIVED"]

P = TypeVar("P", bound=Primitive)

#: primitive ``op`` -> the kind its backward was derived from
DERIVED: dict[str, Kind] = {}


def _check(classes: tuple[type[Primitive], ...], kind: Kind) -> None:
    for cls in classes:
        if cls.kind != kind:
            raise TypeError(f"{cls.__name__} is of kind {cls.kind!r}: only a {kind} primitive derives its backward so")
        DERIVED[cls.op] = kind


def transpose(*classes: type[P], stored: tuple[int, ...] | Callable[[P], tuple[int, ...]] = ()) -> Callable[
        [Callable[[P, Box], Diagram]], Callable[[P, Box], Diagram]]:
    """Decorator: ``fn(prim, box) -> ∂cod ⟶ ∂dom`` is the transpose of the linear primitives ``classes``.

    Their backward is that transpose (a linear map's derivative is itself), storing nothing but the
    index inputs ``stored`` it is linear given (their values come first, then the cotangent; a function of the
    primitive when that depends on it: a gather of integers has no cotangent and needs no positions).
    """
    _check(classes, "linear")

    def register(fn: Callable[[P, Box], Diagram]) -> Callable[[P, Box], Diagram]:
        def backward(prim: P, box: Box, builder: object) -> BoxBackward:
            if not any(seg.dtype == "float" for seg in (*box.dom, *box.cod)):  # indices or flags moved: no cotangent
                return BoxBackward((), Identity(Type(())))
            keep = tuple(("in", j) for j in (stored(prim) if callable(stored) else stored))
            return BoxBackward(keep, fn(prim, box))

        backward.__doc__ = fn.__doc__
        BACKWARD.rule(*classes)(backward)
        return fn

    return register


def partials(*classes: type[P]) -> Callable[[Callable[[P, Box, int], Diagram]], Callable[[P, Box, int], Diagram]]:
    """Decorator: ``fn(prim, box, i) -> (∂cod, x_j≠i) ⟶ ∂x_i`` gives the partial transposes of multilinear ``classes``.

    Their backward stores every input (none when there is only one: then the map is linear), copies the
    cotangent to each partial and feeds it the other inputs, in order.
    """
    _check(classes, "multilinear")

    def register(fn: Callable[[P, Box, int], Diagram]) -> Callable[[P, Box, int], Diagram]:
        def backward(prim: P, box: Box, builder: object) -> BoxBackward:
            from ncd.prims.structure import cot, route

            inputs = list(box.dom)
            n = len(inputs)
            segments = (inputs if n > 1 else []) + list(cot(box.cod))
            g = len(segments) - 1
            picks: list[int] = []
            for i in range(n):
                picks += [g] + ([j for j in range(n) if j != i] if n > 1 else [])
            stored = tuple(("in", j) for j in range(n)) if n > 1 else ()
            return BoxBackward(stored, Seq.of(route(segments, picks), Par.of(*(fn(prim, box, i) for i in range(n)))))

        backward.__doc__ = fn.__doc__
        BACKWARD.rule(*classes)(backward)
        return fn

    return register
