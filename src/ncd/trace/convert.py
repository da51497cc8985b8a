"""Turn captured ATen nodes into steps: boxes over named values.

:class:`Converter` walks the live nodes in execution order.  Each ATen operator has a rule
in ``RULES`` (see :mod:`ncd.trace.idioms`) that names the output axes and emits boxes; an
operator without a rule, or a rule that declines, becomes an opaque box that calls the
operator itself.  Nodes that do not depend on the inputs are folded: parameters become
learned ``θ`` boxes (and so do views of them: a transposed weight), everything else a
constant, emitted next to the step that uses it.  A tensor computed from parameters
(a class token expanded over the batch, an embedding table read at constant rows, a bias
table gathered by a constant index) is drawn as its parameters and the operations on them,
never folded into one tensor: the lowered module has the original's parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ncd.ir.axes import Segment, Type
from ncd.ir.compose import fit
from ncd.ir.diagram import Box, Diagram
from ncd.ir.rules import IMPORT
from ncd.prims.opaque import CASTS, DTYPES, ConstantOp, OpaqueOp, ParameterOp, ViewOp
from ncd.trace.capture import Captured, Node, refs
from ncd.trace.naming import PRIME, Namer, config_roles, unique
from ncd.trace.wiring import Step

__all__ = ["Converter", "RULES", "rule", "hook", "Decline", "LOG"]

#: Why each opaque box is opaque: at ``DEBUG`` level, one record per opaque box naming the operator, the module path
#: and line, and each rule that declined (its reason) or raised (its error, with the traceback in a record of its own).
#: ``NCD_TRACE_DEBUG=1`` turns it on for a trace, printed to stderr; or configure the ``ncd.trace`` logger.
LOG = logging.getLogger("ncd.trace")

Rule = Callable[["Converter", Node], Any]
RULES: dict[str, Rule] = {}


class Decline(Exception):
    """Raised by a rule that cannot express this call; the node becomes an opaque box."""


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Register a conversion rule for ATen operators (``"aten.linear"``: every overload)."""

    def deco(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn

    return deco


def hook(names: tuple[str, ...], first: Callable[[Converter, Node], bool]) -> None:
    """Put ``first`` in front of whichever rules ``names`` have (registered now or earlier): it converts the node and
    returns True, or returns False to hand it on to the rule it stands in front of (none: ``Decline``)."""
    for name in names:
        previous = RULES.get(name)

        def convert(conv: Converter, node: Node, previous: Rule | None = previous) -> None:
            if first(conv, node):
                return
            if previous is None:
                raise Decline("no rule")
            previous(conv, node)

        convert.__name__ = convert.__qualname__ = getattr(first, "__name__", "hook")
        RULES[name] = convert


_OP_NAMES: dict[Any, tuple[str, str]] = {}


def op_name(target: Any) -> tuple[str, str]:
    """``("aten.linear", "aten.linear.default")`` for an OpOverload (each operator's read once)."""
    if type(target) is torch._ops.OpOverload:
        found = _OP_NAMES.get(target)
        if found is None:
            found = _OP_NAMES[target] = _op_name(target)
        return found
    return _op_name(target)


def _op_name(target: Any) -> tuple[str, str]:
    name = getattr(target, "name", None)
    if callable(name):
        namespace, _, rest = target.name().rpartition("::")
        full = (namespace or "aten") + "." + rest
        overload = getattr(target, "_overloadname", "default")
        packet = full.split(".")[0] + "." + full.split(".")[1] if full.count(".") >= 1 else full
        return packet, f"{packet}.{overload}"
    text = getattr(target, "__name__", str(target))
    return f"operator.{text}", f"operator.{text}"


@dataclass
class Emitted:
    """What was emitted for the trace, for parameter loading."""

    tensors: list[list[torch.Tensor]] = field(default_factory=list)  # per learned box, in emission order
    opaque: dict[str, int] = field(default_factory=dict)  # ATen name -> count


class Converter:
    def __init__(self, captured: Captured, axes: Any, model: torch.nn.Module | None = None) -> None:
        self.captured = captured
        self.model = model
        self.namer = Namer(config_roles(model))
        self.segs: dict[int, Segment] = {}
        self.values: dict[int, int] = {}  # id(node) (or id of (node, k)) -> value id
        self.steps: list[Step] = []
        self.emitted = Emitted()
        self.stack: tuple[tuple[str, str], ...] = ()
        self.current: Node | None = None
        self.counter = 0
        self.skip: set[int] = set()
        self.consumers: dict[int, list[Node]] = {}
        self.index_range: dict[int, int] = {}
        self.inputs: list[int] = []
        self._picked: dict[tuple[int, int], int] = {}
        self._bound: list[Node] = []  # every node bound, alive while values are keyed by their ids
        self._calls: dict[tuple[int, str], list[Node]] | None = None
        self._tried: set[tuple[int, str]] = set()
        self.failures: list[tuple[Node | None, str]] = []  # calls whose rule failed (drawn opaque), with the error
        self.why: dict[int, list[str]] = {}  # id(node) -> why each rule tried on it declined or raised (for LOG)
        self._wires: list[Node] = []  # parameters read as wires by computations on parameters (kept alive: ids)
        self._wire_learned_chains()
        for node in captured.nodes:
            for r in refs((node.args, node.kwargs)):
                self.consumers.setdefault(id(r), []).append(node)
        self._name_inputs(axes)

    def _wire_learned_chains(self) -> None:
        """Computations on parameters alone are converted like computations on inputs: their nodes become live, and
        each parameter they read as data (not as a learned box's weight) is read through a live copy of its node.

        Views of a parameter (a transposed or cast weight) stay folded: they hold the parameter's entries once.  So
        does a table read at its first rows (``wpe(arange(t))``): :meth:`leading_rows` draws it as the table sliced."""
        memo: dict[int, bool] = {}

        def learned(node: Node) -> bool:
            if id(node) not in memo:
                memo[id(node)] = node.kind == "parameter" or (node.kind == "call" and not node.live and any(
                    learned(r) for r in refs((node.args, node.kwargs))))
            return memo[id(node)]

        from ncd.trace.params import pieces

        wired: list[Node] = []
        chosen: set[int] = set()
        parts = pieces(self.captured.nodes, learned)  # a parameter read as data in parts: one parameter box, then views
        for node in self.captured.nodes:
            if node.kind != "call" or node.live or not learned(node) or not _tensors_in(node.value):
                continue
            args = refs((node.args, node.kwargs))
            if op_name(node.target)[0] in VIEWS and not any(id(r) in chosen for r in args) and id(node) not in parts:
                continue
            if self._first_rows(node) and id(node) not in parts:
                continue
            wired.append(node)
            chosen.add(id(node))
        if not wired:
            return
        # the views those computations read become wires too (a copy where the view is also a learned box's weight)
        consumers: dict[int, list[Node]] = {}
        for node in self.captured.nodes:
            for r in refs((node.args, node.kwargs)):
                consumers.setdefault(id(r), []).append(node)
        position = {id(n): k for k, n in enumerate(self.captured.nodes)}
        inserted: list[tuple[int, Node]] = []
        copies: dict[int, Node] = {}
        todo = list(wired)
        while todo:
            node = todo.pop()
            node.live = True
            keep = WEIGHTS.get(op_name(node.target)[0], ())

            def wire(value: Any, at: int | None = None) -> Any:
                if isinstance(value, (list, tuple)) and any(isinstance(v, Node) for v in value):
                    return type(value)(wire(v) for v in value)
                if not isinstance(value, Node) or at in keep or value.live:
                    return value
                if value.kind == "parameter":
                    if id(value) not in copies:
                        copies[id(value)] = Node(value.name, "parameter", value=value.value, stack=value.stack,
                                                 source=value.source, live=True)
                        self._wires.append(copies[id(value)])
                    return copies[id(value)]
                if value.kind != "call" or not learned(value):
                    return value
                if all(id(c) in chosen for c in consumers.get(id(value), [])):
                    chosen.add(id(value))
                    todo.append(value)  # every reader is a wire: the view is one too
                    return value
                if id(value) not in copies:  # also read as a learned box's weight: a copy reads it as a wire
                    copy = Node(value.name + "_wire", "call", value.target, value.args, dict(value.kwargs), value.value,
                                value.stack, value.source, False, value.line)
                    copies[id(value)] = copy
                    chosen.add(id(copy))
                    inserted.append((position[id(value)], copy))
                    todo.append(copy)
                return copies[id(value)]

            node.args = tuple(wire(a, k) for k, a in enumerate(node.args))
            node.kwargs = {k: wire(v) for k, v in node.kwargs.items()}
        for at, copy in sorted(inserted, key=lambda item: -item[0]):
            self.captured.nodes.insert(at + 1, copy)
        # a parameter wired here and also read as data elsewhere (RWKV's ``x * mix + shifted * (1 - mix)``): every data
        # read takes the one wire, so the lowered module holds it once
        wires = {pid: c for pid, c in copies.items() if c.kind == "parameter"}
        for node in self.captured.nodes:
            if node.kind != "call" or not node.live or id(node) in chosen or not wires:
                continue
            keep = WEIGHTS.get(op_name(node.target)[0], ())

            def shared(value: Any) -> Any:
                if isinstance(value, Node):
                    return wires.get(id(value), value)
                if isinstance(value, (list, tuple)):
                    return type(value)(shared(v) for v in value)
                return value

            node.args = tuple(a if k in keep else shared(a) for k, a in enumerate(node.args))
            node.kwargs = {k: shared(v) for k, v in node.kwargs.items()}

    def reads_inputs(self, node: Node) -> bool:
        """Whether ``node``'s value depends on a model input (not only on parameters and constants)."""
        seen: set[int] = set()
        todo = [node]
        while todo:
            n = todo.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if n.kind == "input":
                return True
            if n.kind == "call" and n.live:
                todo.extend(refs((n.args, n.kwargs)))
        return False

    def submodule(self, path: str) -> torch.nn.Module:
        """``model.get_submodule(path)``, looked up once per path (raises ``AttributeError`` as it does)."""
        assert self.model is not None
        found: dict[str, torch.nn.Module] = self.__dict__.setdefault("_submodules", {})
        module = found.get(path)
        if module is None:
            module = found[path] = self.model.get_submodule(path)
        return module

    def parameters(self) -> dict[str, torch.Tensor]:
        """The model's parameters by name, read once (the model does not change while it is converted)."""
        found: dict[str, torch.Tensor] | None = self.__dict__.get("_parameters")
        if found is None:
            found = self.__dict__["_parameters"] = dict(self.model.named_parameters()) if self.model is not None else {}
        return found

    def _first_rows(self, node: Node) -> bool:
        """Whether ``node`` holds the first rows of the parameter it reads (leading size-1 axes aside)."""
        if self.model is None or not isinstance(node.value, torch.Tensor) or node.value.device.type == "meta":
            return False
        tensor = node.value
        while tensor.dim() > 1 and tensor.shape[0] == 1:
            tensor = tensor[0]
        table = self.parameters().get(self.origin(node))
        if table is None or tensor.dim() < 1 or tuple(table.shape[1:]) != tuple(tensor.shape[1:]):
            return False
        if len(self._sources(node)) != 1:  # rows of several parameters joined (``cat((q.bias, k.bias))[:n]``)
            return False
        n = int(tensor.shape[0])
        return n <= table.shape[0] and torch.equal(tensor, table[:n].to(tensor.dtype))

    # -- values ------------------------------------------------------------------------
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

    def _name_inputs(self, axes: Any) -> None:
        inputs = [n for n in self.captured.nodes if n.kind == "input"]
        for node in self.captured.nodes:  # ids used by embeddings get the vocabulary as their range
            if node.kind == "call" and op_name(node.target)[0] == "aten.embedding":
                weight, ids = node.args[0], node.args[1]
                while isinstance(ids, Node) and isinstance(weight, Node):
                    self.index_range[id(ids.value)] = int(weight.value.shape[0])
                    tensors = [r for r in refs(ids.args) if isinstance(r.value, torch.Tensor)] if ids.kind == "call" else []
                    ids = tensors[0] if len(tensors) == 1 and tensors[0].value.dtype == ids.value.dtype else None
        given: dict[str, str] = {}
        if isinstance(axes, str):
            given = {inputs[0].source: axes} if inputs else {}
        elif isinstance(axes, (list, tuple)):
            given = {n.source: a for n, a in zip(inputs, axes) if a}
        elif isinstance(axes, dict):
            unknown = set(axes) - {n.source for n in inputs}
            if unknown:
                from ncd.errors import TraceError

                raise TraceError(f"axes given for {sorted(unknown)}, but the model's tensor inputs are "
                                 f"{[n.source for n in inputs]}")
            given = dict(axes)
        for node in inputs:
            shape = tuple(int(s) for s in node.value.shape)
            if node.source in given:
                names = self.namer.user(given[node.source], shape, node.source)
            else:
                names = self.namer.default(shape, kind_of(node.value)[0] != "float")
            vid = self.new_value(self.seg_for(node.value, names))
            self.values[id(node)] = vid
            self.inputs.append(vid)

    def value(self, ref: Any, names: list[str] | None = None) -> int:
        """The value id of a node argument; parameters and constants are emitted as source boxes here."""
        if isinstance(ref, Node) and id(ref) in self.values:
            return self.values[id(ref)]
        tensor = ref.value if isinstance(ref, Node) else torch.as_tensor(ref)
        if names is None:  # shaped like an input (BERT's token types beside its ids): the input's wires, else fresh
            shape = tuple(int(s) for s in tensor.shape)
            like = [v for v in self.inputs if tuple(int(a.size) for a in self.segs[v].axes) == shape]
            learned = isinstance(ref, Node) and self.learned(ref)
            names = list(self.segs[like[0]].names) if like and shape else [self._named(n, learned) for n in shape]
        seg = self.seg_for(tensor, names)
        if isinstance(ref, Node) and self.learned(ref) and (rows := self._rows_or_none(ref, tensor, seg)) is not None:
            return rows
        if isinstance(ref, Node) and self.learned(ref):
            box = Box(ParameterOp(seg, self.relative(self.origin(ref))))
            self.emitted.tensors.append([tensor])
        elif tensor.dim() == 0 and (not isinstance(ref, Node) or ref.kind == "call"):
            box = Box(ConstantOp(seg, dtype_name(tensor), float(tensor.item())))
        elif (rows := self._sinusoidal(ref, tensor, seg)) is not None:
            return rows
        else:
            origin = _buffer_of(ref) if isinstance(ref, Node) else ""
            source = self.relative(origin) if origin else "const"
            box = Box(ConstantOp(seg, dtype_name(tensor), None, source))
            self.emitted.tensors.append([tensor])
        (vid,) = self.emit(box, [], [seg])
        if isinstance(ref, Node) and ref.live:  # a parameter read as a wire: one box, copied to each reader
            self.bind(ref, vid)
        return vid

    def _sinusoidal(self, ref: Any, tensor: torch.Tensor, seg: Segment) -> int | None:
        """A table computed in the forward that is the sinusoidal encoding of its rows (:mod:`ncd.trace.positions`)
        as the ``∿`` box over its last two wires (viewed with the leading size-1 ones): it follows the sizes."""
        from ncd.prims.constant import SinusoidalOp
        from ncd.trace.positions import is_sinusoidal

        if not isinstance(ref, Node) or ref.kind != "call" or seg.dtype != "float" or not is_sinusoidal(tensor):
            return None
        inner = Segment(seg.axes[-2:], "float")
        if tensor.dtype != torch.float32 or any(a.size != 1 for a in seg.axes[:-2]):
            return None
        (vid,) = self.emit(Box(SinusoidalOp(inner)), [], [inner])
        return self.view(vid, list(seg.names), tuple(int(x) for x in tensor.shape))

    def _named(self, size: int, learned: bool) -> str:
        """A fresh wire of a tensor read as data; a parameter's wire of a size the config gives one role of its own
        (heads, key/value heads, head features, experts) has that role's name — the relative-position table of Swin
        holds one bias per head ``h`` — before any operation tells its role."""
        if learned:
            letters = self.namer.config.get(size, set()) & PARAMETER_ROLES
            if len(letters) == 1:
                return self.namer.fresh(size, next(iter(letters)))
        return self.namer.fresh(size)

    def _rows_or_none(self, ref: Node, tensor: torch.Tensor, seg: Segment) -> int | None:
        """:meth:`leading_rows`, or none if it fails: the whole tensor is drawn as a parameter then (as many entries as
        the original's, equal on every input; only the slice is not drawn), never a constant, never a crash."""
        mark = self.mark()
        try:
            return self.leading_rows(ref, tensor, seg)
        except Exception as error:  # noqa: BLE001 - an internal inconsistency: the plain parameter is still right
            self.rollback(mark)
            LOG.debug("reading %s as the leading rows of its table failed", self.origin(ref), exc_info=error)
            return None

    def leading_rows(self, ref: Node, tensor: torch.Tensor, seg: Segment) -> int | None:
        """A learned tensor that is the first rows of a parameter (``wpe(arange(t))``) as the table sliced to ``:t``
        (the slice, not the rows, so the diagram holds at other lengths)."""
        import sympy

        from ncd.prims.movement import SliceOp

        if self.model is None or tensor.dim() < 1 or len(seg.axes) != tensor.dim():
            return None
        lead = 0  # leading size-1 axes (``wpe(arange(t)[None])``): the rows, then viewed with them
        while tensor.dim() - lead > 1 and tensor.shape[lead] == 1:
            lead += 1
        if lead:
            inner = self.namer.segment(list(seg.names[lead:]), tuple(int(x) for x in tensor.shape[lead:]), seg.dtype,
                                       None)
            rows = self.leading_rows(ref, tensor[(0,) * lead], inner)
            return None if rows is None else self.view(rows, list(seg.names), tuple(int(x) for x in tensor.shape))
        if len(self._sources(ref)) != 1:
            return None
        table = self.parameters().get(self.origin(ref))
        n = int(tensor.shape[0])
        if table is None or tuple(table.shape[1:]) != tuple(tensor.shape[1:]) or table.shape[0] <= n:
            return None
        if tensor.device.type == "meta" or not torch.equal(tensor, table[:n].to(tensor.dtype)):
            return None
        # positions when the config gives the table's row count that role (``n``), apart from the columns' names
        rows = int(table.shape[0])
        row = apart(self.namer.fresh(rows, "n" if "n" in self.namer.config.get(rows, ()) else None), set(seg.names[1:]))
        full = self.namer.segment([row] + list(seg.names[1:]), tuple(int(x) for x in table.shape), seg.dtype, None)
        cut = Box(SliceOp(full.axes[0], sympy.Integer(0), sympy.Integer(n), sympy.Integer(1), seg.axes[0]))
        woven, mapping = fit(cut, Type((full,)))
        if mapping:
            return None
        (vid,) = self.emit(Box(ParameterOp(full, self.relative(self.origin(ref)))) >> woven, [], [seg])
        self.emitted.tensors.append([table.detach()])
        return vid

    def _sources(self, node: Node) -> set[int]:
        """The parameters a computation on parameters alone reads (ids of their nodes)."""
        if node.kind == "parameter":
            return {id(node)}
        if node.kind != "call" or node.live:
            return set()
        return {p for r in refs((node.args, node.kwargs)) for p in self._sources(r)}

    def origin(self, node: Node) -> str:
        """The state-dict name of the parameter a derived tensor comes from."""
        if node.source:
            return node.source
        for r in refs((node.args, node.kwargs)):
            if self.learned(r):
                return self.origin(r)
        return node.name

    def learned(self, node: Node) -> bool:
        if node.kind == "parameter":
            return True
        if node.kind == "call" and not node.live:
            return any(self.learned(r) for r in refs((node.args, node.kwargs)))
        return False

    def relative(self, name: str) -> str:
        """A state-dict name relative to the current module (equal across repeated layers)."""
        for path, _ in reversed(self.stack):
            if name.startswith(path + "."):
                return name[len(path) + 1:]
        return name

    def emit(self, diagram: Diagram, ins: list[int], outs: list[Segment]) -> list[int]:
        """Record a step; ``diagram`` must take the segments of ``ins`` to ``outs``."""
        got_dom = Type(tuple(self.segs[v] for v in ins))
        if not diagram.dom.same(got_dom) or not diagram.cod.same(Type(tuple(outs))):
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

    # -- the walk -----------------------------------------------------------------------
    def run(self) -> list[int]:
        from ncd.trace.idioms import prepare
        from ncd.trace.rotary import find_rotary

        try:
            rotary = find_rotary(self)
        except Exception as error:  # noqa: BLE001 - no rotary idiom then: the recorded operations are drawn
            rotary = {}
            self.failures.append((None, f"finding rotary embeddings: {type(error).__name__}: {_first_line(error)}"))
        mark = self.mark()
        emitters: dict[int, Any] = {}
        try:
            emitters = prepare(self)  # idioms read before the walk (head expansion, masks, experts): operations skipped
        except Exception as error:  # noqa: BLE001 - those idioms are not drawn; the recorded operations are
            self.rollback(mark)
            self.failures.append((None, f"reading idioms: {type(error).__name__}: {_first_line(error)}"))
        from ncd.trace.reuse import Repeats

        repeats = Repeats(self, rotary, emitters)  # a layer alike one converted before it: that layer's steps, copied
        nodes = self.captured.nodes
        position = 0
        while position < len(nodes):
            after = repeats.at(position)
            if after != position:
                position = after
                continue
            node = nodes[position]
            position += 1
            if node.kind != "call" or not node.live or id(node) in self.skip or id(node) in self.values:
                continue
            if node.guard:
                self.guard(node)
                continue
            if node.value is None or isinstance(node.value, (bool, int, float)):
                continue  # checks and asserts: no tensor comes out
            if isinstance(node.value, torch.Tensor) and node.value.numel() == 0:
                continue  # no entries (an empty slice): concatenations drop it, anything else draws it as a constant
            if op_name(node.target)[0] == "operator.getitem":
                source, k = node.args
                key = (id(source), k)
                if key in self._picked:
                    self.values[id(node)] = self._picked[key]
                continue
            self.convert(node, rotary, emitters)
        outputs = []
        for ref in self.captured.outputs:
            try:
                outputs.append(self.value(ref) if isinstance(ref, Node) else self.value(torch.as_tensor(ref)))
            except Exception as error:  # noqa: BLE001 - an output nothing can stand for: refuse, naming it
                from ncd.errors import TraceError

                what = where(ref) if isinstance(ref, Node) else "(a constant output)"
                raise TraceError(f"cannot draw an output of the model {what}: {type(error).__name__}:"
                                 f" {_first_line(error)}") from None
        return outputs

    def convert(self, node: Node, rotary: dict[int, Any], emitters: dict[int, Any] | None = None) -> None:
        """Emit the boxes of one call: a module idiom, a rule, or else an opaque box.  A failure anywhere here is
        recorded (a warning names the module path and line) and the call is drawn opaque; should even that fail,
        its traced value stands in as a constant (also warned about)."""
        from ncd.trace.rotary import emit_rotary

        mark = self.mark()
        try:
            if self.module_idiom(node):
                return
        except Exception as error:  # noqa: BLE001 - the idiom is not drawn; the recorded operations are
            self.rollback(mark)
            self.failures.append((node, f"{type(error).__name__}: {_first_line(error)}"))
            self.declined(node, "the module idiom", error)
        self.stack = node.stack
        self.current = node
        name, _ = op_name(node.target)
        fn = RULES.get(name) or IMPORT.get(name)  # the importer's rules, then the families' (ncd.ir.rules)
        mark = self.mark()
        try:
            if id(node) in rotary:
                emit_rotary(self, node, *rotary[id(node)])
                return
            if emitters and id(node) in emitters:
                emitters[id(node)](self, node)
                return
            if fn is not None:
                fn(self, node)
                return
        except Decline as error:
            self.rollback(mark)
            self.declined(node, _rule_name(fn), error)
        except Exception as error:  # noqa: BLE001 - a rule's failure is an opaque box and a warning, never a crash
            self.rollback(mark)
            self.failures.append((node, f"{type(error).__name__}: {_first_line(error)}"))
            self.declined(node, _rule_name(fn), error)
        mark = self.mark()
        try:
            self.opaque(node)
        except Exception as error:  # noqa: BLE001 - not even an opaque box: its traced value, warned about
            self.rollback(mark)
            live = "; the lowered module is wrong on other inputs" if self.reads_inputs(node) else ""
            self.failures.append((node, f"not even an opaque box: {type(error).__name__}: {_first_line(error)};"
                                        f" its traced value is drawn as a constant{live}"))

    def guard(self, node: Node) -> None:
        """A truth value the model read into Python (the branch it took) as a :class:`~ncd.prims.guard.GuardOp` on that
        value: the lowered module checks it on every input and raises, naming the model's line, on the other branch."""
        from ncd.errors import TraceError
        from ncd.prims.guard import LINE_CHARS, GuardOp

        read = refs(node.args[:1])
        source = read[0] if read else None
        if source is None or not isinstance(source.value, torch.Tensor) or source.value.numel() != 1:
            raise TraceError(f"cannot draw the branch the model takes {where(node)}: it reads the truth value of"
                             f" {type(source.value).__name__ if source is not None else 'no tensor'}")
        self.stack = node.stack
        self.current = node
        vid = self.value(source)
        if self.segs[vid].axes:  # ``if t:`` of a one-entry tensor: its scalar
            vid = self.view(vid, [], ())
        if self.segs[vid].dtype == "float":  # the truth value of a number: whether it is not 0
            from ncd.prims.gather import CompareOp

            vid = self.apply(Box(CompareOp("!=", 0.0, self.segs[vid])), [vid])
        line = "".join(c for c in node.line if c in LINE_CHARS)[-200:]
        self.emit(Box(GuardOp(self.segs[vid], bool(node.value), line)), [vid], [])

    def declined(self, node: Node, rule: str, error: BaseException) -> None:
        """Note why ``rule`` did not draw ``node`` (it declined, or raised ``error``), for :data:`LOG`."""
        if not LOG.isEnabledFor(logging.DEBUG):
            return
        self.why.setdefault(id(node), []).append(_reason(rule, error))
        cause = error if not isinstance(error, Decline) else error.__cause__ or error.__context__
        if cause is not None:  # an error, not a plain decline: where it came from
            LOG.debug("%s raised on %s %s", rule, op_name(node.target)[1], where(node), exc_info=cause)

    def module_calls(self) -> dict[tuple[int, str], list[Node]]:
        """The calls made inside each activation or RMS-norm module, by ``(depth, path)`` (one pass, built once)."""
        if self._calls is None:
            self._calls = {}
            for n in self.captured.nodes:
                if n.kind == "call":
                    for depth, (path, cls) in enumerate(n.stack):
                        if ACTIVATIONS.get(cls) or cls.endswith("RMSNorm") or cls == "T5LayerNorm":
                            self._calls.setdefault((depth, path), []).append(n)
        return self._calls

    def module_idiom(self, node: Node) -> bool:
        """A whole activation or RMS-norm module call drawn as one box."""
        from ncd.prims.elementwise import ElementwiseOp
        from ncd.prims.normalization import RMSNormOp

        for depth, (path, cls) in enumerate(node.stack):
            kind = "act" if ACTIVATIONS.get(cls) else "rms" if cls.endswith("RMSNorm") or cls == "T5LayerNorm" else None
            if kind is None:
                continue
            if (depth, path) in self._tried:  # decided at the module's first call
                return False
            self._tried.add((depth, path))
            run = self.module_calls().get((depth, path), [])
            members = {id(n) for n in run}
            outside = [r for n in run for r in refs((n.args, n.kwargs)) if id(r) not in members and r.live]
            used_after = [n for n in run if any(id(c) not in members for c in self.consumers.get(id(n), []))
                          or any(o is n for o in self.captured.outputs)]
            if len({id(r) for r in outside}) != 1:
                return False
            source = outside[0]
            aliases = [n for n in used_after if _alias_of(n, source)]
            used_after = [n for n in used_after if n not in aliases]
            if len(used_after) != 1:
                return False
            result = used_after[0]
            if tuple(source.value.shape) != tuple(result.value.shape) or id(source) not in self.values:
                return False
            self.stack = node.stack[:depth]
            vid = self.values[id(source)]
            label = path.rsplit(".", 1)[-1]
            try:
                if kind == "act":
                    function = ACTIVATIONS[cls]
                    if not self._module_agrees(path, source, result, lambda x: ELEMENTWISE[function](x)):  # type: ignore[index]
                        return False
                    out = self.apply(Box(ElementwiseOp(function)), [vid])  # type: ignore[arg-type]
                else:
                    module = self.submodule(path) if self.model is not None else None
                    weight = getattr(module, "weight", None)
                    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
                    if not isinstance(weight, torch.Tensor) or eps is None or weight.shape != source.value.shape[-1:]:
                        return False
                    seg = self.segs[vid]
                    n = weight.shape[0]
                    # the weight only if the module reads it as a parameter (a weightless norm may hold ones)
                    read = any(r.kind == "parameter" and r.source == f"{path}.weight"
                               for m in run for r in refs((m.args, m.kwargs)))
                    w = weight.detach() if read else None
                    if not self._module_agrees(path, source, result,
                                               lambda x: torch.nn.functional.rms_norm(x, (n,), w, float(eps))):
                        return False
                    out = self.apply(Box(RMSNormOp(Segment(seg.axes[-1:]), float(eps), read), label), [vid])
                    if w is not None:
                        self.emitted.tensors.append([w])
            except Decline:
                return False
            self.skip |= members
            self.values[id(result)] = out
            for alias in aliases:
                self.values[id(alias)] = vid
            return True
        return False

    def _module_agrees(self, path: str, source: Node, result: Node, fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        """Whether the module at ``path`` computes ``fn``: checked on the traced values (when the capture kept them)
        and on a random input run through the module itself — a class name is never proof.  The modules checked act
        on each row (the last axis) alone, so large tensors are checked on a bounded sample of rows (linear time)."""
        if self.model is None:
            return False
        try:
            module = self.submodule(path)
            value = source.value
            shape = tuple(int(s) for s in value.shape)
            if value.numel() > _CHECKED and value.dim() >= 1:  # the same last axis, fewer rows
                shape = (max(1, min(_CHECKED // max(shape[-1], 1), 64)), shape[-1])
            gen = torch.Generator().manual_seed(0)
            probe = (3 * torch.randn(shape, generator=gen)).to(value.dtype)
            with torch.no_grad():
                pairs = [(module(probe), fn(probe))]
                if value.device.type != "meta" and result.value.device.type != "meta":
                    got, want = _rows(result.value), _rows(value)
                    pairs.append((got, fn(want)) if want is not None and got is not None else (result.value, fn(value)))
            return all(isinstance(a, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
                       and torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in pairs)
        except Exception:  # noqa: BLE001 - a module that cannot be run alone is not recognised
            return False

    def opaque(self, node: Node) -> None:
        """An opaque box calling the node's operator with its constant arguments."""
        inputs: list[int] = []
        tensor_refs: list[Node] = []

        def template(value: Any) -> Any:
            if isinstance(value, Node):
                if not isinstance(value.value, torch.Tensor):
                    return template(value.value)
                if value.value.numel() == 0:  # no data to wire: the call gets an empty tensor of its dtype and shape
                    return ("$empty", (dtype_name(value.value), tuple(int(n) for n in value.value.shape)))
                tensor_refs.append(value)
                if dtype_name(value.value) in CASTS:  # lowered as int64: cast back, kernels may need equal dtypes
                    return ("$as", (len(tensor_refs) - 1, dtype_name(value.value)))
                return ("$in", len(tensor_refs) - 1)
            if isinstance(value, (list, tuple)):
                return tuple(template(v) for v in value)
            if isinstance(value, torch.dtype):
                return ("$dtype", str(value).replace("torch.", ""))
            if isinstance(value, torch.device):
                return ("$device", str(value))
            if isinstance(value, torch.layout):
                return ("$layout", str(value).replace("torch.", ""))
            if isinstance(value, torch.memory_format):
                return ("$memory_format", str(value).replace("torch.", ""))
            if isinstance(value, torch.Tensor):
                return template(Node("literal", "constant", value=value))
            if isinstance(value, complex):  # ``z * 1j``: a number the call's source writes as complex(re, im)
                return ("$complex", (value.real, value.imag))
            return value

        args = template(node.args)
        kwargs = tuple((k, template(v)) for k, v in node.kwargs.items())
        out = node.value
        for r in tensor_refs:
            inputs.append(self.value(r, self._names_like(r.value, tensor_refs)))
        if isinstance(out, torch.Tensor):
            outs = [self.seg_for(out, self.names_like(out, inputs))]
            picks: tuple[int, ...] = ()
            keys: list[Any] = [id(node)]
        else:
            used = sorted({c.args[1] for c in self.consumers.get(id(node), []) if op_name(c.target)[0] == "operator.getitem"})
            used = [k for k in used if isinstance(out[k], torch.Tensor) and out[k].numel() > 0]
            outs = [self.seg_for(out[k], self.names_like(out[k], inputs)) for k in used]
            picks = tuple(used)
            keys = [(id(node), k) for k in used]
        if not outs:
            return
        _, full = op_name(node.target)
        box = Box(OpaqueOp(full, Type(tuple(self.segs[v] for v in inputs)), Type(tuple(outs)), args, kwargs, picks))
        vids = self.emit(box, inputs, outs)
        self.emitted.opaque[full] = self.emitted.opaque.get(full, 0) + 1
        if LOG.isEnabledFor(logging.DEBUG):
            name = op_name(node.target)[0]
            why = self.why.get(id(node)) or [f"no rule for {name}" if RULES.get(name) is None and IMPORT.get(name) is None
                                             else f"rule {_rule_name(RULES.get(name) or IMPORT.get(name))} declined"]
            LOG.debug("opaque box %s %s: %s", full, where(node), "; ".join(why))
        for key, vid in zip(keys, vids):
            if isinstance(key, tuple):
                self._picked[key] = vid
            else:
                self.values[key] = vid

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


#: Roles a parameter's wire is named after when the config gives its size that role alone (:meth:`Converter._named`)
PARAMETER_ROLES = frozenset({"h", "g", "k", "e"})


#: Operators that only view their operand (no entry computed, none repeated): a parameter read through them is still
#: the parameter, folded into the learned box that uses it.
VIEWS = frozenset({
    "aten.t", "aten.transpose", "aten.permute", "aten.view", "aten.reshape", "aten._unsafe_view", "aten.unsqueeze",
    "aten.squeeze", "aten.flatten", "aten.unflatten", "aten.contiguous", "aten.clone", "aten.detach", "aten.alias",
    "aten.to", "aten._to_copy", "aten.lift_fresh_copy", "aten.numpy_T", "aten.type_as", "aten.view_as", "aten.reshape_as",
    "aten.dropout", "aten.feature_dropout", "aten.alpha_dropout",
    # pieces that partition the parameter (``in_proj_weight.split([e, 2 e])``): each piece is a weight of its own
    "aten.split", "aten.split_with_sizes", "aten.unsafe_split", "aten.chunk", "aten.unbind", "operator.getitem",
})

#: Argument positions that are a learned box's own tensors (its weight, bias, statistics): a parameter there stays the
#: parameter node (the rule folds it into the box), whatever the other operands are.
WEIGHTS: dict[str, tuple[int, ...]] = {
    "aten.embedding": (0,), "aten.linear": (1, 2), "aten.addmm": (0, 2), "aten.mm": (1,), "aten.matmul": (1,),
    "aten.convolution": (1, 2), "aten.conv1d": (1, 2), "aten.conv2d": (1, 2), "aten.conv3d": (1, 2),
    "aten.conv_transpose1d": (1, 2), "aten.conv_transpose2d": (1, 2), "aten.conv_transpose3d": (1, 2),
    "aten.layer_norm": (2, 3), "aten.native_layer_norm": (2, 3), "aten.group_norm": (2, 3), "aten.rms_norm": (2,),
    "aten.batch_norm": (1, 2, 3, 4), "aten.native_batch_norm": (1, 2, 3, 4),
    "aten._native_batch_norm_legit_no_training": (1, 2, 3, 4), "aten.instance_norm": (1, 2, 3, 4),
    "aten.prelu": (1,),
}


def _tensors_in(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, (list, tuple)) and any(
        isinstance(v, torch.Tensor) for v in value))


#: Entries of a traced value a module idiom is checked on in full; larger values are checked on a sample of rows.
_CHECKED = 1 << 16


def _rows(tensor: torch.Tensor) -> torch.Tensor | None:
    """``tensor`` (a traced value) if small, else a spread-out sample of its rows (last axis kept): ``None`` if 0-d."""
    if tensor.numel() <= _CHECKED:
        return tensor
    if tensor.dim() < 1:
        return None
    flat = tensor.reshape(-1, tensor.shape[-1])
    n = max(1, min(flat.shape[0], _CHECKED // max(int(tensor.shape[-1]), 1)))
    picks = torch.unique(torch.linspace(0, flat.shape[0] - 1, n).round().long())
    return flat[picks]


def _buffer_of(node: Node, depth: int = 8) -> str:
    """The state-dict name of the buffer (or parameter) a constant is read from (``token_type_ids`` expanded and
    gathered), else ``""``."""
    for _ in range(depth):
        if node.source:
            return node.source
        tensors = [r for r in refs(node.args) if isinstance(r.value, torch.Tensor)]
        if node.kind != "call" or not tensors:
            return ""
        node = tensors[0]  # the data operand (a gather's source, not its index)
    return ""


def _rule_name(fn: Any) -> str:
    """``ncd.trace.boxes.pad``: the rule a converter tried."""
    if fn is None:
        return "no rule"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', getattr(fn, '__name__', repr(fn)))}"


def _reason(rule: str, error: BaseException) -> str:
    """``rule ncd.trace.boxes.pad declined: padding (1,) in mode 'reflect'`` or ``... raised NameError: ... (at
    boxes.py:12)``; a decline that turned an error into a reason names that error and where it was raised."""
    import os
    import traceback

    def at(e: BaseException) -> str:
        frames = traceback.extract_tb(e.__traceback__)
        return f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""

    if isinstance(error, Decline):
        cause = error.__cause__ or error.__context__
        after = f" (after {type(cause).__name__}{at(cause)})" if cause is not None else ""
        return f"rule {rule} declined: {_first_line(error) or 'no reason given'}{after}"
    where_ = at(error)
    return f"rule {rule} raised {type(error).__name__}: {_first_line(error)}" + (f" ({where_.strip()})" if where_ else "")


def apart(name: str, taken: set[str]) -> str:
    """``name``, primed until it is none of ``taken``.

    >>> apart("n", {"n", "nʹ"})
    'nʹʹ'
    """
    while name in taken:
        name += PRIME
    return name


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ""


def where(node: Node) -> str:
    """``at encoder.layer.0.attention (modeling_bert.py:301)``: the module path and user source line of a call."""
    path = node.stack[-1][0] if node.stack else "the top level"
    return f"at {path}" + (f" ({node.line})" if node.line else "")


def _alias_of(node: Node, source: Node) -> bool:
    """Whether ``node`` is ``source`` passed through casts to its own dtype (``x.to(torch.float32)``)."""
    while node is not source:
        if node.kind != "call" or op_name(node.target)[0] not in ("aten.to", "aten._to_copy", "aten.clone", "aten.alias"):
            return False
        if not isinstance(node.args[0], Node) or node.value.dtype != node.args[0].value.dtype:
            return False
        node = node.args[0]
    return True


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


#: The elementwise functions module idioms may stand for, as torch computes them (for the numeric check).
ELEMENTWISE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": torch.nn.functional.gelu, "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "silu": torch.nn.functional.silu, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
}

#: Module classes that may be drawn as one elementwise box (whatever ATen operators they run), once checked on values.
ACTIVATIONS = {
    "GELUActivation": "gelu", "NewGELUActivation": "gelu_tanh", "GELUTanh": "gelu_tanh", "FastGELUActivation": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh", "QuickGELUActivation": None, "SiLUActivation": "silu", "GELU": None, "SiLU": "silu",
    "ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid",
}
