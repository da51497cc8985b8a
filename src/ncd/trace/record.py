"""The light capture: run the model once, eagerly, recording its ATen calls at the pre-dispatch level.

A :class:`Recorder` is a dispatch mode installed at ``DispatchKey.PreDispatch`` (where
``torch.export`` traces too, so operators arrive as ``aten.linear``, ``aten.layer_norm``,
``aten.scaled_dot_product_attention`` rather than their decompositions).  Every call is run
on the real tensors and recorded as a :class:`~ncd.trace.capture.Node` whose arguments
point at the nodes that produced them (matched by tensor identity); global forward hooks
keep the module stack.  One eager run replaces export's symbolic trace and the re-run of
its graph, so the cost is that of running the model once.

In-place operators are recorded as their functional versions.  When the recording cannot
stand for the model (a value that depends on the inputs is read into Python — control flow
may depend on it —, an output of data-dependent shape, a mutation through a view), it
raises :class:`Unsupported` and :func:`~ncd.trace.capture.capture` falls back to ``torch.export``.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.utils._python_dispatch import TorchDispatchMode

from ncd.trace.aliases import Aliases
from ncd.trace.capture import Captured, Node, _internal, copied, held_tensors, holds_tensors, input_names, refs, user_line
from ncd.trace.dispatch import _straight_to
from ncd.trace.functions import functions_boxed
from ncd.trace.inplace import InPlace
from ncd.trace.meta import ATOMS as _ATOMS  # argument types recorded as they are (no tensor inside)
from ncd.trace.meta import _described, _meta_key, _on_meta_device, _stand_ins, _to_meta  # noqa: F401  (tests read them here)
from ncd.trace.reads import _asserted, _printing
from ncd.trace.refusals import ReadsValue, Unsupported, _NeedValues, _OverBudget
from ncd.trace.shapes import Shapes
from ncd.trace.tensors import _device, _discrete, _like, _same, _shares, _sharing
from ncd.trace.undo import Undo, writes_of
from ncd.trace.walk import _computing, _Walk, _warn_rebound
from ncd.trace.work import work
from ncd.trace.writes import Region

__all__ = ["record", "Unsupported", "ReadsValue"]

#: operators whose output shape depends on the values of their inputs (``torch.where(cond)``, one argument: below)
DYNAMIC = {"nonzero", "nonzero_numpy", "argwhere", "masked_select", "unique", "_unique", "_unique2", "unique_consecutive",
           "unique_dim", "nonzero_static"}


#: operators that read one truth value of a tensor into Python (``if mask.any():``, ``bool(t)``, ``t.item()`` of a bool)
BRANCHES = frozenset({"is_nonzero", "_local_scalar_dense", "item"})


#: operators that draw random numbers: recorded, their draw is a constant of the diagram
RANDOM = frozenset({"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "bernoulli",
                    "bernoulli_", "multinomial", "normal", "normal_", "uniform_", "exponential_", "poisson",
                    "random_", "cauchy_", "log_normal_", "geometric_"})


#: Above this rough size of a model's arithmetic (parameters × input elements) the inputs' calls are recorded on the
#: meta device (shapes only): its kernels cost ~1-10 ms an operator in Python, running a small model costs less.
#: An embedding table only used for lookups does no arithmetic per parameter: not counted (:func:`_computing`).
META_ABOVE = 5e9


def _on_meta(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], walk: _Walk | None = None) -> bool:
    values = list(args) + list(kwargs.values())
    if any(holds_tensors(v) for v in values):  # the tensors inside a cache passed in stay real: they are its inputs
        return False
    elements = sum(v.numel() for v in values if isinstance(v, torch.Tensor))
    return (_computing(model, walk) if elements else 0) * elements > META_ABOVE


#: A model above :data:`META_ABOVE` is recorded on real values first, and again on the meta device once its calls on
#: values of the inputs would compute more than ``WORK_BUDGET + WORK_PER_CALL`` × their number
#: (:func:`ncd.trace.work.work`, multiply-adds; ~2e10 a second here): a meta kernel costs up to ~0.1 ms a call in
#: Python, so a large model of small inputs (a deep stack of small layers) records faster on real values.
WORK_BUDGET = 2e7
WORK_PER_CALL = 3e6


def _recorder_base() -> type:
    # the pre-dispatch mode stack only admits the proxy mode's class (torch internals)
    from torch.fx.experimental.proxy_tensor import ProxyTorchDispatchMode

    return ProxyTorchDispatchMode


_RECORDERS: dict[type, type] = {}


def _recorder_class() -> type:
    """The dispatch mode that hands every call to a :class:`_Recording`: made once per base class (a class made per
    trace is garbage only the cyclic collector frees, with the recording its method would refer to)."""
    base = _recorder_base()
    if base not in _RECORDERS:
        class Recorder(base):  # type: ignore[misc, valid-type]
            def __init__(self, recording: _Recording) -> None:
                TorchDispatchMode.__init__(self, torch._C.DispatchKey.PreDispatch)  # type: ignore[no-untyped-call]
                self._mode_key = torch._C._TorchDispatchModeKey.PROXY
                self._recording = recording

            def __enter__(self) -> Any:
                return TorchDispatchMode.__enter__(self)  # type: ignore[no-untyped-call]

            def __exit__(self, *exc: Any) -> Any:
                return TorchDispatchMode.__exit__(self, *exc)  # type: ignore[no-untyped-call]

            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                return self._recording.call(func, tuple(args), dict(kwargs or {}))

        _RECORDERS[base] = Recorder
    return _RECORDERS[base]


#: writes that read nothing of what they write (compared in :meth:`_Recording.write`); a view operation reading memory
_COPIES = frozenset({torch.ops.aten.copy_.default, torch.ops.aten.fill_.Scalar, torch.ops.aten.fill_.Tensor,
                     torch.ops.aten.zero_.default})
_STRIDED = frozenset({torch.ops.aten.as_strided.default})


class _Recording(Aliases, InPlace):
    def __init__(self, model: torch.nn.Module, names: list[str], leaves: list[Any], meta: bool,
                 guards: bool = False, budget: float | None = None, walk: _Walk | None = None) -> None:
        walk = walk if walk is not None and not walk.used else _Walk(model)
        walk.used = True
        self.guards = guards  # a truth value read into Python is a guard (else: ReadsValue)
        self.budget = budget  # the work its calls on real values may do (:data:`WORK_BUDGET`), or no limit
        self.work = 0
        self.calls = 0  # its calls on values of the inputs, with a budget
        self.nodes: list[Node] = []
        self.by_id: dict[int, Node] = {}
        self.keep: list[Any] = []  # keeps every recorded tensor alive, so ids stay unique
        self.memory: dict[int, list[torch.Tensor]] = {}  # the kept tensors by their memory's address (:class:`Aliases`)
        self.indexed = 0
        self.stack: list[tuple[str, str]] = []
        self.paths = {id(m): p for p, m in walk.modules if p}
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
        #: such a view -> the tensor it reads and how: its region, or the view operations that made it from that tensor
        self.random: dict[str, str] = {}  # the model's line -> the random operator it calls
        self.detached: dict[str, str] = {}  # the model's lines detaching a value of its inputs or parameters
        self.autocast: dict[str, str] = {}  # the model's lines entering torch.autocast
        self.lively = False  # :meth:`ref` met a node that depends on an input (reset by :meth:`call`)
        self.inside = 0  # > 0 while a custom autograd.Function's forward runs (its operations are not recorded)
        self.functions: dict[str, str] = {}  # the model's line -> the custom autograd.Function it calls there
        #: ids of recorded values in memory the model never sees (copies made before a write, a write's result): a
        #: view of one keeps its entries (:meth:`freeze`)
        self.own: set[int] = set()
        self.derived: dict[int, tuple[torch.Tensor, Region | list[tuple[Any, tuple[Any, ...], dict[str, Any]]]]] = {}
        #: a tensor written through a view -> (the recorded tensor the write gives, the tensor, the operator), compared
        #: before anything reads it (:meth:`check_writes`): a run of copies into one tensor is compared once, at its end
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor, Any]] = {}
        named = [names[k] if k < len(names) else f"input{k}" for k in range(len(leaves))]
        self.shared = _sharing(named, leaves)  # an input -> the earlier input whose memory it shares
        self.input_of: dict[int, str] = {}  # the id of a tensor the model runs on as an input -> the input's name
        self.inputs_written: set[str] = set()  # the inputs the model writes into in place
        self.buffers_written: dict[str, str] = {}  # the model's buffers it writes into in place -> the line
        self.params_written: dict[str, str] = {}  # its parameters written through an alias (``w.detach()``, ``w.data``)
        self.at: dict[tuple[int, tuple[int, ...], tuple[int, ...]], list[torch.Tensor]] | None = None  # (:meth:`aliases`)
        self.rebinding = False  # :meth:`state_write` is recording a write
        self.twins: dict[int, list[torch.Tensor]] = {}  # a tensor's id -> it and its ``detach()``es (one memory)
        self.transformed = False  # a tensor of a ``torch.func`` transform (``vmap``) was read (:meth:`unknown`)
        for name, value in zip(named, copied(leaves)):
            if isinstance(value, torch.Tensor):  # the model runs on a copy: the user's tensor stays as it was
                self.inputs.append(self._input(name, value.detach().clone()))
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
                items[i] = self._input(f"{name}_{j}", items[i])
            self.inputs.append(torch.utils._pytree.tree_unflatten(items, spec) if tensors else value)

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
        if isinstance(value, torch.Tensor):
            if id(value) in self.stale:
                raise Unsupported(f"a view is read after a write into the tensor it views (at {user_line() or '?'})")
            node = self.by_id.get(id(value))
            if id(value) in self.derived:
                lively = self.lively
                node = self.rederive(value)
                self.lively = lively
            elif node is None:
                name, learned = self.state.get(id(value), ("", False))
                if not name:
                    self.unknown(value)
                with torch._C._DisablePythonDispatcher():  # its C++ kernel: the Python dispatcher costs ~10x more
                    detached = value.detach()
                node = Node(name.replace(".", "_") or f"const{len(self.nodes)}", "parameter" if learned else "constant",
                            value=detached, source=name)
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

    def call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.pending and not (getattr(func, "is_view", False) and func not in _STRIDED) and not (
                func in _COPIES and not self.inside and args[0]._base is not None and id(args[0]) not in self.twins):
            self.check_writes()  # (a view reads no values; a copy through a view decides in :meth:`write`)
        for _, root in writes_of(func, args, kwargs):  # a write into a parameter or buffer (or a view or alias
            # of one): its value before, kept; a tensor no recorded call made (``self.count = torch.zeros(())``, one
            # held in a list): itself
            for own in [root] if id(root) in self.state else () if id(root) in self.by_id else \
                    self.aliases(root) or [root]:
                self.undo.keep(own)
        if self.inside:  # inside a custom autograd.Function: recorded as one call (:meth:`function`)
            with torch._C._DisablePythonDispatcher():
                return func(*args, **kwargs)
        packet = func.overloadpacket.__name__
        target = func
        if packet in RANDOM and not self.meta:
            self.random.setdefault(user_line() or "?", packet)
        elif packet == "detach" and args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            held = self.by_id.get(id(args[0]))  # a value of the inputs or parameters cut from autograd
            if (held is not None and (held.live or held.kind in ("parameter", "call"))) \
                    or self.state.get(id(args[0]), ("", False))[1]:
                self.detached.setdefault(user_line() or "?", "detach")
        elif packet == "set_" and len(args) > 1 and isinstance(args[1], (torch.UntypedStorage, torch.TypedStorage)) \
                and args[1].device.type != "meta" and args[1].nbytes() and self._live_memory(args[1].data_ptr()):
            # a tensor made on the memory of a value of the inputs (``torch.empty(0).set_(x.untyped_storage())``):
            # no recorded call says which, and the diagram would freeze it at the traced values
            raise Unsupported(f"a value of the inputs is read through its storage at {user_line() or '?'}")
        if func._schema.is_mutable:
            if args and id(args[0]) in self.twins and not self.rebinding:
                return self.twin_write(func, args, kwargs)
            if not self.rebinding and args and isinstance(args[0], torch.Tensor) and args[0]._base is None \
                    and id(args[0]) not in self.state and args[0].device.type != "meta" and self.aliases(args[0]):
                return self.state_write(func, args, kwargs)
            target = self.functional(func, args)
            written = self.write(func, target, args, kwargs)
            if written is not None:
                return written
        # the model sees its inputs on the meta device: devices it names are the real inputs' device
        real_args = _device((args, kwargs), self.device) if self.meta else (args, kwargs)
        self.lively = False
        arg_refs, kwarg_refs = self.ref(real_args)
        live = self.lively  # a node the call reads depends on an input
        if live and self.transformed and any(map(is_functorch_wrapped_tensor, held_tensors(real_args))):
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
            self.add(Node(f"{packet}_{k}", "call", target, arg_refs, kwarg_refs, value=out, stack=tuple(self.stack)), out)
            return out
        if live and (packet in DYNAMIC or (packet == "where" and len(args) + len(kwargs) == 1)):  # where(cond): nonzero
            raise ReadsValue(f"{packet} has an output whose shape depends on the values of the inputs at"
                             f" {user_line() or '?'}")
        if live and packet == "as_strided" and not self.meta:
            return self.strided(func, args, kwargs)
        first = args[0] if args else None
        if live and self.meta and packet in SHAPE_OF_INPUT and isinstance(first, torch.Tensor) and first.is_floating_point():
            with torch._C._DisablePythonDispatcher():  # (copies to meta through Python cost 30x more)
                out = _like(_to_meta(first))  # the meta kernels of norms are slow Python decompositions
        elif live and self.meta:  # shapes only: values that depend on the inputs are not needed to draw them
            args, kwargs, out = _on_meta_device(func, args, kwargs, self.meta_outputs)
        else:
            args, kwargs = real_args
            if self.budget is not None and live:  # before the kernel runs: the work it would do
                self.work += work(packet, args, kwargs)
                self.calls += 1
                if self.work > self.budget + WORK_PER_CALL * self.calls:
                    raise _OverBudget(f"{self.work} after {self.calls} calls")
            with torch._C._DisablePythonDispatcher():  # real tensors: the C++ kernels, without Python at every call
                out = func(*args, **kwargs)
        value = out
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
        node = Node(f"{packet}_{k}", "call", target, arg_refs, kwarg_refs, value=value, stack=tuple(self.stack), live=live,
                    line=user_line() if live else "", guard=guard)
        if isinstance(out, torch.Tensor):
            self.add(node, out)
            if target is not func:  # the in-place result is a new value: record a copy, the tensor may change again
                node.value = value.clone()
            elif packet in ("detach", "alias") and isinstance(first, torch.Tensor) and out._base is None \
                    and id(first) not in self.state:  # one tensor under two names: a write into one writes both
                twins = self.twins.setdefault(id(first), [first])
                twins.append(out)
                self.twins[id(out)] = twins
        else:
            self.nodes.append(node)
            self.keep.append(out)
            if isinstance(out, (tuple, list)):
                for j, item in enumerate(out):
                    if isinstance(item, torch.Tensor):
                        self.add(Node(f"getitem_{len(self.nodes)}", "call", operator.getitem, (node, j), {}, value=item,
                                      stack=tuple(self.stack), live=live), item)
        return out

    def function(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
        """A custom ``torch.autograd.Function`` applied (its forward already run, unrecorded): one call of the operator
        that applies it (:func:`~ncd.trace.functions.function_op`), so the lowered module's backward is the Function's."""
        from ncd.errors import TraceError
        from ncd.trace.functions import function_op

        self.check_writes()
        line = user_line() or "?"
        many = not isinstance(out, torch.Tensor)
        items = list(out) if isinstance(out, (tuple, list)) else [out]
        if not all(isinstance(t, torch.Tensor) for t in items):
            raise TraceError(f"cannot trace the custom autograd.Function {cls.__qualname__} at {line}: it returns"
                             f" {', '.join(type(t).__name__ for t in items)}, not tensors only")
        self.functions.setdefault(line, cls.__qualname__)
        target = function_op(cls, args, kwargs, many)
        leaves = [v for v in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(v, torch.Tensor)]
        real = _device(leaves, self.device) if self.meta else leaves
        arg_refs = self.ref(real)
        live = any(r.live for r in refs(arg_refs))
        packet = target.overloadpacket.__name__
        k = self.counts[packet] = self.counts.get(packet, 0) + 1
        node = Node(f"{packet}_{k}", "call", target, (arg_refs,), {}, value=out if not many else tuple(items),
                    stack=tuple(self.stack), live=live, line=line if live else "")
        if not many:
            self.add(node, out)
            return out
        self.nodes.append(node)
        self.keep.append(out)
        for j, item in enumerate(items):
            self.add(Node(f"getitem_{len(self.nodes)}", "call", operator.getitem, (node, j), {}, value=item,
                          stack=tuple(self.stack), live=live), item)
        return out

    def strided(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        """``x.as_strided(size, stride)`` (overlapping windows read straight from memory) as the entries of ``x`` it
        reads: ``x.reshape(-1)[positions]``.  Its result depends on how ``x`` lies in memory, which the lowered module
        need not reproduce; the entries read do not."""
        x = args[0]
        out: torch.Tensor = func(*args, **kwargs)
        if not isinstance(x, torch.Tensor) or x.device.type == "meta":
            raise Unsupported("as_strided of a tensor without values")
        memory = torch.arange(x.untyped_storage().nbytes() // max(x.element_size(), 1))
        mine = memory.as_strided(x.shape, x.stride(), x.storage_offset()).reshape(-1)
        read = memory.as_strided(out.shape, out.stride(), out.storage_offset())
        entry = torch.full_like(memory, -1)
        entry[mine] = torch.arange(mine.numel())
        positions = entry[read]
        if bool((positions < 0).any()):
            raise Unsupported(f"as_strided reads memory outside its input at {user_line() or '?'}")
        flat = self.emit(torch.ops.aten.reshape.default, x, [-1])
        got = self.emit(torch.ops.aten.index.Tensor, flat, [positions])
        if not _same(got, out):
            raise Unsupported("as_strided: the entries read do not give the tensor the model read")
        self.by_id[id(out)] = self.by_id[id(got)]
        self.keep.append(out)
        if out._base is not None:
            self.views.setdefault(id(out._base), []).append(out)
        return out

    def real_values(self, value: Any, packet: str) -> Any:
        if isinstance(value, torch.Tensor):
            if value.device.type != "meta":
                return value
            if id(value) not in self.real:
                raise _NeedValues(f"{packet} computes indices from values recorded without them")
            return self.real[id(value)]
        if isinstance(value, tuple):
            return tuple(self.real_values(v, packet) for v in value)
        if isinstance(value, list):
            return [self.real_values(v, packet) for v in value]
        if isinstance(value, dict):
            return {k: self.real_values(v, packet) for k, v in value.items()}
        return value

    def functional(self, func: Any, args: tuple[Any, ...]) -> Any:
        name = func.overloadpacket.__name__
        base = name[:-1] if name.endswith("_") and not name.startswith("_") else None
        mutated = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if base is None or mutated is None or not func._schema.arguments[0].alias_info \
                or any(a.alias_info and a.alias_info.is_write for a in func._schema.arguments[1:]):
            raise Unsupported(f"{func} mutates its arguments")
        root = mutated if mutated._base is None else mutated._base
        if id(root) in self.input_of:
            self.inputs_written.add(self.input_of[id(root)])
        held = self.state.get(id(root))
        if held is not None and not held[0].endswith("num_batches_tracked"):  # a parameter: under the model's no_grad
            (self.params_written if held[1] else self.buffers_written).setdefault(held[0], user_line() or "?")
        if mutated._base is not None and self.meta and any(r.live for r in refs(self.ref(args))):
            raise _NeedValues(f"{func} writes through a view a value that depends on the inputs")
        packet = getattr(torch.ops.aten, base, None)
        overload = getattr(packet, func._overloadname, None) if packet is not None else None
        if overload is None:
            raise Unsupported(f"{func} has no functional version")
        previous = self.by_id.get(id(mutated))
        if previous is not None and (not isinstance(previous.value, torch.Tensor) or _shares(previous.value, mutated)) \
                and not self._frozen_by_write(mutated):
            previous.value = previous.value.clone()  # the earlier value must not change under the nodes that read it
        return overload

    def _frozen_by_write(self, mutated: torch.Tensor) -> bool:
        """Whether :meth:`write` records this write into a recorded view of a tensor (not on meta, some entries): its
        :meth:`freeze` keeps the view's recorded value before the model writes, as a view of memory the model never
        sees where it can (longformer: the slice written of a (8, 2, 256, 513) score tensor, 54 MB of copies a
        trace), so :meth:`functional` need not copy it first."""
        root = mutated._base
        return root is not None and not self.meta and bool(mutated.numel()) \
            and any(v is mutated for v in self.views.get(id(root), ()))

    def emit(self, op: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Run ``op`` on recorded tensors and record it (the operations an in-place write stands for)."""
        return self.known(op, op(*args, **kwargs), *args, **kwargs)

    def known(self, op: Any, value: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Record ``op`` on recorded tensors, whose result ``value`` is known (:func:`ncd.trace.writes.write_back`)."""
        out = value
        arg_refs, kwarg_refs = self.ref((args, kwargs))
        live = any(r.live for r in refs((arg_refs, kwarg_refs)))
        packet = op.overloadpacket.__name__
        k = self.counts[packet] = self.counts.get(packet, 0) + 1
        self.add(Node(f"{packet}_{k}", "call", op, arg_refs, kwarg_refs, value=out, stack=tuple(self.stack), live=live,
                      line=user_line() if live else ""), out)
        return out


def record(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], flat: torch.nn.Module) -> Captured:
    """Run ``flat`` (the model, returning its output tensors) once, recording every ATen call.

    The model runs on its real values (every node keeps its value, so idioms can be checked on
    them); a large one (:data:`META_ABOVE`) runs the calls that depend on the inputs on the
    ``meta`` device (shapes only: its compute is skipped) and, if that fails, again for real.
    """
    walk = _Walk(model)
    bound = walk.bound()
    captured = _recorded(model, args, kwargs, flat, walk)
    _warn_rebound(model, bound)
    return captured


def _recorded(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], flat: torch.nn.Module,
              walk: _Walk | None = None) -> Captured:
    walk = walk if walk is not None else _Walk(model)
    meta = _on_meta(model, args, kwargs, walk)
    try:
        return _attempt(model, args, kwargs, flat, meta, walk)
    except ReadsValue as error:
        reads = error
    # A model that reads an input's value into Python (``if mask.all(): skip the mask``) is recorded as torch.export
    # sees it: libraries take their traceable path when they are being exported (``torch.compiler.is_exporting()``),
    # with no branch on values.  Export would record the same operations, only slower.
    with _as_exporting():
        try:
            return _attempt(model, args, kwargs, flat, meta, walk)
        except ReadsValue:
            pass
        except Unsupported:
            raise
        except Exception:  # noqa: BLE001 - the model's own exporting path fails: the value it read is the reason
            raise reads from None
        # Still a value read: if every one is a truth value (a branch, ``if not padding_mask.any()``), record the
        # branches taken, each checked at run time by a guard box; a number read (a size, a count) is refused.
        return _record(model, args, kwargs, flat, meta=False, guards=True, walk=walk)


def _attempt(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], flat: torch.nn.Module,
             meta: bool, walk: _Walk | None = None) -> Captured:
    """One recording of the model: on real values, or for a large one (``meta``) on real values within
    :data:`WORK_BUDGET` (a negative one: straight to meta) and else on the meta device, and on real values again if
    that fails."""
    if meta and WORK_BUDGET >= 0:
        held = model.buffers() if walk is None or walk.used or not walk.faithful \
            else {id(b): b for _, b in walk.buffers}.values()
        buffers = [(b, b.clone()) for b in held]  # what the model writes into them is undone
        try:
            return _record(model, args, kwargs, flat, meta=False, budget=WORK_BUDGET, walk=walk)
        except Exception:  # noqa: BLE001 - over the budget, or anything: the recording as without it decides
            with torch.no_grad():
                for b, before in buffers:
                    if b.shape == before.shape:
                        b.copy_(before)
    try:
        return _record(model, args, kwargs, flat, meta=meta, walk=walk)
    except Unsupported:
        raise
    except Exception:  # noqa: BLE001 - an operator without a meta kernel, a model that reads a value: run it for real
        if not meta:
            raise
        return _record(model, args, kwargs, flat, meta=False, walk=walk)


@contextlib.contextmanager
def _as_exporting() -> Iterator[None]:
    """``torch.compiler.is_compiling()`` and ``is_exporting()`` true, as during ``torch.export``."""
    compiler = torch.compiler
    before = (getattr(compiler, "_is_compiling_flag", False), getattr(compiler, "_is_exporting_flag", False))
    if not (hasattr(compiler, "_is_compiling_flag") and hasattr(compiler, "_is_exporting_flag")):
        raise Unsupported("this torch has no exporting flags to set")
    compiler._is_compiling_flag, compiler._is_exporting_flag = True, True
    try:
        yield
    finally:
        compiler._is_compiling_flag, compiler._is_exporting_flag = before


def _record(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], flat: torch.nn.Module,
            meta: bool, guards: bool = False, budget: float | None = None, walk: _Walk | None = None) -> Captured:
    from torch._dispatch.python import enable_python_dispatcher

    from ncd.trace.fastpath import nested_padding

    names = input_names(model, len(args), kwargs)
    leaves = list(args) + list(kwargs.values())
    rec = _Recording(model, names, leaves, meta, guards, budget, walk)
    run_args, run_kwargs = tuple(rec.inputs[:len(args)]), dict(zip(kwargs, rec.inputs[len(args):]))
    Recorder = _recorder_class()

    def pre(module: torch.nn.Module, _: Any) -> None:
        path = rec.paths.get(id(module))
        if path is not None:
            rec.stack.append((path, type(module).__name__))
        if shapes._calls is not None:
            shapes.rest()

    def post(module: torch.nn.Module, _: Any, __: Any) -> None:
        if id(module) in rec.paths and rec.stack:
            rec.stack.pop()
        if shapes._calls is not None:
            shapes.rest()

    hooks = [torch.nn.modules.module.register_module_forward_pre_hook(pre),
             torch.nn.modules.module.register_module_forward_hook(post, always_call=True)]
    def live_node(tensor: torch.Tensor) -> Node | None:
        node = rec.by_id.get(id(tensor))
        return node if node is not None and node.live else None

    shapes = Shapes(live_node, rec.nodes)  # sizes read into Python, followed (ncd.trace.shapes)
    mha = torch.backends.mha
    fast = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)  # nn.MultiheadAttention's fused inference kernel hides the attention it computes
    grad_off = torch.no_grad.__enter__
    autocast_on = torch.autocast.__enter__

    def noted(seen: dict[str, str], what: str) -> None:
        """The model's line entering a context manager (the caller of the ``__enter__`` that calls this), in ``seen``."""
        frame = sys._getframe(2)
        if not _internal(frame.f_code.co_filename):
            seen.setdefault(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}", what)

    def no_grad(self: Any) -> None:  # the model's own ``with torch.no_grad():`` (the recording runs in one already)
        noted(rec.detached, "no_grad")
        grad_off(self)

    def autocast(self: Any) -> Any:  # the model's own ``with torch.autocast(...):``: recorded in the tensors' types
        noted(rec.autocast, "autocast")
        return autocast_on(self)  # type: ignore[no-untyped-call]

    try:
        torch.no_grad.__enter__ = no_grad  # type: ignore[method-assign]
        torch.autocast.__enter__ = autocast  # type: ignore[method-assign]
        with torch.no_grad(), enable_python_dispatcher(), _reads_guarded(rec), functions_boxed(rec), \
                _straight_to(Recorder), Recorder(rec), shapes, nested_padding(model, fast, rec.paths):
            out = flat(*run_args, **run_kwargs)
        rec.check_writes()
        if rec.budget is not None and rec.work > rec.budget + WORK_PER_CALL * rec.calls:  # (the model caught it)
            raise _OverBudget(f"{rec.work} after {rec.calls} calls")
    except BaseException:  # the model is run again (or the trace fails): as if this run had not happened
        rec.undo.undo()
        raise
    finally:
        torch.no_grad.__enter__ = grad_off  # type: ignore[method-assign]
        torch.autocast.__enter__ = autocast_on  # type: ignore[method-assign]
        mha.set_fastpath_enabled(fast)
        for h in hooks:
            h.remove()
    outputs = [rec.ref(t) for t in out]
    nodes = _prune(rec.nodes, outputs)
    if rec.random:
        import warnings

        where = ", ".join(f"{op} at {line}" for line, op in sorted(rec.random.items()))
        warnings.warn(f"ncd.trace({type(model).__name__}): the model draws random numbers ({where}); the diagram holds"
                      " the numbers drawn while tracing (pass them in as an input, where the model takes one, to draw"
                      " them as a wire)", RuntimeWarning, stacklevel=2)
    if rec.functions:
        import warnings

        where = ", ".join(f"{cls} at {line}" for line, cls in sorted(rec.functions.items()))
        warnings.warn(f"ncd.trace({type(model).__name__}): custom autograd.Functions ({where}) are opaque boxes"
                      " calling the Function itself, so the lowered module's backward is theirs (not drawn: a backward"
                      " of its own need not be its forward's gradient)", RuntimeWarning, stacklevel=2)
    if rec.detached:  # a stop-gradient (a straight-through estimator, a target network): not drawn
        import warnings

        warnings.warn(f"ncd.trace({type(model).__name__}): the model detaches values from autograd (detach or no_grad at"
                      f" {', '.join(sorted(rec.detached))}); the diagram draws them as the values they are, so the"
                      " lowered module's forward is the model's but its gradients flow through them (the model's stop"
                      " there)", RuntimeWarning, stacklevel=2)
    if rec.autocast:  # autocast casts below the level recorded: the diagram computes in the tensors' own types
        import warnings

        warnings.warn(f"ncd.trace({type(model).__name__}): the model runs under torch.autocast (at"
                      f" {', '.join(sorted(rec.autocast))}); the diagram computes in its tensors' own types, so the"
                      " lowered module's results differ from the model's by the rounding autocast does (cast the"
                      " model instead, or trace it without autocast)", RuntimeWarning, stacklevel=2)
    if rec.buffers_written or rec.params_written:  # a running statistic, a step counter, a cache, a renormed table
        import warnings

        state = {**rec.params_written, **rec.buffers_written}
        what = " and ".join(k for k, v in (("parameters", rec.params_written), ("buffers", rec.buffers_written)) if v)
        where = ", ".join(f"{name} at {line}" for name, line in state.items())
        warnings.warn(f"ncd.trace({type(model).__name__}): the model writes into its {what} in place ({where}); the"
                      " diagram computes the traced call from their values before it and the lowered module does not"
                      " update them, so later calls of the model differ from it (and tracing ran the model once: its"
                      f" {what} were updated as by one call)", RuntimeWarning, stacklevel=2)
    aliased = [(a, b) for a, b in rec.shared.items() if {a, b} & rec.inputs_written]
    if aliased:
        import warnings

        pairs = "; ".join(f"{b} and {a}" for a, b in aliased)
        written = sorted({n for pair in aliased for n in pair} & rec.inputs_written)
        warnings.warn(f"ncd.trace({type(model).__name__}): inputs that share memory ({pairs}: one tensor passed twice,"
                      f" or views of one tensor) and the model writes into {', '.join(written)} in place;"
                      " the diagram takes its inputs as separate tensors (the model called with copies of them), so"
                      " on this call's aliased inputs its result may differ from the model's", RuntimeWarning,
                      stacklevel=2)
    elif rec.inputs_written:
        import warnings

        warnings.warn(f"ncd.trace({type(model).__name__}): the model writes into its input(s)"
                      f" {', '.join(sorted(rec.inputs_written))} in place; the diagram computes its outputs from the"
                      " inputs as given, and the lowered module leaves its inputs as they were (the model changes the"
                      " caller's tensors)", RuntimeWarning, stacklevel=2)
    return Captured(nodes, outputs, "dispatch", [n.source for n in nodes if n.kind == "input"], shapes.escaped)


#: tensor methods that read values into Python without an ATen call the recorder would see
UNDISPATCHED_READS = ("tolist", "numpy")


@contextlib.contextmanager
def _reads_guarded(rec: _Recording) -> Iterator[None]:
    """While recording: ``t.tolist()`` / ``t.numpy()`` of a tensor that depends on the inputs raise :class:`ReadsValue`.

    They copy the values out in C++ without dispatching an operator, so the recording alone would not know that the
    model went on with those values as Python numbers (JetMoE's ``expert_size.tolist()`` sets split sizes): the
    diagram would freeze them and be wrong on other inputs."""
    saved = {name: getattr(torch.Tensor, name) for name in UNDISPATCHED_READS}

    def guard(name: str) -> Any:
        method = saved[name]

        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if rec.pending:
                rec.check_writes()
            node = rec.by_id.get(id(self))
            if node is not None and node.live and not _asserted() and not _printing():
                raise ReadsValue(f"Tensor.{name}() reads a value that depends on the inputs into Python at"
                                 f" {user_line() or '?'}")
            return method(self, *args, **kwargs)

        return read

    for name in UNDISPATCHED_READS:
        setattr(torch.Tensor, name, guard(name))
    deepcopy = torch.Tensor.__deepcopy__

    def copied_by_call(self: torch.Tensor, memo: dict[int, Any]) -> Any:
        """``copy.deepcopy`` of a value of the inputs: a ``clone`` (recorded); torch's copies its memory without an
        operator, so the copy would be a constant frozen at the traced values."""
        node = rec.by_id.get(id(self))
        if node is None or not node.live or type(self) is not torch.Tensor or id(self) in memo:
            return deepcopy(self, memo)  # type: ignore[no-untyped-call]
        out = memo[id(self)] = self.clone()
        return out

    torch.Tensor.__deepcopy__ = copied_by_call  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.__deepcopy__ = deepcopy  # type: ignore[method-assign]
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def _prune(nodes: list[Node], outputs: list[Any]) -> list[Node]:
    """Only the nodes the outputs and the guards depend on (inputs stay, in order)."""
    needed = {id(n) for n in outputs if isinstance(n, Node)} | {id(n) for n in nodes if n.guard}
    for node in reversed(nodes):
        if id(node) in needed:
            needed.update(map(id, refs((node.args, node.kwargs))))
    return [n for n in nodes if id(n) in needed or n.kind == "input"]


#: operators whose one result has the shape, dtype and layout of their first argument (norms, activations)
SHAPE_OF_INPUT = frozenset({"batch_norm", "layer_norm", "rms_norm", "group_norm", "instance_norm", "relu", "gelu", "silu",
                            "sigmoid", "tanh", "hardtanh", "leaky_relu", "elu", "mish", "hardswish", "hardsigmoid"})


#: operators whose result depends on the shapes of their tensor arguments only, never on their values
SHAPE_ONLY = frozenset({"ones_like", "zeros_like", "full_like", "empty_like", "new_ones", "new_zeros", "new_full",
                        "new_empty"})
