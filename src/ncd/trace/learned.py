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
from torch._C._functorch import is_functorch_wrapped_tensor

from ncd.ir.axes import Segment, Type
from ncd.ir.compose import fit
from ncd.ir.diagram import Box
from ncd.prims.opaque import ConstantOp, ParameterOp
from ncd.prims.structure import TransposeOp
from ncd.trace.capture import Node, live_call, refs, upstream
from ncd.trace.operators import SHAPE_ONLY
from ncd.trace.parameter_reads import (
    _COPIES,
    _VIEWS,
    PARAMETER_ROLES,
    VIEWS,
    WEIGHTS,
    _buffer_of,
    _detached,
    _read_as_data,
    _reads_first_rows,
    _recast,
    _tensors_in,
    _uncopied,
    number_box,
)
from ncd.trace.registry import LOG, apart, in_transform, op_name
from ncd.trace.values import Values, dtype_name

__all__ = ["Learned"]


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
        if table is None or tensor.dim() < 1 or tuple(table.shape[1:]) != tuple(tensor.shape[1:]) \
                or table.layout is not torch.strided or tensor.layout is not torch.strided:  # (sparse: no rows)
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
        if isinstance(ref, Node) and is_functorch_wrapped_tensor(tensor):
            raise in_transform(ref)
        if tensor.layout is not torch.strided and isinstance(ref, Node):
            return self._laid_out_sparse(ref, tensor, names)
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
        if isinstance(ref, Node) and self.learned(ref) and (own := self._reshaped(ref, tensor, seg)) is not None:
            return own
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

    def _laid_out_sparse(self, ref: Node, tensor: torch.Tensor, names: list[str] | None) -> int:
        """A sparse parameter or buffer (a graph's adjacency read by ``torch.sparse.mm``): its entries as a dense
        tensor (a ``θ`` or constant box), then an opaque ``to_sparse`` into its layout, which its reader takes.  (No
        diagram holds a sparse tensor: it has no storage to tie, lay out or serialise.)"""
        from dataclasses import replace

        from ncd.prims.opaque import OpaqueOp

        dense = replace(ref, value=tensor.to_dense(), live=False)  # (its own value: never bound as the reader's)
        vid = self.value(dense, names)
        self.values.pop(id(dense), None)
        seg = self.segs[vid]
        layout = str(tensor.layout).removeprefix("torch.")
        box = Box(OpaqueOp("aten._to_sparse.default", Type((seg,)), Type((seg,)), (("$in", 0),),
                           (("layout", ("$layout", layout)),)))
        (out,) = self.emit(box, [vid], [seg])
        self.emitted.opaque["aten._to_sparse.default"] = self.emitted.opaque.get("aten._to_sparse.default", 0) + 1
        if ref.live:
            self.bind(ref, out)
        return out

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

    def _reshaped(self, ref: Node, tensor: torch.Tensor, seg: Segment) -> int | None:
        """A parameter read as data through views that only reshape it (``embed[None]``, ``w.view(1, n, m)``: the
        same entries in the same order) as the parameter in its own shape, then a view box: the lowered module's
        parameter keeps the model's shape (its state dict loads the model's entries), else none."""
        if tensor.device.type == "meta" or len(self._sources(ref)) != 1:
            return None
        table = self.parameters().get(self.origin(ref))
        if table is None or table.shape == tensor.shape or table.numel() != tensor.numel() \
                or table.dtype != tensor.dtype or not table.is_contiguous() \
                or tensor.untyped_storage().data_ptr() != table.untyped_storage().data_ptr() \
                or tensor.storage_offset() != table.storage_offset():
            return None
        perm = None if tensor.is_contiguous() else _permutation(table, tensor)
        if not tensor.is_contiguous() and perm is None:
            return None
        shape = tuple(int(n) for n in table.shape)
        kept = [name for name, n in zip(seg.names, tensor.shape) if n != 1]
        if perm is not None:  # read transposed (``e.t()[None]``): the table's wires are the read's, in its order
            kept = [kept[perm.index(k)] for k in range(len(perm))]
        squeezed = [n for n in shape if n != 1] == sorted_as(tensor, perm)  # size-1 axes added/taken
        names: list[str] = []
        it = iter(kept)
        for n in shape:
            names.append(next(it) if squeezed and n != 1 else apart(self._named(n, True), set(seg.names) | set(names)))
        full = self.namer.segment(names, shape, seg.dtype, None)
        (vid,) = self.emit(Box(ParameterOp(full, self.relative(self.origin(ref)))), [], [full])
        self.emitted.tensors.append([table.detach()])
        if perm is not None:  # parameter -> its wires of more than one entry -> permuted as the read -> viewed
            inner = [m for m, n in zip(names, shape) if n != 1]
            vid = self.view(vid, inner, tuple(n for n in shape if n != 1))
            box = Box(TransposeOp(self.segs[vid], tuple(perm)))
            (vid,) = self.emit(box, [vid], list(box.cod))
        read = self.view(vid, list(seg.names), tuple(int(n) for n in tensor.shape))
        if ref.live:  # a parameter read as a wire: one box, copied to each reader (as :meth:`value` does)
            self.bind(ref, read)
        return read

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


def _permutation(table: torch.Tensor, tensor: torch.Tensor) -> list[int] | None:
    """``perm`` with ``tensor`` (less its size-1 axes) ``== table.permute(perm)`` (less its size-1 axes), both laid out
    on one storage from one offset, ``table`` contiguous: the same entries read in another order (``e.t()[None]``);
    ``None`` when the read is no such permutation."""
    mine = [(int(n), int(s)) for n, s in zip(table.shape, table.stride()) if n != 1]
    read = [(int(n), int(s)) for n, s in zip(tensor.shape, tensor.stride()) if n != 1]
    if sorted(read) != sorted(mine) or len(set(mine)) != len(mine):
        return None
    perm = [mine.index(pair) for pair in read]
    return None if perm == list(range(len(perm))) else perm


def sorted_as(tensor: torch.Tensor, perm: list[int] | None) -> list[int]:
    """The sizes of more than one entry of ``tensor``, in the table's order (``perm`` undone)."""
    sizes = [int(n) for n in tensor.shape if n != 1]
    return sizes if perm is None else [sizes[perm.index(k)] for k in range(len(perm))]
