"""One traversal of a diagram in execution order, with documented override points.

:class:`Interpreter` walks a diagram the way the generated code runs it — sequential parts
left to right, parallel parts on their own segments, woven boxes in place or generically,
blocks, repetitions — threading one *value* per segment (a variable in generated code, an
drawing, ...) and a *context* (the class being written, the enclosing frame, ...).  Code
generation (``ncd.torch.codegen.Codegen``) is the subclass that decides: whether a woven box
runs in place (:func:`ncd.ir.weaving.lowers_in_place`) and the layouts of weights (the
:meth:`rewrite` hook); it records what it did as the program's schedule (:class:`ncd.ir.program.Step`),
which fusion rewrites (``ncd.torch.fusion``) and the cost analysis reads instead of walking the
diagram again.

Override points (each documented below): :meth:`box`, :meth:`weave`, :meth:`block`,
:meth:`repeat`, :meth:`rewrite`, :meth:`in_place`, :meth:`identity`, :meth:`part`,
:meth:`unknown`.

>>> import ncd
>>> class Depth(Interpreter[int, None]):
...     # how many boxes each output has passed through (the longest way)
...     def box(self, box, values, woven, ctx):
...         return [max(values, default=0) + 1] * len(box.cod)
>>> Depth().run(ncd.Linear("m -> n") >> ncd.ReLU() >> ncd.Linear("n -> m"), [0], None)
[3]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from ncd.errors import NCDError
from ncd.ir.axes import Type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq, Weave, unweave
from ncd.ir.size import evaluate
from ncd.ir.weaving import lowers_in_place

__all__ = ["Interpreter", "Fold", "Rebuild", "Transform"]

V = TypeVar("V")
C = TypeVar("C")
T = TypeVar("T")


class Interpreter(Generic[V, C]):
    """Base interpreter: ``run(diagram, values, ctx)`` returns one value per output segment."""

    def run(self, node: Diagram, values: list[V], ctx: C) -> list[V]:
        """Dispatch on the node kind (the closed set of ``ncd.ir.diagram``)."""
        if isinstance(node, Identity):
            return self.identity(node, values, ctx)
        if isinstance(node, Seq):
            return self.seq(node.parts, values, ctx)
        if isinstance(node, Par):
            return self.par(node.parts, values, ctx)
        if isinstance(node, Box):
            return self.box(node, values, (), ctx)
        if isinstance(node, Weave):
            inner, chain = unweave(node)
            if isinstance(inner, Box) and self.in_place(inner, chain):
                return self.box(inner, values, chain, ctx)
            return self.weave(inner, chain, values, node.cod, ctx)
        if isinstance(node, Block):
            return self.block(node, values, ctx)
        if isinstance(node, Repeat):
            return self.repeat(node, values, ctx)
        return self.unknown(node, values, ctx)

    # -- structure (rarely overridden) ---------------------------------------------------------
    def seq(self, parts: Sequence[Diagram], values: list[V], ctx: C) -> list[V]:
        """Parts left to right; at each position :meth:`rewrite` may consume several parts at once."""
        k = 0
        while k < len(parts):
            rewritten = self.rewrite(parts, k, values, ctx)
            if rewritten is not None:
                consumed, values = rewritten
                k += consumed
                continue
            values = self.run(parts[k], values, self.part(k, ctx))
            k += 1
        return values

    def par(self, parts: Sequence[Diagram], values: list[V], ctx: C) -> list[V]:
        """Each part on its own input segments; outputs concatenated."""
        out: list[V] = []
        offset = 0
        for k, part in enumerate(parts):
            n = len(part.dom)
            out.extend(self.run(part, values[offset: offset + n], self.part(k, ctx)))
            offset += n
        return out

    def part(self, k: int, ctx: C) -> C:
        """The context the ``k``-th part of a sequential or parallel composition runs in (by default the same: a
        hook to track where the walk is, e.g. a path of part indices)."""
        return ctx

    # -- override points -----------------------------------------------------------------------
    def identity(self, node: Identity, values: list[V], ctx: C) -> list[V]:
        """Wires: the values pass through."""
        return values

    def box(self, box: Box, values: list[V], woven: tuple[Weave, ...], ctx: C) -> list[V]:
        """A primitive; ``woven`` (outermost first) are the broadcast axes it handles in place."""
        raise NotImplementedError

    def weave(self, inner: Diagram, woven: tuple[Weave, ...], values: list[V], cod: Type, ctx: C) -> list[V]:
        """A woven sub-diagram not handled in place: move woven axes to the front, run ``inner``, move back."""
        raise NCDError(f"{type(self).__name__}: no generic weave for {type(inner).__name__}")

    def block(self, node: Block, values: list[V], ctx: C) -> list[V]:
        """A fenced region; by default its body runs in the same context."""
        return self.run(node.body, values, ctx)

    def repeat(self, node: Repeat, values: list[V], ctx: C) -> list[V]:
        """Iterations ``start … stop-1`` one after another (sizes must be bound)."""
        start = evaluate(node.start, what=f"start of repeat {node.var}")
        stop = evaluate(node.stop, what=f"stop of repeat {node.var}")
        for i in range(start, stop):
            values = self.run(node.iteration(i), values, ctx)
        return values

    def unknown(self, node: Diagram, values: list[V], ctx: C) -> list[V]:
        """A node outside the closed set of kinds (an interpreter may name its own error)."""
        raise NCDError(f"{type(self).__name__}: no rule for diagram node {type(node).__name__}")

    def rewrite(self, parts: Sequence[Diagram], k: int, values: list[V], ctx: C) -> tuple[int, list[V]] | None:
        """A rewrite of ``parts[k:]`` before they run: the number of parts consumed and the outputs, or ``None``
        (run them one by one)."""
        return None

    def in_place(self, box: Box, woven: tuple[Weave, ...]) -> bool:
        """Whether a woven box runs on the woven layout (:meth:`box`) or generically (:meth:`weave`)."""
        return lowers_in_place(box, woven)


class Fold(Generic[T]):
    """A structure-preserving map of a diagram (DisCoPy's functor): each node's image is built from its parts'
    images, for interpreters that build a new object (a diagram, a drawing) rather than thread values.

    ``fold(node)`` dispatches on the closed set of node kinds.  Override points: :meth:`identity`, :meth:`box`,
    :meth:`weave` (the whole chain of a woven node, ``unweave`` gives its parts), :meth:`block`,
    :meth:`repeat`, :meth:`unknown`, and :meth:`then` / :meth:`beside` (the images of two parts composed; :meth:`seq` /
    :meth:`par` fold a composite's parts left to right and may be overridden to visit them in another order, or to
    build one image from all the parts at once, as the drawing's columns do: ``ncd.render.layout.Layout``).

    >>> import ncd
    >>> class Count(Fold[int]):  # how many boxes
    ...     def identity(self, node): return 0
    ...     def box(self, box): return 1
    ...     def weave(self, node): return self.fold(node.inner)
    ...     def then(self, a, b): return a + b
    ...     beside = then
    >>> Count().fold((ncd.Linear("m -> n") @ ncd.Linear("k -> j")) >> ncd.Einsum("n, j -> n j") >> ncd.ReLU())
    4
    """

    def fold(self, node: Diagram) -> T:
        if isinstance(node, Identity):
            return self.identity(node)
        if isinstance(node, Box):
            return self.box(node)
        if isinstance(node, Seq):
            return self.seq(node)
        if isinstance(node, Par):
            return self.par(node)
        if isinstance(node, Weave):
            return self.weave(node)
        if isinstance(node, Block):
            return self.block(node)
        if isinstance(node, Repeat):
            return self.repeat(node)
        return self.unknown(node)

    def unknown(self, node: Diagram) -> T:
        """A node outside the closed set of kinds (an interpreter may name its own error, or draw it as a box).

        >>> from ncd.ir.axes import parse_type
        >>> class Custom(Diagram):
        ...     dom = cod = parse_type("m")
        >>> class Name(Fold[str]):
        ...     def unknown(self, node): return type(node).__name__
        >>> Name().fold(Custom())
        'Custom'
        >>> Fold().fold(Custom())
        Traceback (most recent call last):
        ncd.errors.NCDError: Fold: no rule for diagram node Custom
        """
        raise NCDError(f"{type(self).__name__}: no rule for diagram node {type(node).__name__}")

    def part(self, node: Diagram, k: int, part: Diagram) -> T:
        """The image of ``part``, the ``k``-th part of ``node`` (a hook to track where a fold is)."""
        return self.fold(part)

    def seq(self, node: Seq) -> T:
        """Sequential parts composed with :meth:`then`."""
        return self._combine([self.part(node, k, p) for k, p in enumerate(node.parts)], self.then)

    def par(self, node: Par) -> T:
        """Parallel parts composed with :meth:`beside`."""
        return self._combine([self.part(node, k, p) for k, p in enumerate(node.parts)], self.beside)

    @staticmethod
    def _combine(images: list[T], join: Callable[[T, T], T]) -> T:
        result = images[0]
        for image in images[1:]:
            result = join(result, image)
        return result

    def identity(self, node: Identity) -> T:
        raise NCDError(f"{type(self).__name__}: no image of wires '{node.type}'")

    def box(self, box: Box) -> T:
        raise NotImplementedError

    def then(self, first: T, second: T) -> T:
        raise NotImplementedError

    def beside(self, first: T, second: T) -> T:
        raise NotImplementedError

    def weave(self, node: Weave) -> T:
        raise NCDError(f"{type(self).__name__}: no image of a woven {type(node.inner).__name__}")

    def block(self, node: Block) -> T:
        """A fenced region: by default the image of its body."""
        return self.part(node, 0, node.body)

    def repeat(self, node: Repeat) -> T:
        """Iterations ``start … stop-1`` composed with :meth:`then` (the count must be bound)."""
        start = evaluate(node.start, what=f"start of repeat {node.var}")
        stop = evaluate(node.stop, what=f"stop of repeat {node.var}")
        return self._combine([self.fold(node.iteration(i)) for i in range(start, stop)], self.then)


class Rebuild(Fold[Diagram]):
    """The identity functor: every node rebuilt from its parts' images, boxes and wires kept — the base of rewrites
    that change a few node kinds and keep the structure around them (override :meth:`box`, :meth:`block`, ...).

    Sequences and parallel compositions are rebuilt with ``Seq.of`` / ``Par.of`` (flattened, identities dropped or
    merged); weaves, blocks and repetitions with their own fields; a repetition stays one node (not unrolled).

    >>> import ncd
    >>> class Relu2Tanh(Rebuild):  # every ReLU replaced by a tanh
    ...     def box(self, box):
    ...         return ncd.Tanh() if box.text() == ncd.ReLU().text() else box
    >>> net = (ncd.Linear("m -> n") >> ncd.ReLU()).block("Layer").weave("b")
    >>> [b.text() for b in Relu2Tanh().fold(net).boxes()] == [ncd.Linear("m -> n").text(), ncd.Tanh().text()]
    True
    """

    def identity(self, node: Identity) -> Diagram:
        return node

    def box(self, box: Box) -> Diagram:
        return box

    def seq(self, node: Seq) -> Diagram:
        return Seq.of(*(self.part(node, k, p) for k, p in enumerate(node.parts)))

    def par(self, node: Par) -> Diagram:
        return Par.of(*(self.part(node, k, p) for k, p in enumerate(node.parts)))

    def then(self, first: Diagram, second: Diagram) -> Diagram:
        return Seq.of(first, second)

    def beside(self, first: Diagram, second: Diagram) -> Diagram:
        return Par.of(first, second)

    def weave(self, node: Weave) -> Diagram:
        """One weave at a time: the image of its inner diagram, woven over the same axis."""
        return Weave(self.part(node, 0, node.inner), node.axis, node.dom_pos, node.cod_pos)

    def block(self, node: Block) -> Diagram:
        return Block(self.part(node, 0, node.body), node.name, node.meta)

    def repeat(self, node: Repeat) -> Diagram:
        """The repetition of its body's image (override to unroll: ``Fold.repeat`` composes the iterations)."""
        return Repeat(self.part(node, 0, node.body), node.var, node.start, node.stop, node.name)


class Transform(Generic[V]):
    """Interpret and rebuild at once (torch.fx's ``Transformer``): ``run(node, values)`` gives the node's image, a new
    diagram, and one value per output segment of it — for rewrites whose every step depends on what flows in (the
    inference derivation resizes each box to the wires that reach it).

    Override points: :meth:`box` and :meth:`weave` (no default: a woven node is met one weave at a time),
    :meth:`identity`, :meth:`block`, :meth:`repeat` (the body once, kept a repetition) and :meth:`unknown`;
    :meth:`seq` / :meth:`par` thread the values through the parts and join their images with ``Seq.of`` /
    ``Par.of``.

    >>> import ncd
    >>> class Count(Transform[int]):  # boxes kept; how many boxes each value has passed through (the longest way)
    ...     def box(self, box, values):
    ...         return box, [max(values, default=0) + 1] * len(box.cod)
    ...     def weave(self, node, values):
    ...         return node, self.run(node.inner, values)[1]
    >>> new, counts = Count().run(ncd.Linear("m -> n") >> ncd.ReLU() >> ncd.Linear("n -> m"), [0])
    >>> counts, str(new.cod)
    ([3], 'm')
    """

    def run(self, node: Diagram, values: list[V]) -> tuple[Diagram, list[V]]:
        """Dispatch on the node kind (the closed set of ``ncd.ir.diagram``)."""
        if isinstance(node, Identity):
            return self.identity(node, values)
        if isinstance(node, Seq):
            return self.seq(node, values)
        if isinstance(node, Par):
            return self.par(node, values)
        if isinstance(node, Box):
            return self.box(node, values)
        if isinstance(node, Weave):
            return self.weave(node, values)
        if isinstance(node, Block):
            return self.block(node, values)
        if isinstance(node, Repeat):
            return self.repeat(node, values)
        return self.unknown(node, values)

    def seq(self, node: Seq, values: list[V]) -> tuple[Diagram, list[V]]:
        """Parts left to right, each on the previous one's values."""
        parts = []
        for part in node.parts:
            new, values = self.run(part, values)
            parts.append(new)
        return Seq.of(*parts), values

    def par(self, node: Par, values: list[V]) -> tuple[Diagram, list[V]]:
        """Each part on its own input segments; images side by side, outputs concatenated."""
        parts, out, offset = [], [], 0
        for part in node.parts:
            n = len(part.dom)
            new, got = self.run(part, values[offset: offset + n])
            parts.append(new)
            out.extend(got)
            offset += n
        return Par.of(*parts), out

    def identity(self, node: Identity, values: list[V]) -> tuple[Diagram, list[V]]:
        """Wires: kept, the values pass through."""
        return node, values

    def box(self, box: Box, values: list[V]) -> tuple[Diagram, list[V]]:
        raise NotImplementedError

    def weave(self, node: Weave, values: list[V]) -> tuple[Diagram, list[V]]:
        raise NCDError(f"{type(self).__name__}: no image of a woven {type(node.inner).__name__}")

    def block(self, node: Block, values: list[V]) -> tuple[Diagram, list[V]]:
        """The block of its body's image."""
        body, out = self.run(node.body, values)
        return Block(body, node.name, node.meta), out

    def repeat(self, node: Repeat, values: list[V]) -> tuple[Diagram, list[V]]:
        """The repetition of its body's image, the body run once (override to unroll)."""
        body, out = self.run(node.body, values)
        return Repeat(body, node.var, node.start, node.stop, node.name), out

    def unknown(self, node: Diagram, values: list[V]) -> tuple[Diagram, list[V]]:
        """A node outside the closed set of kinds (an interpreter may name its own error)."""
        raise NCDError(f"{type(self).__name__}: no rule for diagram node {type(node).__name__}")
