"""The recording of one run of the model: every ATen call the recorder (:mod:`ncd.trace.record`) hands it, as a
:class:`~ncd.trace.capture.Node` whose arguments point at the nodes that produced them (matched by tensor identity).

:class:`_Recording` takes its methods for values under another name from :class:`~ncd.trace.aliases.Aliases` and
those for in-place writes from :class:`~ncd.trace.inplace.InPlace`; the driver that runs the model under it (and
falls back to ``torch.export``) is :func:`ncd.trace.record.record`.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import torch

from ncd.trace.aliases import Aliases, holds_transformed
from ncd.trace.calls_apart import CallsApart
from ncd.trace.capture import Node, copied, held_tensors, holds_tensors, user_line
from ncd.trace.inplace import InPlace, widened
from ncd.trace.meta import ATOMS as _ATOMS  # argument types recorded as they are (no tensor inside)
from ncd.trace.meta import _meta_devices, _on_meta_device, _stand_ins, _to_meta
from ncd.trace.operators import (
    _COPIES,
    _DETACH_IN_PLACE,
    _OPERATORS,
    _STRIDED,
    BRANCHES,
    DRAWING,
    DYNAMIC,
    RANDOM,
    SHAPE_OF_INPUT,
    SHAPE_ONLY,
    _draws,
    _live_mask,
    _operator,
)
from ncd.trace.reads import _asserted
from ncd.trace.refusals import ReadsValue, Unsupported, _OverBudget
from ncd.trace.strided import strided_read
from ncd.trace.switch import as_meta, check_written, discrete_of_values, switch
from ncd.trace.tensors import _device, _discrete, _laid_out_as, _like, _sharing
from ncd.trace.undo import Undo, writes_of
from ncd.trace.walk import _Walk
from ncd.trace.work import work
from ncd.trace.writes import Region

#: :class:`~ncd.trace.capture.Node`'s fields in order: the recorder makes the node of every call with its fields by
#: position (by keyword, a node of a dataclass of 12 fields costs ~1 µs more: ~2.4 against ~1.3, at every recorded
#: call); a field moved in ``Node`` fails here, at import, not silently
_FIELDS = ("name", "kind", "target", "args", "kwargs", "value", "stack", "source", "live", "line", "guard", "sized")
if tuple(f.name for f in dataclasses.fields(Node)) != _FIELDS:
    raise ImportError(f"ncd.trace.recording makes Node({', '.join(_FIELDS)}) by position; its fields are now"
                      f" {', '.join(f.name for f in dataclasses.fields(Node))}")

_TENSOR, _PARAMETER = torch.Tensor, torch.nn.Parameter

#: the work a recording within a budget (:data:`ncd.trace.record.WORK_BUDGET`) may do per call on values of the inputs,
#: besides the budget
WORK_PER_CALL = 3e6


class _Recording(Aliases, InPlace, CallsApart):
    def __init__(self, model: torch.nn.Module, names: list[str], leaves: list[Any], meta: bool,
                 guards: bool = False, budget: float | None = None, walk: _Walk | None = None) -> None:
        if walk is not None and walk.used:  # read by an earlier attempt: the state that one's run left is not this one's
            walk.after = None
            # unless the model holds just what it did (a failed attempt undone): the very modules, parameters and
            # buffers under the same names, in order, as a walk now would read them (``holds``, ~half a walk)
            walk = walk if walk.holds(model) else None
        walk = walk if walk is not None else _Walk(model)
        walk.used = True
        self.walk = walk  # (the walk after the run is kept on it: :func:`ncd.trace.record_warnings.warn_recorded`)
        self.guards = guards  # a truth value read into Python is a guard (else: ReadsValue)
        self.budget = budget  # the work its calls on real values may do (:data:`WORK_BUDGET`), or no limit
        self.work = 0
        self.calls = 0  # its calls on values of the inputs, with a budget
        #: its calls so far are recorded as on meta (no write, no as_strided of a value of the inputs, ...): over the
        #: budget, it may go on on meta (:mod:`ncd.trace.switch`)
        self.plain = True
        self.switched: dict[int, torch.Tensor] = {}  # after the switch: a real tensor's id -> the meta one for it
        self.meta_made: set[int] = set()  # the ids of those meta tensors
        self.nodes: list[Node] = []
        self.by_id: dict[int, Node] = {}
        self.keep: list[Any] = []  # keeps every recorded tensor alive, so ids stay unique
        self.memory: dict[int, list[torch.Tensor]] = {}  # the kept tensors by their memory's address (:class:`Aliases`)
        self.meta_memory: dict[int, list[torch.Tensor]] = {}  # the kept meta tensors by their storage (:class:`Aliases`)
        self.indexed = 0
        self.stack: list[tuple[str, str]] = []
        self.paths = {id(m): p for p, m in walk.modules if p}
        #: the paths of modules registered under several (a module-level activation every layer holds): by id
        self.shared_paths: dict[int, list[str]] = {}
        if len(self.paths) < len(walk.modules) - 1:
            every: dict[int, list[str]] = {}
            for path, module in walk.modules:
                if path:
                    every.setdefault(id(module), []).append(path)
            self.shared_paths = {k: paths for k, paths in every.items() if len(paths) > 1}
        self.root = model
        self.undo = Undo(model, walk)  # what the recording writes into the model's state, undone if it fails
        self.state: dict[int, tuple[str, bool]] = {}
        for name, p in walk.parameters:
            self.state.setdefault(id(p), (name, True))
        for name, b in walk.buffers:
            self.state.setdefault(id(b), (name, False))
        self.counts: dict[str, int] = {}
        self.meta = meta
        self.meta_outputs: dict[Any, Any] = {}  # a call's arguments' metadata -> its outputs' (:func:`_on_meta_device`)
        self.inputs: list[Any] = []
        self.device = next((v.device for v in leaves if isinstance(v, torch.Tensor)), torch.device("cpu"))
        self.real: dict[int, torch.Tensor] = {}  # meta tensor id -> its real value (indices and masks only)
        self.views: dict[int, list[torch.Tensor]] = {}  # a tensor's id -> the recorded views of it (``_base``)
        self.stale: set[int] = set()  # views whose recorded value a later in-place write made out of date
        self.random: dict[str, str] = {}  # the model's line -> the random operator it calls
        #: the model's lines writing memory the same call reads, its result not the diagram's (:meth:`overlapped`)
        self.overlapping: dict[str, str] = {}
        self.overlapping_now = False  # :meth:`overlapped` is recording its call
        self.masked: dict[str, str] = {}  # the model's lines selecting with a boolean mask of the inputs (``x[m]``)
        self.drawing: dict[str, str] = {}  # the model's line -> an operator drawing random numbers inside (``DRAWING``)
        self.detached: dict[str, str] = {}  # the model's lines detaching a value of its inputs or parameters
        self.autocast: dict[str, str] = {}  # the model's lines entering torch.autocast
        self.lively = False  # :meth:`ref` met a node that depends on an input (reset by :meth:`call`)
        self.inside = 0  # > 0 while a custom autograd.Function's forward runs (its operations are not recorded)
        self.functions: dict[str, str] = {}  # the model's line -> the custom autograd.Function it calls there
        #: ids of recorded values in memory the model never sees (copies made before a write, a write's result): a
        #: view of one keeps its entries (:meth:`freeze`)
        self.own: set[int] = set()
        #: such a view -> the tensor it reads and how: its region, or the view operations that made it from that tensor
        self.derived: dict[int, tuple[torch.Tensor, Region | list[tuple[Any, tuple[Any, ...], dict[str, Any]]]]] = {}
        #: a tensor written through a view -> (the recorded tensor the write gives, the tensor, the operator), compared
        #: before anything reads it (:meth:`check_writes`): a run of copies into one tensor is compared once, at its end
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor, Any]] = {}
        #: the address of memory of ``own`` -> the nodes whose recorded values it holds (:meth:`release`)
        self.holders: dict[int, list[Node]] = {}
        self.retired: dict[int, int] = {}  # such an address -> tensors kept on it no node reads (:meth:`reused`)
        named = [names[k] if k < len(names) else f"input{k}" for k in range(len(leaves))]
        self.shared = _sharing(named, leaves)  # an input -> the earlier input whose memory it shares
        self.input_of: dict[int, str] = {}  # the id of a tensor the model runs on as an input -> the input's name
        self.inputs_written: set[str] = set()  # the inputs the model writes into in place
        self.addressed: list[str] = []  # the lines where the model read the address of a value of the inputs
        self.buffers_written: dict[str, str] = {}  # the model's buffers it writes into in place -> the line
        self.params_written: dict[str, str] = {}  # its parameters written through an alias (``w.detach()``, ``w.data``)
        self.at: dict[tuple[int, tuple[int, ...], tuple[int, ...]], list[torch.Tensor]] | None = None  # (:meth:`aliases`)
        self.in_memory: dict[int, list[torch.Tensor]] | None = None  # (:meth:`keep_memory`)
        self.rebinding = False  # :meth:`state_write` is recording a write
        self.twins: dict[int, list[torch.Tensor]] = {}  # a tensor's id -> it and its ``detach()``es (one memory)
        self.cut: set[int] = set()  # the ``detach()``es of values a gradient reaches (drawn ``sg``), by id
        #: the guard running a call's C++ kernel without the Python dispatcher, made once (a new one costs ~2 µs a
        #: call); ``kernel``: it is entered (a call within a kernel would take one of its own)
        self.unpython = torch._C._DisablePythonDispatcher()
        self.kernel = False
        self.transformed = False  # a tensor of a ``torch.func`` transform (``vmap``) was read (:meth:`unknown`)
        runs: dict[int, tuple[list[str], list[Any]]] = {}  # a tensor passed -> the inputs it is, the tensors run on
        for name, value in zip(named, copied(leaves)):
            if isinstance(value, torch.Tensor):  # the model runs on a copy: the user's tensor stays as it was
                self.inputs.append(self._input(name, _laid_out_as(value.detach())))
                ran = runs.setdefault(id(value), ([], []))
                ran[0].append(name)
                ran[1].append(self.inputs[-1])
                continue
            if holds_tensors(value) and not any(isinstance(v, torch.Tensor) for v in torch.utils._pytree.tree_leaves(value)):
                # an object holding tensors (a ``past_key_values`` cache, run on a copy): each tensor it holds is an
                # input, in the order its attributes were set; they stay real (``_on_meta``)
                for j, held in enumerate(held_tensors(value)):
                    if id(held) not in self.by_id:
                        node = Node(f"{name}_{j}", "input", value=held, source=f"{name}_{j}", live=True)
                        self.real[id(held)] = held
                        self.add(node, held)
                self.inputs.append(value)
                continue
            # tensors inside a list, tuple or dict argument are inputs too (``xs_0``, ``xs_1``), in pytree order
            items, spec = torch.utils._pytree.tree_flatten(value)
            tensors = [i for i, v in enumerate(items) if isinstance(v, torch.Tensor)]
            for j, i in enumerate(tensors):
                ran = runs.setdefault(id(items[i]), ([], []))
                items[i] = self._input(f"{name}_{j}", items[i])
                ran[0].append(f"{name}_{j}")
                ran[1].append(items[i])
            self.inputs.append(torch.utils._pytree.tree_unflatten(items, spec) if tensors else value)
        #: the inputs that were one tensor passed more than once, each run on a copy of its own (their names, the
        #: tensors run on), and the model's lines testing two of them with ``is`` (:func:`~ncd.trace.watched._identity_watched`)
        self.same = [ran for ran in runs.values() if len(ran[1]) > 1]
        self.identity: dict[str, str] = {}

    def _input(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """An input tensor of the model: its node, and the tensor the model runs on (on ``meta`` when shapes only)."""
        if id(value) in self.by_id:  # the same tensor passed twice: an input per argument (the model reads a copy)
            value = value.clone()
        node = Node(name, "input", value=value, source=name, live=True)
        run = value.to("meta") if self.meta else value
        self.input_of[id(run)] = name
        self.real[id(run)] = value
        self.add(node, run)
        self.keep.append(value)
        return run

    def add(self, node: Node, value: Any) -> None:
        self.nodes.append(node)
        self.by_id[id(value)] = node
        self.keep.append(value)
        if isinstance(value, torch.Tensor) and value._base is not None:
            self.views.setdefault(id(value._base), []).append(value)

    def ref(self, value: Any) -> Any:
        kind = type(value)
        if kind is tuple:  # the common containers first (list comprehensions: no generator frame per item)
            return tuple([self.ref(v) for v in value])
        if kind is list:
            return [self.ref(v) for v in value]
        if kind in _ATOMS:
            return value
        if kind is dict:
            return {k: self.ref(v) for k, v in value.items()}
        if isinstance(value, torch.Tensor):
            key = id(value)
            if key in self.stale:
                raise Unsupported(f"a view is read after a write into the tensor it views (at {user_line() or '?'})")
            node = self.by_id.get(key)
            if key in self.derived:
                lively = self.lively
                node = self.rederive(value)
                self.lively = lively
            elif node is None:
                name, learned = self.state.get(id(value), ("", False))
                if not name and value.requires_grad:  # (the recording runs without gradients: a model's own region)
                    viewed = self.parameter_view(value)  # a view autograd saved (w.t()), read by a derivative
                    if viewed is not None:
                        return viewed
                if not name:
                    self.unknown(value)
                    if not value.requires_grad and value.is_floating_point() and value.device.type != "meta":
                        owners = [h for h in self.aliases(value) if self.state.get(id(h), ("", False))[1]]
                        if owners:  # ``w.data`` of a parameter: recorded as ``w.detach()`` (drawn sg): the model's
                            return self.data_of(owners[0], value)  # gradients do not reach it there, nor the lowered's
                    twin = self.constant_twin(value)  # ``m.data`` of a tensor m the model made (of no input's values)
                    if twin is not None:
                        return twin
                with torch._C._DisablePythonDispatcher():  # its C++ kernel: the Python dispatcher costs ~10x more
                    detached = value.detach()
                node = Node(name.replace(".", "_") or f"const{len(self.nodes)}", "parameter" if learned else "constant",
                            None, (), {}, detached, (), name)  # (by position: :data:`_FIELDS`)
                self.add(node, value)
            if node.live:
                self.lively = True
            return node
        if isinstance(value, tuple):
            return tuple(self.ref(v) for v in value)
        if isinstance(value, list):
            return [self.ref(v) for v in value]
        if isinstance(value, dict):
            return {k: self.ref(v) for k, v in value.items()}
        return value

    def data_of(self, parameter: torch.Tensor, value: torch.Tensor) -> Node:
        """``w.data`` (``value``) of the parameter ``w``, read as the call ``w.detach()`` records: the parameter cut
        from autograd (a stop-gradient box on its wire), so the lowered module holds ``w`` (its parameters are the
        model's) and its gradients stop there as the model's do; was a constant of ``w``'s values (frozen when ``w``
        trains; ``F.linear(x, w.data)``: ``w`` itself, trained by the lowered module where the model's has no
        gradient)."""
        source = self.ref(parameter)
        with torch._C._DisablePythonDispatcher():
            detached = value.detach()
        k = self.counts["detach"] = self.counts.get("detach", 0) + 1
        node = Node(f"detach_{k}", "call", torch.ops.aten.detach.default, (source,), {}, value=detached,
                    stack=tuple(self.stack))
        self.add(node, value)
        return node

    def call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Record a call of ``func`` and return what the model gets: the plain case here (a :data:`plain
        <ncd.trace.operators._UNPLAIN>` operator on real values, no write pending, nothing switched to meta, no custom
        Function or transform under way), where the checks of :meth:`_call` decide nothing (~1 µs a call less); every
        other in :meth:`_call`."""
        found = _OPERATORS.get(id(func))
        if found is None or found[0] is not func:
            found = _operator(func)
        if not found[6] or self.meta or self.switched or self.pending or self.inside or self.transformed:
            return self._call(found, func, args, kwargs)
        packet = found[1]
        self.lively = False
        arg_refs, kwarg_refs = self.refs_of(args), self.ref(kwargs) if kwargs else {}
        live = self.lively  # a node the call reads depends on an input
        real_args = (args, kwargs)
        if self.budget is not None and live and not self.within_budget(packet, args, kwargs):
            args, kwargs = as_meta(self.switched, args), as_meta(self.switched, kwargs)  # on meta from here
            real_args = _device((args, kwargs), self.device)
        return self._ran(func, func, packet, found[5], args, kwargs, real_args, arg_refs, kwarg_refs, live)

    def within_budget(self, packet: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Count the work a call on values of the inputs would do against the budget, before its kernel runs;
        ``False`` past it, where the recording goes on on meta from this call (:mod:`ncd.trace.switch`), and raises
        :class:`~ncd.trace.refusals._OverBudget` where it cannot."""
        self.work += work(packet, args, kwargs)
        self.calls += 1
        if self.work <= self.budget + WORK_PER_CALL * self.calls:  # type: ignore[operator]
            return True
        if not switch(self):
            raise _OverBudget(f"{self.work} after {self.calls} calls")
        return False

    def refs_of(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """:meth:`ref` of a call's positional arguments: a recorded tensor (not stale, not read through a write) and a
        number looked up here, anything else by :meth:`ref`, in order (~0.3 µs an argument less)."""
        by_id, stale, derived = self.by_id, self.stale, self.derived
        out = []
        for value in args:
            kind = type(value)
            if kind is _TENSOR or kind is _PARAMETER:
                key = id(value)
                node = by_id.get(key)
                if node is not None and key not in stale and key not in derived:
                    if node.live:
                        self.lively = True
                    out.append(node)
                    continue
            elif kind in _ATOMS:
                out.append(value)
                continue
            out.append(self.ref(value))
        return tuple(out)

    def _call(self, found: tuple[Any, str, bool, bool, bool, Any, bool], func: Any, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
        """:meth:`call` of any operator in any state (``found``: :func:`~ncd.trace.operators._operator`'s facts)."""
        _, packet, mutable, writing, dropout, kernel, _ = found
        if writing and not self.inside and not self.overlapping_now and packet not in RANDOM and packet not in DRAWING:
            return self.overlapped(func, args, kwargs)
        if self.switched:  # on meta from a call on real values on (:mod:`ncd.trace.switch`): their meta tensors
            args, kwargs = as_meta(self.switched, args), as_meta(self.switched, kwargs) if kwargs else kwargs
        if dropout and not (args[2] if len(args) > 2 else kwargs.get("train", True)):
            return args[0]  # ``nn.Dropout(inplace=True)`` in eval: torch returns the input itself, writing nothing
        if self.pending and not (getattr(func, "is_view", False) and func not in _STRIDED) and not (
                func in _COPIES and not self.inside and args[0]._base is not None and id(args[0]) not in self.twins):
            self.check_writes()  # (a view reads no values; a copy through a view decides in :meth:`write`)
        if func is _DETACH_IN_PLACE and not self.inside and self._constant_detached(args[0]):
            with torch._C._DisablePythonDispatcher():
                kernel(*args, **kwargs)
            return args[0]
        into = writes_of(func, args, kwargs) if writing else ()
        if into or mutable:  # (recorded otherwise on meta: :mod:`ncd.trace.switch`)
            if self.switched:
                check_written(self, func, into, args if mutable else ())
            elif not self.meta:
                self.plain = False
        for _, root in into:  # a write into a parameter or buffer (or a view or alias of one): its value before,
            # kept; a tensor no recorded call made (``self.count = torch.zeros(())``, one held in a list): itself
            for own in [root] if id(root) in self.state else () if id(root) in self.by_id else \
                    self.aliases(root) or [root]:
                self.undo.keep(own)
        if self.inside:  # inside a custom autograd.Function: recorded as one call (:meth:`function`)
            with torch._C._DisablePythonDispatcher():
                return func(*args, **kwargs)
        target = func
        if (packet in RANDOM or packet in DRAWING and _draws(func, args, kwargs)) and not self.meta:
            # (drawn for values of the inputs, ``bernoulli(p)``, a dropout of them: a box drawing anew; of constants,
            # ``F.dropout(torch.ones(4, 3), training=True)``, the numbers held, which the warning said drew anew)
            live = any(isinstance(a, torch.Tensor) and getattr(self.by_id.get(id(a)), "live", False)
                       for a in (*args, *kwargs.values()))
            (self.drawing if live else self.random).setdefault(user_line() or "?", packet)
        elif packet == "detach" and args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            held = self.by_id.get(id(args[0]))  # a value of the inputs or parameters cut from autograd
            if (held is not None and (held.live or held.kind in ("parameter", "call"))) \
                    or self.state.get(id(args[0]), ("", False))[1]:
                self.detached.setdefault(user_line() or "?", "detach")
        elif packet == "detach_" and args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            held = self.by_id.get(id(args[0]))  # ``y.detach_()``: a value of the inputs cut from autograd in place
            if held is not None and held.live:  # (torch.tensor's own detach_ of the constant it makes: not the model's)
                self.detached.setdefault(user_line() or "?", "detach_")
        elif packet == "set_" and len(args) > 1 and isinstance(args[1], (torch.UntypedStorage, torch.TypedStorage)) \
                and args[1].device.type != "meta" and args[1].nbytes() and self._live_memory(args[1].data_ptr()):
            # a tensor made on the memory of a value of the inputs (``torch.empty(0).set_(x.untyped_storage())``):
            # no recorded call says which, and the diagram would freeze it at the traced values
            raise Unsupported(f"a value of the inputs is read through its storage at {user_line() or '?'}")
        if mutable:
            if args and id(args[0]) in self.twins and not self.rebinding:
                return self.twin_write(func, args, kwargs)
            if not self.rebinding and args and isinstance(args[0], torch.Tensor) and args[0]._base is None \
                    and id(args[0]) not in self.state and args[0].device.type != "meta" and self.aliases(args[0]):
                return self.state_write(func, args, kwargs)
            if not self.rebinding and args and isinstance(args[0], torch.Tensor) and args[0]._base is None \
                    and id(args[0]) not in self.by_id and id(args[0]) not in self.state:
                if self.constant_twin(args[0]) is not None:  # ``m.data.zero_()`` of a tensor m the model made
                    return self.twin_write(func, args, kwargs)
            target = self.functional(func, args)
            if self.meta:
                written = self.write(func, target, args, kwargs)
            else:  # (real tensors: the recorder's own operations for it run as C++ kernels, as the model's do)
                with torch._C._DisablePythonDispatcher():
                    written = self.write(func, target, args, kwargs)
            if written is not None:
                return written
        # the model sees its inputs on the meta device: devices it names are the real inputs' device
        self.lively = False
        if self.meta:
            real_args = _device((args, kwargs), self.device)
            arg_refs, kwarg_refs = self.ref(real_args)
        else:  # (the same refs, in the same order, without the pair around them)
            real_args = (args, kwargs)
            arg_refs, kwarg_refs = self.ref(args), self.ref(kwargs) if kwargs else {}
        live = self.lively  # a node the call reads depends on an input
        if live and self.transformed and holds_transformed(real_args):
            # a call recorded once on a transform's tensors would stand for every entry of the batch it wraps
            raise Unsupported(f"{packet} mixes a value of the inputs with a torch.func transform's tensors at"
                              f" {user_line() or '?'}")
        if target is not func:  # an in-place write: what shares the written memory keeps its recorded value
            self.retire(self.freeze(args[0] if args[0]._base is None else args[0]._base, args[0]),
                        args[0] if args[0]._base is None else None)
        if live and packet in SHAPE_ONLY:  # ones_like(x): a constant whatever x holds, recorded with its values
            a, kw = _stand_ins(real_args, self.device)
            out = func(*a, **kw)
            k = self.counts[packet] = self.counts.get(packet, 0) + 1
            self.add(Node(f"{packet}_{k}", "call", target, arg_refs, kwarg_refs, out, tuple(self.stack)), out)
            return out
        if live and (packet in DYNAMIC or (packet == "where" and len(args) + len(kwargs) == 1)):  # where(cond): nonzero
            raise ReadsValue(f"{packet} has an output whose shape depends on the values of the inputs at"
                             f" {user_line() or '?'}")
        if live and packet == "index" and _live_mask(arg_refs):
            self.masked.setdefault(user_line() or "?", "index")
        if live and packet == "as_strided" and not self.meta:
            self.plain = False
            with torch._C._DisablePythonDispatcher():  # (its own operations as C++ kernels, as for a write)
                return strided_read(self, func, args, kwargs)  # (as the entries of x it reads)
        if self.budget is not None and live and not self.within_budget(packet, args, kwargs):
            args, kwargs = as_meta(self.switched, args), as_meta(self.switched, kwargs)  # on meta from here
            real_args = _device((args, kwargs), self.device)
        return self._ran(func, target, packet, kernel, args, kwargs, real_args, arg_refs, kwarg_refs, live)

    def _ran(self, func: Any, target: Any, packet: str, kernel: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
             real_args: Any, arg_refs: Any, kwarg_refs: Any, live: bool) -> Any:
        """The rest of :meth:`call`: run the call (its kernel, or on meta) and record it as ``target`` (its functional
        form for an in-place write), its arguments ``arg_refs`` and ``kwarg_refs``."""
        wide = widened(target, *real_args) if target is not func else None  # h16.add_(x32): computed in float32
        first = args[0] if args else None
        if live and self.meta and packet in SHAPE_OF_INPUT and isinstance(first, torch.Tensor) and first.is_floating_point():
            with torch._C._DisablePythonDispatcher():  # (copies to meta through Python cost 30x more)
                out = _like(_to_meta(first))  # the meta kernels of norms are slow Python decompositions
        elif live and self.meta:  # shapes only: values that depend on the inputs are not needed to draw them
            if self.switched:  # (the model holds real tensors: ``x.to(ids.device)`` names theirs, not meta's)
                args, kwargs = _meta_devices((args, kwargs), self.device)
            args, kwargs, out = _on_meta_device(func, args, kwargs, self.meta_outputs)
        else:
            args, kwargs = real_args
            if self.kernel:  # real tensors: the C++ kernels, without Python at every call
                with torch._C._DisablePythonDispatcher():
                    out = kernel(*args, **kwargs)
            else:
                self.kernel = True
                try:
                    with self.unpython:
                        out = kernel(*args, **kwargs)
                finally:
                    self.kernel = False
        value = out
        if live and self.budget is not None and _discrete(out) and discrete_of_values(self, real_args):
            self.plain = False  # (on meta: not computable)
        if live and self.meta and _discrete(out):  # indices and masks are small: compute them (index ranges need values)
            a, kw = self.real_values(real_args, packet)
            value = func(*a, **kw)
            self.real[id(out)] = value
        guard = False
        if live and isinstance(out, (bool, int, float)) and not _asserted():
            if not (self.guards and packet in BRANCHES and isinstance(out, bool)):
                raise ReadsValue(f"{packet} reads a value that depends on the inputs into Python at {user_line() or '?'}")
            guard = True  # the branch taken: the rest is recorded for it, and the diagram checks it at run time
        k = self.counts[packet] = self.counts.get(packet, 0) + 1
        node = Node(f"{packet}_{k}", "call", target, arg_refs, kwarg_refs, value, tuple(self.stack), "", live,
                    user_line() if live else "", guard)  # (by position: :data:`_FIELDS`)
        if isinstance(out, torch.Tensor):
            node = self.cast_back(node, wide, value)
            self.add(node, out)
            if target is not func:  # the in-place result is a new value: record a copy, the tensor may change again
                node.value = value.clone()
                if isinstance(first, torch.Tensor) and out is not first:  # on meta, a write of a value of the inputs
                    # into a real tensor (``acc = zeros_like(h); acc += f(h)``, a buffer): the result is a meta copy,
                    # and the model reads on from the tensor it wrote, whose later reads are this write's (were its
                    # value before: the write dropped, silently)
                    self.by_id[id(first)] = self.by_id[id(out)]
                    self.keep.append(first)
            elif packet in ("detach", "alias") and isinstance(first, torch.Tensor) and out._base is None \
                    and id(first) not in self.state:  # one tensor under two names: a write into one writes both
                twins = self.twins.setdefault(id(first), [first])
                twins.append(out)
                self.twins[id(out)] = twins
                if packet == "detach" and first.is_floating_point() and (held := self.by_id.get(id(first))) is not None \
                        and (held.live or held.kind in ("parameter", "call")):
                    self.cut.add(id(out))
        else:
            self.nodes.append(node)
            self.keep.append(out)
            if isinstance(out, (tuple, list)):
                for j, item in enumerate(out):
                    if isinstance(item, torch.Tensor):
                        self.add(Node(f"getitem_{len(self.nodes)}", "call", operator.getitem, (node, j), {}, item,
                                      tuple(self.stack), "", live), item)
        return out
