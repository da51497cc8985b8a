"""``ncd.trace``: turn a PyTorch model into a neural circuit diagram, axes and all.

The model is captured at the ATen level (``torch.export``; a dispatch trace as fallback),
its operators become boxes (recognised idioms in the paper's vocabulary, anything else an
opaque box calling the operator itself), module calls become nested blocks and repeated
layers one repetition.  The result is a :class:`TracedDiagram`: a diagram that also
remembers the model's parameter values, so ``ncd.trace(model, x).to_torch()`` computes
``model(x)``.

>>> import torch, ncd
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
>>> d = ncd.trace(model, torch.randn(2, 4))
>>> str(d.dom), str(d.cod)
('b m:4', 'b n:3')
>>> x = torch.randn(2, 4)
>>> torch.allclose(d.to_torch()(x), model(x), atol=1e-6)
True
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ncd.errors import SizeError, TraceError
from ncd.trace.loading import load_parameters
from ncd.trace.params import storages, unread
from ncd.trace.traced_diagram import TracedDiagram, float_type
from ncd.trace.watched import (
    _data_refused,
    _grad_mode_as_called,
    _python_random_watched,
    _state_kept,
    _warn_backward_hooks,
    _warn_global_forward_hooks,
)

if TYPE_CHECKING:
    import torch

__all__ = ["trace", "TracedDiagram", "load_parameters"]


#: torch's random state as the model's run left it, while a trace runs (:func:`_random_as_run`)
_RUN_RANDOM: contextvars.ContextVar[list[Any]] = contextvars.ContextVar("ncd_run_random")


@contextlib.contextmanager
def _random_as_run() -> Iterator[None]:
    """torch's global random state left as the model's own run leaves it: the checks after it (idioms on random rows
    and masks) draw from it, and ``ncd.trace`` is not to change what the user's next draw gives (a failed trace:
    as before it)."""
    import torch

    before, kept = torch.random.get_rng_state(), list[Any]()
    token = _RUN_RANDOM.set(kept)
    try:
        yield
    finally:
        _RUN_RANDOM.reset(token)
        torch.random.set_rng_state(kept[-1] if kept else before)


#: Tracing records through process-wide state (torch's dispatch modes, our rule tables), so traces run one at a time.
_LOCK = threading.RLock()


def _one_at_a_time(fn: Any) -> Any:
    """Make ``fn`` thread-safe: concurrent calls wait for each other instead of mixing their recordings."""

    @functools.wraps(fn)
    def serialised(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return fn(*args, **kwargs)

    return serialised


@_one_at_a_time
def trace(model: torch.nn.Module, *example_inputs: Any, axes: Any = None, capture: str = "dispatch",
          **example_kwargs: Any) -> TracedDiagram:
    """The neural circuit diagram of ``model`` run on ``example_inputs``.

    ``axes`` names input axes: ``{"input_ids": "b t"}`` (by argument name), a list (by
    position) or one string (the first input); ``~t`` marks an item axis.  Other axes are
    named by the rules of :mod:`ncd.trace.idioms`.  The model runs in its current mode
    (call ``model.eval()`` first to drop dropout).  Operators without a rule become opaque
    boxes; one warning lists them.

    ``capture="dispatch"`` (the default) runs the model once eagerly, recording its ATen
    calls, and falls back to ``torch.export`` when that recording cannot stand for the model;
    ``capture="export"`` uses ``torch.export`` from the start.
    """
    from ncd.render.layout import no_collector

    # the cyclic collector paused, as while drawing: a trace makes many small records that mostly live to its end,
    # and collector passes over them (and, every few traces, over everything the process holds, a model and torch
    # included: 0.2 s each in a process with transformers loaded) cost more than the whole trace of a small model
    with _debugging(), no_collector(), _random_as_run():
        try:
            return _trace(model, example_inputs, axes, capture, example_kwargs)
        except SizeError as error:
            empty = _empty_input(model, example_inputs, example_kwargs)
            if empty is None:
                raise
            raise TraceError(f"cannot trace {type(model).__name__}: input {empty[0]!r} has shape {empty[1]}, an axis of"
                             f" size 0 ({error}); trace on inputs with at least one entry along every axis (the"
                             " diagram's batch and sequence sizes lower at other sizes)") from None


def _empty_input(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, tuple[int, ...]] | None:
    """The name and shape of the first input tensor of the call with an axis of size 0, if any."""
    import inspect

    import torch

    try:
        names = [p.name for p in inspect.signature(model.forward).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    named = [(names[j] if j < len(names) else f"input {j}", v) for j, v in enumerate(args)]
    for name, value in [*named, *kwargs.items()]:
        for leaf in torch.utils._pytree.tree_leaves(value):
            if isinstance(leaf, torch.Tensor) and 0 in leaf.shape:
                return name, tuple(leaf.shape)
    return None


def _trace(model: torch.nn.Module, example_inputs: tuple[Any, ...], axes: Any, capture: str,
           example_kwargs: dict[str, Any]) -> TracedDiagram:
    import torch

    from ncd.trace.capture import capture as capture_graph
    from ncd.trace.convert import Converter
    from ncd.trace.idioms import load_rules
    from ncd.trace.wiring_fold import assemble

    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"ncd.trace takes a torch.nn.Module, not {type(model).__name__}")
    from ncd.trace.walk import _Walk

    # the modules, parameters and buffers, read once for every reader before the model runs (the checks below, the
    # state put back after the capture, the experts read densely, the recording)
    walk = _Walk(model)
    unmade = (torch.nn.parameter.UninitializedParameter, torch.nn.parameter.UninitializedBuffer)
    modules = (m for _, m in walk.modules) if walk.faithful else model.modules()
    lazy = [f"{n or type(model).__name__}: {type(m).__name__}" for n, m in model.named_modules()
            if any(isinstance(t, unmade) for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)])] \
        if any(isinstance(m, torch.nn.modules.lazy.LazyModuleMixin) for m in modules) else []
    if lazy:  # (torch.export's fake tensors cannot run their first call, which makes their parameters)
        raise TraceError(f"cannot trace {type(model).__name__}: its lazy modules ({', '.join(lazy[:4])}) have not made"
                         " their parameters yet; call the model once on an input of its shape before tracing it")
    load_rules()
    from ncd.trace.moe_dense import dense_experts
    from ncd.trace.moe_first_call import Undecided
    from ncd.trace.watched_layout import _layout_watched

    def captured_as(decided: str | None, walk: _Walk | None) -> Any:
        # caches the model fills while it runs would make the next trace differ; experts proven equal to their dense
        # reading (every expert on every token, weighted by the routing) are recorded as it
        with _state_kept(model, said=True, walk=walk), \
                dense_experts(model, tuple(example_inputs), dict(example_kwargs), decided, walk), \
                _data_refused(model), _grad_mode_as_called(model, (example_inputs, example_kwargs)), \
                _python_random_watched(model), _layout_watched(model, tuple(example_inputs), dict(example_kwargs)):
            captured = capture_graph(model, tuple(example_inputs), dict(example_kwargs), capture, walk)
        kept = _RUN_RANDOM.get(None)
        if kept is not None:  # as the model's run leaves it (see _random_as_run)
            kept.append(torch.random.get_rng_state())
        return captured

    _warn_backward_hooks(model, walk)
    _warn_global_forward_hooks(model)
    try:
        captured = captured_as(capture, walk)  # experts decided at their first call in the recording
    except Undecided:  # first called where they cannot be: decided by a run of the model before the capture
        captured = captured_as(None, None)  # (the model ran: its modules and state are read again)
    from ncd.trace.fold_writes import stacked_writes
    from ncd.trace.loops import Loop, fold_time_loops, unfold_time_loops  # recorded time loops -> scans (recur)
    from ncd.trace.loops_state import fold_state_loops
    from ncd.trace.triangular import solve_triangular_loops

    captured = solve_triangular_loops(captured)  # forward substitution (growing slices, row by row) -> one inverse
    captured = stacked_writes(captured)  # out[:, i] = step(i) for every i -> a stack of the steps, which folds below
    recorded = captured
    try:
        captured = fold_state_loops(fold_time_loops(captured))  # loops stacking their steps, then state-only ones
    except Exception as folding:  # noqa: BLE001 - the loop is drawn step by step instead, and the user told why
        warnings.warn(f"ncd.trace({type(model).__name__}): folding time loops failed ({type(folding).__name__}:"
                      f" {str(folding).strip()[:200]}); drawn step by step", stacklevel=4)
    conv = Converter(captured, axes, model)
    outputs = conv.run()
    if captured is not recorded and any(n is not None and isinstance(n.target, Loop) for n, _ in conv.failures):
        captured = unfold_time_loops(captured, recorded)  # a scan not drawn: its steps, as recorded
        conv = Converter(captured, axes, model)
        outputs = conv.run()
    from ncd.trace.crossings import fold_crossings
    from ncd.trace.crossings_through import split_before_woven, through_crossings
    from ncd.trace.plumbing import fuse_movement

    steps = fuse_movement(conv.steps, outputs, conv.segs, conv.new_value)  # reshapes and transposes in a row: at most 3
    steps = through_crossings(steps, outputs, conv.segs, conv.new_value)  # past rotary boxes and splits, to an einsum
    steps = split_before_woven(steps, outputs, conv.segs, conv.new_value)  # view, ρ, split heads: one view, then ρ
    steps = fold_crossings(steps, outputs, conv.segs)  # a crossing beside an einsum: the einsum's order of its axes
    body = assemble(steps, outputs, conv.segs, conv.inputs, shared=bool(conv.__dict__.get("_shared_steps")))
    example = tuple(n.value for n in captured.nodes if n.kind == "input")
    from ncd.trace.convert import op_name, where
    from ncd.trace.functions import boxed_of

    for node, error in conv.failures:
        what = f"converting {op_name(node.target)[1]} {where(node)}" if node is not None else "tracing"
        drawn = "" if "drawn as a constant" in error else "; drawn as an opaque box"
        warnings.warn(f"ncd.trace({type(model).__name__}): {what} failed ({error}){drawn}", stacklevel=4)
    opaque = tuple(sorted(conv.emitted.opaque.items()))
    if opaque:
        listed = ", ".join(f"{name.removeprefix('aten.')} ×{n}" for name, n in opaque)
        warnings.warn(f"ncd.trace({type(model).__name__}): {sum(n for _, n in opaque)} operator(s) drawn as opaque boxes:"
                      f" {listed}", stacklevel=4)
    from ncd.trace.other_sizes import origin_of
    from ncd.trace.shape_expressions import fixed_boxes
    from ncd.trace.size_guards import GUARDS, guards_of, symbols_of

    guards, compared = guards_of(conv, captured.escaped)  # the model's branches on sizes (kv_length >= window)
    body, meta, fixed, held = _symbolic(body, conv, fixed_boxes(conv, captured.escaped) + compared)
    symbolized = dict(dict(meta).get("defaults", ()))
    guards = tuple(g for g in guards if symbols_of(g) <= symbolized.keys())
    tensors = tuple(tuple(t) for t in conv.emitted.tensors)
    # the state the model holds after the capture, read once for the two below: the walk the recording made after the
    # model ran, when the model still holds just that (checked: nothing rebound, registered or dropped since)
    after = walk.after if walk is not None else None
    walk = after if after is not None and after.holds(model) else _Walk(model)
    made = _made(captured.nodes, tensors)
    unused = unread(model, tensors, walk, made)
    from ncd.torch.read_back import traced_meta

    meta = (*meta, *traced_meta(model.training, (*held, *(k for sizes, _ in fixed for k in sizes)), unused,
                                float_type(tensors, example), tuple(t for group in tensors for t in group),
                                lambda wanted: storages((p for _, p in walk.parameters) if walk.faithful
                                                        else model.parameters(), wanted)),
            *(((GUARDS, guards),) if guards else ()))
    traced = TracedDiagram(body, type(model).__name__, meta, tensors, example, opaque, captured.method, model.training,
                           fixed, held, unused,
                           origin_of(model, example_inputs, example_kwargs, walk), boxed_of(opaque), made)
    # the converter's rules and emitters refer back to it (cycles): what it holds is freed now, not by the collector
    conv.__dict__.clear()
    return traced


def _made(nodes: list[Any], tensors: tuple[tuple[torch.Tensor, ...], ...]) -> frozenset[int]:
    """The ids of ``tensors`` that are the value of a call reading no parameter, through any chain (a literal
    ``torch.ones(n)`` given as a layer norm's weight; ``self.buffer * 1.0`` given to ``F.linear``): constants, whatever
    a parameter holds (a copy of a buffer equal to a parameter became that parameter: trained, its gradient where the
    model has none)."""
    held = {id(t) for group in tensors for t in group}
    if not held:
        return frozenset()
    from ncd.trace.capture import upstream

    made: set[int] = set()
    for node in nodes:  # (a constant the forward made, or a call reading only such and buffers: no parameter)
        if id(node.value) in held and id(node.value) not in made \
                and not any(n.kind == "parameter" for n in upstream(node, lambda n: n.kind == "call")):
            made.add(id(node.value))
    return frozenset(made)


@contextlib.contextmanager
def _debugging() -> Any:
    """With ``NCD_TRACE_DEBUG`` set (not ``0``): the ``ncd.trace`` logger's ``DEBUG`` records printed to stderr."""
    import logging
    import os
    import sys

    if os.environ.get("NCD_TRACE_DEBUG", "0").strip() in ("", "0"):
        yield
        return
    from ncd.trace.convert import LOG

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ncd.trace: %(message)s"))
    level = LOG.level
    LOG.addHandler(handler)
    LOG.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(level)


def _symbolic(body: Any, conv: Any, sized: list[tuple[tuple[str, ...], str]]
              ) -> tuple[Any, tuple[Any, ...], tuple[tuple[tuple[str, ...], str], ...], tuple[str, ...]]:
    """The batch and sequence axes of the inputs (``b``, ``t``) as symbols, traced sizes as defaults; ``sized``: the
    calls holding numbers computed from those sizes that no box follows (:func:`ncd.trace.shape_expressions.fixed_boxes`)."""
    sizes: dict[str, int] = {}
    for vid in conv.inputs:
        for a in conv.segs[vid].axes:
            if a.name in ("b", "t") and not a.size.free_symbols:
                sizes.setdefault(a.name, int(a.size))
    constants: dict[str, int] = dict(conv.__dict__.get("_constants", {}))  # sizes factors are read as (k**-0.5)
    if not constants and not sizes:
        return body, (), (), ()
    new, fixed, failed = _symbolized(body, conv, sized, sizes, constants)
    if failed and len(sizes) > 1:  # the batch alone, then the sequence alone, may still be symbols where both fail
        for name in sorted(sizes):  # together (a key/value cache's length joined as t + 5 to a number elsewhere)
            new, fixed, failed = _symbolized(body, conv, sized, {name: sizes[name]}, constants)
            if not failed:
                sizes = {name: sizes[name]}
                break
    meta: tuple[Any, ...] = (("defaults", tuple(sorted({**constants, **sizes}.items()))),)
    if failed and sizes:  # the batch and sequence stay numbers: only the constants are defaults
        meta = (("defaults", tuple(sorted(constants.items()))),) if constants else ()
        sizes = {}
    return new, meta, tuple(fixed), tuple(sorted(set(constants) - set(sizes)))


def _symbolized(body: Any, conv: Any, sized: list[tuple[tuple[str, ...], str]], sizes: dict[str, int],
                constants: dict[str, int]) -> tuple[Any, list[tuple[tuple[str, ...], str]], bool]:
    """:func:`ncd.trace.symbolic.symbolize` of ``body`` with ``sizes`` as symbols: the diagram, its boxes fixed at the
    traced sizes, and whether it failed (then ``body`` unchanged)."""
    from ncd.errors import NCDError
    from ncd.trace.symbolic import symbolize

    defaults = {**constants, **sizes}
    found: set[Any] = set()  # the symbols of every size symbolize met or made: no walk of its result when all are known
    try:
        new, fixed = symbolize(body, sizes, conv.__dict__.get("_merges"), found, where=conv.__dict__.get("_made_at")) \
            if sizes else (body, [])
        fixed = fixed + [(held, box) for held, box in sized if set(held) & set(sizes)]
        if (not sizes or any(str(s) not in defaults for s in found)) and any(str(s) not in defaults for s in new.free_symbols):
            return body, [], True
    except NCDError:
        return body, [], True
    return new, fixed, False
