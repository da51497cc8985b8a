"""The light capture: run the model once, eagerly, recording its ATen calls at the pre-dispatch level.

A :class:`Recorder` is a dispatch mode installed at ``DispatchKey.PreDispatch`` (where
``torch.export`` traces too, so operators arrive as ``aten.linear``, ``aten.layer_norm``,
``aten.scaled_dot_product_attention`` rather than their decompositions).  Every call is run
on the real tensors and recorded as a :class:`~ncd.trace.capture.Node` whose arguments
point at the nodes that produced them (matched by tensor identity; the recording itself is
:class:`~ncd.trace.recording._Recording`); global forward hooks keep the module stack.  One eager
run replaces export's symbolic trace and the re-run of its graph, so the cost is that of running
the model once.

In-place operators are recorded as their functional versions.  When the recording cannot
stand for the model (a value that depends on the inputs is read into Python — control flow
may depend on it —, an output of data-dependent shape, a mutation through a view), it
raises :class:`Unsupported` and :func:`~ncd.trace.capture.capture` falls back to ``torch.export``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ncd.trace.capture import Captured, Node, _internal, holds_tensors, input_names, refs
from ncd.trace.detaching import grad_regions, grad_turned_off, noted
from ncd.trace.dispatch import _straight_to
from ncd.trace.functions import FunctionRefused, functions_boxed
from ncd.trace.meta import _described, _meta_key, _on_meta_device, _stand_ins, _to_meta  # noqa: F401  (tests read them here)
from ncd.trace.reads import UNDISPATCHED_READS, UNDISPATCHED_WRITES, _Address, _reads_guarded  # noqa: F401
from ncd.trace.record_warnings import random_of, warn_overlapping, warn_random, warn_recorded  # noqa: F401
from ncd.trace.recording import WORK_PER_CALL, _Recording
from ncd.trace.refusals import ReadsValue, Unsupported, _NeedValues, _OverBudget  # noqa: F401  (re-exported)
from ncd.trace.shapes import Shapes
from ncd.trace.walk import _computing, _spread, _Walk, _warn_rebound
from ncd.trace.watched import _identity_watched

__all__ = ["record", "Unsupported", "ReadsValue"]

#: Above this rough size of a model's arithmetic (parameters × input elements) the inputs' calls are recorded on the
#: meta device (shapes only): its kernels cost ~1-10 ms an operator in Python, running a small model costs less.
#: An embedding table only used for lookups does no arithmetic per parameter: not counted (:func:`_computing`); a
#: transposed convolution computes on ``stride`` times the positions it reads: counted so (:func:`_spread`).
META_ABOVE = 5e9


def _on_meta(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], walk: _Walk | None = None) -> bool:
    values = list(args) + list(kwargs.values())
    if any(holds_tensors(v) for v in values):  # the tensors inside a cache passed in stay real: they are its inputs
        return False
    elements = sum(v.numel() for v in values if isinstance(v, torch.Tensor))
    return (_computing(model, walk) * _spread(model, walk) if elements else 0) * elements > META_ABOVE


#: A model above :data:`META_ABOVE` is recorded on real values first, and again on the meta device once its calls on
#: values of the inputs would compute more than ``WORK_BUDGET + WORK_PER_CALL`` × their number
#: (:func:`ncd.trace.work.work`, multiply-adds; ~2e10 a second here): a meta kernel costs up to ~0.1 ms a call in
#: Python, so a large model of small inputs (a deep stack of small layers) records faster on real values.
WORK_BUDGET = 2e7


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


def record(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], flat: torch.nn.Module,
           walk: _Walk | None = None) -> Captured:
    """Run ``flat`` (the model, returning its output tensors) once, recording every ATen call.

    The model runs on its real values (every node keeps its value, so idioms can be checked on
    them); a large one (:data:`META_ABOVE`) runs the calls that depend on the inputs on the
    ``meta`` device (shapes only: its compute is skipped) and, if that fails, again for real.
    ``walk``: the model's modules and state read already, since when it has not run (none used: walked here).
    """
    walk = walk if walk is not None and not walk.used else _Walk(model)
    bound = walk.bound()
    captured = _recorded(model, args, kwargs, flat, walk)
    _warn_rebound(model, bound, walk.after)  # (the state after it, read by the recording that used this walk)
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
        except (Unsupported, FunctionRefused):
            raise
        except Exception:  # noqa: BLE001 - the model's own exporting path fails: the value it read is the reason
            raise reads from None
        # Still a value read: if every one is a truth value (a branch, ``if not padding_mask.any()``), record the
        # branches taken, each checked at run time by a guard box; a number read (a size, a count) is refused.
        return _record(model, args, kwargs, flat, meta=False, guards=True, walk=walk)


def _attempt(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], flat: torch.nn.Module,
             meta: bool, walk: _Walk | None = None) -> Captured:
    """One recording of the model: on real values, or for a large one (``meta``) on real values within
    :data:`WORK_BUDGET` (a negative one: straight to meta) and else on the meta device — going on there from the call
    over the budget where it can (:mod:`ncd.trace.switch`), from the first call again where not —, and on real values
    again if that fails."""
    if meta and WORK_BUDGET >= 0:
        try:  # (what it wrote into the model's state is undone when it fails: :class:`~ncd.trace.undo.Undo`)
            return _record(model, args, kwargs, flat, meta=False, budget=WORK_BUDGET, walk=walk)
        except _NeedValues as error:  # after it went on on meta (:mod:`ncd.trace.switch`): so would one on meta
            if getattr(error, "on_meta", False):
                return _record(model, args, kwargs, flat, meta=False, walk=walk)
        except ReadsValue as error:  # a value read into Python on real values, within the budget: the recording on
            if getattr(error, "on_values", False):  # meta cannot read it, and the one on real values after it reads
                raise  # it again, at the same call (the same run up to there)
        except Exception:  # noqa: BLE001 - over the budget, or anything: the recording as without it decides
            pass
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

    from ncd.trace.dropouts import eval_dropouts
    from ncd.trace.fastpath import nested_padding, padded_samples
    from ncd.trace.methods import methods_framed
    from ncd.trace.mha import lean_attention
    from ncd.trace.moe_first_call import decided_in

    names = input_names(model, len(args), kwargs)
    leaves = list(args) + list(kwargs.values())
    rec = _Recording(model, names, leaves, meta, guards, budget, walk)
    devices = {"cpu"} | {t.device.type for t in leaves if isinstance(t, torch.Tensor)}
    if any(torch.is_autocast_enabled(d) for d in devices):  # the caller's autocast: its casts are not recorded either
        rec.autocast["the call of ncd.trace"] = "autocast"
    run_args, run_kwargs = tuple(rec.inputs[:len(args)]), dict(zip(kwargs, rec.inputs[len(args):]))
    Recorder = _recorder_class()

    called: set[int] | None = set() if budget is not None else None

    def pre(module: torch.nn.Module, _: Any) -> None:
        if called is not None and id(module) not in called:  # an attempt that stops at its budget
            if not called:
                _kept_shared(rec, model)
            called.add(id(module))
            _kept_before_call(rec, module)
        path = rec.paths.get(id(module))
        if path is not None:
            if id(module) in rec.shared_paths and rec.stack:  # one module at several paths: the one under its caller
                path = _under(rec.shared_paths[id(module)], rec.stack[-1][0], path)
            rec.stack.append((path, type(module).__name__))
        shapes.math.reach_class(type(module))  # (its from-math imports: ncd.trace.size_math)
        if shapes._calls is not None:
            shapes.rest()

    forwards: dict[int, str] = {}  # modules whose forward, decorated, turned gradients off: their first lines

    def post(module: torch.nn.Module, _: Any, out: Any) -> None:
        if id(module) in rec.paths and rec.stack:
            rec.stack.pop()
        if forwards and id(module) in forwards:  # a forward decorated ``@torch.no_grad()`` giving a value of the inputs
            line = forwards.pop(id(module))
            if any(isinstance(t, torch.Tensor) and t.is_floating_point() and getattr(rec.by_id.get(id(t)), "live", False)
                   for t in torch.utils._pytree.tree_leaves(out)):
                rec.detached.setdefault(line, "no_grad")
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
    try:
        # the model's own gradient regions followed (grad_regions); every other way it turns gradients off
        # (grad_turned_off) entered before the recording's own no_grad
        with grad_regions(rec) as drawn, _autocast_noted(rec), grad_turned_off(rec.detached, forwards), \
                torch.no_grad(), enable_python_dispatcher(), _reads_guarded(rec), \
                functions_boxed(rec), _straight_to(Recorder), Recorder(rec), shapes, nested_padding(model, fast, rec.paths), \
                lean_attention(), eval_dropouts(), padded_samples(model, fast, rec.paths), \
                _identity_watched(rec.same, rec.identity), decided_in(rec), methods_framed(rec):
            out = flat(*run_args, **run_kwargs)
        rec.check_writes()
        if rec.budget is not None and rec.work > rec.budget + WORK_PER_CALL * rec.calls:  # (the model caught it)
            raise _OverBudget(f"{rec.work} after {rec.calls} calls")
    except BaseException as error:  # the model is run again (or the trace fails): as if this run had not happened
        rec.undo.undo()
        if rec.switched and isinstance(error, _NeedValues):  # values a recording on meta lacks as well
            error.on_meta = True  # type: ignore[attr-defined]
        if not rec.meta and isinstance(error, ReadsValue):  # read on real values (before any switch to meta)
            error.on_values = True  # type: ignore[attr-defined]
        raise
    finally:
        mha.set_fastpath_enabled(fast)
        for h in hooks:
            h.remove()
    outputs = [rec.ref(t) for t in out]
    nodes = _prune(rec.nodes, outputs)
    for line in drawn:  # (the model's no_grad regions: drawn, not said)
        rec.detached.pop(line, None)
    warn_recorded(model, rec)
    return Captured(nodes, outputs, "dispatch", [n.source for n in nodes if n.kind == "input"], shapes.escaped)


@contextlib.contextmanager
def _autocast_noted(rec: _Recording) -> Iterator[None]:
    """While recording: the model's own ``with torch.autocast(...):`` (or ``@torch.autocast(...)`` on a function of
    the model) noted in ``rec.autocast`` — autocast casts below the level recorded, so the diagram computes in the
    tensors' own types (:func:`warn_recorded` says it)."""
    autocast_on = torch.autocast.__enter__

    def autocast(self: Any) -> Any:
        if getattr(self, "_enabled", True):  # (``enabled=False`` turns off only what the caller's autocast is: said)
            frame = sys._getframe(1)  # ``@torch.autocast(...)`` on a function of the model: torch's wrapper enters it
            code = getattr(frame.f_locals.get("func"), "__code__", None) if _internal(frame.f_code.co_filename) \
                else None
            if code is not None and not _internal(code.co_filename):
                rec.autocast.setdefault(f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}", "autocast")
            else:
                noted(rec.autocast, "autocast")
        return autocast_on(self)  # type: ignore[no-untyped-call]

    torch.autocast.__enter__ = autocast  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.autocast.__enter__ = autocast_on  # type: ignore[method-assign]


def _kept_before_call(rec: _Recording, module: torch.nn.Module) -> None:
    """At a module's first call in an attempt within :data:`WORK_BUDGET` (one that stops when the model grows large):
    the values of its own buffers, put back if the attempt fails (:meth:`~ncd.trace.undo.Undo.keep`; its writes
    through operators are kept before each, and a write through a route none takes — a numpy array on the buffer's
    memory made before, a custom Function's unrecorded forward — is undone too).  Only the buffers of modules the
    model calls: before, every buffer of the model was copied before the attempt (csm: 67 MB of codebooks of a codec
    its forward never calls, ~17 ms)."""
    rec.keep_values(b for b in module._buffers.values() if b is not None)


def _kept_shared(rec: _Recording, model: torch.nn.Module) -> None:
    """At the first call of an attempt within :data:`WORK_BUDGET`: the values of the buffers whose memory something
    else holds too (a numpy array, a view, another tensor), put back if the attempt fails — the model may write them
    through that holder from a module it never calls (``self.arr = self.n.numpy()``; ``self.h.bump()``), which
    :func:`_kept_before_call` does not see.  A buffer held by nothing else is only written through its module."""
    uses = getattr(torch._C, "_storage_Use_Count", None)  # (a private reading: without it, every buffer is kept)
    walk = rec.walk  # (read before the run: each buffer once, as model.buffers() gives them, without its module walk)
    buffers = dict.fromkeys(b for _, b in walk.buffers) if walk.faithful else model.buffers()
    rec.keep_values(b for b in buffers if b.device.type != "meta"
                    and (uses is None or uses(b.untyped_storage()._cdata) > 2))  # (the buffer and this reading)


def _under(paths: list[str], caller: str, path: str) -> str:
    """The path of a module registered at several ``paths`` as its caller (at path ``caller``) holds it, the nearest
    under the caller: openai-gpt's one GELU is ``h.0.mlp.act`` in the first layer, ``h.1.mlp.act`` in the second, so
    the two layers are alike; ``path`` when none is under the caller (a module called from elsewhere).

    >>> _under(["h.0.mlp.act", "h.1.mlp.act"], "h.0.mlp", "h.1.mlp.act")
    'h.0.mlp.act'
    >>> _under(["h.0.mlp.act", "h.1.mlp.act"], "lm_head", "h.1.mlp.act")
    'h.1.mlp.act'
    """
    prefix = f"{caller}." if caller else ""
    under = [p for p in paths if p.startswith(prefix)]
    return min(under, key=lambda p: p.count(".")) if under else path


def _prune(nodes: list[Node], outputs: list[Any]) -> list[Node]:
    """Only the nodes the outputs and the guards depend on (inputs stay, in order)."""
    needed = {id(n) for n in outputs if isinstance(n, Node)} | {id(n) for n in nodes if n.guard}
    for node in reversed(nodes):
        if id(node) in needed:
            needed.update(map(id, refs((node.args, node.kwargs))))
    return [n for n in nodes if id(n) in needed or n.kind == "input"]

