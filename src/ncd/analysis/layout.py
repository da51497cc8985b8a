"""The tensors of a lowered diagram as the cost model sees them.

A :class:`Tensor` is one value in the generated code: its logical axes (in the code's
order), its *physical* order (names, outermost first; dense storage assumed), the storage
it views, whether it requires grad, and its dtype.  Views (movedim, copy, transpose) share
the storage; new storages are allocated by operations.  A reshape is a view exactly when the
dimensions it merges are adjacent in memory, in order, dims of size 1 aside (:meth:`Tensor.merges`).  A slice of a view leaves
a gap in memory beside the sliced dim: the order holds a :data:`GAP` name there (:func:`gap`), which no dim merges
across and which makes the view not contiguous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import sympy

from ncd.ir.axes import Axis

__all__ = ["Tensor", "ITEMSIZE", "numel", "mergeable"]

ITEMSIZE = {"float": 4, "index": 8, "bool": 1, "complex": 8}  # complex: two floats
#: the prefix of the names of gaps in a view's memory order (the entries a slice left out)
GAP = "…"
_gaps = iter(range(1 << 62))


def gap() -> str:
    """A fresh gap name for a view's order."""
    return f"{GAP}{next(_gaps)}"


@dataclass(frozen=True)
class Tensor:
    storage: int
    axes: tuple[Axis, ...]
    order: tuple[str, ...]
    grad: bool
    dtype: str = "float"
    #: False for overlapping windows (``unfold``): no two dims merge without a copy
    dense: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def numel(self) -> sympy.Expr:
        return numel(self.axes)

    def relabel(self, axes: Sequence[Axis]) -> Tensor:
        """The same storage seen with another logical order (a view: movedim, transpose)."""
        names = {a.name for a in axes}
        return replace(self, axes=tuple(axes), order=tuple(n for n in self.order if n in names or n.startswith(GAP)))

    @property
    def contiguous(self) -> bool:
        return self.dense and mergeable(self._strided, [self.names])

    def merges(self, groups: Sequence[Sequence[str]]) -> bool:
        """Whether ``reshape`` into these groups of dims is a view."""
        if not self.dense:
            return all(len([n for n in g if n in self.names]) <= 1 for g in groups)
        return mergeable(self._strided, groups)

    @property
    def _strided(self) -> tuple[str, ...]:
        """The order without the dims of size 1: torch's views and ``is_contiguous`` ignore their strides (one
        head of a packed ``qkv`` viewed ``(b, t, 3, 1, k)`` folds ``(b 1)`` as a view of the whole packed storage)."""
        ones = {a.name for a in self.axes if a.size == 1}
        return tuple(n for n in self.order if n not in ones) if ones else self.order


def numel(axes: Sequence[Axis]) -> sympy.Expr:
    """The number of elements of a tensor with these axes (a product of their sizes)."""
    return _product(tuple(a.size for a in axes))


@lru_cache(maxsize=4096)
def _product(sizes: tuple[sympy.Expr, ...]) -> sympy.Expr:
    """The product of ``sizes`` (memoised: a diagram has few distinct shapes, sympy products are slow)."""
    result = sympy.Integer(1)
    for s in sizes:
        result = result * s
    return result


def mergeable(order: Sequence[str], groups: Sequence[Sequence[str]]) -> bool:
    """Whether ``reshape`` to these groups of dims is a view of a dense tensor stored in ``order``.

    Each group's present dims must be adjacent in memory and in the same order.
    """
    position = {n: i for i, n in enumerate(order)}
    for group in groups:
        present = [position[n] for n in group if n in position]
        if present != list(range(present[0], present[0] + len(present))) if present else False:
            return False
    return True
