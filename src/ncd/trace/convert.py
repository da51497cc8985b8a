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
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box
from ncd.ir.rules import IMPORT
from ncd.prims.opaque import CASTS, OpaqueOp
from ncd.trace.capture import Captured, Node, refs, wrapped
from ncd.trace.module_idioms import ACTIVATIONS, ELEMENTWISE, ModuleIdioms
from ncd.trace.naming import Namer, config_roles
from ncd.trace.parameter_reads import PARAMETER_ROLES, VIEWS, WEIGHTS
from ncd.trace.registry import LOG, RULES, Decline, Rule, _first_line, _reason, _rule_name, apart, hook, op_name, rule, where
from ncd.trace.values import Emitted, dtype_name, kind_of
from ncd.trace.wiring import Step

#: operators reading their input's memory through given strides and offset (its layout, not only its entries)
_STRIDED = frozenset({"aten.as_strided.default", "aten.as_strided_scatter.default"})

#: modules that read ``(t, b, m)`` when built with ``batch_first=False`` (:meth:`Converter._layout`)
LAID_OUT = (torch.nn.RNNBase, torch.nn.MultiheadAttention, torch.nn.Transformer, torch.nn.TransformerEncoder,
            torch.nn.TransformerDecoder, torch.nn.TransformerEncoderLayer, torch.nn.TransformerDecoderLayer)

__all__ = ["Converter", "RULES", "rule", "hook", "Decline", "LOG", "Node", "Rule", "op_name", "where", "apart",
           "kind_of", "dtype_name", "Emitted", "PARAMETER_ROLES", "VIEWS", "WEIGHTS", "ACTIVATIONS", "ELEMENTWISE"]


class Converter(ModuleIdioms):
    """The walk: each live call converted in execution order (a module idiom, its rule, else an opaque box)."""

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
        #: ids of the nodes whose rule drew their sized numbers as the sizes themselves (a pad of ids to a length,
        #: a slice to a whole wire): not held (:func:`ncd.trace.shape_expressions.check_node`)
        self.sized_drawn: set[int] = set()
        self._wire_learned_chains()
        self.fix_learned()  # the chains' nodes are live now; nothing changes a node's liveness or arguments after
        for node in captured.nodes:
            for r in refs((node.args, node.kwargs)):
                self.consumers.setdefault(id(r), []).append(node)
        self._name_inputs(axes)

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
        elif axes is not None:
            from ncd.errors import TraceError

            raise TraceError(f"axes must be text for the one input ('b t m'), a list with one entry per input or a dict by"
                             f" input name, not {type(axes).__name__} {axes!r:.60}")
        for node in inputs:
            shape = tuple(int(s) for s in node.value.shape)
            if node.source in given:
                names = self.namer.user(given[node.source], shape, node.source)
            else:
                names = self.namer.default(shape, kind_of(node.value)[0] != "float", self._layout(node))
            vid = self.new_value(self.seg_for(node.value, names))
            self.values[id(node)] = vid
            self.inputs.append(vid)

    def _layout(self, node: Node) -> str:
        """How a module reading the input directly lays its axes out: ``"seq_first"`` for ``(t, b, m)`` (a recurrent
        layer, ``nn.MultiheadAttention`` or ``nn.Transformer*`` built with ``batch_first=False``), ``"state"`` for a
        recurrent layer's initial state ``(layers, b, m)``, else ``""`` (the batch first)."""
        if self.model is None or node.value.dim() != 3 or not node.value.is_floating_point():
            return ""
        for user in self.consumers.get(id(node), ()):
            for path, _ in user.stack:
                try:
                    module = self.model.get_submodule(path) if path else self.model
                except AttributeError:
                    continue
                if isinstance(module, torch.nn.RNNBase) and not (user.args and user.args[0] is node):
                    return "state"  # (layers × directions, b, hidden) whatever the layout of the sequence
                if isinstance(module, LAID_OUT) and getattr(module, "batch_first", True) is False:
                    return "seq_first"
        return ""

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
            if isinstance(node.value, torch.Tensor) and node.value.numel() == 0 or _all_empty(node.value):
                continue  # no entries (an empty slice, topk(x, 0)): concatenations drop it, anything else draws it as
                # a constant
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

        sparse = _reads_sparse(node)  # (no rule computes on a sparse tensor: its reader is the operator itself)
        mark = self.mark()
        try:
            if not sparse and self.module_idiom(node):
                return
        except Exception as error:  # noqa: BLE001 - the idiom is not drawn; the recorded operations are
            self.rollback(mark)
            self.failures.append((node, f"{type(error).__name__}: {_first_line(error)}"))
            self.declined(node, "the module idiom", error)
        self.stack = node.stack
        self.current = node
        name, _ = op_name(node.target)
        fn = None if sparse else RULES.get(name) or IMPORT.get(name)  # the importer's rules, then ncd.ir.rules'
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
            if _reads_no_entries(node):
                return  # its traced value, a constant (the sum of an empty tensor)
            self.declined(node, _rule_name(fn), error)
        except Exception as error:  # noqa: BLE001 - a rule's failure is an opaque box and a warning, never a crash
            self.rollback(mark)
            if _reads_no_entries(node):
                return
            self.failures.append((node, f"{type(error).__name__}: {_first_line(error)}"))
            self.declined(node, _rule_name(fn), error)
        mark = self.mark()
        try:
            self.opaque(node)
        except Exception as error:  # noqa: BLE001 - not even an opaque box: its traced value, warned about
            self.rollback(mark)
            live = "; the lowered module is wrong on other inputs" if self.reads_inputs(node) else ""
            if live and any(isinstance(a, torch.ScriptObject) for a in tree_leaves((node.args, node.kwargs))):
                from ncd.errors import TraceError

                raise TraceError(f"{op_name(node.target)[0]} {where(node)} takes a packed TorchScript object (a"
                                 " torch.ScriptObject: torch.ao.quantization's quantized weights, a custom class) no"
                                 " diagram holds; its result depends on the inputs, so no constant can stand for it"
                                 " (trace the model before quantizing it)") from error
            if live and wrapped(node):
                from ncd.trace.registry import in_transform

                raise in_transform(node, computed=True) from error
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

    def _laid_out(self, node: Node, vid: int) -> int:
        """The input of an opaque ``as_strided`` (``as_strided_scatter``) recorded on a contiguous tensor, as a
        contiguous tensor: the lowered module's value may lie otherwise in memory (a slice whose copy was no box), where
        the same strides read other entries.  Another recorded layout (a view of an input, ``x.t()``) is the lowered
        module's own view of it, as it is."""
        x = node.args[0].value
        if node.args[0].kind != "call" or not (isinstance(x, torch.Tensor) and x.is_contiguous()
                                                and x.storage_offset() == 0):
            return vid  # (an input: the model's call reads it as the caller lays it out, and so does the lowered one)
        seg = self.segs[vid]
        box = Box(OpaqueOp("aten.clone.default", Type((seg,)), Type((seg,)), (("$in", 0),),
                           (("memory_format", ("$memory_format", "contiguous_format")),)))
        (laid,) = self.emit(box, [vid], [seg])
        self.emitted.opaque["aten.clone.default"] = self.emitted.opaque.get("aten.clone.default", 0) + 1
        return laid

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
        _, full = op_name(node.target)
        if full in _STRIDED and tensor_refs and tensor_refs[0] is node.args[0]:
            inputs[0] = self._laid_out(node, inputs[0])
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


def _all_empty(value: Any) -> bool:
    """Whether ``value`` is a tuple or list of tensors without entries (``topk(x, 0)``'s values and positions)."""
    return isinstance(value, (tuple, list)) and bool(value) and all(
        isinstance(v, torch.Tensor) and v.numel() == 0 for v in value)


def _reads_sparse(node: Node) -> bool:
    """Whether ``node`` reads a tensor of a sparse layout (a sparse buffer, or input, ``torch.sparse.mm`` or ``@``
    multiplies): rules and module idioms draw strided tensors only."""
    strided = torch.strided
    return any(isinstance(a, Node) and isinstance(a.value, torch.Tensor) and a.value.layout is not strided
               for a in node.args)


def _reads_no_entries(node: Node) -> bool:
    """Whether every value from the inputs ``node`` reads holds no entries (``x[:, :0].sum(-1)``, ``F.pad`` of an
    empty tensor): its result depends on their shapes only, fixed at trace time, so its traced value is exact."""
    live = [r for r in refs((node.args, node.kwargs)) if r.live]
    return bool(live) and all(isinstance(r.value, torch.Tensor) and r.value.numel() == 0 or _all_empty(r.value)
                              for r in live)
