"""Triangular solves, however a model writes them, as one :class:`~ncd.prims.triangular.TriangularInverseOp` box.

The chunked delta rule (Gated DeltaNet in Qwen3.5 / Qwen3-Next / OLMo-Hybrid, Kimi Delta Attention, Bailing's
linear attention) solves a unit lower-triangular system per chunk.  Models write it in one of two ways:

* ``torch.linalg.solve_triangular(A, B, upper=False, unitriangular=True)``: read as ``(1 + L)⁻¹`` of ``A``
  (``L`` its strict lower triangle) followed by a matrix product with ``B`` — the inverse recorded, checked equal
  on the traced values, before the walk (:func:`solve_triangular_loops`); the converter's rule below draws the
  inverse (a solve against the identity) as the box;
* forward substitution, row by row, with slices whose size grows with the row::

      for i in range(1, n):
          row = attn[..., i, :i].clone()
          sub = attn[..., :i, :i].clone()
          attn[..., i, :i] = row + (row.unsqueeze(-1) * sub).sum(-2)

  which turns a strictly lower-triangular ``M`` into ``F = (1 − M)⁻¹ − 1`` (``F = M + M F``).  The recording
  unrolls it into ``n − 1`` steps of growing sizes; :func:`solve_triangular_loops` replaces ``F`` by
  ``(1 + L)⁻¹`` of ``−M`` minus the identity, only when proven: ``M`` is strictly lower triangular by
  construction (a ``tril(·, −k)`` or a ``masked_fill`` of a constant mask over the diagonal and above, then
  zero-keeping steps such as ``neg``), ``F`` is computed from ``M`` alone (and constants), and the recorded steps
  give ``F`` equal to the closed form on the traced values and, run again, on a fresh random ``M``.  Nothing
  rests on a name; any other loop stays as recorded (unrolled, still correct).

>>> import torch, ncd
>>> class Substitution(torch.nn.Module):
...     def forward(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
...         n = k.shape[-2]
...         attn = -(k @ k.transpose(-1, -2)).masked_fill(torch.ones(n, n, dtype=torch.bool).triu(), 0)
...         for i in range(1, n):
...             row = attn[..., i, :i].clone()
...             sub = attn[..., :i, :i].clone()
...             attn[..., i, :i] = row + (row.unsqueeze(-1) * sub).sum(-2)
...         return (attn + torch.eye(n)) @ v
>>> k, v = torch.randn(2, 6, 3) / 3, torch.randn(2, 6, 4)
>>> d = ncd.trace(Substitution(), k, v)
>>> [b.prim.label() for b in d.boxes()].count("(1+L)⁻¹")
1
>>> longer = ncd.trace(Substitution(), torch.randn(2, 12, 3) / 3, torch.randn(2, 12, 4))
>>> len(list(longer.boxes())) == len(list(d.boxes()))  # not unrolled: as many boxes at 12 rows as at 6
True
>>> k2, v2 = torch.randn(2, 6, 3) / 3, torch.randn(2, 6, 4)
>>> torch.allclose(d.to_torch()(k2, v2), Substitution()(k2, v2), atol=1e-5)
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from ncd.trace.capture import Captured, Node, refs, without_unread
from ncd.trace.convert import LOG, Converter, Decline, op_name, rule
from ncd.trace.live_masks import _run

__all__ = ["solve_triangular_loops"]

aten = torch.ops.aten

#: steps that keep an entry at zero where it is zero (a strictly lower-triangular matrix stays so)
_ZERO_KEEPING = frozenset({"aten.neg", "aten.clone", "aten.to", "aten._to_copy", "aten.contiguous", "aten.alias"})


def _eye_like(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device)


def _is_eye(node: Any, n: int) -> bool:
    if not isinstance(node, Node) or node.live or not isinstance(node.value, torch.Tensor):
        return False
    value = node.value
    return value.dim() >= 2 and tuple(value.shape[-2:]) == (n, n) and bool((value == _eye_like(n, value)).all())


def _scale(want: torch.Tensor) -> float:
    """The largest entry's magnitude (the absolute tolerance of :func:`_closeness` is proportional to it)."""
    if not want.numel():
        return 0.0
    if want.is_contiguous():
        low, high = torch.aminmax(want)  # one pass, no |want| made (a large batch: about half the time)
    else:  # (a solve's result, column-major: the whole-tensor reductions walk it across its strides; amin and amax
        # reorder it first, 0.2 ms where aminmax took 0.8 and max/min 1.5 on Gated DeltaNet's (2, 32, 1, 64, 128))
        low, high = want.amin(), want.amax()
    return max(-float(low), float(high))


def _closeness(got: torch.Tensor, want: torch.Tensor, scale: float | None = None) -> bool:
    """Whether ``got`` is ``want`` up to rounding: ``allclose`` with ``rtol=1e-4`` and ``atol=1e-5 · scale``
    (``scale``: :func:`_scale` of ``want``, read here if not given).  The absolute tolerance follows the values below
    1 too: of a matrix whose entries are about 1e-6, a fixed 1e-5 passed a solve 10 % off."""
    if got.shape != want.shape:
        return False
    scale = _scale(want) if scale is None else scale
    if not math.isfinite(scale):  # (an infinite atol makes any finite entry close): the finite entries' scale
        scale = float(want.nan_to_num(0.0, 0.0, 0.0).abs().max())
    return _close(got, want, 1e-5 * scale)


#: Entries compared at once by :func:`_close`: a batch of larger matrices is compared a matrix at a time
_AT_ONCE = 1 << 16


def _close(got: torch.Tensor, want: torch.Tensor, atol: float) -> bool:
    """``torch.allclose(got, want, rtol=1e-4, atol=atol)``, a batch of matrices compared one part of about
    :data:`_AT_ONCE` entries (whole matrices) after another and stopping at the first that differs (candidates that
    are not the closed form differ early): a part is close when :func:`_within` finds it so, else when ``allclose``
    does (``allclose`` holds on the whole exactly when it holds on every part: it is entrywise).  Each part is read
    once by :func:`_within` (then, if out of its bounds, once by ``allclose``), not again part by part."""
    if not _partable(got, want):  # unequal dtypes, no floats, a vector: ``allclose`` decides, a matrix at a time
        if got.dim() <= 2 or got.numel() <= _AT_ONCE:
            return bool(torch.allclose(got, want, rtol=1e-4, atol=atol))
        return all(_close(g, w, atol) for g, w in zip(got.unbind(0), want.unbind(0)))
    return all(_within(g, w, atol) or bool(torch.allclose(g, w, rtol=1e-4, atol=atol)) for g, w in _parts(got, want))


def _partable(got: torch.Tensor, want: torch.Tensor) -> bool:
    return got.dtype == want.dtype and got.is_floating_point() and got.shape == want.shape and got.dim() >= 2 \
        and bool(got.numel())


def _parts(got: torch.Tensor, want: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``got`` and ``want`` (of one shape, two dimensions or more) a part of about :data:`_AT_ONCE` entries (whole
    matrices) at a time, as stacks of matrices (strided as they are: no copy)."""
    g, w = (t.flatten(0, -3) for t in (got, want)) if got.dim() > 2 else (got[None], want[None])
    step = max(1, _AT_ONCE // (g.shape[1] * g.shape[2]))
    for at in range(0, g.shape[0], step):
        yield g[at:at + step], w[at:at + step]


def _within(got: torch.Tensor, want: torch.Tensor, atol: float) -> bool:
    """Whether every ``|got − want| ≤ atol + 1e-4·|want|`` with every bound finite (``got`` and ``want`` of one shape
    and floating dtype): then ``allclose`` holds (a finite error within its bound is close, NaN never is), found with
    the same operations in the same dtype at about half its cost (qwen3_next's (2, 32, 1, 64, 128) solve: 5.0 →
    2.8 ms).  False (and ``allclose`` decides) for anything else: a part out of bounds.

    The largest error is read first: at most ``atol / 2``, every entry is close without a bound made (``isclose``'s
    bound, ``atol`` in the tensors' dtype plus ``|rtol · want|`` rounded, is at least ``atol / 2``; NaN is never at
    most anything): a proof that holds, as most do, reads each part twice, not six times (3.3 → 0.7 ms there)."""
    error = (got - want).abs_()
    if float(error.amax()) <= atol / 2:  # (amax: as max, NaN too, and half its time on strided parts: see _scale)
        return True
    bound = want.abs().mul_(1e-4).add_(atol)  # (as ``isclose``: atol + |rtol · want|, rtol > 0)
    return bool(error.le_(bound).all()) and bool(bound.isfinite().all())


# -- the converter's rule: a solve against the identity is the box -----------------------------------------------
@rule("aten.linalg_solve_triangular")
def solve_triangular(conv: Converter, node: Node) -> None:
    """``solve_triangular(A, 1, upper=False, unitriangular=True)``: ``(1 + L)⁻¹`` of ``A`` on ``A``'s wires."""
    from ncd.ir.axes import Segment
    from ncd.ir.diagram import Box
    from ncd.prims.triangular import TriangularInverseOp

    a, b = node.args[:2]
    options = dict(zip(("upper", "left", "unitriangular"), node.args[2:]), **node.kwargs)
    if options.get("upper") is not False or options.get("left", True) is not True or \
            options.get("unitriangular") is not True:
        raise Decline("only unit lower-triangular solves from the left")
    if not (isinstance(a, Node) and a.live and isinstance(a.value, torch.Tensor) and a.value.is_floating_point()):
        raise Decline("not a live float matrix")
    n = int(a.value.shape[-1])
    if a.value.dim() < 2 or int(a.value.shape[-2]) != n or not _is_eye(b, n) or node.value.shape != a.value.shape:
        raise Decline("a solve against another right-hand side than the identity")
    vid = conv.value(a)
    seg = conv.segs[vid]
    source = Segment(seg.axes[-2:], seg.dtype)
    out = conv.apply(Box(TriangularInverseOp(source)), [vid])
    if conv.segs[out].names != seg.names:
        raise Decline("the inverse's wires moved")
    conv.bind(node, out)


# -- before the walk: solves of other right-hand sides, and forward substitution ----------------------------------
def solve_triangular_loops(captured: Captured) -> Captured:
    """``captured`` with every unit lower-triangular solve read as an inverse (then a product) and every proven
    forward substitution replaced by the inverse it computes (see the module doc)."""
    nodes = list(captured.nodes)
    changed = False
    replaced: set[int] = set()  # the recorded steps of the substitutions replaced
    inverses: dict[int, torch.Tensor] = {}  # the inverse of each solve's matrix, by its node (solved once)
    lower = _made_lower(nodes)  # the only calls that can be an M (the rest are not strictly lower by how they are made)
    k = 0
    while k < len(nodes):
        node = nodes[k]
        solve = node.kind == "call" and op_name(node.target)[0] == "aten.linalg_solve_triangular"
        try:  # a check that cannot run (an unusual value) proves nothing: the recording stays as it is
            made = _split_solve(node, inverses) if solve else _substitution(nodes, k, replaced) \
                if node.kind == "call" and id(node) in lower and id(node) not in replaced else []
        except Exception as error:  # noqa: BLE001 - every mutation comes after every check
            LOG.debug("triangular solve at %s not read: %s: %s", node.name, type(error).__name__, error)
            made = []
        if made:  # a solve: the identity and the inverse before the product; M: (−M,) the identity (, the inverse)
            at = k if solve else k + 1
            nodes[at:at] = made
            k += len(made)
            changed = True
        k += 1
    if not changed:
        return captured
    nodes = without_unread(nodes, captured.outputs, replaced)
    return Captured(nodes, captured.outputs, captured.method, captured.input_names, captured.escaped)


def _split_solve(node: Node, inverses: dict[int, torch.Tensor]) -> list[Node]:
    """``solve_triangular(A, B)`` -> ``solve_triangular(A, 1) @ B`` in place (the new nodes returned), when equal
    (``inverses``: the inverses of the matrices solved before, by node: Gated DeltaNet solves one ``A`` for its values
    and for its keys; a copy of the first's, the same numbers, for the second)."""
    a, b = node.args[:2]
    options = dict(zip(("upper", "left", "unitriangular"), node.args[2:]), **node.kwargs)
    if options.get("upper") is not False or options.get("left", True) is not True or \
            options.get("unitriangular") is not True:
        return []
    if not (isinstance(a, Node) and isinstance(b, Node) and isinstance(a.value, torch.Tensor) and a.live) or \
            any(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in (a.value, b.value, node.value)):
        return []
    n = int(a.value.shape[-1])
    if a.value.dim() < 2 or int(a.value.shape[-2]) != n or _is_eye(b, n) or not isinstance(node.value, torch.Tensor):
        return []
    eye = Node(f"{node.name}_identity", "constant", value=_eye_like(n, a.value), source="identity")
    known = inverses.get(id(a))
    if known is None:
        inverse_value = inverses[id(a)] = torch.linalg.solve_triangular(a.value, eye.value, upper=False,
                                                                        unitriangular=True)
    else:
        inverse_value = known.clone()
    product = torch.matmul(inverse_value, b.value)
    if not _closeness(product, node.value):
        return []
    inverse = Node(f"{node.name}_inverse", "call", aten.linalg_solve_triangular.default, (a, eye),
                   {"upper": False, "unitriangular": True}, inverse_value, node.stack, "", True, node.line)
    node.target, node.args, node.kwargs = aten.matmul.default, (inverse, b), {}
    return [eye, inverse]


def _made_lower(nodes: list[Node]) -> set[int]:
    """The calls :func:`_strictly_lower` can find strictly lower triangular, by id: a ``tril`` or a ``masked_fill`` of
    a number, then steps that keep zeros (a product with a number among them), each read from the one before; any
    other call is not, whatever its size (the checks of the entries come after, on these only).  The rewrites of
    :func:`solve_triangular_loops` make no call of these kinds, so the set holds for the graph as it is rewritten."""
    lower: set[int] = set()
    for node in nodes:
        if node.kind != "call":
            continue
        packet, full = op_name(node.target)
        first = node.args[0] if node.args else None
        if packet == "aten.tril" or full == "aten.masked_fill.Scalar" or \
                ((packet in _ZERO_KEEPING or packet == "aten.mul") and isinstance(first, Node) and id(first) in lower):
            lower.add(id(node))
    return lower


def _strictly_lower(node: Node, n: int) -> bool:
    """Whether ``node`` is zero on and above the diagonal of its last two dimensions for every input (by how it is
    made: ``tril(·, −k)``, or ``masked_fill`` of 0 under a constant mask covering the diagonal and above, then
    steps that keep zeros, a product with a finite number among them), exactly: its values there need no reading."""
    while node.kind == "call":
        packet, full = op_name(node.target)
        first = node.args[0] if node.args else None
        if not isinstance(first, Node):
            return False
        if packet in _ZERO_KEEPING or (packet == "aten.mul" and isinstance(node.args[1], (int, float))
                                       and math.isfinite(node.args[1])):  # (0 · ∞ is NaN)
            node = first
            continue
        if packet == "aten.tril":
            diagonal = node.args[1] if len(node.args) > 1 else node.kwargs.get("diagonal", 0)
            return isinstance(diagonal, int) and diagonal <= -1
        if full == "aten.masked_fill.Scalar":
            mask, fill = node.args[1], node.args[2]
            if fill != 0 or not isinstance(mask, Node) or mask.live or not isinstance(mask.value, torch.Tensor):
                return False
            value = mask.value
            if value.dtype != torch.bool or value.dim() < 2 or tuple(value.shape[-2:]) != (n, n):
                return False
            upper = torch.ones(n, n, dtype=torch.bool, device=value.device).triu()
            return bool((value | ~upper).all())
        return False
    return False


def _nonzero(value: torch.Tensor) -> bool:
    """``value.any()``, its first matrix read first (a matrix that is not zero answers without reading the rest)."""
    return (value.dim() > 2 and bool(value.flatten(0, -3)[0].any())) or bool(value.any())


def _closed_form(m: torch.Tensor) -> torch.Tensor:
    """``(1 − M)⁻¹ − 1`` of a strictly lower-triangular ``M``: what forward substitution makes of it."""
    eye = _eye_like(m.shape[-1], m)
    inverse: torch.Tensor = torch.linalg.solve_triangular(-m, eye.expand_as(m), upper=False, unitriangular=True)
    inverse.diagonal(dim1=-2, dim2=-1).sub_(1)  # − 1 in place: the same entries as ``inverse - eye``, no copy made
    return inverse


def _substitution(nodes: list[Node], k: int, replaced: set[int]) -> list[Node]:
    """If ``nodes[k]`` is the ``M`` of a proven forward substitution: its result ``F`` rewritten in place as
    ``(1 + L)⁻¹(−M) − 1`` and the nodes to insert after ``M`` returned (see the module doc)."""
    m = nodes[k]
    value = m.value
    if not (m.live and isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() >= 2) or \
            value.device.type == "meta":  # recorded without values (a large model): nothing to prove it on
        return []
    n = int(value.shape[-1])
    # n < 3: F = M, linear in M, so any step keeping M as it is (a cumulative sum of its rows) equals the closed form
    # there and proves no substitution (Mamba2's segment sum over two chunks would be drawn as an inverse)
    if n < 3 or int(value.shape[-2]) != n or not _strictly_lower(m, n):  # how it is made first: no tensor read
        return []
    if not _nonzero(value):  # (zero on and above the diagonal: exactly, by how it is made)
        return []
    pure = _computed_from(nodes, k)
    if not _leading_close(value, pure):
        return []
    want = _closed_form(value)
    scale = _scale(want)
    result = next((p for p in reversed(pure) if isinstance(p.value, torch.Tensor) and p.value.shape == want.shape
                   and _closeness(p.value, want, scale)), None)
    if result is None or not _fresh_equal(m, pure, result):
        return []
    made: list[Node] = []
    negated = m.args[0] if op_name(m.target)[1] == "aten.neg.default" else None
    if isinstance(negated, Node) and negated.live:  # M = −X: the inverse reads X
        replaced.add(id(m))  # dropped if nothing else reads it
    else:
        negated = Node(f"{m.name}_negated", "call", aten.neg.default, (m,), {}, -value, m.stack, "", True, m.line)
        made.append(negated)
    eye = Node(f"{m.name}_identity", "constant", value=_eye_like(n, value), source="identity")
    made.append(eye)
    options = {"upper": False, "unitriangular": True}
    plus = _plus_identity(nodes, result, n)
    if plus is not None:  # the model adds the identity back: that sum is the inverse
        plus.target, plus.args, plus.kwargs = aten.linalg_solve_triangular.default, (negated, eye), options
        replaced.add(id(result))
    else:
        inverse = Node(f"{m.name}_inverse", "call", aten.linalg_solve_triangular.default, (negated, eye), options,
                       want + eye.value, result.stack, "", True, result.line)
        made.append(inverse)
        result.target, result.args, result.kwargs = aten.sub.Tensor, (inverse, eye), {}
    replaced.update(id(p) for p in pure if p is not result)
    return made


#: Rows of the leading block :func:`_leading_close` solves first
_LEADING = 32


def _leading_close(value: torch.Tensor, pure: list[Node]) -> bool:
    """Whether a call of ``pure`` of ``M``'s shape is, on its leading ``k × k`` block (``k`` = :data:`_LEADING` rows
    or fewer), the closed form of ``M``'s leading block (``(1 − M)⁻¹``'s leading block is the inverse of ``1 − M``'s:
    the rows there do not read the rows below), within the proof's tolerance on that block's own scale.  A few
    rows, solved before the whole batch of matrices is (nemotron_h's segment sums over (2, 128, 1, 256, 256): about
    0.2 s each, for candidates, a cumulative sum and its exp, that differ from it from the third row on)."""
    k = min(int(value.shape[-1]), _LEADING)
    if k == value.shape[-1]:  # no smaller block: the whole is solved anyway
        return True
    head = _closed_form(value[..., :k, :k])
    scale = _scale(head)
    return any(isinstance(p.value, torch.Tensor) and p.value.shape == value.shape and
               _closeness(p.value[..., :k, :k], head, scale) for p in pure)


def _plus_identity(nodes: list[Node], result: Node, n: int) -> Node | None:
    """The one call reading ``result``, if it is ``result + 1`` (the identity, of ``result``'s shape)."""
    readers = [node for node in nodes if node.kind == "call" and any(r is result for r in refs((node.args, node.kwargs)))]
    if len(readers) != 1:
        return None
    (plus,) = readers
    if op_name(plus.target)[1] != "aten.add.Tensor" or plus.kwargs or len(plus.args) != 2 or \
            not isinstance(plus.value, torch.Tensor) or plus.value.shape != result.value.shape:
        return None
    other = plus.args[1] if plus.args[0] is result else plus.args[0]
    return plus if _is_eye(other, n) and other.value.dtype == result.value.dtype else None


def _computed_from(nodes: list[Node], k: int) -> list[Node]:
    """The calls after ``nodes[k]`` computed from it alone (and values that do not depend on the inputs), in order."""
    m = nodes[k]
    pure: set[int] = {id(m)}
    out: list[Node] = []
    for node in nodes[k + 1:]:
        if node.kind != "call" or not node.live:
            continue
        read = refs((node.args, node.kwargs))
        if all(id(r) in pure or not r.live for r in read) and any(id(r) in pure for r in read):
            pure.add(id(node))
            out.append(node)
    return out


def _fresh_equal(m: Node, pure: list[Node], result: Node) -> bool:
    """Run the recorded steps from ``M`` to ``result`` again on a random strictly lower-triangular ``M``."""
    needed = {id(result)}
    for node in reversed(pure):
        if id(node) in needed:
            needed.update(id(r) for r in refs((node.args, node.kwargs)))
    generator = torch.Generator(device="cpu").manual_seed(0)
    fresh = (torch.randn(m.value.shape, generator=generator, dtype=torch.float64) / m.value.shape[-1])
    fresh_m = fresh.to(m.value.dtype).tril(-1)
    try:
        got = _run([node for node in pure if id(node) in needed], {id(m): fresh_m}, until=result)
    except Exception:  # noqa: BLE001 - a step that does not run again as recorded: not proven
        return False
    return isinstance(got, torch.Tensor) and _closeness(got, _closed_form(fresh_m))
