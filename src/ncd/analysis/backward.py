"""Reverse mode as a diagram: ``ncd.backward(diagram)``.

The paper's reading of backpropagation: derivatives are linear maps, so the backward pass
is itself a diagram — the transposes of the linear wirings, the broadcast derivatives of
elementwise maps, sums over broadcast axes where an input was shared, with the forward
values it needs as explicit inputs.  It is built compositionally:

* a box ``f`` has a backward rule (``ncd.analysis.<family>``) giving the values it needs
  stored (inputs, outputs, weights) and a diagram ``(stored, ∂out) -> (∂in, ∂weights)``;
* ``f >> g`` runs ``g``'s backward, then ``f``'s; ``f @ g`` runs both side by side;
* ``f`` woven over ``c`` gives ``f``'s backward woven over ``c``, followed by a sum over
  ``c`` for every input that was shared (and for every weight);
* a block gives a block (``"<name> backward"``), a repetition its iterations in reverse.

:func:`plan` also returns the *forward diagram with residuals* — the forward pass that
outputs, beside its results, every stored value — so the two run as modules.

>>> import ncd
>>> d = ncd.Identity.of("b m") >> ncd.Linear("m -> n") >> ncd.Tanh()
>>> back = ncd.backward(d)
>>> str(back.dom), str(back.cod)
('b m, n m, b n, b n', 'b m, n m')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ncd.analysis.tables import AnalysisError, backward_entry
from ncd.errors import LimitError, SizeError
from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.checks import expect_diagram
from ncd.ir.diagram import (
    Block,
    Box,
    Diagram,
    Identity,
    Par,
    Repeat,
    Seq,
    Weave,
    bind_known,
    check_option_names,
    check_size_names,
    defaults_of,
    describe,
    unweave,
)
from ncd.ir.interpreter import Fold
from ncd.ir.rules import BATCHED_BACKWARD, BoxBackward
from ncd.prims.linear import EinsumOp
from ncd.prims.structure import AddOp, RenameOp, ZerosOp, cot, route, woven_scalar

__all__ = ["backward", "plan", "Plan", "BoxBackward", "cot", "route", "woven_scalar", "types", "woven_leading"]


@dataclass(frozen=True)
class Stored:
    segment: Segment
    kind: str  # "value" or "param"
    port: tuple[str, int] | None
    box: int
    name: str = ""


@dataclass(frozen=True)
class Grad:
    segment: Segment
    box: int
    name: str
    #: sorts like the lowered module's ``parameters()``: per class, its own parameters, then child modules
    order: tuple[Any, ...] = ()
    #: a tied weight's gradient: ``(class, label)`` of the embedding whose table it shares (added to that gradient)
    tie: tuple[tuple[int, ...], str] | None = None
    #: an embedding table's ``(class, label)``, the target of ties
    label: tuple[tuple[int, ...], str] | None = None


@dataclass
class _Part:
    forward: Diagram  # A -> (B, stored values)
    back: Diagram  # (stored entries, ∂B) -> (∂A, grads)
    stored: list[Stored] = field(default_factory=list)
    grads: list[Grad] = field(default_factory=list)

    @property
    def values(self) -> list[Stored]:
        return [s for s in self.stored if s.kind == "value"]


def types(segments: Sequence[Segment]) -> Type:
    return Type(tuple(segments))


def sum_over(segment: Segment, position: int, axis: Axis) -> Diagram:
    """Sum the ``axis`` at ``position`` of ``segment`` away (an einsum with one input)."""
    return Box(EinsumOp(Type((segment.insert(position, axis),)), segment))


def woven_leading(box: Diagram, axes: Sequence[Axis], dom_pos: tuple[int | None, ...]) -> Diagram:
    """``box`` woven over ``axes`` (outermost first), leading in every output and in the inputs ``dom_pos`` marks 0."""
    result = box
    for axis in reversed(axes):
        result = Weave(result, axis, dom_pos, tuple(0 for _ in result.cod))
    return result


#: primitives whose weight is an ``nn.Parameter`` of the enclosing class (not of a child module)
DIRECT_PARAMETERS = {"parameter"}


def _direct(prim: Any) -> bool:
    """Whether ``prim``'s weights are ``nn.Parameter`` s of the enclosing class, which ``parameters()`` lists before
    its child modules': a parameter box's, and an offset RMS norm's (``(1 + w)``: its weight beside a weightless
    ``nn.RMSNorm``, :func:`ncd.prims.normalization.lower_rmsnorm`)."""
    return prim.op in DIRECT_PARAMETERS or (prim.op == "rmsnorm" and bool(getattr(prim, "offset", 0.0)))


class Builder(Fold[_Part]):
    """Reverse mode as a fold of the diagram (:class:`ncd.ir.interpreter.Fold`): each node's forward-with-residuals
    and backward diagrams from its parts'."""

    def __init__(self, training: bool = True) -> None:
        self.training = training
        self.in_chain = False
        self.boxes = 0
        self.loads: dict[str, int] = {}
        self.position: tuple[int, ...] = ()
        self.classes: list[tuple[int, ...]] = []

    def part(self, node: Diagram, k: int, part: Diagram) -> _Part:
        before = self.position
        self.position = before + (k,)
        try:
            return self.fold(part)
        finally:
            self.position = before

    def at(self, node: Diagram, k: int) -> _Part:
        return self.part(node, k, node)

    def load_key(self, slot: str) -> str:
        """A fresh slot for the cotangent of one load of ``slot`` (seen before its save, in reverse)."""
        count = self.loads.get(slot, 0)
        self.loads[slot] = count + 1
        return f"∂{slot}#{count}"

    def saved_keys(self, slot: str) -> list[str]:
        count = self.loads.pop(slot, 0)
        return [f"∂{slot}#{k}" for k in range(count)]

    # -- the compositional rules (the override points of ncd.ir.interpreter.Fold) ---------------
    def diff(self, node: Diagram) -> _Part:
        return self.fold(node)

    def identity(self, node: Identity) -> _Part:
        return _Part(node, Identity(cot(node.type)))

    def seq(self, node: Seq) -> _Part:  # parts visited last to first (a load's cotangent before its save's)
        return _joined([self.part(node, k, p) for k, p in reversed(list(enumerate(node.parts)))][::-1], _then)

    def par(self, node: Par) -> _Part:
        return _joined([self.part(node, k, p) for k, p in reversed(list(enumerate(node.parts)))][::-1], _beside)

    def then(self, first: _Part, second: _Part) -> _Part:
        return _then(first, second)

    def beside(self, first: _Part, second: _Part) -> _Part:
        return _beside(first, second)

    def block(self, node: Block) -> _Part:
        self.classes.append(self.position)
        try:
            inner = self.part(node.body, 0, node.body)
        finally:
            self.classes.pop()
        return _Part(Block(inner.forward, node.name, node.meta), Block(inner.back, f"{node.name} backward"),
                     [replace(s, port=None) for s in inner.stored], inner.grads)

    def repeat(self, node: Repeat) -> _Part:
        if node.start.free_symbols or node.stop.free_symbols:
            names = ", ".join(sorted(str(s) for s in node.start.free_symbols | node.stop.free_symbols))
            raise AnalysisError(f"backward of {describe(node)}: bind its repetition count first ({names})")
        steps = [node.iteration(i) for i in range(int(node.start), int(node.stop))]
        steps = [s if isinstance(s, Block) else Block(s, node.name or "layer") for s in steps]  # a class each
        return self.fold(Seq.of(*steps) if len(steps) > 1 else steps[0])

    def box(self, box: Box) -> _Part:
        rule = backward_entry(box.prim)
        result: BoxBackward = rule(box, self)
        index = self.boxes
        self.boxes += 1
        want = types(list(_stored_types(box, result)) + list(cot(box.cod)))
        if not result.diagram.dom.same(want):
            raise AnalysisError(f"backward rule of {box.prim.op} takes '{result.diagram.dom}', expected '{want}'")
        stored = []
        for (kind, which), seg in zip(result.stored, result.diagram.dom):
            if kind == "param":
                stored.append(Stored(seg, "param", None, index, str(which)))
            elif kind == "aux":
                stored.append(Stored(seg, "value", ("out", result.aux_like[int(which)]), index))
            else:
                stored.append(Stored(seg, "value", (kind, int(which)), index))
        n = len(cot(box.dom))
        levels = tuple((1, c) for c in self.classes)
        own = (0 if _direct(box.prim) else 1, self.position)
        here = self.classes[-1] if self.classes else ()
        tied_to = getattr(box.prim, "tied_to", None) if box.prim.op == "unembed" else None
        label = (here, box.label) if box.prim.op == "embedding" and box.label else None
        grads = [Grad(seg, index, name, levels + (own, (k,)), (here, tied_to) if tied_to and name == "weight" else None,
                      label if name == "weight" else None)
                 for k, (seg, name) in enumerate(zip(result.diagram.cod.segments[n:], result.grads))]
        ports = [(k, int(w)) for k, w in result.stored if k != "param"]
        return _Part(_box_forward(box, ports, result.forward), result.diagram, stored, grads)

    def weave(self, node: Weave) -> _Part:
        """Weaving; a chain of leading weaves around a box with a batched rule contracts its weights' gradients."""
        inner, chain = unweave(node)
        leading = all(set(w.dom_pos) <= {0} and set(w.cod_pos) <= {0} for w in chain)
        if self.in_chain or not isinstance(inner, Box) or not leading:
            return self.woven(node)
        rule = BATCHED_BACKWARD.get(inner.prim)
        if rule is None:
            return self.woven(node)
        self.in_chain = True
        try:
            part = self.woven(node)
        finally:
            self.in_chain = False
        result: BoxBackward = rule(inner.prim, inner, self, tuple(w.axis for w in chain))
        if result.diagram.dom.same(part.back.dom) and result.diagram.cod.same(part.back.cod):
            part.back = result.diagram
        return part

    def woven(self, node: Weave) -> _Part:
        inner = self.at(node.inner, 0)
        on_box = isinstance(unweave(node.inner)[0], Box)
        c = node.axis

        def position(s: Stored) -> int | None:
            if s.kind == "param":
                return None
            if on_box and s.port is not None:
                kind, j = s.port
                p = node.dom_pos[j] if kind == "in" else node.cod_pos[j]
                return 0 if p is None else p
            return 0

        positions = [position(s) for s in inner.stored]
        float_dom = [j for j, seg in enumerate(node.inner.dom) if seg.dtype == "float"]
        float_cod = [j for j, seg in enumerate(node.inner.cod) if seg.dtype == "float"]
        if not inner.back.dom.segments:
            if inner.grads:
                raise AnalysisError(f"backward of {describe(node)}: weights without inputs cannot be woven")
            back: Diagram = Box(ZerosOp(cot(node.dom)))
        else:
            dom_pos = tuple(positions) + tuple(node.cod_pos[j] for j in float_cod)
            cod_pos = tuple(0 if node.dom_pos[j] is None else node.dom_pos[j] for j in float_dom) + (0,) * len(inner.grads)
            woven = Weave(inner.back, c, dom_pos, cod_pos)  # type: ignore[arg-type]
            sums = []
            for k, seg in enumerate(inner.back.cod):
                shared = k >= len(float_dom) or node.dom_pos[float_dom[k]] is None
                sums.append(sum_over(seg, 0, c) if shared else Identity(Type((woven.cod[k],))))
            back = Seq.of(woven, Par.of(*sums)) if sums else woven
        values = [k for k, s in enumerate(inner.stored) if s.kind == "value"]
        forward = Weave(inner.forward, c, node.dom_pos, tuple(node.cod_pos) + tuple(positions[k] or 0 for k in values))
        stored = [s if p is None else replace(s, segment=s.segment.insert(p, c), port=s.port if on_box else None)
                  for s, p in zip(inner.stored, positions)]
        return _Part(forward, back, stored, inner.grads)


def _stored_types(box: Box, result: BoxBackward) -> list[Segment]:
    out = []
    for (kind, which), seg in zip(result.stored, result.diagram.dom):
        if kind == "in":
            out.append(box.dom[int(which)])
        elif kind == "out":
            out.append(box.cod[int(which)])
        else:
            out.append(seg)
    return out


def _box_forward(box: Box, ports: list[tuple[str, int]], replacement: Diagram | None = None) -> Diagram:
    """``box`` (or its ``replacement`` with extra outputs) followed by copies of what its backward needs: ``A -> (B, stored)``."""
    fwd = box if replacement is None else replacement
    if not ports:
        return fwd
    a, b = list(box.dom), list(box.cod)
    aux = list(fwd.cod)[len(b):]
    ins = [j for kind, j in ports if kind == "in"]
    first = route(a, list(range(len(a))) + ins)
    middle = Par.of(fwd, Identity(types([a[j] for j in ins])))
    picks = list(range(len(b)))
    extra = iter(range(len(b) + len(aux), len(b) + len(aux) + len(ins)))
    for kind, j in ports:
        picks.append(j if kind == "out" else len(b) + j if kind == "aux" else next(extra))
    return Seq.of(first, middle, route(b + aux + [a[j] for j in ins], picks))


#: parts a composition joins one after another, as written; a longer one is halved (see :func:`_joined`)
RUN = 4


def _joined(parts: list[_Part], join: Callable[[_Part, _Part], _Part]) -> _Part:
    """``parts`` joined by ``join`` (:func:`_then` or :func:`_beside`, both associative): up to :data:`RUN` of them
    one after another (``((p0 p1) p2) p3``), more as a balanced tree of such runs.

    Each join threads every stored value and weight gradient of both its sides, so joining ``n`` parts one after
    another builds ``O(n²)`` wires (a 400-layer repetition ran past 60 s); halving builds ``O(n log n)`` with depth
    ``O(log n)``.  The result's types, stored values and gradients are the same either way.
    """
    if len(parts) <= RUN:
        result = parts[0]
        for part in parts[1:]:
            result = join(result, part)
        return result
    half = len(parts) // 2
    return join(_joined(parts[:half], join), _joined(parts[half:], join))


def _then(p: _Part, q: _Part) -> _Part:
    sv_p, sv_q = [s.segment for s in p.values], [s.segment for s in q.values]
    c = list(q.forward.cod)[: len(q.forward.cod) - len(sv_q)]
    n = len(c)
    forward = Seq.of(
        p.forward,
        Par.of(q.forward, Identity(types(sv_p))),
        route(c + sv_q + sv_p, list(range(n)) + [n + len(sv_q) + k for k in range(len(sv_p))] + [n + k for k in range(len(sv_q))]),
    )
    back = Seq.of(
        Par.of(Identity(types([s.segment for s in p.stored])), q.back),
        Par.of(p.back, Identity(types([g.segment for g in q.grads]))),
    )
    strip = [replace(s, port=None) for s in p.stored + q.stored]
    return _Part(forward, back, strip, p.grads + q.grads)


def _beside(p: _Part, q: _Part) -> _Part:
    sv_p, sv_q = [s.segment for s in p.values], [s.segment for s in q.values]
    b1 = list(p.forward.cod)[: len(p.forward.cod) - len(sv_p)]
    b2 = list(q.forward.cod)[: len(q.forward.cod) - len(sv_q)]
    order = b1 + sv_p + b2 + sv_q
    n1, m1, n2 = len(b1), len(sv_p), len(b2)
    picks = list(range(n1)) + [n1 + m1 + k for k in range(n2)] + [n1 + k for k in range(m1)] + \
        [n1 + m1 + n2 + k for k in range(len(sv_q))]
    forward = Seq.of(Par.of(p.forward, q.forward), route(order, picks))
    s1, s2 = [s.segment for s in p.stored], [s.segment for s in q.stored]
    g1, g2 = list(p.back.dom)[len(s1):], list(q.back.dom)[len(s2):]
    dom = s1 + s2 + g1 + g2
    a, b, c, d = len(s1), len(s2), len(g1), len(g2)
    gather = route(dom, list(range(a)) + [a + b + k for k in range(c)] + [a + k for k in range(b)]
                   + [a + b + c + k for k in range(d)])
    out1, out2 = list(p.back.cod), list(q.back.cod)
    x1, x2 = len(out1) - len(p.grads), len(out2) - len(q.grads)
    cods = out1 + out2
    scatter = route(cods, list(range(x1)) + [len(out1) + k for k in range(x2)] + [x1 + k for k in range(len(p.grads))]
                    + [len(out1) + x2 + k for k in range(len(q.grads))])
    back = Seq.of(gather, Par.of(p.back, q.back), scatter)
    strip = [replace(s, port=None) for s in p.stored + q.stored]
    return _Part(forward, back, strip, p.grads + q.grads)


@dataclass(frozen=True)
class Plan:
    """The forward diagram with residuals, the backward diagram, and what their segments are.

    ``forward``: ``A -> (B, stored values)``; ``backward``: ``(stored, ∂B) -> (∂A, ∂weights)``.
    ``stored[k]`` is ``("value", v)`` (the ``v``-th stored output of ``forward``) or
    ``("param", p, name)`` (parameter ``p`` of the lowered module, in ``parameters()`` order);
    ``grads[k]`` is the index in ``parameters()`` of the ``k``-th weight gradient output.
    """

    forward: Diagram
    backward: Diagram
    stored: tuple[tuple[str | int, ...], ...]
    grads: tuple[int, ...]


def _tie(diagram: Diagram, part: _Part) -> tuple[Diagram, list[int], dict[int, int]]:
    """Add every tied weight's gradient to its table's: ``(backward, real grad outputs, grad -> parameter index)``."""
    grads = part.grads
    real = [k for k, g in enumerate(grads) if g.tie is None]
    ranked = sorted(real, key=lambda k: grads[k].order)
    param_of = {k: rank for rank, k in enumerate(ranked)}
    labels = {g.label: k for k, g in enumerate(grads) if g.label is not None}
    tied = [k for k, g in enumerate(grads) if g.tie is not None]
    ties_of = {k: tie for k, g in enumerate(grads) if (tie := g.tie) is not None}
    for k, tie in ties_of.items():
        if tie not in labels:
            raise AnalysisError(f"backward of {describe(diagram)}: an unembedding is tied to embedding {tie[1]!r},"
                                " which is not in the same block")
        param_of[k] = param_of[labels[tie]]
    if not tied:
        return part.back, real, param_of
    n = len(part.back.cod) - len(grads)
    segs = list(part.back.cod)
    picks: list[int] = list(range(n))
    parts: list[Diagram] = [Identity(types(segs[:n]))]
    for k in real:
        ties = [t for t in tied if labels[ties_of[t]] == k]
        picks += [n + k] + [n + t for t in ties]
        seg = segs[n + k]
        if not ties:
            parts.append(Identity(Type((seg,))))
            continue
        renames = [Box(RenameOp(segs[n + t], seg.names)) for t in ties]
        parts.append(Seq.of(Par.of(Identity(Type((seg,))), *renames), woven_scalar(Box(AddOp(1 + len(ties))), seg)))
    return Seq.of(part.back, route(segs, picks), Par.of(*parts)), real, param_of


def repetition_counts(diagram: Diagram) -> list[str]:
    """The sizes a repetition count of ``diagram`` reads (``N`` of ``repeat(layer, "i", 0, "N")``), sorted."""
    sizes = {str(s) for s in diagram.free_symbols}
    found = {str(s) for node in diagram.walk() if isinstance(node, Repeat)
             for s in node.start.free_symbols | node.stop.free_symbols}
    return sorted(found & sizes)


def counted(diagram: Diagram, sizes: Mapping[str, int]) -> Diagram:
    """``diagram`` with ``sizes`` bound and every repetition count bound: given in ``sizes``, else the top block's
    default.  The backward diagram has one part per layer (each with its own stored values and weight
    gradients, one segment each), so a count must be a number; a count neither given nor defaulted is refused."""
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SizeError(f"backward: size {key}={value!r} must be a positive whole number")
    check_size_names(diagram, sizes, "backward", defaults_of(diagram))
    counts = repetition_counts(diagram)
    defaults = defaults_of(diagram)
    missing = [n for n in counts if n not in sizes and n not in defaults]
    if missing:
        what = ", ".join(missing)
        raise AnalysisError(f"backward of {describe(diagram)}: bind its repetition count first ({what}): the backward"
                            f" diagram has one part per layer; give it, e.g. ncd.backward(diagram,"
                            f" {', '.join(f'{n}=12' for n in missing)}), or a default of the top block")
    binding = {**{n: defaults[n] for n in counts if n not in sizes}, **sizes}
    return bind_known(diagram, binding)


def plan(diagram: Diagram, /, *, training: bool = True, **sizes: int) -> Plan:
    """Differentiate ``diagram``: its forward-with-residuals and backward diagrams.

    ``training``: whether the module runs in training mode (batch normalisation's statistics).  ``sizes`` are
    bound first; a repetition count not given takes the top block's default (:func:`counted`).
    """
    check_option_names(diagram, "plan", {"training": training} if training is not True else {}, defaults_of(diagram))
    diagram = counted(diagram, sizes)
    builder = Builder(training)
    try:
        part = builder.diff(diagram)
        keys = {(g.box, g.name): k for k, g in reversed(list(enumerate(part.grads)))}  # the first grad of each key
        back, real, param_of = _tie(diagram, part)
    except LimitError as error:  # the derived diagram is held to the limits its forward is (a type, its nesting)
        raise LimitError(f"backward of {describe(diagram)}: {error}; a derived diagram is held to the same ncd.limits"
                         " (raise one for this call with ncd.limits.override)") from None
    index = [param_of[k] for k in real]  # grad output k is parameters()[index[k]]
    stored: list[tuple[str | int, ...]] = []
    value = 0
    for s in part.stored:
        if s.kind == "value":
            stored.append(("value", value))
            value += 1
        else:
            stored.append(("param", param_of[keys[(s.box, s.name)]], s.name))
    name = diagram.name if isinstance(diagram, Block) else "Diagram"
    meta = dict(diagram.meta) if isinstance(diagram, Block) else {}
    roles_in = tuple(f"stored {r[1]}" if r[0] == "value" else f"param {r[1]} {r[2]}" for r in stored)
    roles_in += tuple(f"cotangent {j}" for j in range(len(cot(diagram.cod))))
    roles_out = tuple(f"input {j}" for j in range(len(cot(diagram.dom)))) + tuple(f"param {k}" for k in index)
    back_body = back.body if isinstance(back, Block) and isinstance(diagram, Block) else back
    fwd_body = part.forward.body if isinstance(part.forward, Block) and isinstance(diagram, Block) else part.forward
    back_meta = dict(meta, inputs=roles_in, outputs=roles_out)
    return Plan(
        Block(fwd_body, name, tuple(sorted(meta.items()))),
        Block(back_body, f"{name} backward", tuple(sorted(back_meta.items()))),
        tuple(stored),
        tuple(index),
    )


def backward(diagram: Diagram, /, *, training: bool = True, **sizes: int) -> Diagram:
    """The reverse-mode diagram of ``diagram``: ``(stored values and weights, ∂outputs) -> (∂inputs, ∂weights)``.

    Its block's ``meta`` names each input (``stored k``, ``param p weight``, ``cotangent j``)
    and output (``input j``, ``param p``; ``p`` indexes the lowered module's ``parameters()``).
    ``sizes`` are bound first.  Repeated layers become one part each, so a repetition count must be a number:
    given here (``ncd.backward(gpt2, N=12)``) or the top block's default; every other size may stay a symbol.
    """
    expect_diagram(diagram, "backward")
    check_option_names(diagram, "backward", {"training": training} if training is not True else {},
                       defaults_of(diagram))
    return plan(diagram, training=training, **sizes).backward
