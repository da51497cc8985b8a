"""Conversion rules that are wires: aliases and regroupings of a value's axes.

* aliases (``dropout`` in eval, ``clone``, ``to`` the same dtype, ...) are wires;
* ``view``/``reshape``/``(un)squeeze``/``flatten`` regroup wires (:func:`regroup`): a split names its parts
  ``h`` and ``k`` (heads, head features), a merge of a split gives the old name back; a flattening that only feeds
  a matrix product drawn as a linear map is no box (:func:`_fused_input`);
* ``permute``/``transpose`` are crossings.

Also the predicates every idiom reads off a captured node (:func:`_tensor`, :func:`_live`, :func:`_shape`,
:func:`_weight`).  Registered, in this order among the idioms, by :mod:`ncd.trace.idioms`.
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.ir.diagram import Box
from ncd.prims.structure import TransposeOp
from ncd.trace.capture import Node, refs
from ncd.trace.convert import Converter, Decline, op_name, rule
from ncd.trace.naming import PRIME, frozen, unique

__all__ = ["dropout", "alias", "copy", "regroup", "reshape", "permute"]


# -- what a rule reads off a captured node -----------------------------------------------
def _tensor(value: Any) -> bool:
    return isinstance(value, Node) and isinstance(value.value, torch.Tensor)


def _live(value: Any) -> bool:
    return isinstance(value, Node) and value.live


def _shape(node: Node) -> tuple[int, ...]:
    return tuple(int(s) for s in node.value.shape)


def _weight(value: Any) -> torch.Tensor | None:
    if isinstance(value, Node) and not value.live and isinstance(value.value, torch.Tensor) and value.value.is_floating_point():
        return value.value
    return None


# -- wires that do not change the value ---------------------------------------------------
@rule("aten.dropout", "aten.feature_dropout", "aten.alpha_dropout", "aten.feature_alpha_dropout")
def dropout(conv: Converter, node: Node) -> None:
    train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", False)
    chance = node.args[1] if len(node.args) > 1 else node.kwargs.get("p", 0.5)
    if train and not (isinstance(chance, (int, float)) and chance == 0):
        raise Decline("dropout in training mode")  # with p = 0 it returns its input even in training mode
    conv.bind(node, conv.value(node.args[0]))


@rule("aten.clone", "aten.contiguous", "aten.alias", "aten.detach", "aten.lift_fresh_copy", "aten.to", "aten._to_copy",
      "aten.type_as")
def alias(conv: Converter, node: Node) -> None:
    source = node.args[0]
    if _tensor(source) and not source.live and isinstance(node.value, torch.Tensor) and "type_as" in str(node.target):
        # ``c.type_as(x)`` of a constant ``c`` reads only ``x``'s dtype (fixed in the diagram): the traced value
        # is a constant (Longformer's mask, Pegasus-X's arange cast to the embeddings' type)
        constant = Node(f"{node.name}_constant", "constant", value=node.value, stack=node.stack, source=source.source)
        conv.bind(node, conv.value(constant))
        conv.bind(constant, conv.values[id(node)])  # kept alive (ids stay unique), then unbound: read by no other
        conv.forget(constant)  # node, it leaves the layer's walk copyable (a repeated layer, :mod:`ncd.trace.reuse`)
        return
    if _tensor(source) and source.value.dtype != node.value.dtype:
        from ncd.trace.indexing import cast

        if cast(conv, node):
            return
    if not _tensor(source) or source.value.dtype != node.value.dtype or tuple(source.value.shape) != tuple(node.value.shape):
        raise Decline("changes dtype or shape")
    if op_name(node.target)[0] == "aten.detach" and source.value.is_floating_point() and _carries_gradient(conv, source):
        from ncd.prims.detach import DetachOp

        conv.bind(node, conv.apply(Box(DetachOp()), [conv.value(source)]))
        return
    conv.bind(node, conv.value(source))


@rule("aten.copy")
def copy(conv: Converter, node: Node) -> None:
    """``aten.copy(dst, src)`` (``torch.export``'s functional ``dst.copy_(src)``): ``src`` cast to ``dst``'s dtype and
    broadcast to its shape; ``dst``'s values are not read (a wire, a cast, a broadcast copy)."""
    _written_as(conv, node, node.args[1] if len(node.args) > 1 else node.kwargs.get("src"))


@rule("aten.fill", "aten.zero")
def fill(conv: Converter, node: Node) -> None:
    """``aten.fill(dst, value)`` and ``aten.zero(dst)`` (``torch.export``'s functional ``dst.fill_(value)``,
    ``s[:, 1:3] = 7.0``, ``dst.zero_()``): ``value`` (a number, or a 0-dim tensor) cast to ``dst``'s dtype and
    broadcast to its shape; ``dst``'s values are not read."""
    value = node.args[1] if len(node.args) > 1 else node.kwargs.get("value", 0)
    if isinstance(value, (bool, int, float)) and isinstance(node.value, torch.Tensor):
        number = Node(f"{node.name}_value", "call", value=torch.tensor(value, dtype=node.value.dtype), stack=node.stack)
        conv.bind(number, conv.value(number))
        try:
            _written_as(conv, node, number)
        finally:
            conv.forget(number)
        return
    _written_as(conv, node, value)


def _written_as(conv: Converter, node: Node, source: Any) -> None:
    """``node`` (a write of ``source`` into all of its first argument, whose values it does not read) as ``source``
    cast to its dtype and broadcast to its shape."""
    if not isinstance(source, Node) or not _tensor(source) or not isinstance(node.value, torch.Tensor):
        raise Decline("no source tensor")
    value, made = source.value, []
    if value.dtype != node.value.dtype:
        value = value.to(node.value.dtype)
        cast_node = Node(f"{node.name}_cast", "call", torch.ops.aten._to_copy.default, (source,),
                         {"dtype": node.value.dtype}, value=value, stack=node.stack, live=source.live, line=node.line)
        if source.live:
            alias(conv, cast_node)
        else:  # a constant (``s[..., -1] = torch.tensor(3.5, dtype=torch.float64)``): the constant cast
            conv.bind(cast_node, conv.value(cast_node))
        source = cast_node
        made.append(cast_node)
    if tuple(value.shape) != tuple(node.value.shape):
        from ncd.trace.attention import expand

        grown = Node(f"{node.name}_expand", "call", torch.ops.aten.expand.default, (source, list(node.value.shape)), {},
                     value=value.expand(node.value.shape), stack=node.stack, live=source.live, line=node.line)
        expand(conv, grown)
        source = grown
        made.append(grown)
    conv.bind(node, conv.value(source))
    conv.forget(*made)


def _carries_gradient(conv: Converter, source: Node) -> bool:
    """Whether a gradient reaches ``source`` in the lowered module: it is a float input or a parameter, or is computed
    from one read as floats (a straight-through estimator's difference, a target network's output).  A ``detach`` of it
    is then a stop-gradient box (:mod:`ncd.prims.detach`), so the lowered module trains as the model does; a ``detach``
    of anything else (a constant table read at positions computed from the inputs' ids, a mask) stays a wire."""
    carrying: set[int] | None = conv.__dict__.get("_carrying")
    if carrying is None:  # the first detach of the trace: one pass over the recording, in its order
        carrying = conv.__dict__["_carrying"] = set()
        for n in conv.captured.nodes:  # (a parameter read as a wire is a live copy of its node, in no list)
            if n.kind == "call" and any(
                    (id(r) in carrying or r.kind in ("input", "parameter")) and not (isinstance(r.value, torch.Tensor)
                    and not r.value.is_floating_point() and not r.value.is_complex())  # (a tuple: its items)
                    for r in refs((n.args, n.kwargs))):
                carrying.add(id(n))
    return source.kind in ("input", "parameter") or id(source) in carrying


# -- regrouping wires ---------------------------------------------------------------------
def _is_item(conv: Converter, name: str) -> bool:
    """Whether wires of this name are positions (tokens, rows, columns: the namer's item role)."""
    return conv.namer.roles.get(name.rstrip(PRIME)) == "item"


def _holds_input(merged: dict[str, list[tuple[str, int]]], name: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether wires of this name hold an input's batch or positions (``b``, ``t``, the sizes :mod:`ncd.trace.symbolic`
    makes symbols): they are those, or a merge holding one of them."""
    base = name.rstrip(PRIME)
    if base in ("b", "t"):
        return True
    if base in seen:
        return False
    return any(_holds_input(merged, wire, seen | {base}) for wire, _ in merged.get(base, ()))


def _role_width(conv: Converter, name: str, size: int) -> bool:
    """Whether wires of this name are a width the config names (``m``, ``f``): every wire of that width has it, so a
    split of one is not the undoing of the merge that first made one (layer 0's heads merged back into ``m``), and
    is named by its role like any other split (each layer's queries ``h k`` alike)."""
    return name.rstrip(PRIME) in conv.namer.config.get(size, ())


def note(conv: Converter, which: str, key: Any, default: Any = None) -> Any:
    """What the converter's note ``which`` (``_merges``, ``_splits``, ``_sliced``) holds at ``key`` now."""
    table = conv.__dict__.get(which)
    return default if table is None else table.get(key, default)


def regroup(conv: Converter, names: list[str], shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> list[str]:
    """Output names of a reshape: kept where a wire is unchanged, split into heads ``h k``, merged back.

    It reads the namer and the converter's notes of splits and merges, which grow as the walk goes on: while a first
    layer is walked (``namer.reads``, :mod:`ncd.trace.reuse`) the call is logged with its answer, and a later layer is
    a copy only where the same call, made then (:func:`regroup_again`), answers the same and writes nothing new."""
    reads = conv.namer.reads
    if reads is None:
        return _regroup(conv, names, shape_in, shape_out)
    conv.namer.reads = None  # its own reads are this one's
    try:
        out = _regroup(conv, names, shape_in, shape_out)
    except Decline as error:
        reads.append((regroup_again, (conv, tuple(names), tuple(shape_in), tuple(shape_out)), ("declined", str(error))))
        raise
    finally:
        conv.namer.reads = reads
    reads.append((regroup_again, (conv, tuple(names), tuple(shape_in), tuple(shape_out)), frozen(out)))
    return out


def regroup_again(conv: Converter, names: tuple[str, ...], shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> Any:
    """What :func:`regroup` would answer now (its names, or ``("declined", why)``), changing nothing: the namer and the
    notes are as before the call; ``("wrote",)`` if the call would have added to them (a walk would not be the same).
    Both are only ever added to (names, merges, splits and the wires each split: at their ends), so their lengths tell."""
    namer = conv.namer
    tables: tuple[dict[Any, Any], ...] = (namer.size_of, namer.generated, namer.roles)
    lengths = [len(t) for t in tables]
    splits: dict[Any, list[str]] | None = conv.__dict__.get("_splits")
    merges: dict[str, Any] | None = conv.__dict__.get("_merges")
    split_lengths = None if splits is None else {key: len(parents) for key, parents in splits.items()}
    merge_length = None if merges is None else len(merges)
    reads, namer.reads = namer.reads, None
    try:
        out: Any = frozen(_regroup(conv, list(names), shape_in, shape_out))
    except Decline as error:
        out = ("declined", str(error))
    finally:
        namer.reads = reads
    now_splits, now_merges = conv.__dict__.get("_splits"), conv.__dict__.get("_merges")
    same_splits = now_splits is splits and (splits is None or split_lengths == {k: len(v) for k, v in splits.items()})
    same_merges = now_merges is merges and (merges is None or merge_length == len(merges))
    if [len(t) for t in tables] == lengths and same_splits and same_merges:
        return out
    for table, n in zip(tables, lengths):  # put back: drop what was added at the ends
        for key in list(table)[n:]:
            del table[key]
    for which, held in (("_splits", splits), ("_merges", merges)):
        if held is None:
            conv.__dict__.pop(which, None)
    if splits is not None and split_lengths is not None:
        for key in [k for k in splits if k not in split_lengths]:
            del splits[key]
        for key, n in split_lengths.items():
            del splits[key][n:]
    if merges is not None and merge_length is not None:
        for key in list(merges)[merge_length:]:
            del merges[key]
    return ("wrote",)


def _regroup(conv: Converter, names: list[str], shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> list[str]:
    out: list[str] = []
    i = j = 0
    split_names = conv.__dict__.setdefault("_splits", {})
    merged: dict[str, list[tuple[str, int]]] = conv.__dict__.setdefault("_merges", {})  # name -> (wire, size) merged
    while j < len(shape_out) or i < len(shape_in):
        if j < len(shape_out) and shape_out[j] == 1 and (i >= len(shape_in) or shape_in[i] != 1):
            out.append("1")
            j += 1
            continue
        if i < len(shape_in) and shape_in[i] == 1 and (j >= len(shape_out) or shape_out[j] != 1):
            i += 1
            continue
        if i >= len(shape_in) or j >= len(shape_out):
            raise Decline("reshape does not line up")
        a, b = [i], [j]
        pa, pb = shape_in[i], shape_out[j]
        while pa != pb:
            if pa < pb:
                i += 1
                if i >= len(shape_in):
                    raise Decline("reshape does not line up")
                a.append(i)
                pa *= shape_in[i]
            else:
                j += 1
                if j >= len(shape_out):
                    raise Decline("reshape does not line up")
                b.append(j)
                pb *= shape_out[j]
        i, j = i + 1, j + 1
        group_in = [names[k] for k in a]
        sizes_in = [shape_in[k] for k in a]
        sizes_out = [shape_out[k] for k in b]
        items = [_is_item(conv, n) for n in group_in]
        if len(a) == 1 and len(b) == 1:
            out.append(group_in[0])
        elif len(a) == 1 and merged.get(group_in[0]) and [s for _, s in merged[group_in[0]]] == sizes_out \
                and not _role_width(conv, group_in[0], sizes_in[0]):
            out.extend(n for n, _ in merged[group_in[0]])  # a merge undone (tokens flattened, then unflattened)
        elif len(a) == 1:
            parent = group_in[0].rstrip(PRIME)
            if items[0] and len(b) == 2:  # positions cut into windows: which window (s), where in it (w)
                parts = [conv.namer.fresh(s, hint, "item") for s, hint in zip(sizes_out, ("s", "w"))]
            else:  # into heads and their features, unless the config gives neither part a heads' size
                config = conv.namer.config
                heads = not config or {"h", "g"} & config.get(sizes_out[0], set()) or "k" in config.get(sizes_out[-1], set())
                hints: list[str | None] = ["h", "k"] if len(b) == 2 and heads else [None] * len(b)
                roles = config.get(sizes_out[0], set())
                if len(b) == 2 and heads and roles and not {"h", "g"} & roles:
                    # heads the config does not count, of a size it gives another role (Mamba-2's 8 heads of 8
                    # features): the name of their size, as their per-head parameters (dt_bias, D) have it; a heads'
                    # name apart from those renamed one to the other inside the layer, and two layers' copies of the
                    # mixer differed by it (two definitions of it)
                    hints[0] = None
                if len(b) > 2 and heads and config:  # heads, the parts of a fused q k v per head, head features
                    hints = [h if h in config.get(s, set()) else None
                             for h, s in zip(["h"] + [None] * (len(b) - 2) + ["k"], sizes_out)]
                parts = [conv.namer.fresh(s, hint) for s, hint in zip(sizes_out, hints)]
            parts = unique(parts)
            key = tuple(n.rstrip(PRIME) for n in parts)
            # parts an earlier merge already named (``r = q o``) keep that name when merged again: this split is not
            # where they came from (else a later layer's merge of them would be named otherwise than the first's)
            if not any(name != parent and [(w.rstrip(PRIME), s) for w, s in wires] == list(zip(key, sizes_out))
                       for name, wires in merged.items()):
                parents = split_names.setdefault(key, [])
                if parent not in parents:
                    parents.append(parent)
            out.extend(parts)
        elif len(b) == 1:
            key = tuple(n.rstrip(PRIME) for n in group_in)
            # positions merged (an image's rows and columns flattened into tokens) are positions again
            parents = [p for p in split_names.get(key, ()) if p not in {n.rstrip(PRIME) for n in out}]
            if parents:
                name = parents[0]
            else:  # the width the config names (heads merged back: m), else a name of the merge's own
                # (not when the merge holds the batch or the positions: ``(b, h)`` read as ``b*h`` is no width,
                # even where the config's width has its size at the traced batch)
                letters = [] if all(items) or any(_holds_input(merged, n) for n in group_in) else [
                    x for x in ("m", "f") if x in conv.namer.config.get(sizes_out[0], set())]
                of = tuple(n.rstrip(PRIME) for n in group_in) if not letters else ()
                name = conv.namer.fresh(sizes_out[0], letters[0] if letters else None,
                                        "item" if all(items) else "feature", of)
            merged.setdefault(name, list(zip(group_in, sizes_in)))
            out.append(name)
        else:
            atoms = _refinement(sizes_in, sizes_out)
            if atoms is None:
                out.extend(conv.namer.fresh(s) for s in sizes_out)
            else:  # a split and a merge at once ((b, m) -> (b*h, k)): the split's parts named, then merged
                parts = regroup(conv, group_in, tuple(sizes_in), atoms)
                out.extend(regroup(conv, parts, atoms, tuple(sizes_out)))
    return out


def _refinement(sizes_in: list[int], sizes_out: list[int]) -> tuple[int, ...] | None:
    """The sizes both groups of a reshape are products of, consecutive (``[3, 8]`` and ``[6, 4]``: ``3 2 4``), or None
    when the cuts of one do not divide the other's."""
    cuts: set[int] = set()
    for sizes in (sizes_in, sizes_out):
        product = 1
        for n in sizes:
            product *= n
            cuts.add(product)
    ordered = sorted(cuts)
    if any(b % a for a, b in zip(ordered, ordered[1:])):
        return None
    return (ordered[0],) + tuple(b // a for a, b in zip(ordered, ordered[1:]))


def _fused_input(conv: Converter, node: Node) -> Any:
    """For ``view(x, [-1, m])`` feeding only this node, the tensor ``x`` (leading axes kept)."""
    name = str(node.target)
    if "addmm" in name:
        source, weight = node.args[1], node.args[2]
    elif "aten.mm" in name or "matmul" in name:
        source, weight = node.args[0], node.args[1]
        if not (isinstance(weight, Node) and conv.learned(weight)):  # a constant's product is an einsum (matmul)
            return None
    else:
        return None
    consumers = conv.consumers.get(id(node), [])
    if _weight(weight) is None or len(consumers) != 1 or "view" not in str(consumers[0].target):
        return None
    if (isinstance(source, Node) and source.kind == "call" and "view" in str(source.target)
            and len(conv.consumers.get(id(source), [])) == 1 and _live(source.args[0])
            and tuple(source.args[0].value.shape)[-1:] == tuple(source.value.shape)[-1:]):
        return source.args[0]
    return None


@rule("aten.view", "aten.reshape", "aten._unsafe_view", "aten.unsqueeze", "aten.squeeze", "aten.flatten", "aten.unflatten",
      "aten.view_as", "aten.reshape_as")
def reshape(conv: Converter, node: Node) -> None:
    source = node.args[0]
    if not _live(source):
        raise Decline("not live")
    if getattr(node.value, "dtype", None) != getattr(source.value, "dtype", None):  # x.view(torch.int32): the bits
        # read as another type, not a reshape
        raise Decline("a view as another dtype")
    vid = conv.value(source)
    consumers = conv.consumers.get(id(node), [])
    if len(consumers) == 1 and _fused_input(conv, consumers[0]) is source:
        conv.bind(node, vid)  # flattening for a matrix product that is drawn as a linear map
        return
    shape_in = tuple(int(a.size) for a in conv.segs[vid].axes)
    shape_out = _shape(node)
    names = regroup(conv, conv.names(vid), shape_in, shape_out)
    conv.bind(node, conv.view(vid, names, shape_out))


@rule("aten.permute", "aten.transpose", "aten.t", "aten.swapaxes", "aten.movedim", "aten.numpy_T", "aten.mT")
def permute(conv: Converter, node: Node) -> None:
    source = node.args[0]
    vid = conv.value(source)
    n = len(conv.segs[vid])
    name = node.target.name()
    if "permute" in name:
        perm = [d % n for d in node.args[1]]
    elif name.endswith("::t") or "numpy_T" in name:
        perm = list(reversed(range(n)))
    elif name.endswith("::mT"):  # x.mT: the last two wires crossed
        if n < 2:
            raise Decline("mT of fewer than two wires")
        perm = list(range(n - 2)) + [n - 1, n - 2]
    elif "movedim" in name:
        src, dst = node.args[1] % n, node.args[2] % n
        rest = [d for d in range(n) if d != src]
        perm = rest[:dst] + [src] + rest[dst:]
    else:
        a, b = node.args[1] % n, node.args[2] % n
        perm = list(range(n))
        perm[a], perm[b] = perm[b], perm[a]
    if perm == list(range(n)):
        conv.bind(node, vid)
        return
    seg = conv.segs[vid]
    box = Box(TransposeOp(seg, tuple(perm)))
    (out,) = conv.emit(box, [vid], list(box.cod))
    conv.bind(node, out)
