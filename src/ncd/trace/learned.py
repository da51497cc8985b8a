"""Parameters and constants: the tensors the converter reads that do not depend on the model's inputs.

A parameter (and a view of it: a transposed weight) becomes a learned ``θ`` box, a table read at its first rows the table
sliced, a sinusoidal table computed in the forward the ``∿`` box, anything else a constant.  A computation on
parameters alone (a class token expanded over the batch) is wired like a computation on inputs
(:meth:`Learned._wire_learned_chains`): the lowered module holds the original's parameters, never a folded tensor.
"""

from __future__ import annotations

import heapq
from typing import Any

import torch

from ncd.ir.axes import Segment, Type
from ncd.ir.compose import fit
from ncd.ir.diagram import Box
from ncd.prims.opaque import ConstantOp, ParameterOp
from ncd.trace.capture import Node, live_call, refs, upstream
from ncd.trace.operators import SHAPE_ONLY
from ncd.trace.registry import LOG, apart, op_name
from ncd.trace.values import Values, dtype_name

__all__ = ["Learned", "PARAMETER_ROLES", "VIEWS", "WEIGHTS"]


#: views whose leading wire is their source's where its size, stride and offset are (a window's view of a batch)
_KEEP_LEAD = frozenset({"view", "reshape", "_unsafe_view", "as_strided", "unsqueeze", "squeeze", "expand", "alias",
                        "transpose", "permute"})


class Learned(Values):
    """Reading parameters and constants as values (source boxes emitted where they are first read)."""

    _wires: list[Node]  # parameters read as wires by computations on parameters (kept alive: ids)

    def _wire_learned_chains(self) -> None:
        """Computations on parameters alone are converted like computations on inputs: their nodes become live, and
        each parameter they read as data (not as a learned box's weight) is read through a live copy of its node.

        Views of a parameter (a transposed or cast weight) stay folded: they hold the parameter's entries once.  So
        does a table read at its first rows (``wpe(arange(t))``): :meth:`leading_rows` draws it as the table sliced."""
        for node in self.captured.nodes:  # a copy of a parameter holds the parameter's own view: tied, not a second one
            if node.kind == "call" and not node.live and isinstance(node.value, torch.Tensor) \
                    and op_name(node.target)[0] in _COPIES | _VIEWS:  # (a view of a copy: w.t().contiguous().t())
                node.value = _uncopied(node, node.value)
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
        kept = "_learned" in self.__dict__
        if not kept:  # this loop changes no node: self.learned (origin's, _first_rows') keeps its answers meanwhile
            self.__dict__["_learned"] = {}
        try:
            for node in self.captured.nodes:
                if node.kind != "call" or node.live or not learned(node) or not _tensors_in(node.value):
                    continue
                args = refs((node.args, node.kwargs))
                if op_name(node.target)[0] in VIEWS and not any(id(r) in chosen for r in args) and id(node) not in parts \
                        and not _recast(node):
                    continue
                if id(node) not in parts and not _detached(node) \
                        and (self._cast_rows(node) if _recast(node) else self._first_rows(node)):
                    continue  # (a parameter detached is no view of it: a stop-gradient box, ncd.prims.detach)
                wired.append(node)
                chosen.add(id(node))
        finally:
            if not kept:
                del self.__dict__["_learned"]
        if not wired:
            return
        # the views those computations read become wires too (a copy where the view is also a learned box's weight).
        # Each view is decided once every reader of it is (readers come after it in the recording: the latest node
        # first), so a view all of whose readers become wires is one wire, never a copy beside itself
        consumers: dict[int, list[Node]] = {}
        for node in self.captured.nodes:
            for r in refs((node.args, node.kwargs)):
                consumers.setdefault(id(r), []).append(node)
        position = {id(n): k for k, n in enumerate(self.captured.nodes)}
        inserted: list[tuple[int, Node]] = []
        copies: dict[int, Node] = {}
        heap: list[tuple[int, int, Node]] = [(-position[id(n)], k, n) for k, n in enumerate(wired)]
        heapq.heapify(heap)
        pending: set[int] = set()  # views read as data by a wire, not decided yet
        done: list[Node] = []
        while heap:
            _, _, node = heapq.heappop(heap)
            if id(node) in pending:  # a view: every reader is decided now
                pending.discard(id(node))
                if not all(id(c) in chosen for c in consumers.get(id(node), [])):
                    copy = Node(node.name + "_wire", "call", node.target, node.args, dict(node.kwargs), node.value,
                                node.stack, node.source, False, node.line)
                    copies[id(node)] = copy
                    inserted.append((position[id(node)], copy))
                    node = copy
                chosen.add(id(node))
            done.append(node)
            keep = WEIGHTS.get(op_name(node.target)[0], ())
            for value in _read_as_data(node, keep):
                if value.live or value.kind != "call" or id(value) in chosen or id(value) in pending \
                        or not learned(value):
                    continue
                pending.add(id(value))
                heapq.heappush(heap, (-position[id(value)], len(position) + len(done), value))

        def wire(value: Any, at: int | None = None) -> Any:
            if isinstance(value, (list, tuple)) and any(isinstance(v, Node) for v in value):
                return type(value)(wire(v) for v in value)
            if not isinstance(value, Node) or at in keep or value.live or id(value) in chosen:
                return value
            if value.kind == "parameter":
                if id(value) not in copies:
                    copies[id(value)] = Node(value.name, "parameter", value=value.value, stack=value.stack,
                                             source=value.source, live=True)
                    self._wires.append(copies[id(value)])
                return copies[id(value)]
            return copies.get(id(value), value)

        for node in done:
            node.live = True
        for node in done:
            keep = WEIGHTS.get(op_name(node.target)[0], ())
            node.args = tuple(wire(a, k) for k, a in enumerate(node.args))
            node.kwargs = {k: wire(v) for k, v in node.kwargs.items()}
        for at, copy in sorted(inserted, key=lambda item: -item[0]):
            self.captured.nodes.insert(at + 1, copy)
        # a parameter wired here and also read as data elsewhere (RWKV's ``x * mix + shifted * (1 - mix)``): every data
        # read takes the one wire, so the lowered module holds it once
        wires = {pid: c for pid, c in copies.items() if c.kind == "parameter"}
        # the nodes that read one of them: its readers before the rewiring above (which changed only chosen nodes'
        # arguments, and the copies it inserted are chosen), each once
        readers = {id(r): r for pid in wires for r in consumers.get(pid, ())}
        for node in readers.values():
            if node.kind != "call" or not node.live or id(node) in chosen:
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
        return any(n.kind == "input" for n in upstream(node, live_call))

    def submodule(self, path: str) -> torch.nn.Module:
        """``model.get_submodule(path)``, looked up once per path (raises ``AttributeError`` as it does).  A path whose
        parent was looked up is one step from it, by ``get_submodule``'s own step (the attribute, which must be a
        module); anything else is asked of ``get_submodule`` (its error for a path that is none)."""
        assert self.model is not None
        found: dict[str, torch.nn.Module] = self.__dict__.setdefault("_submodules", {})
        module = found.get(path)
        if module is None:
            parent, dot, item = path.rpartition(".")
            above = found.get(parent) if dot else self.model if path else None
            try:
                step = getattr(above, item) if above is not None else None
            except AttributeError:
                step = None
            module = found[path] = step if isinstance(step, torch.nn.Module) else self.model.get_submodule(path)
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
        rows: set[tuple[int, ...]] | None = self.__dict__.get("_row_shapes")  # each parameter's shape past its rows
        if rows is None:
            rows = self.__dict__["_row_shapes"] = {tuple(p.shape[1:]) for p in self.parameters().values()}
        if tuple(tensor.shape[1:]) not in rows:  # no table has such rows (found without looking for its origin)
            return False
        table = self.parameters().get(self.origin(node))
        if table is None or tensor.dim() < 1 or tuple(table.shape[1:]) != tuple(tensor.shape[1:]):
            return False
        if len(self._sources(node)) != 1:  # rows of several parameters joined (``cat((q.bias, k.bias))[:n]``)
            return False
        n = int(tensor.shape[0])  # (of the table's own type: ``.real`` of a complex table equals its cast, is no row)
        return n <= table.shape[0] and table.dtype == tensor.dtype and torch.equal(tensor, table[:n]) \
            and _reads_first_rows(node, table, n)

    def _cast_rows(self, node: Node) -> bool:
        """Whether ``node`` casts a table's first rows to another float type (``pos[:t].to(x.dtype)``, through more
        casts too): :meth:`leading_rows` draws it as the table sliced, then cast boxes."""
        source = node.args[0] if node.args else None
        return _recast(node) and isinstance(source, Node) and source.kind == "call" and not source.live and (
            self._cast_rows(source) if _recast(source) else self._first_rows(source))

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
            lead = self._lead_of_argument(ref, shape)
            if lead is not None:
                names[0] = lead
        seg = self.seg_for(tensor, names)
        if isinstance(ref, Node) and self.learned(ref) and (rows := self._rows_or_none(ref, tensor, seg)) is not None:
            return rows
        if isinstance(ref, Node) and self.learned(ref):
            box = Box(ParameterOp(seg, self.relative(self.origin(ref))))
            self.emitted.tensors.append([tensor])
        elif tensor.dim() == 0 and (not isinstance(ref, Node) or ref.kind == "call") and number_box(tensor):
            # (a number box holds a float: an int64 beyond 2**53 is a buffer, or the lowered module computes with another)
            box = Box(ConstantOp(seg, dtype_name(tensor), float(tensor.item())))
        elif (rows := self._sinusoidal(ref, tensor, seg)) is not None:
            return rows
        else:
            origin = _buffer_of(ref) if isinstance(ref, Node) else ""
            source = self.relative(origin) if origin else "const"
            box = Box(ConstantOp(seg, dtype_name(tensor), None, source))
            self.emitted.tensors.append([tensor])
            if not origin and isinstance(ref, Node) and ref.stack and ref.stack[-1][0]:  # the module that made it:
                made = self.__dict__.setdefault("_made_at", {})  # named if it holds the traced sizes (symbolize)
                made[id(box.prim)] = f" (made in {ref.stack[-1][0]}: {ref.stack[-1][1]})"
        (vid,) = self.emit(box, [], [seg])
        if isinstance(ref, Node) and ref.live:  # a parameter read as a wire: one box, copied to each reader
            self.bind(ref, vid)
        return vid

    def _lead_of_argument(self, ref: Any, shape: tuple[int, ...]) -> str | None:
        """The leading wire's name of a constant the model made in the shape of a value it had (``x.new_ones(x.size())``,
        ``zeros_like(x)``: whatever ``x`` holds), read through views keeping that wire (a window's view of it): ``x``'s
        leading wire (its batch), not a generic name of its size (which a chunk count of that size also has)."""
        node = ref
        while isinstance(node, Node) and node.kind == "call" and not node.live and node.args \
                and isinstance(node.value, torch.Tensor) and node.value.dim() and int(node.value.shape[0]) == shape[0]:
            name = op_name(node.target)[0].rpartition(".")[2]
            source = node.args[0]
            if name in SHAPE_ONLY:
                vid = self.values.get(id(source)) if isinstance(source, Node) and source.live else None
                if vid is None or not self.segs[vid].axes or int(self.segs[vid].axes[0].size) != shape[0] \
                        or tuple(node.value.shape) != tuple(int(a.size) for a in self.segs[vid].axes):
                    return None
                return self.segs[vid].names[0]
            if name not in _KEEP_LEAD or not isinstance(source, Node) or not isinstance(source.value, torch.Tensor) \
                    or not source.value.dim() or source.value.shape[0] != node.value.shape[0] \
                    or source.value.stride(0) != node.value.stride(0) \
                    or source.value.storage_offset() != node.value.storage_offset() \
                    or source.value.untyped_storage().data_ptr() != node.value.untyped_storage().data_ptr():
                return None
            node = source
        return None

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
        if _recast(ref) and self._cast_rows(ref):  # the rows in the source's type, then the cast (exact as the model's)
            from ncd.trace.indexing import float_cast

            source = ref.args[0]
            rows = self.leading_rows(source, source.value.reshape(tensor.shape), seg)  # (its size-1 lead taken off)
            return None if rows is None else self.apply(float_cast(source.value.dtype, tensor.dtype), [rows])
        if len(self._sources(ref)) != 1:
            return None
        table = self.parameters().get(self.origin(ref))
        n = int(tensor.shape[0])
        if table is None or tuple(table.shape[1:]) != tuple(tensor.shape[1:]) or table.shape[0] <= n:
            return None
        if tensor.device.type == "meta" or table.dtype != tensor.dtype or not torch.equal(tensor, table[:n]):
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
        """Whether ``node`` is a parameter or computed from parameters and constants alone.  Once the walk's
        liveness is fixed (:meth:`fix_learned`), each call's answer is kept (with the node: a node a rule makes for
        the occasion keeps its id while its answer is kept)."""
        if node.kind == "parameter":
            return True
        if node.kind != "call" or node.live:
            return False
        memo: dict[int, tuple[Node, bool]] | None = self.__dict__.get("_learned")
        if memo is None:
            return any(self.learned(r) for r in refs((node.args, node.kwargs)))
        found = memo.get(id(node))
        if found is None:
            found = memo[id(node)] = (node, any(self.learned(r) for r in refs((node.args, node.kwargs))))
        return found[1]

    def fix_learned(self) -> None:
        """From now on the nodes' kinds, liveness and arguments do not change: :meth:`learned` keeps its answers."""
        self.__dict__["_learned"] = {}

#: Roles a parameter's wire is named after when the config gives its size that role alone (:meth:`Converter._named`)
PARAMETER_ROLES = frozenset({"h", "g", "k", "e"})


#: Operators that only view their operand (no entry computed, none repeated): a parameter read through them is still
#: the parameter, folded into the learned box that uses it.
VIEWS = frozenset({
    "aten.t", "aten.transpose", "aten.permute", "aten.view", "aten.reshape", "aten._unsafe_view", "aten.unsqueeze",
    "aten.squeeze", "aten.flatten", "aten.unflatten", "aten.contiguous", "aten.clone", "aten.alias",
    "aten.to", "aten._to_copy", "aten.lift_fresh_copy", "aten.numpy_T", "aten.type_as", "aten.view_as", "aten.reshape_as",
    "aten.dropout", "aten.feature_dropout", "aten.alpha_dropout", "aten.feature_alpha_dropout",
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


#: operators that copy their operand's entries as they are (no type change: :func:`_uncopied`)
_COPIES = frozenset({"aten.clone", "aten.contiguous", "aten.lift_fresh_copy", "aten.alias", "aten._to_copy",
                     "aten.to"})


#: operators that view their operand's memory (:func:`_view_chain` takes them of the parameter itself)
_VIEWS = frozenset({"aten.t", "aten.transpose", "aten.permute", "aten.numpy_T", "aten.unsqueeze", "aten.squeeze",
                    "aten.view", "aten._unsafe_view", "aten.reshape", "aten.flatten", "aten.unflatten"})


def _detached(node: Node) -> bool:
    """Whether ``node`` is ``w.detach()`` of floats: no view of the parameter (it takes no gradient), a wire through a
    stop-gradient box (:func:`ncd.trace.idioms_wires.alias`)."""
    return op_name(node.target)[0] == "aten.detach" and isinstance(node.value, torch.Tensor) \
        and node.value.is_floating_point()


def _uncopied(node: Node, value: torch.Tensor) -> torch.Tensor:
    """``value`` (a folded view or copy of a parameter: ``node``'s) as the view of the parameter's own memory that holds
    the same entries, where the chain from the parameter is views and copies of no other type (``w.T.contiguous()``:
    ``w.T``); else ``value`` itself.  The lowered module's parameters are tied by memory
    (:func:`ncd.trace.params.tie`): a copy read beside its parameter (``x @ w.T.contiguous() + x @ w``) was a
    second parameter of the lowered module, trained apart from the first (twice the model's entries, with no word)."""
    found = _view_chain(node, 8)
    if found is None or found.shape != value.shape or found.dtype != value.dtype or found.data_ptr() == value.data_ptr() \
            or not torch.equal(found, value):
        return value
    return found


def _view_chain(node: Node, depth: int) -> torch.Tensor | None:
    """The parameter ``node`` is a chain of views and same-type copies of, through those views only (None if not)."""
    if node.kind == "parameter":
        return node.value if isinstance(node.value, torch.Tensor) else None
    if depth == 0 or node.kind != "call" or node.live or not isinstance(node.value, torch.Tensor) \
            or node.value.device.type == "meta":
        return None
    name = op_name(node.target)[0]
    sources = [r for r in refs((node.args, node.kwargs))]
    if len(sources) != 1 or not isinstance(node.args[0], Node) or node.args[0] is not sources[0]:
        return None
    base = _view_chain(sources[0], depth - 1)
    if base is None:
        return None
    if name in _COPIES:
        return base if base.dtype == node.value.dtype and base.shape == node.value.shape else None
    if name not in _VIEWS:
        return None
    try:
        viewed = node.target(base, *node.args[1:], **node.kwargs)
    except Exception:  # noqa: BLE001 - a view that cannot be taken of the parameter itself: the value stays as it is
        return None
    if not isinstance(viewed, torch.Tensor) or viewed.untyped_storage().data_ptr() != base.untyped_storage().data_ptr():
        return None
    return viewed


#: operators that only pick entries of their operand, of which a chain from a table can read its first rows
_PICKS = _COPIES | _VIEWS | frozenset({"aten.embedding", "aten.index_select", "aten.slice", "aten.narrow", "aten.select",
                                      "aten.index", "aten.expand"})


def _reads_first_rows(node: Node, table: torch.Tensor, n: int) -> bool:
    """Whether ``node`` (equal to the first ``n`` rows of ``table``, leading size-1 axes aside) reads those rows: a
    write into the table itself (``w.data.clamp_(-c, c)``: the table holds the result), or a chain of operators that
    only pick entries (:data:`_PICKS`) that picks them on a table of distinct entries in its place too.  Equal
    values alone are no proof: ``w.clamp(-100, 100)`` of a table inside the bounds, ``L * tril + eye`` of a unit
    triangular ``L``, or rows 9..5 of a table of zeros read as rows 0..4 gave the lowered module a constant, or other
    rows, in place of the model's computation on the table (its gradient lost or misplaced, with no word)."""
    value = node.value
    if value.untyped_storage().data_ptr() == table.untyped_storage().data_ptr():
        return True
    probe = torch.arange(table.numel(), dtype=torch.int64).reshape(table.shape)
    memo: dict[int, bool] = {}

    def reads(ref: Node) -> bool:  # whether ref's value is computed from the table (else it is its own value)
        if id(ref) not in memo:
            memo[id(ref)] = ref.kind == "parameter" or (ref.kind == "call" and not ref.live and any(
                reads(r) for r in refs((ref.args, ref.kwargs))))
        return memo[id(ref)]

    def picked(ref: Any) -> Any:
        if isinstance(ref, (list, tuple)):
            return type(ref)(picked(r) for r in ref)
        if isinstance(ref, dict):
            return {k: picked(v) for k, v in ref.items()}
        if not isinstance(ref, Node):
            return ref
        if ref.kind == "parameter":
            return probe
        if not reads(ref):
            return ref.value
        if op_name(ref.target)[0] not in _PICKS:
            raise _NotPicked
        return ref.target(*picked(ref.args), **picked(ref.kwargs))

    try:
        got = picked(node)
    except Exception:  # noqa: BLE001 - not a pick, or one the probe's type does not take: not proved
        return False
    if not isinstance(got, torch.Tensor) or got.numel() != value.numel():
        return False
    return torch.equal(got.reshape(-1), probe[:n].reshape(-1))


class _NotPicked(Exception):
    """An operator that computes entries, met reading a table's rows on a probe."""


def _recast(node: Node) -> bool:
    """Whether ``node`` casts a floating parameter (or a value computed from parameters) to another floating type
    (``w.float()`` of a float64 or bfloat16 ``w``): folded, its value was a constant of the lowered module, which the
    model's parameter trains through the cast (no gradient reached it, with no word); wired, it is the parameter's box
    and a cast box."""
    if not isinstance(node.value, torch.Tensor) or not node.value.is_floating_point():
        return False
    source = node.args[0] if node.args else None
    return isinstance(source, Node) and isinstance(source.value, torch.Tensor) \
        and source.value.is_floating_point() and source.value.dtype != node.value.dtype


def _read_as_data(node: Node, keep: tuple[int, ...]) -> list[Node]:
    """The nodes ``node`` reads other than as a learned box's own tensors (its arguments at ``keep``)."""
    return refs((tuple(a for k, a in enumerate(node.args) if k not in keep), node.kwargs))


def _tensors_in(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, (list, tuple)) and any(
        isinstance(v, torch.Tensor) for v in value))


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


def number_box(tensor: torch.Tensor) -> bool:
    """Whether a one-entry tensor is drawn and lowered as its number (:class:`~ncd.prims.opaque.ConstantOp`'s ``value``, a
    float): a real one whose entry that float holds exactly (NaN too; not an integer beyond 2**53, which would lower as
    another integer)."""
    if tensor.device.type == "meta" or tensor.is_complex():
        return False
    v = tensor.item()
    return float(v) == v or v != v
