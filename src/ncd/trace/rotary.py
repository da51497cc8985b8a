"""The rotary position embedding idiom: HF's ``apply_rotary_pos_emb`` drawn as one ``ρ`` box.

``q * cos + rotate_half(q) * sin`` with ``rotate_half(q) = cat(-q[..., k/2:], q[..., :k/2])``
arrives as seven ATen calls (two products, two slices, a negation, a concatenation, a sum)
and two folded tables.  :func:`find_rotary` looks for that shape before the walk: the same
live ``x`` in both products, halves of its last axis, tables that do not depend on the
inputs and equal RoFormer's cos/sin of ``position · base^(-2j/k)`` along the second-to-last
axis (``base`` and the table scale are read off the tables).  The seven calls become
:func:`ncd.prims.rotary.Rotary` on ``t k``, woven over the other wires (``b h``).

DeepSeek's interleaved form (``apply_rotary_pos_emb_interleave`` of dots3, glm4_moe_lite, mistral_large4 …) rotates
the pairs ``(x₀, x₁), (x₂, x₃) …`` on the even and odd entries: ``cat([x₁·cos − x₂·sin, x₂·cos + x₁·sin])`` with
``x₁ = x[..., 0::2]``, ``x₂ = x[..., 1::2]`` and half tables ``cos[..., :k/2]``.  That is ``ρ`` of ``cat([x₁, x₂])``
term by term (``ρ(y) = y·cos + cat(−y₂, y₁)·sin`` on the full tables ``cat(c, c)``: the same products, sums and
differences), so :func:`_match_interleaved` draws it as the two strided slices, their concatenation and one ``ρ``
(nine ATen calls before, the tables checked as above).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from ncd.ir.diagram import Box
from ncd.prims.rotary import RotaryOp
from ncd.trace.capture import Node
from ncd.trace.registry import called

if TYPE_CHECKING:
    from ncd.trace.convert import Converter

__all__ = ["find_rotary", "emit_rotary", "rotary_table"]


def rotary_table(t: int, k: int, base: float, scale: float = 1.0,
                 frequencies: tuple[float, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """The cos and sin tables ``(t, k)`` exactly as the lowering (and HF's LLaMA) computes them, in float32 (of the
    given ``frequencies`` in place of ``base``'s when there are any)."""
    inv = torch.tensor(frequencies, dtype=torch.float32) if frequencies else \
        1.0 / (base ** (torch.arange(0, k, 2, dtype=torch.int64).float() / k))
    freqs = torch.arange(t).float()[:, None] * inv[None, :]
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos() * scale, angles.sin() * scale


def _halves(cat: Any, x: Node, k: int) -> bool:
    """``cat([neg(x[..., k/2:]), x[..., :k/2]], -1)``."""
    if called(cat) not in ("aten.cat", "aten.concat", "aten.concatenate") or not isinstance(cat.args[0], (list, tuple)):
        return False
    dim = cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0)
    if len(cat.args[0]) != 2 or dim not in (-1, x.value.dim() - 1):
        return False
    neg, low = cat.args[0]
    if called(neg) != "aten.neg":
        return False
    high = neg.args[0]

    def sliced(node: Any, start: int, stop: int) -> bool:
        if called(node) != "aten.slice" or node.args[0] is not x:
            return False
        args = list(node.args[1:]) + [None] * 4
        d, a, b, step = args[0], args[1] or 0, args[2], args[3] or 1
        b = k if b is None or b >= k else b
        return d in (-1, x.value.dim() - 1) and (a, b, step) == (start, stop, 1)

    return sliced(high, k // 2, k) and sliced(low, 0, k // 2)


#: transformers' rope types whose frequencies change with the length run (``dynamic_rope_update``): dynamic NTK
#: scaling past ``max_position_embeddings``, LongRoPE's long factors past ``original_max_position_embeddings``
_BY_LENGTH = frozenset({"dynamic", "longrope"})


def _by_length(model: Any) -> bool:
    """Whether a rotary module of ``model`` recomputes its tables from the length it is run at (its ``rope_type``,
    one or one per layer type): their traced rows equal a fixed base's, which would then be drawn for every length."""
    for module in model.modules() if isinstance(model, torch.nn.Module) else ():
        kind = getattr(module, "rope_type", None)
        kinds = kind.values() if isinstance(kind, dict) else [kind]
        if any(isinstance(k, str) and k in _BY_LENGTH for k in kinds):
            return True
    return False


def _given(model: Any, half: int) -> list[tuple[float, ...]]:
    """The frequency tables a rotation of ``2·half`` features may have been given: the model's one-axis float32
    buffers of ``half`` entries (transformers' ``inv_freq`` of a YaRN, LLaMA-3 or linearly scaled rope), each only a
    candidate: :func:`_base_and_scale` checks the tables against it as against a base."""
    found: list[tuple[float, ...]] = []
    for buffer in model.buffers() if isinstance(model, torch.nn.Module) else ():
        if buffer.dim() == 1 and buffer.numel() == half and buffer.dtype == torch.float32 \
                and buffer.device.type != "meta" and bool(torch.isfinite(buffer).all()):
            values = tuple(float(v) for v in buffer.tolist())
            if values not in found:
                found.append(values)
    return found


Table = tuple[float, float, tuple[float, ...]]  # base, scale, frequencies (given) of a rotary table


def _base_and_scale(cos: torch.Tensor, sin: torch.Tensor, model: Any) -> Table | None:
    if _by_length(model):  # the tables are the traced length's: constants, so other lengths are refused
        return None
    t, k = cos.shape[-2:]
    scale = float(cos[..., 0, 0].reshape(-1)[0])
    given = getattr(getattr(model, "config", None), "rope_theta", None)
    guesses = [float(given)] if isinstance(given, (int, float)) and given > 0 else []
    if t > 1 and k >= 4 and scale > 0:
        angle = math.atan2(float(sin[..., 1, 1].reshape(-1)[0]), float(cos[..., 1, 1].reshape(-1)[0]))
        if angle > 0:
            base = angle ** (-k / 2)
            guesses += [float(round(base)), base]
    if k == 2:
        guesses.append(10000.0)
    atol = 1e-5 * min(1.0, abs(scale))  # (the tables are as large as their scale: a fixed 1e-5 passes tables of 1e-6)
    tables: list[tuple[float, tuple[float, ...]]] = [(base, ()) for base in guesses]
    tables += [(10000.0, given) for given in _given(model, k // 2)] if k % 2 == 0 and t > 1 else []
    for base, given in tables:
        want_cos, want_sin = rotary_table(t, k, base, scale, given)
        if torch.allclose(cos.float(), want_cos.expand_as(cos), atol=atol, rtol=1e-4) and \
                torch.allclose(sin.float(), want_sin.expand_as(sin), atol=atol, rtol=1e-4):
            return base, scale, given
    return None


def _tables_read(cos: torch.Tensor, sin: torch.Tensor, model: Any,
                 read: list[tuple[torch.Tensor, torch.Tensor, Table | None]]) -> Table | None:
    """:func:`_base_and_scale`, once per pair of tables of equal entries (every layer of a model reads the same):
    ``read`` holds the pairs read before and what they gave."""
    for c, s, found in read:
        if c.shape == cos.shape and s.shape == sin.shape and c.dtype == cos.dtype and s.dtype == sin.dtype \
                and c.device == cos.device and s.device == sin.device and torch.equal(c, cos) and torch.equal(s, sin):
            return found
    found = _base_and_scale(cos, sin, model)
    read.append((cos, sin, found))
    return found


def _products_of_tables(add: Node) -> Iterator[tuple[Node, Node, Node, Node, Any, Node]]:
    """The readings of ``add`` as ``x·cos + y·sin``, each ``(x·cos, y·sin, x, cos, y, sin)``: a sum of two products,
    ``x`` live, a float tensor of two axes or more of the sum's shape and dtype (tables of a wider dtype promote the
    result: ``ρ`` keeps ``x``'s), ``cos`` and ``sin`` tables (nodes that do not depend on the inputs), ``y`` either
    factor of the second product (the rotated ``x``: :func:`_match`, :func:`ncd.trace.rotary_pairs._match`)."""
    if called(add) != "aten.add" or len(add.args) != 2 or add.kwargs.get("alpha", 1) != 1:
        return
    for first, second in (add.args, add.args[::-1]):
        if called(first) != "aten.mul" or called(second) != "aten.mul" or len(first.args) != 2 or len(second.args) != 2:
            continue
        for x, cos in (first.args, first.args[::-1]):
            if not (isinstance(x, Node) and x.live and isinstance(cos, Node) and not cos.live):
                continue
            if not x.value.is_floating_point() or x.value.dim() < 2 or tuple(x.value.shape) != tuple(add.value.shape) \
                    or add.value.dtype != x.value.dtype:
                continue
            for y, sin in (second.args, second.args[::-1]):
                if isinstance(sin, Node) and not sin.live:
                    yield first, second, x, cos, y, sin


def _match(conv: Converter, add: Node, read: list[Any]) -> tuple[list[Node], Node, Table, bool] | None:
    for first, second, x, cos, cat, sin in _products_of_tables(add):
        k = int(x.value.shape[-1])
        if not _halves(cat, x, k):
            continue
        tables = _laid_out([c.value for c in (cos, sin)], x, k)
        if tables is None:
            continue
        between = tables[0].dim() != cos.value.dim()
        found = _tables_read(tables[0], tables[1], conv.model, read)
        if found is None:
            continue
        neg, low = cat.args[0]
        members = [first, second, cat, neg, neg.args[0], low]
        if not _closed(conv, members, add):
            continue
        return members, x, found, between
    return None


def _closed(conv: Converter, members: list[Node], result: Node) -> bool:
    """No call of ``members`` is read but by them and ``result`` (their sum or concatenation), nor is a model output:
    the rotation's calls can be skipped for the one ``ρ`` at ``result``."""
    inside = {id(m) for m in members} | {id(result)}
    return not any(id(c) not in inside for m in members for c in conv.consumers.get(id(m), [])) \
        and not any(o is m for o in conv.captured.outputs for m in members)


def _laid_out(tables: list[Any], x: Node, width: int) -> list[torch.Tensor] | None:
    """The tables ``(..., t, width)`` of a rotation of ``x``'s last axis at the positions of its second-to-last axis
    (``b h t k``), or of its third-to-last, the tables broadcast over the heads between (``b t h k``: gemma4, the sparse
    attention indexers), those read without their heads' axis (tables of two positions or more along it: one
    position's would fit any axis); None if laid out otherwise."""
    shape = tuple(x.value.shape)
    if any(not isinstance(v, torch.Tensor) or v.device.type == "meta" or v.dim() < 2 or v.dim() > len(shape)
           for v in tables):
        return None
    if len(shape) >= 3 and shape[-3] >= 2 \
            and all(v.dim() >= 3 and tuple(v.shape[-3:]) == (shape[-3], 1, width) for v in tables):
        return [v.squeeze(-2) for v in tables]
    if all(tuple(v.shape[-2:]) == (shape[-2], width) for v in tables):
        return list(tables)
    return None


def _strided(node: Any, x: Node, start: int) -> bool:
    """``node`` is ``x[..., start::2]`` (a slice of ``x``'s last axis, every other entry from ``start``)."""
    if called(node) != "aten.slice" or node.args[0] is not x:
        return False
    args = list(node.args[1:]) + [None] * 4
    d, a, b, step = args[0], args[1] or 0, args[2], args[3] or 1
    k = int(x.value.shape[-1])
    return d in (-1, x.value.dim() - 1) and a == start and (b is None or b >= k) and step == 2


def _products(node: Any) -> tuple[Any, Any] | None:
    """The two factors of a product node, or None."""
    if called(node) != "aten.mul" or len(node.args) != 2:
        return None
    return node.args[0], node.args[1]


def _match_interleaved(conv: Converter, cat: Node, read: list[Any]
                       ) -> tuple[list[Node], Node, Node, Node, Table, bool] | None:
    """``cat([x₁·cos − x₂·sin, x₂·cos + x₁·sin], -1)`` with ``x₁ = x[..., 0::2]``, ``x₂ = x[..., 1::2]`` and rotary half
    tables (the module's docstring): the products and their sum and difference (skipped), ``x``, ``x₁``, ``x₂`` and the
    tables' base and scale."""
    if called(cat) not in ("aten.cat", "aten.concat", "aten.concatenate") or not isinstance(cat.args[0], (list, tuple)) \
            or len(cat.args[0]) != 2 or not cat.value.is_floating_point() or cat.value.dim() < 2:
        return None
    dim = cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0)
    difference, total = cat.args[0]
    if dim not in (-1, cat.value.dim() - 1) or called(difference) != "aten.sub" or called(total) != "aten.add" \
            or len(difference.args) != 2 or len(total.args) != 2 or difference.kwargs.get("alpha", 1) != 1 \
            or total.kwargs.get("alpha", 1) != 1:
        return None
    terms = [_products(t) for t in (*difference.args, *total.args)]
    if any(t is None for t in terms):
        return None
    # each product: a live factor and a table (either order)
    ordered = []
    for u, v in terms:  # type: ignore[misc]
        if isinstance(u, Node) and u.live and isinstance(v, Node) and not v.live:
            ordered.append((u, v))
        elif isinstance(v, Node) and v.live and isinstance(u, Node) and not u.live:
            ordered.append((v, u))
        else:
            return None
    (x1, cos), (x2, sin), (y2, cos2), (y1, sin2) = ordered
    if x1 is not y1 or x2 is not y2 or cos is not cos2 or sin is not sin2 or x1 is x2:
        return None
    x = x1.args[0] if called(x1) == "aten.slice" else None
    if not (isinstance(x, Node) and x.live and _strided(x1, x, 0) and _strided(x2, x, 1)):
        return None
    k = int(x.value.shape[-1])
    if k % 2 or not x.value.is_floating_point() or tuple(cat.value.shape) != tuple(x.value.shape) \
            or cat.value.dtype != x.value.dtype:  # (tables of a wider dtype promote the result: ρ keeps x's)
        return None
    # (a table one entry wide turns every pair by one angle: the tables of base 1, checked as any other)
    laid = _laid_out([c.value for c in (cos, sin)], x, k // 2) or _laid_out([c.value for c in (cos, sin)], x, 1)
    if laid is None or laid[0].shape[-2] < 2:  # (one position's tables would fit any axis of size 1, heads, as it)
        return None
    between = laid[0].dim() != cos.value.dim()
    tables = [v.expand(*v.shape[:-1], k // 2) for v in laid]
    found = _tables_read(torch.cat((tables[0], tables[0]), dim=-1), torch.cat((tables[1], tables[1]), dim=-1),
                         conv.model, read)
    if found is None:
        return None
    members = [difference, total, *(t for t in (difference.args + total.args))]
    if not _closed(conv, members, cat):
        return None
    return members, x, x1, x2, found, between


def find_rotary(conv: Converter) -> dict[int, tuple[Any, ...]]:
    """The sums (and interleaved rotations' concatenations) that are rotary embeddings, by node id (their other calls
    are added to ``conv.skip``)."""
    found: dict[int, tuple[Any, ...]] = {}
    read: list[tuple[torch.Tensor, torch.Tensor, Table | None]] = []
    for node in conv.captured.nodes:
        if node.kind == "call" and node.live and called(node) == "aten.add":
            match = _match(conv, node, read)
            if match is not None:
                members, x, table, between = match
                conv.skip |= {id(m) for m in members}
                found[id(node)] = (x, table, None, between)
        elif node.kind == "call" and node.live and called(node) in ("aten.cat", "aten.concat", "aten.concatenate"):
            pairs = _match_interleaved(conv, node, read)
            if pairs is not None:
                members, x, x1, x2, table, between = pairs
                conv.skip |= {id(m) for m in members}
                found[id(node)] = (x, table, (x1, x2), between)
    return found


def emit_rotary(conv: Converter, node: Node, x: Node, table: Table, parts: tuple[Node, Node] | None = None,
                between: bool = False) -> None:
    """``ρ`` on the last two wires of ``x`` (positions, features), woven over the others; of an interleaved rotation,
    on the concatenation of its even and odd entries ``parts`` (themselves converted as the slices they are); with the
    heads ``between`` the positions and the features (``b t h k``), on ``x`` with its heads crossed before the
    positions, crossed back after."""
    from ncd.trace.boxes_losses import _call

    if parts is not None:
        x = _call(conv, node, "pairs", torch.ops.aten.cat.default, list(parts), -1)
    if between:
        x = _call(conv, node, "heads_first", torch.ops.aten.transpose.int, x, -3, -2)
    vid = conv.value(x)
    seg = conv.segs[vid]
    base, scale, given = table
    prim = RotaryOp(seg.axes[-1], seg.axes[-2], base, scale, frequencies=given)
    out = conv.apply(Box(prim), [vid])
    if between:  # (the rotation's value, heads first: the recorded result crossed as the rotation reads it)
        turned = Node(f"{node.name}_turned", "call", value=node.value.transpose(-3, -2), stack=node.stack, live=True,
                      line=node.line)
        conv.bind(turned, out)
        back = _call(conv, node, "positions_first", torch.ops.aten.transpose.int, turned, -3, -2)
        out = conv.value(back)
    conv.bind(node, out)
