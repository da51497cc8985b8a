"""The converter's values and the steps emitted over them.

Each value is a :class:`~ncd.ir.axes.Segment` (named, sized wires) with an id; a step is a diagram from some values to
new ones (:class:`~ncd.trace.wiring.Step`).  :class:`Values` holds them and emits boxes over them (woven over the wires
a box does not use, wires renamed apart where names collide); :meth:`Values.mark` and :meth:`Values.rollback` undo what
a rule emitted when it declines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ncd.ir.axes import Segment, Type
from ncd.ir.compose import fit
from ncd.ir.diagram import Box, Diagram
from ncd.prims.opaque import DTYPES, ViewOp
from ncd.trace.capture import Captured, Node
from ncd.trace.naming import Namer, unique
from ncd.trace.registry import Decline, apart
from ncd.trace.wiring import Step

__all__ = ["Emitted", "Values", "dtype_name", "kind_of"]


@dataclass
class Emitted:
    """What was emitted for the trace, for parameter loading."""

    tensors: list[list[torch.Tensor]] = field(default_factory=list)  # per learned box, in emission order
    opaque: dict[str, int] = field(default_factory=dict)  # ATen name -> count


class Values:
    """Values by id, the steps emitted over them, and the captured nodes bound to them (the converter's state)."""

    captured: Captured
    model: torch.nn.Module | None
    namer: Namer
    segs: dict[int, Segment]
    values: dict[int, int]  # id(node) (or id of (node, k)) -> value id
    steps: list[Step]
    emitted: Emitted
    stack: tuple[tuple[str, str], ...]
    current: Node | None
    counter: int
    skip: set[int]
    consumers: dict[int, list[Node]]
    index_range: dict[int, int]
    inputs: list[int]
    _bound: list[Node]

    def new_value(self, seg: Segment) -> int:
        self.counter += 1
        self.segs[self.counter] = seg
        return self.counter

    def names(self, vid: int) -> list[str]:
        return list(self.segs[vid].names)

    def seg_for(self, tensor: torch.Tensor, names: list[str]) -> Segment:
        dtype, rng = kind_of(tensor)
        if dtype == "index":
            rng = self.index_range.get(id(tensor), rng)
        return self.namer.segment(list(names), tuple(int(s) for s in tensor.shape), dtype, rng)

    def relative(self, name: str) -> str:
        """A state-dict name relative to the current module (equal across repeated layers)."""
        for path, _ in reversed(self.stack):
            if name.startswith(path + "."):
                return name[len(path) + 1:]
        return name

    def emit(self, diagram: Diagram, ins: list[int], outs: list[Segment]) -> list[int]:
        """Record a step; ``diagram`` must take the segments of ``ins`` to ``outs``."""
        if not (_fits(diagram.dom.segments, [self.segs[v] for v in ins]) and _fits(diagram.cod.segments, outs)):
            got_dom = Type(tuple(self.segs[v] for v in ins))
            raise AssertionError(f"{diagram!r} does not fit '{got_dom}' -> '{Type(tuple(outs))}'")
        vids = [self.new_value(seg) for seg in outs]
        self.steps.append(Step(diagram, list(ins), vids, self.stack))
        return vids

    def apply(self, box: Box, ins: list[int]) -> int:
        """Emit ``box`` woven over the axes of its inputs it does not use; return its single output."""
        ins = self.apart(box, ins)
        dom = Type(tuple(self.segs[v] for v in ins))
        woven, mapping = fit(box, dom)
        if mapping:
            raise Decline(f"sizes would need unifying: {mapping}")
        (vid,) = self.emit(woven, ins, list(woven.cod))
        return vid

    def apart(self, box: Diagram, ins: list[int]) -> list[int]:
        """``ins``, each wire that ``box`` would be woven over but that has the name of one of the box's own outputs
        relabelled (primed) first: sizes that collide name two roles alike (an embedding's width of 8 beside 8 relative
        positions, both ``n``), and a weave needs them apart.  Only a woven wire is relabelled: no data moves."""
        if len(box.dom) != len(ins):
            return ins
        own = {n for seg in box.cod for n in seg.names}
        clash = sorted({n for seg, v in zip(box.dom, ins) for n in self.segs[v].names if n not in seg.names} & own)
        if not clash:
            return ins
        taken = own | {n for v in ins for n in self.segs[v].names} | {n for seg in box.dom for n in seg.names}
        new: dict[str, str] = {}
        for name in clash:
            new[name] = apart(name, taken)
            taken.add(new[name])
        return [self.view(v, [new.get(n, n) for n in self.segs[v].names], tuple(int(a.size) for a in self.segs[v].axes))
                for v in ins]

    def view(self, vid: int, names: list[str], shape: tuple[int, ...]) -> int:
        """Read ``vid`` with other wires (no data moves); nothing is emitted if they are the same."""
        bound = self.segs[vid].range
        target = self.namer.segment(names, shape, self.segs[vid].dtype, None if bound is None else int(bound))
        if target.same(self.segs[vid]):
            return vid
        (out,) = self.emit(Box(ViewOp(self.segs[vid], target)), [vid], [target])
        return out

    def bind(self, node: Node, vid: int) -> None:
        """The node's value is ``vid``; if the shapes differ (fused chains) the caller knows why.

        Values are keyed by ``id(node)``: a node a rule made for the occasion is kept alive here, so that no later
        object can take its id and be mistaken for it (that made traces of one model differ from run to run)."""
        self.values[id(node)] = vid
        self._bound.append(node)

    def forget(self, *nodes: Node) -> None:
        """Unbind nodes a rule made for one call, which nothing else reads (the parts it hands to another rule): a
        layer's walk then leaves only recorded nodes bound, and a repeated layer can be copied (:mod:`ncd.trace.reuse`).
        They stay alive (:meth:`bind`), so no later object takes their ids."""
        for node in nodes:
            self.values.pop(id(node), None)

    def mark(self) -> tuple[int, int, int, set[int] | None, dict[str, int]]:
        """Where the conversion stands, for :meth:`rollback`."""
        return (len(self.steps), len(self.values), len(self.emitted.tensors), set(self.skip) if self.skip else None,
                dict(self.emitted.opaque))

    def rollback(self, mark: tuple[int, int, int, set[int] | None, dict[str, int]]) -> None:
        """Forget what a rule emitted and bound since ``mark`` (it declined or failed)."""
        del self.steps[mark[0]:]
        for key in list(self.values)[mark[1]:]:
            del self.values[key]
        del self.emitted.tensors[mark[2]:]
        self.skip = mark[3] if mark[3] is not None else set()
        self.emitted.opaque = dict(mark[4])
    def _names_like(self, tensor: torch.Tensor, others: list[Node]) -> list[str] | None:
        """Names for a constant operand: those of a live operand it lines up with (from the right)."""
        for r in others:
            if id(r) in self.values and r.value is not tensor:
                names = self.names(self.values[id(r)])
                shape = tuple(r.value.shape)
                if tensor.dim() <= len(shape) and all(
                    s == shape[len(shape) - tensor.dim() + i] for i, s in enumerate(tensor.shape) if s != 1
                ):
                    tail = names[len(names) - tensor.dim():] if tensor.dim() else []
                    return [n if s != 1 else "1" for n, s in zip(tail, tensor.shape)]
        return None

    def names_like(self, tensor: torch.Tensor, inputs: list[int]) -> list[str]:
        """Output names: wires lining up with an input's leading or trailing wires keep their names."""
        shape = tuple(int(s) for s in tensor.shape)
        best: list[str | None] = [None] * len(shape)
        for v in inputs:
            seg = self.segs[v]
            sizes = tuple(int(a.size) for a in seg.axes)
            if sizes == shape:
                return list(seg.names)
            k = 0
            while k < min(len(sizes), len(shape)) and sizes[k] == shape[k]:
                if best[k] is None:
                    best[k] = seg.names[k]
                k += 1
            k = 1
            while k <= min(len(sizes), len(shape)) and sizes[-k] == shape[-k]:
                if best[-k] is None:
                    best[-k] = seg.names[-k]
                k += 1
        return unique([n if n is not None else self.namer.fresh(s) for n, s in zip(best, shape)])


def _fits(have: tuple[Segment, ...], want: list[Segment]) -> bool:
    """``Type(have).same(Type(want))``, without building the second type (every step emitted asks it twice)."""
    return len(have) == len(want) and all(a is b or a.same(b) for a, b in zip(have, want))


def kind_of(tensor: torch.Tensor) -> tuple[str, int | None]:
    if tensor.dtype == torch.bool:
        return "bool", None
    if tensor.is_complex():
        return "complex", None
    if tensor.is_floating_point():
        return "float", None
    if tensor.device.type == "meta":  # recorded without its values: the range is not known
        return "index", None
    high = int(tensor.max()) + 1 if tensor.numel() else 1
    return "index", max(high, 1)


def dtype_name(tensor: torch.Tensor) -> str:
    name = str(tensor.dtype).replace("torch.", "")
    return name if name in DTYPES else "float32"
