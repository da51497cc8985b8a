"""One definition per block name: instances that differ only in their sizes share a drawing with symbols.

The paper draws a block once — "the block's box ``=`` its contents" — with its sizes as symbols
(the identity ResNet's ``Block(s, N)`` with ``x̄/s``, ``n₀``, ``n₁``), whatever sizes each use of it
has.  :func:`generic_labels` compares blocks of one name wire by wire: where every instance has the
same axis the wire keeps its label; where they differ the wire is labelled by a fresh symbol
(``n_i``, ``x_j``) that no other wire or legend row of the page uses, and the legend lists its value
per instance (one row per symbol).  Blocks whose structure differs (another
box, another stride, another repetition) are not merged.

>>> import ncd
>>> def unit(c_in, c_out):
...     return (ncd.Identity.of(f"b {c_in}") >> ncd.Linear(f"{c_in} -> {c_out}")).block("Unit")
>>> a, b = unit("n1", "n2"), unit("n2", "n3")
>>> labels, rows = generic_labels([a, b])
>>> sorted("".join(p.text for p in parts) for parts, _ in labels.values()), rows
(['ni', 'nj'], [('n_i', 'n1, n2'), ('n_j', 'n2, n3')])
>>> generic_labels([a, (ncd.Identity.of("b n1") >> ncd.ReLU()).block("Unit")]) is None  # another shape
True
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from operator import is_
from typing import Any

from ncd.ir.axes import Axis
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq, Weave
from ncd.ir.interpreter import Fold
from ncd.render.legend import closed_form
from ncd.render.typeset import Piece, symbol_pieces

__all__ = ["generic_labels", "shareable", "differ_in_sizes", "same_shape",
           "family", "family_header", "family_indices", "fresh_index", "blocks_inside"]

#: a wire's label in a shared definition, and the legend row of its symbol
Label = tuple[tuple[Piece, ...], tuple[str, str]]
Row = tuple[str, str]


#: a module index in a traced block's name: ``stages.2: ConvNextStage``, ``layers.11``
_INDEX = re.compile(r"(?<=\.)\d+(?=[.:]|$)")
_LETTERS = re.compile(r"[^\W\d_]*")  # (a name's leading letters)


def family(name: str, index: str = "i") -> str:
    """The name ``name`` shares with the other numbered modules of its list: ``stages.2: ConvNextStage`` →
    ``stages.i: ConvNextStage`` (the part after ``: `` is the module's class and stays).

    >>> family("stages.2: ConvNextStage"), family("encoder.layer.11"), family("Unit")
    ('stages.i: ConvNextStage', 'encoder.layer.i', 'Unit')
    """
    if index == "i":  # (the family a page asks for: of each block, many times over as it sizes and defines them)
        found = _FAMILIES.get(name)
        if found is None:
            if len(_FAMILIES) > 10_000:
                _FAMILIES.clear()
            head, colon, kind = name.partition(": ")
            found = _FAMILIES[name] = _INDEX.sub(index, head) + colon + kind
        return found
    head, colon, kind = name.partition(": ")
    return _INDEX.sub(index, head) + colon + kind


#: :func:`family` of each name asked (its index ``i``)
_FAMILIES: dict[str, str] = {}


def family_header(blocks: Sequence[Block], index: str = "i", text: str | None = None,
                  values: Sequence[int] | None = None) -> tuple[Block, tuple[Row, ...]]:
    """The block a definition shared by ``blocks`` draws as its header: the first, named by their family when
    their names differ (``stages.i``, the letter ``index``), with the legend row of the index (``i = 1, 2, 3``).
    ``text`` writes the index in the name instead (``2i+1``), ``values`` are the letter's values then.

    >>> import ncd
    >>> a, b = (ncd.Identity.of("b n").block(f"blocks.{k}: Layer") for k in (1, 3))
    >>> [(h.name, rows) for h, rows in (family_header([a, b]), family_header([a, b], "i", "2i+1", [0, 1]))]
    [('blocks.i: Layer', (('i', '1, 3'),)), ('blocks.2i+1: Layer', (('i', '0, 1'),))]
    """
    first = blocks[0]
    indices = family_indices(blocks)
    if indices is None:
        return first, ()
    shown = list(values) if values is not None else indices
    return (Block(first.body, family(first.name, text or index), first.meta),
            ((index, ", ".join(map(str, shown))),))


def family_indices(blocks: Sequence[Block]) -> list[int] | None:
    """The index of each block in its family (``stages.2`` → 2), when their names differ by that index alone."""
    if all(b.name == blocks[0].name for b in blocks):
        return None
    found = [_INDEX.findall(b.name.partition(": ")[0]) for b in blocks]
    if not all(len(ix) == 1 for ix in found):
        return None
    return [int(ix[0]) for ix in found]


def _interleaved(lists: Sequence[Sequence[int]]) -> tuple[int, int] | None:
    """``(d, n)`` when ``lists`` are ``d ≥ 2`` progressions ``a + d·k`` (``k = 0 … n−1``) with distinct offsets ``a``
    that together number consecutive blocks; else ``None``.

    >>> _interleaved([[0, 2, 4], [1, 3, 5]]), _interleaved([[0, 2, 4], [1, 3]]), _interleaved([[0, 1, 2]])
    ((2, 3), None, None)
    """
    d, n = len(lists), len(lists[0])
    if d < 2 or any(len(ix) != n for ix in lists):
        return None
    if any(list(ix) != [ix[0] + d * k for k in range(n)] for ix in lists):
        return None
    starts = sorted(ix[0] for ix in lists)
    return (d, n) if starts == list(range(starts[0], starts[0] + d)) else None


def fresh_index(taken: set[str] | frozenset[str]) -> str:
    """The letter indexing a family's instances (``stages.i``): the first of ``i j k l m p q r s`` that no axis,
    symbol or other family of the page has, else that letter primed (``iʹ``, ``iʹʹ``, primed as axis names are).

    >>> fresh_index(set()), fresh_index({"i", "j"}), fresh_index(set("ijklmpqrs")), fresh_index(set("ijklmpqrs") | {"iʹ"})
    ('i', 'k', 'iʹ', 'jʹ')
    """
    primes = 0
    while True:
        for c in "ijklmpqrs":
            if c + "ʹ" * primes not in taken:
                return c + "ʹ" * primes
        primes += 1


class _Shape(Fold[Any]):
    """What a drawing of a node shows apart from its wires' labels: one image per node kind, built from its parts',
    found once per node (a diagram is immutable, and a page compares each block of a family with the others as
    each is defined)."""

    def fold(self, node: Diagram) -> Any:
        found = node.__dict__.get("_drawn_shape")
        if found is None:
            found = super().fold(node)
            object.__setattr__(node, "_drawn_shape", found)
        return found

    def box(self, box: Box) -> Any:
        return ("box", type(box.prim).__name__, box.text(), tuple(len(s) for s in box.dom), tuple(len(s) for s in box.cod))

    def weave(self, node: Weave) -> Any:
        return ("weave", node.dom_pos, node.cod_pos, self.fold(node.inner))

    def block(self, node: Block) -> Any:
        return ("block", family(node.name), node.meta, self.fold(node.body))

    def repeat(self, node: Repeat) -> Any:
        return ("repeat", node.var, str(node.start), str(node.stop), self.fold(node.body))

    def identity(self, node: Identity) -> Any:
        return ("id", tuple(len(s) for s in node.dom))

    def unknown(self, node: Diagram) -> Any:  # sequences and parallel parts too: their kind and their parts' shapes
        return (type(node).__name__, tuple(self.fold(c) for c in node.children()))

    def seq(self, node: Seq) -> Any:
        return self.unknown(node)

    def par(self, node: Par) -> Any:
        return self.unknown(node)


_SHAPE = _Shape()


def same_shape(a: Diagram, b: Diagram) -> bool:
    """Whether ``a`` and ``b`` are drawn alike but for their wires' labels: whether their :class:`_Shape` images are
    equal, told by their shape ids (:func:`shape_id`: equal exactly when the images are).

    >>> import ncd
    >>> f, g = ncd.Linear("m -> n") >> ncd.ReLU(), ncd.Linear("k -> j") >> ncd.ReLU()
    >>> same_shape(f, g), same_shape(f, ncd.Linear("m -> n") >> ncd.GELU()), same_shape(f, f)
    (True, False, True)
    """
    if a is b:
        return True
    token = _TOKEN[0]
    x, y = shape_id(a), shape_id(b)
    if token is not _TOKEN[0]:  # (the table was renewed between the two: x is of the old one)
        x, y = shape_id(a), shape_id(b)
    if x is None or y is None:  # (an image holding a value that does not hash: a block's meta holding a dict)
        return bool(_SHAPE.fold(a) == _SHAPE.fold(b))
    return x == y


def shape_id(node: Diagram) -> int | None:
    """A number naming ``node``'s :class:`_Shape` image: two nodes' numbers are equal exactly when their images are
    (hash-consed: a leaf's number is its image's, a composite's that of its kind and own fields (:func:`_own`) with
    its parts' numbers), found bottom-up once per node and kept on it with the table's token (a pickled or copied
    node's token is another object: found again); ``None`` when an image holds a value that does not hash."""
    found = node.__dict__.get("_shape_id")
    token = _TOKEN[0]
    if found is not None and found[0] is token:
        return found[1]  # type: ignore[no-any-return]
    if len(_TABLE) > 200_000:
        _TABLE.clear()
        token = _TOKEN[0] = object()
    return _number(node, token)


def _number(node: Diagram, token: object) -> int | None:
    """:func:`shape_id` of ``node``, its parts' found first (those kept with ``token`` read)."""
    kept = node.__dict__.get("_shape_id")
    if kept is not None and kept[0] is token:
        return kept[1]  # type: ignore[no-any-return]
    key: Any
    if isinstance(node, (Identity, Box)):
        key = ("leaf", _SHAPE.fold(node))
    else:
        ids = tuple([_number(kid, token) for kid in node.children()])
        key = None if None in ids else ("node", _own(node), ids)
    number = None
    if key is not None:
        try:
            number = _TABLE.get(key)
            if number is None:
                number = _TABLE[key] = next(_NUMBERS)
        except TypeError:  # (a value that does not hash)
            pass
    object.__setattr__(node, "_shape_id", (token, number))
    return number


#: each shape image met (a composite's with its parts' numbers) → its number (:func:`shape_id`)
_TABLE: dict[Any, int] = {}
#: the token of the table's numbers (a new one whenever the table is emptied: numbers kept with an old token are stale)
_TOKEN: list[object] = [object()]
_NUMBERS = itertools.count()


def blocks_inside(a: Diagram, b: Diagram) -> list[tuple[Block, Diagram]]:
    """Pairs of blocks in one place inside ``a`` and ``b`` (each of ``a``'s with ``b``'s; ``a`` and ``b`` themselves
    when blocks), walked where their parts differ (a part both hold once is skipped): none when they are not drawn
    alike (:func:`same_shape`).  Found once per pair."""
    hit = _INSIDE.get((id(a), id(b)))
    if hit is not None and hit[0] is a and hit[1] is b:
        return hit[2]
    found: list[tuple[Block, Diagram]] = []
    if same_shape(a, b):
        stack: list[tuple[Diagram, Diagram]] = [(a, b)]
        while stack:
            x, y = stack.pop()
            if x is y:
                continue
            if isinstance(x, Block):
                found.append((x, y))
            stack += zip(x.children(), y.children())
    if len(_INSIDE) > 50_000:
        _INSIDE.clear()
    _INSIDE[(id(a), id(b))] = (a, b, found)
    return found


#: :func:`blocks_inside` of each pair asked about (by the pair's ids, the nodes kept to tell a reused id)
_INSIDE: dict[tuple[int, int], tuple[Diagram, Diagram, list[tuple[Block, Diagram]]]] = {}


def _own(node: Diagram) -> Any:
    """What a composite node's :class:`_Shape` image holds besides its parts' images (:meth:`Fold.fold`'s
    dispatch: a sequence's and a parallel part's, as an unknown kind's, is its kind's name)."""
    if isinstance(node, Weave):
        return ("weave", node.dom_pos, node.cod_pos)
    if isinstance(node, Block):
        return ("block", family(node.name), node.meta)
    if isinstance(node, Repeat):
        return ("repeat", node.var, str(node.start), str(node.stop))
    return type(node).__name__


def _axes(node: Diagram) -> tuple[Axis, ...]:
    """The axes of every wire of ``node``'s nodes (inputs, then outputs, node by node), found once per node: a block
    inside a node whose axes were found takes its part of theirs (its nodes' run, depth first)."""
    found: tuple[Axis, ...] | None = node.__dict__.get("_drawn_axes")
    if found is None:
        span = _SPANS.get(id(node))
        if span is not None and span[0] is node:
            found = span[1][span[2]:span[3]]
        else:
            out: list[Axis] = []
            spans: list[tuple[Block, int, int]] = []
            stack: list[Any] = [node]
            while stack:
                current = stack.pop()
                if type(current) is tuple:  # (the end of a block inside: its run of axes)
                    spans.append((current[0], current[1], len(out)))
                    continue
                start = len(out)
                for seg in current.dom.segments:
                    out += seg.axes
                for seg in current.cod.segments:
                    out += seg.axes
                if isinstance(current, Block) and current is not node:
                    stack.append((current, start))
                stack.extend(reversed(current.children()))
            found = tuple(out)
            if len(_SPANS) > 50_000:
                _SPANS.clear()
            for block, start, end in spans:
                _SPANS[id(block)] = (block, found, start, end)
        object.__setattr__(node, "_drawn_axes", found)
    return found


#: each block inside a node whose :func:`_axes` were found: that node's axes and the block's run of them
_SPANS: dict[int, tuple[Block, tuple[Axis, ...], int, int]] = {}


def generic_labels(blocks: Sequence[Block], taken: Iterable[str] = (),
                   indices: Sequence[int] | None = None, var: str = "i") -> tuple[dict[Axis, Label], list[Row]] | None:
    """For blocks of one name and shape: the label of each axis of ``blocks[0]`` that differs between them with
    the legend row giving its symbol per instance, and every such row; ``None`` when the instances cannot share a
    drawing (another shape, or an axis of the first standing for different axes of another in two places).
    Axes whose sizes agree in every instance share a symbol (a wire's label is its size).
    ``taken``: names the fresh symbols must not take (the page's other symbols); ``indices``: the instances' index
    ``var`` (``stages.1``, ``stages.2``, …), by which a size following a pattern is written in closed form
    (:func:`ncd.render.legend.closed_form`)."""
    found = _columns(blocks)
    if found is None:
        return None
    seen, names = found
    taken = names | set(taken)
    labels: dict[Axis, Label] = {}
    rows: dict[str, Row] = {}  # by the sizes per instance
    used: dict[str, int] = {}
    for axis, column in seen.items():
        if len(set(column)) == 1:
            continue
        value = ", ".join(map(_size_text, [a.size for a in column]))
        row = rows.get(value)
        if row is None:
            # a letter of its name, indexed (n_i); a multi-letter name (nb, self_attn) would print literally
            prefix = (_LETTERS.match(axis.name).group(0) or "n")[0]  # type: ignore[union-attr]
            k = used.get(prefix, 0)
            while _fresh(prefix, k) in taken:
                k += 1
            used[prefix] = k + 1
            symbol = _fresh(prefix, k)
            # a size following a pattern in closed form: in the family's index i (stages.i), or else in the
            # symbol's own subscript counting the instances from 1 (x_j = x·2^{1−j} for x, x/2, x/4)
            letter = var if indices is not None else symbol.partition("_")[2]
            form = closed_form([a.size for a in column], indices, letter) if letter.isalpha() else None
            row = rows[value] = (symbol, form or value)
        labels[axis] = (symbol_pieces(row[0], axis.role == "item"), row)
    return labels, list(rows.values())


def shareable(blocks: Sequence[Block]) -> bool:
    """Whether ``blocks`` can share one drawing, their differing sizes as symbols: whether :func:`generic_labels`
    finds their labels (without writing its legend rows)."""
    return _columns(blocks) is not None


def differ_in_sizes(blocks: Sequence[Block]) -> bool:
    """Whether ``blocks`` can share one drawing (:func:`shareable`) and some wire's size differs between them."""
    found = _columns(blocks)
    return found is not None and any(len(set(column)) > 1 for column in found[0].values())


def _size_text(value: object) -> str:
    """``str(value)`` of a size, kept per size: a page writes the sizes of each family's columns as it sizes, fits
    and lays out its sections, and printing a sympy expression costs microseconds each time."""
    key = (type(value), value)
    text = _SIZE_TEXT.get(key)
    if text is None:
        if len(_SIZE_TEXT) > 10_000:
            _SIZE_TEXT.clear()
        text = _SIZE_TEXT[key] = str(value)
    return text


#: :func:`_size_text` of each size written (by its type and value: equal sizes print alike)
_SIZE_TEXT: dict[tuple[type, object], str] = {}


#: :func:`_columns` of each tuple of blocks asked about (by the blocks' ids, the blocks kept to tell a reused id)
_COLUMNS: dict[tuple[int, ...], tuple[tuple[Block, ...], tuple[dict[Axis, tuple[Axis, ...]], frozenset[str]] | None]] = {}


def _columns(blocks: Sequence[Block]) -> tuple[dict[Axis, tuple[Axis, ...]], frozenset[str]] | None:
    """Each distinct axis of ``blocks[0]``'s wires with the axes in its place in every block, and the names of all
    their axes; ``None`` when the blocks are drawn differently or an axis of the first stands for two of another.
    Found once per tuple of blocks: a page asks about a family's blocks as it sizes, fits and lays out its sections."""
    key = tuple(map(id, blocks))
    hit = _COLUMNS.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], blocks)):
        return hit[1]
    found = _compare(blocks)
    if len(_COLUMNS) > 256:
        _COLUMNS.clear()
    _COLUMNS[key] = (tuple(blocks), found)
    return found


def _compare(blocks: Sequence[Block]) -> tuple[dict[Axis, tuple[Axis, ...]], frozenset[str]] | None:
    first = blocks[0]
    if any(not same_shape(first, b) for b in blocks[1:]):
        return None
    lists = [_axes(b) for b in blocks]
    if any(len(axes) != len(lists[0]) for axes in lists):
        return None
    # a block has thousands of wires but few distinct axis objects: each column of objects (by identity, in order of
    # first appearance) is compared once; a column made of the same objects as an earlier one passes as that one did.
    # Where each object of the first block meets one object of each other block (the usual case), the columns are
    # the first block's distinct objects, each with the objects it meets: found without building a tuple per wire
    columns: Iterable[tuple[Axis, ...]]
    swapped = _PAIRED.get((id(blocks[-1]), id(first))) if len(blocks) == 2 else None
    if swapped is not None and swapped[0] is blocks[-1] and swapped[1] is first:
        # the pair asked in the other order met each object of either block with one object of the other: the same
        # columns, each read the other way round, in the same order (an object's first wire is its partner's)
        columns = [(a, b) for b, a in swapped[2]]
    else:
        ids, distinct = _axis_ids(first)
        maps = [dict(zip(ids, axes)) for axes in lists[1:]]  # (each object of the first → the last one met in its place)
        if all(all(map(is_, map(m.__getitem__, ids), axes)) for m, axes in zip(maps, lists[1:])):
            columns = [(a, *[m[k] for m in maps]) for k, a in distinct]
            if len(blocks) == 2 and len({id(c[1]) for c in columns}) == len(columns):  # (one to one)
                if len(_PAIRED) > 256:
                    _PAIRED.clear()
                _PAIRED[(id(first), id(blocks[1]))] = (first, blocks[1], columns)
        else:
            columns = dict(zip(zip(*[map(id, axes) for axes in lists]), zip(*lists))).values()
    seen: dict[Axis, tuple[Axis, ...]] = {}
    for column in columns:
        known = seen.setdefault(column[0], column)
        if known != column:
            return None
    return seen, frozenset(a.name for column in columns for a in column)


def _axis_ids(node: Diagram) -> tuple[tuple[int, ...], tuple[tuple[int, Axis], ...]]:
    """The ids of :func:`_axes` of ``node``, and its distinct axis objects (by id, in order of first appearance), found
    once per node: a definition's header is compared with each block of its family that may share it."""
    hit = _IDS.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    axes = _axes(node)
    ids = tuple(map(id, axes))
    found = (ids, tuple(dict(zip(ids, axes)).items()))
    if len(_IDS) > 4096:
        _IDS.clear()
    _IDS[id(node)] = (node, found)
    return found


#: :func:`_axis_ids` of each node asked about (by its id, the node kept to tell a reused id; not on the node, whose
#: pickle or copy would carry the ids of objects it does not hold)
_IDS: dict[int, tuple[Diagram, tuple[tuple[int, ...], tuple[tuple[int, Axis], ...]]]] = {}


#: the columns :func:`_compare` found for a pair of blocks (by their ids, the blocks kept to tell a reused id) when each
#: object of either block meets one object of the other: the pair asked in the other order reads them swapped
_PAIRED: dict[tuple[int, int], tuple[Block, Block, list[tuple[Axis, ...]]]] = {}


def _fresh(prefix: str, k: int) -> str:
    return f"{prefix}_{_INDICES[k % len(_INDICES)]}" + ("'" * (k // len(_INDICES)))


#: subscripts of fresh symbols, as the paper's legends index sizes (``x̄_i``, ``c_i``)
_INDICES = "ijklmpqrs"
