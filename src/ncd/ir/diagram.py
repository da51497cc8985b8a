"""The diagram: a closed set of node kinds over open primitives.

Node kinds: :class:`Identity`, :class:`Box`, :class:`Seq` (sequential composition,
``>>``), :class:`Par` (parallel composition / tupling, ``@``), :class:`Weave`
(broadcasting over one extra axis, possibly *inner*: some input segments shared),
:class:`Block` (a named, fenced region = one module) and :class:`~ncd.ir.repetition.Repeat` (a block
repeated over an iteration variable, with its own parameters each time; it lives in :mod:`ncd.ir.repetition`).

>>> import ncd
>>> f = ncd.Linear("m -> k h") >> ncd.Softmax("k")
>>> str(f.dom), str(f.cod)
('m', 'k h')
>>> str(f.weave("b", "t").dom)
'b t m'
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sympy

from ncd.errors import SourceLocation, TypeMismatchError, user_location
from ncd.ir.axes import AxisLike, Type, TypeLike, as_axis, as_type
from ncd.ir.binding import bind_all, bind_known, check_option_names, check_size_names, defaults_of
from ncd.ir.checks import _box_types, _check_junctions, _check_meta, _nest, describe
from ncd.ir.checks import _set as _set  # re-exported: the node writer, imported from here
from ncd.ir.names import check_text
from ncd.ir.primitive import Primitive
from ncd.ir.size import SizeLike, Substitution, size, symbol

if TYPE_CHECKING:
    import torch

    from ncd.ir.repetition import Repeat as Repeat
    from ncd.ir.repetition import repeat as repeat
    from ncd.ir.weave import Weave as Weave
    from ncd.ir.weave import _woven_types as _woven_types
    from ncd.ir.weave import unweave as unweave

__all__ = ["bind_all", "bind_known",
           "defaults_of", "Diagram", "Identity", "Box", "Seq", "Par", "Weave", "Block", "Repeat", "describe", "unweave",
           "check_size_names", "check_option_names"]

_MOVED = {"Repeat": "ncd.ir.repetition", "repeat": "ncd.ir.repetition", "_Shadow": "ncd.ir.repetition",
          "Weave": "ncd.ir.weave", "unweave": "ncd.ir.weave", "_woven_types": "ncd.ir.weave", "rebuilt": "ncd.ir.sharing"}


def __getattr__(name: str) -> Any:
    """The repetition lives in :mod:`ncd.ir.repetition`, the weave in :mod:`ncd.ir.weave`, :func:`rebuilt` in
    :mod:`ncd.ir.sharing` (they import this module); their old names here still answer."""
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found once
    return value


class Diagram:
    """Base class of all diagram nodes.  ``dom`` and ``cod`` are its input and output types."""

    dom: Type
    cod: Type

    # -- composition ---------------------------------------------------------------
    def __rshift__(self, other: Diagram) -> Diagram:
        """Sequential composition ``self >> other`` (left to right)."""
        from ncd.ir.compose import then

        return then(self, other)

    def __matmul__(self, other: Diagram) -> Diagram:
        """Parallel composition ``self @ other`` (stacked segments)."""
        if not isinstance(other, Diagram):
            raise TypeMismatchError(f"cannot put {describe(self)} in parallel with {type(other).__name__} {other!r:.60}:"
                                    " not a diagram")
        return Par.of(self, other)

    def weave(self, *axes: AxisLike, shared: Iterable[int] = ()) -> Diagram:
        """Broadcast over new leading axes, in the order given.

        ``shared`` lists input segments that do *not* carry the new axes (inner
        broadcasting: they are shared by every instance).

        >>> import ncd
        >>> str(ncd.Einsum("y k, x k -> y x").weave("h", shared=[1]).dom)
        'h y k, x k'
        """
        shared_set = set(shared)
        for j in shared_set:
            if not 0 <= j < len(self.dom):
                raise TypeMismatchError(f"weave: shared segment {j} does not exist; the domain is '{self.dom}'")
        from ncd.ir.weave import Weave  # (it imports this module)

        result: Diagram = self
        for axis in reversed([as_axis(a) for a in axes]):
            dom_pos = tuple(None if j in shared_set else 0 for j in range(len(self.dom)))
            result = Weave(result, axis, dom_pos, tuple(0 for _ in range(len(self.cod))))
        return result

    def block(self, name: str, **meta: Any) -> Block:
        """Wrap this diagram in a fenced, named block (one module in code)."""
        return Block(self, name, tuple(sorted(meta.items())))

    # -- sizes ---------------------------------------------------------------------
    @property
    def free_symbols(self) -> set[sympy.Symbol]:
        """Size symbols not yet bound (iteration variables of repeats excluded)."""
        cached: frozenset[sympy.Symbol] | None = self.__dict__.get("_free_symbols")
        if cached is None:  # a diagram is immutable: found once per node asked (ncd.cost asks twice)
            found: set[sympy.Symbol] = set()
            if type(self).walk is not Diagram.walk:  # a node that walks its own way (a repeat binds its variable)
                for node in self.walk():
                    found |= node._own_symbols()
            else:
                from ncd.ir.sharing import _shared_symbols

                _shared_symbols(self, found)
            cached = frozenset(found)
            _set(self, _free_symbols=cached)
        return set(cached)

    def _own_symbols(self) -> set[sympy.Symbol]:
        return set()

    def bind(self, /, **sizes: SizeLike) -> Diagram:
        """Substitute sizes for symbols: ``diagram.bind(m=512, h=8)``.

        >>> import ncd
        >>> str(ncd.Linear("m -> k h").bind(m=512, h=8).dom)
        'm:512'

        One set of sizes may bind every part of a model (names a part lacks are passed over), but sizes none of
        which the diagram has, while it has sizes to bind, are refused naming the ones it has (``bind(q=3)``, a
        misspelling, would otherwise do nothing); a size already bound may be named again with its own value.
        """
        if sizes:
            free = self.free_symbols
            if free and not any(symbol(k) in free for k in sizes):
                check_size_names(self, sizes, "bind")
        mapping = Substitution({symbol(k): size(v) for k, v in sizes.items()})
        return self.subs(mapping) if mapping else self

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Diagram:
        raise NotImplementedError

    # -- traversal -----------------------------------------------------------------
    def children(self) -> tuple[Diagram, ...]:
        return ()

    def walk(self) -> Iterator[Diagram]:
        """Every node, depth first, this one included."""
        yield self
        stack = list(reversed(self.children()))  # iteratively: a nested generator per level costs depth per node
        while stack:
            node = stack.pop()
            if type(node).walk is not Diagram.walk:  # a node that walks its own way (a repeat binds its variable)
                yield from node.walk()
                continue
            yield node
            stack.extend(reversed(node.children()))

    def nesting(self) -> int:
        """How many composite nodes (sequences, pars, weaves, blocks, repetitions) lie one inside another down to
        the deepest box, this one included; a box or an identity is 0.  Found once per node, when it is built.

        >>> import ncd
        >>> (ncd.Linear("m -> m") >> ncd.Softmax("m")).block("B").nesting()  # a block around a sequence of boxes
        2
        """
        depth: int | None = self.__dict__.get("_nesting")
        return _nest(self) if depth is None else depth

    def boxes(self) -> Iterator[Box]:
        for node in self.walk():
            if isinstance(node, Box):
                yield node

    # -- interpreters (lazy imports keep ncd.ir free of torch) ----------------------
    def to_torch(self, /, *, check_inputs: bool = True, **sizes: int) -> torch.nn.Module:
        """Lower to an ``nn.Module`` (sizes bound here override ``defaults``)."""
        from ncd.torch.module import to_torch

        return to_torch(self, check_inputs=check_inputs, **sizes)

    def to_source(self, /, **sizes: int) -> str:
        """Readable PyTorch source for this diagram."""
        from ncd.torch.codegen import to_source

        return to_source(self, **sizes)

    def example_inputs(self, /, *batch: int, seed: int | None = 0, **sizes: int) -> tuple[torch.Tensor, ...]:
        """Random tensors matching ``dom`` (with optional leading batch sizes)."""
        from ncd.torch.module import example_inputs

        return example_inputs(self, *batch, seed=seed, **sizes)

    def to_json(self, indent: int | None = None) -> str:
        """Versioned JSON text; ``ncd.load_json`` reads it back exactly."""
        from ncd.ir.serialize import to_json

        return to_json(self, indent=indent)

    def _repr_svg_(self) -> str:
        from ncd.render import to_svg

        return to_svg(self)

    def _repr_html_(self) -> str:
        """The interactive viewer in a notebook (a sandboxed iframe; works offline)."""
        from ncd.viewer import notebook_html

        return notebook_html(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {describe(self)}: {self.dom} -> {self.cod}>"


@dataclass(frozen=True, repr=False)
class Identity(Diagram):
    """Wires passing straight through."""

    type: Type
    source: SourceLocation | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        _set(self, dom=self.type, cod=self.type)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Diagram:
        return Identity(self.type.subs(mapping), self.source)

    def _own_symbols(self) -> set[sympy.Symbol]:
        return self.type.free_symbols

    @staticmethod
    def of(type_: TypeLike) -> Identity:
        """Identity wires on ``type_`` (text such as ``"b t m"``), recording the user's line."""
        return Identity(as_type(type_), user_location())


@dataclass(frozen=True, repr=False)
class Box(Diagram):
    """A primitive operation, with an optional label (the superscript of **L^Q**)."""

    prim: Primitive
    label: str | None = None
    source: SourceLocation | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.label is not None:
            check_text(self.label, "a box label")
        dom, cod = _box_types(self.prim)
        _set(self, dom=dom, cod=cod)

    @classmethod
    def make(cls, prim: Primitive, label: str | None = None) -> Box:
        """Build a box, recording the user's line that built it."""
        return cls(prim, label, user_location())

    def text(self) -> str:
        return self.prim.label() + (f"^{self.label}" if self.label else "")

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Diagram:
        if not mapping:
            return self
        if not isinstance(mapping, Substitution):
            return Box(self.prim.subs(mapping), self.label, self.source)
        memo = mapping.memo
        if self.prim not in memo:  # equal primitives (a repeated layer's boxes) are substituted once
            memo[self.prim] = (self.prim.subs(mapping), None)
        prim, types = memo[self.prim]
        if types is None:
            box = Box(prim, self.label, self.source)
            memo[self.prim] = (prim, (box.dom, box.cod))
            return box
        node = Box.__new__(Box)  # the checks of __post_init__ passed for this primitive already
        _set(node, prim=prim, label=self.label, source=self.source, dom=types[0], cod=types[1])
        return node

    def _own_symbols(self) -> set[sympy.Symbol]:
        return set(_prim_symbols(self.prim))

    @property
    def learned(self) -> bool:
        return self.prim.learned


@functools.lru_cache(maxsize=4096)
def _prim_symbols(prim: Primitive) -> frozenset[sympy.Symbol]:
    """The size symbols of a primitive and of its signature (boxes of repeated layers share primitives)."""
    dom, cod = prim.signature()
    return frozenset(dom.free_symbols | cod.free_symbols | prim.free_symbols())


class _Composed:
    """What a sequence and a composition in parallel share: their parts are their children, and one grown a part at a
    time (``_prefix``, ``_tail``) is joined before it is copied or pickled."""

    parts: tuple[Diagram, ...]

    def __getstate__(self) -> dict[str, Any]:
        self.parts  # noqa: B018 -- joined before copying or pickling: the prefixes are not part of the value
        return {k: v for k, v in self.__dict__.items() if k not in ("_prefix", "_tail")}

    def children(self) -> tuple[Diagram, ...]:
        return self.parts


@dataclass(frozen=True, repr=False)
class Seq(_Composed, Diagram):
    """Sequential composition, flattened: ``parts[0] >> parts[1] >> ...``."""

    parts: tuple[Diagram, ...]

    def __post_init__(self) -> None:
        if len(self.parts) < 2:
            raise TypeMismatchError("a sequential composition needs at least two parts")
        _check_junctions(self.parts, range(1, len(self.parts)))
        _set(self, dom=self.parts[0].dom, cod=self.parts[-1].cod)
        _nest(self)

    @staticmethod
    def of(*parts: Diagram) -> Diagram:
        """Flattened composition; only the junctions *between* the given parts are checked.

        The junctions inside a part that is already a ``Seq`` were checked when it was built,
        and a sequence grown by one part (``chain >> box``) does not copy the chain's parts
        until they are asked for, so composing one part at a time with ``>>`` costs time
        linear in the chain's length.
        """
        if len(parts) == 2 and isinstance(parts[0], Seq) and not isinstance(parts[1], Identity):
            return parts[0]._grown(parts[1].parts if isinstance(parts[1], Seq) else (parts[1],))
        flat: list[Diagram] = []
        junctions: list[int] = []
        for p in parts:
            # a Seq's parts are never identities (dropped when it was built)
            pieces = p.parts if isinstance(p, Seq) else () if isinstance(p, Identity) else (p,)
            if pieces and flat:
                junctions.append(len(flat))
            flat.extend(pieces)
        if not flat:  # no parts, or identities only: the first identity (Seq.of() is the empty diagram, as Par.of())
            return parts[0] if parts else Identity(Type(()))
        if len(flat) == 1:
            return flat[0]
        _check_junctions(flat, junctions)  # a dropped identity's neighbours now meet directly
        node = Seq.__new__(Seq)
        _set(node, parts=tuple(flat), dom=flat[0].dom, cod=flat[-1].cod)
        _nest(node)
        return node

    def _grown(self, more: tuple[Diagram, ...]) -> Seq:
        """``self >> Seq(more)``, whose parts (this sequence's, then ``more``) are joined when first read."""
        last = self.__dict__["_tail"][-1] if "_tail" in self.__dict__ else self.parts[-1]
        _check_junctions((last, more[0]), (1,))
        node = Seq.__new__(Seq)
        _set(node, _prefix=self, _tail=more, dom=self.dom, cod=more[-1].cod)
        _nest(node, max(self.nesting() - 1, *(p.nesting() for p in more)))
        return node

    def __getattr__(self, name: str) -> Any:
        # the parts of a sequence grown one part at a time: the chain of prefixes is walked once, back to one whose
        # parts are known, and joined (each prefix keeps its own parts unjoined until they are asked for)
        if name != "parts" or "_prefix" not in self.__dict__:
            raise AttributeError(name)
        tails: list[tuple[Diagram, ...]] = []
        node: Seq = self
        while "parts" not in node.__dict__:
            tails.append(node.__dict__["_tail"])
            node = node.__dict__["_prefix"]
        parts = node.parts + tuple(p for tail in reversed(tails) for p in tail)
        _set(self, parts=parts)
        del self.__dict__["_prefix"]
        return parts

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Diagram:
        return Seq(tuple(p.subs(mapping) for p in self.parts)) if mapping else self


@dataclass(frozen=True, repr=False)
class Par(_Composed, Diagram):
    """Parallel composition: boxes stacked vertically, acting on separate segments."""

    parts: tuple[Diagram, ...]

    def __post_init__(self) -> None:
        _set(self, dom=Type(tuple([s for p in self.parts for s in p.dom.segments])),
             cod=Type(tuple([s for p in self.parts for s in p.cod.segments])))
        _nest(self)

    @staticmethod
    def of(*parts: Diagram) -> Diagram:
        """Flattened parallel composition, adjacent identities merged into one.

        A composition grown by one part (``wide @ box``) does not copy the parts until they are asked for (as
        :meth:`Seq.of`), so stacking parts one at a time with ``@`` costs time linear in their number.
        """
        if len(parts) == 2 and isinstance(parts[0], Par) and not isinstance(parts[1], (Par, Identity)):
            return parts[0]._grown(parts[1])
        flat: list[Diagram] = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, Par) else (p,))
        merged: list[Diagram] = []
        for p in flat:  # adjacent identities merge into one
            if merged and isinstance(p, Identity) and isinstance(merged[-1], Identity):
                merged[-1] = Identity(merged[-1].type + p.type)
            elif not (isinstance(p, Identity) and len(p.type) == 0):
                merged.append(p)
        if not merged:
            return Identity(Type(()))
        return merged[0] if len(merged) == 1 else Par(tuple(merged))

    def _grown(self, part: Diagram) -> Par:
        """``self @ part`` (``part`` neither a composition in parallel nor an identity), its parts and types made
        when first read (each prefix holds two references, not a type of its own as wide as itself)."""
        node = Par.__new__(Par)
        _set(node, _prefix=self, _tail=part)
        _nest(node, max(self.nesting() - 1, part.nesting()))
        return node

    def __getattr__(self, name: str) -> Any:
        # the parts and types of a composition grown one part at a time: the chain of prefixes is walked once, back
        # to one whose parts are known, and joined (as Seq.__getattr__)
        if name not in ("parts", "dom", "cod") or "_prefix" not in self.__dict__:
            raise AttributeError(name)
        tails: list[Diagram] = []
        node: Par = self
        while "parts" not in node.__dict__:
            tails.append(node.__dict__["_tail"])
            node = node.__dict__["_prefix"]
        parts = node.parts + tuple(reversed(tails))
        _set(self, parts=parts, dom=Type(tuple(s for p in parts for s in p.dom)),
             cod=Type(tuple(s for p in parts for s in p.cod)))
        del self.__dict__["_prefix"]
        return self.__dict__[name]

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Diagram:
        return Par(tuple(p.subs(mapping) for p in self.parts)) if mapping else self


@dataclass(frozen=True, repr=False)
class Block(Diagram):
    """A fenced, titled region; it lowers to one submodule.  ``meta`` holds drawing hints."""

    body: Diagram
    name: str
    meta: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        check_text(self.name, "a block name")
        if not isinstance(self.body, Diagram):
            raise TypeMismatchError(f"block {self.name!r}: its body must be a diagram, not {type(self.body).__name__}")
        _check_meta(self.name, self.meta)
        _set(self, dom=self.body.dom, cod=self.body.cod)
        _nest(self)

    def children(self) -> tuple[Diagram, ...]:
        return (self.body,)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Diagram:
        return Block(self.body.subs(mapping), self.name, self.meta) if mapping else self

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.meta).get(key, default)
