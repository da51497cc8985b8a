"""``ncd.shard``: put wires on mesh axes, check the placement is legal, and return the sharded diagram.

A placement maps diagram axis names to mesh axis names: ``{"h": "tp", "f": "tp"}`` splits the
heads and the feed-forward width over the tensor-parallel axis (Megatron), ``{"t": "tp"}`` adds
sequence parallelism, ``{"b": "dp"}`` splits the leading batch over a data-parallel axis, whose
ranks then also shard the parameters (FSDP, unless ``fsdp=False``).  The result is the same
diagram fenced in a block that carries the mesh and the placements; every learned linear map
whose split axis is not the outermost of its group is rewritten with that axis outermost and a
transpose (so that one rank's share of the weight is a contiguous block of rows or columns).

>>> import ncd
>>> layer = ncd.Identity.of("~t m") >> ncd.Linear("m -> f", bias=True) >> ncd.GELU() >> ncd.Linear("f -> m")
>>> sharded = ncd.shard(layer.bind(m=8, f=32, t=4), ncd.Mesh(tp=4), {"f": "tp"})
>>> ncd.cost(sharded).collectives
{'all_reduce': 1, 'all_gather': 0, 'reduce_scatter': 0, 'all_to_all': 0}
>>> ncd.shard(layer.bind(m=8, f=30, t=4), ncd.Mesh(tp=4), {"f": "tp"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
  ...
ncd.distributed.mesh.ShardingError: axis f of size 30 at L₊ ... is not divisible by mesh axis tp=4; ...
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import sympy

from ncd.distributed.mesh import Mesh, ShardingError
from ncd.ir.axes import Axis
from ncd.ir.checks import expect_diagram
from ncd.ir.diagram import Block, Box, Diagram, Par, Seq, Weave, describe, unweave
from ncd.ir.interpreter import Rebuild
from ncd.ir.size import evaluate, size_text
from ncd.prims.linear import LinearOp
from ncd.prims.structure import TransposeOp

__all__ = ["shard", "sharding_of", "Sharding", "BATCH"]

#: the leading batch axis every lowered module accepts; place it on a data-parallel mesh axis
BATCH = "b"
#: boxes through whose own axes a split may run (their sharding rules live in derive.py)
#: the block meta keys a sharded diagram carries
SHARDING_KEYS = ("mesh", "placements", "fsdp", "_sharding")
NORMALISING = {"softmax", "layernorm", "rmsnorm", "batchnorm"}
SPLITTABLE = {"linear", "einsum", "copy", "rename", "transpose", "swap", "delete", "add", "identity"}


class Sharding:
    """The mesh, the placements and the FSDP choice a sharded diagram carries."""

    def __init__(self, mesh: Mesh, placements: Mapping[str, str], fsdp: bool = True) -> None:
        self.mesh, self.placements, self.fsdp = mesh, dict(placements), fsdp

    @property
    def data_axes(self) -> tuple[str, ...]:
        """Mesh axes the batch is split over (their ranks shard the parameters under FSDP)."""
        return tuple(m for a, m in self.placements.items() if a == BATCH)

    def meta(self) -> tuple[tuple[str, Any], ...]:
        """Block meta: the machine-read keys, and ``_sharding`` (a drawn block shows it under its name)."""
        places = ", ".join(f"{a}→{m}" for a, m in self.placements.items())
        return (("mesh", self.mesh.items_tuple()), ("placements", tuple(sorted(self.placements.items()))),
                ("fsdp", self.fsdp), ("_sharding", f"{self.mesh}: {places}"))

    def __repr__(self) -> str:
        places = ", ".join(f"{a}={m}" for a, m in self.placements.items())
        return f"<Sharding {self.mesh}: {places}{'' if self.fsdp or not self.data_axes else ' (no FSDP)'}>"


def sharding_of(diagram: Diagram) -> Sharding | None:
    """The sharding a diagram returned by :func:`shard` carries, else ``None``.  Its block's ``meta`` may come from a
    file (not trusted): a ``mesh`` that is not ``(name, ranks)`` pairs, ``placements`` that are not ``(axis, mesh
    axis)`` pairs onto its axes, or an ``fsdp`` that is not true or false raise :class:`ShardingError` naming them.

    >>> import ncd
    >>> sharding_of(ncd.Block(ncd.Identity.of("m"), "B", meta=(("mesh", 4),)))
    Traceback (most recent call last):
    ncd.distributed.mesh.ShardingError: block 'B': meta mesh=4 is not (mesh axis, ranks) pairs with distinct names
    """
    if not isinstance(diagram, Block) or diagram.get("mesh") is None:
        return None
    mesh, placements = _pairs(diagram, "mesh", int, "(mesh axis, ranks)"), _pairs(diagram, "placements", str,
                                                                                  "(axis, mesh axis)")
    fsdp = diagram.get("fsdp", True)
    if not isinstance(fsdp, bool):
        raise ShardingError(f"block {diagram.name!r}: meta fsdp={fsdp!r:.40} is neither true nor false")
    try:
        found = Mesh(**mesh)
    except ShardingError as error:
        raise ShardingError(f"block {diagram.name!r}: meta mesh: {error}") from None
    for axis, target in placements.items():
        if target not in found.names:
            raise ShardingError(f"block {diagram.name!r}: meta placements puts {axis} on mesh axis {target!r}, which"
                                f" its mesh {found} does not have")
    return Sharding(found, placements, fsdp)


def _pairs(block: Block, key: str, kind: type, what: str) -> dict[str, Any]:
    """A block's meta entry ``key`` as a dict, checked to be ``(name, kind)`` pairs with distinct names."""
    value = block.get(key, ())
    ok = isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
                                          and type(p[1]) is kind for p in value)
    if not ok or len({p[0] for p in value}) != len(value):
        raise ShardingError(f"block {block.name!r}: meta {key}={value!r:.60} is not {what} pairs with distinct names")
    return dict(value)


def shard(diagram: Diagram, mesh: Mesh, placements: Mapping[str, str], *, fsdp: bool = True) -> Block:
    """The diagram with its axes placed on mesh axes (see the module doc); illegal placements raise.

    ``placements`` maps diagram axis names to mesh axis names.  Checks: every mesh axis exists
    and carries something, every placed axis is a wire of the diagram, sizes divide the mesh axis,
    no box normalises over (or is otherwise non-linear in) a split axis, and no weight has two
    axes on one mesh axis.  Collectives are derived from the result (``ncd.cost(...).collectives``).
    """
    expect_diagram(diagram, "shard")
    if not isinstance(mesh, Mesh):
        raise ShardingError(f"shard: the mesh must be an ncd.Mesh, not {type(mesh).__name__}")
    if not isinstance(placements, Mapping) or not placements:
        raise ShardingError("shard: placements must map diagram axis names to mesh axes, e.g. {'h': 'tp', 'f': 'tp'}")
    if sharding_of(diagram) is not None:
        raise ShardingError(f"shard: {describe(diagram)} is already sharded; shard the original diagram")
    sharding = Sharding(mesh, placements, fsdp)
    names = axis_names(diagram)
    for axis, target in placements.items():
        if target not in mesh:
            raise ShardingError(f"placement {axis}={target}: mesh axis {target!r} does not exist; the mesh is {mesh}")
        if axis not in names and axis != BATCH:
            raise ShardingError(f"placement {axis}={target}: {axis!r} is not a wire of {describe(diagram)};"
                                f" its axes are {', '.join(sorted(names))} ({BATCH!r} is the leading batch)")
    unused = [m for m in mesh if m not in placements.values()]
    if unused:
        raise ShardingError(f"mesh axis {unused[0]}={mesh[unused[0]]} carries no wire; place an axis on it"
                            f" (the batch: {BATCH}={unused[0]}) or leave it out of the mesh")
    defaults = dict(diagram.get("defaults", ())) if isinstance(diagram, Block) else {}
    for box in _boxes(diagram):
        _check_box(box, sharding, defaults)
    body = diagram.body if isinstance(diagram, Block) else diagram
    name = diagram.name if isinstance(diagram, Block) else "Sharded"
    meta = tuple(diagram.meta) if isinstance(diagram, Block) else ()
    sharded = Block(_rewrite(body, sharding.placements), name, meta + sharding.meta())
    from ncd.distributed.derive import derive

    derive(sharded)  # refuses placements the propagation cannot honour, before anyone lowers them
    return sharded


def axis_names(diagram: Diagram) -> set[str]:
    found: set[str] = set()
    for node in diagram.walk():
        for typ in (node.dom, node.cod):
            for seg in typ:
                found.update(seg.names)
        if isinstance(node, Weave):
            found.add(node.axis.name)
    return found


def _boxes(diagram: Diagram) -> Iterator[Box]:
    """Every box; its own axes suffice for the checks (woven axes are broadcast: splitting them is always legal)."""
    for node in diagram.walk():
        if isinstance(node, Box):
            yield node


def _size_text(axis: Axis, defaults: Mapping[str, int]) -> str:
    text = size_text(axis.size)
    value = _bound(axis.size, defaults)
    return text if value is None or text == str(value) else f"{text} = {value}"


def _bound(expr: sympy.Expr, defaults: Mapping[str, int]) -> int | None:
    try:
        return evaluate(expr, defaults)
    except Exception:  # symbolic: checked again when sizes are bound (ncd.cost, lowering)
        return None


def _check_box(box: Box, sharding: Sharding, defaults: Mapping[str, int]) -> None:
    placements, mesh = sharding.placements, sharding.mesh
    own = [a for seg in box.dom for a in seg] + [a for seg in box.cod for a in seg]
    placed = [a for a in own if a.name in placements]
    if not placed:
        return
    where = describe(box)
    for axis in placed:
        ranks = mesh[placements[axis.name]]
        value = _bound(axis.size, defaults)
        if value is not None and value % ranks:
            raise ShardingError(f"axis {axis.name} of size {_size_text(axis, defaults)} at {where} is not divisible by"
                                f" mesh axis {placements[axis.name]}={ranks}; choose sizes that divide or another placement")
    if box.prim.op not in SPLITTABLE and box.prim.kind == "nonlinear":  # others are gathered where they need it
        axis = placed[0]
        verb = "normalises over" if box.prim.op in NORMALISING else "acts on"
        raise ShardingError(
            f"axis {axis.name} (size {_size_text(axis, defaults)}) is split over mesh axis {placements[axis.name]}="
            f"{mesh[placements[axis.name]]}, but {where} {verb} it: each rank would see only 1/{mesh[placements[axis.name]]}"
            f" of {axis.name}. Split another axis, or rewrite the box so {axis.name} is only broadcast")
    if isinstance(box.prim, LinearOp):
        weight = list(box.prim.cod_axes) + list(box.prim.dom_axes)
        for m in mesh:
            on = [a.name for a in weight if placements.get(a.name) == m]
            if len(on) > 1:
                raise ShardingError(f"{where}: its weight has axes {' and '.join(on)} both on mesh axis {m}={mesh[m]};"
                                    " a weight can be split along one axis per mesh axis")


def _rewrite(node: Diagram, placements: Mapping[str, str]) -> Diagram:
    """Linear maps with their split axis outermost in its group (a transpose restores the order)."""
    return _Major(placements).fold(node)


class _Major(Rebuild):
    """:func:`_rewrite` as a :class:`~ncd.ir.interpreter.Rebuild`: a (woven) linear map becomes its parts."""

    def __init__(self, placements: Mapping[str, str]) -> None:
        self.placements = placements

    def box(self, box: Box) -> Diagram:
        linear = self._linear(box, ())
        return box if linear is None else linear

    def weave(self, node: Weave) -> Diagram:
        linear = self._linear(*unweave(node))
        return super().weave(node) if linear is None else linear

    def _linear(self, core: Diagram, weaves: tuple[Weave, ...]) -> Diagram | None:
        if not (isinstance(core, Box) and isinstance(core.prim, LinearOp)):
            return None
        parts = []
        for box in _major(core, self.placements):  # each part keeps the weaves (one segment in, one out, same length)
            for w in reversed(weaves):
                box = Weave(box, w.axis, w.dom_pos, w.cod_pos)
            parts.append(box)
        return Seq.of(*parts)

    def par(self, node: Par) -> Diagram:
        return Par(tuple(self.part(node, k, p) for k, p in enumerate(node.parts)))


def _major(box: Box, placements: Mapping[str, str]) -> list[Diagram]:
    prim = box.prim
    assert isinstance(prim, LinearOp)
    dom, cod = prim.dom_axes, prim.cod_axes

    def first(seg: Any) -> tuple[Any, tuple[int, ...] | None]:
        split = [i for i, a in enumerate(seg) if a.name in placements]
        if not split or split[0] == 0:
            return seg, None
        order = (split[0],) + tuple(i for i in range(len(seg)) if i != split[0])
        return seg.with_axes(seg.axes[i] for i in order), order

    new_dom, dom_order = first(dom)
    new_cod, cod_order = first(cod)
    if dom_order is None and cod_order is None:
        return [box]
    parts: list[Diagram] = []
    if dom_order is not None:
        parts.append(Box(TransposeOp(dom, dom_order), None, box.source))
    parts.append(Box(LinearOp(new_dom, new_cod, prim.bias), box.label, box.source))
    if cod_order is not None:
        back = tuple(cod_order.index(i) for i in range(len(cod)))
        parts.append(Box(TransposeOp(new_cod, back), None, box.source))
    return parts
