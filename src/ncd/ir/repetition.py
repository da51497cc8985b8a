"""Repetition: a block repeated over an iteration variable, with its own parameters each time.

:class:`Repeat` is the one node kind of :mod:`ncd.ir.diagram` that the others never name; it lives here, and
``ncd.ir.diagram`` hands it out under its old names (``from ncd.ir.diagram import Repeat, repeat`` still works).

>>> import ncd
>>> r = ncd.repeat(lambda i: ncd.Linear("m -> m").block("layer"), "i", 0, "N")
>>> r.count(N=3), str(r.dom)
(3, 'm')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import sympy

from ncd.errors import SizeError, TypeMismatchError
from ncd.ir.checks import _nest, _set
from ncd.ir.diagram import Diagram
from ncd.ir.names import check_text
from ncd.ir.size import Size, SizeLike, evaluate, size, substitute, symbol

__all__ = ["Repeat", "repeat"]


@dataclass(frozen=True, repr=False)
class Repeat(Diagram):
    """``body`` applied for ``var`` = ``start`` … ``stop``−1, each time with its own parameters.

    Sizes inside ``body`` may depend on ``var``; the checker requires the output type of
    iteration ``i`` to equal the input type of iteration ``i+1``.
    """

    body: Diagram
    var: str
    start: Size
    stop: Size
    name: str | None = None

    def __post_init__(self) -> None:
        check_text(self.var, "a repetition variable")
        if self.name is not None:
            check_text(self.name, "a repetition name")
        i = symbol(self.var)
        step_dom = self.body.dom.subs({i: i + 1})
        if not self.body.cod.same(step_dom):
            raise TypeMismatchError(
                f"repeat {self.name or self.var!r}: iteration {self.var} outputs '{self.body.cod}' but iteration"
                f" {self.var}+1 takes '{step_dom}'; a repetition must feed its output back as its input"
            )
        if not self.start.free_symbols and not self.stop.free_symbols and int(self.stop) <= int(self.start):
            raise SizeError(f"repeat {self.name or self.var!r}: {self.var} runs from {self.start} to {self.stop}, which is empty")
        _set(self, dom=self.body.dom.subs({i: self.start}), cod=self.body.cod.subs({i: self.stop - 1}))
        _nest(self)

    def children(self) -> tuple[Diagram, ...]:
        return (self.body,)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Diagram:
        if not mapping:
            return self
        inner = {k: v for k, v in mapping.items() if k != symbol(self.var)}
        return Repeat(self.body.subs(inner), self.var, substitute(self.start, inner), substitute(self.stop, inner), self.name)

    def _own_symbols(self) -> set[sympy.Symbol]:
        return set(self.start.free_symbols | self.stop.free_symbols)

    def walk(self) -> Iterator[Diagram]:
        yield self
        i = symbol(self.var)
        if i not in self.body.free_symbols:  # (cached per node) no node inside reads the variable: none is shadowed
            yield from self.body.walk()
            return
        for node in self.body.walk():
            if isinstance(node, Repeat) or not (node._own_symbols() & {i}):
                yield node
            else:  # the iteration variable is bound here, not free
                yield _Shadow(node, i)

    def count(self, /, **sizes: int) -> int:
        return evaluate(self.stop - self.start, sizes, what=f"repetition count of {self.name or self.var!r}")

    def iteration(self, index: int) -> Diagram:
        """The body at ``var = index`` (the body itself when no size of it depends on ``var``)."""
        i = symbol(self.var)
        uses = self.__dict__.get("_uses_var")
        if uses is None:  # asked once per repetition: unrolling n iterations of a fixed body stays O(n)
            uses = i in self.body.free_symbols
            _set(self, _uses_var=uses)
        return self.body.subs({i: sympy.Integer(index)}) if uses else self.body


class _Shadow(Diagram):
    """A node seen from outside a repeat: its iteration variable does not count as free."""

    def __init__(self, node: Diagram, var: sympy.Symbol) -> None:
        self.node, self.var = node, var
        self.dom, self.cod = node.dom, node.cod

    def _own_symbols(self) -> set[sympy.Symbol]:
        return self.node._own_symbols() - {self.var}

    def walk(self) -> Iterator[Diagram]:
        yield self


def repeat(
    body: Diagram | Callable[[sympy.Symbol], Diagram],
    var: str = "i",
    start: SizeLike = 0,
    stop: SizeLike = "N",
    name: str | None = None,
) -> Repeat:
    """Repeat ``body`` for ``var`` in ``start … stop−1``; ``body`` may be a function of the variable.

    >>> import ncd
    >>> r = ncd.repeat(lambda i: ncd.Linear("m -> m", bias=True).block("layer"), "i", 0, "N")
    >>> sorted(str(s) for s in r.free_symbols)
    ['N', 'm']
    """
    built = body(symbol(var)) if callable(body) and not isinstance(body, Diagram) else body
    if not isinstance(built, Diagram):
        raise TypeMismatchError(f"repeat: the body must be a diagram, not {type(built).__name__}")
    return Repeat(built, var, size(start), size(stop), name)
