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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ncd.errors import SizeError, TraceError
from ncd.ir.diagram import Block
from ncd.trace.keywords import TracedMode, keywords
from ncd.trace.loading import _first_use, _state_for, _typed_as, load_parameters
from ncd.trace.model_names import by_model_name
from ncd.trace.params import HOLDER, freeze, hold, storages, tie, unread
from ncd.trace.watched import (
    _data_refused,
    _grad_mode_as_called,
    _python_random_watched,
    _state_kept,
    _warn_backward_hooks,
    _warn_global_forward_hooks,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    import sympy
    import torch

    from ncd.ir.diagram import Diagram
    from ncd.trace.functions import Boxed

__all__ = ["trace", "TracedDiagram", "load_parameters"]


@dataclass(frozen=True, repr=False, eq=False)
class TracedDiagram(Block):
    """A traced model's diagram (a block titled with the model's class) plus its parameter values.

    ``tensors`` holds, for every box that owns tensors (learned boxes and constants), the
    values traced from the model, in execution order.  :meth:`to_torch` lowers the diagram
    and copies them in; :meth:`state_dict` gives them keyed by the lowered module's names.
    ``opaque`` counts the operators drawn as opaque boxes, by ATen name; the lowered module
    is put in the mode (``training``) the model was traced in.  ``unused`` holds the model's
    parameters its forward did not read (by name): the lowered module keeps them under
    ``unused`` (:mod:`ncd.trace.params`), so it has the original's parameters.
    """

    tensors: tuple[tuple[torch.Tensor, ...], ...] = field(default=(), compare=False, hash=False)
    example: tuple[torch.Tensor, ...] = field(default=(), compare=False, hash=False)
    opaque: tuple[tuple[str, int], ...] = field(default=(), compare=False, hash=False)
    method: str = field(default="export", compare=False, hash=False)
    training: bool = field(default=False, compare=False, hash=False)
    #: the boxes holding tensors or calls of the traced sizes, each with the sizes it holds (``b``, ``t``)
    fixed: tuple[tuple[tuple[str, ...], str], ...] = field(default=(), compare=False, hash=False)
    constants: tuple[str, ...] = field(default=(), compare=False, hash=False)
    unused: tuple[tuple[str, torch.Tensor], ...] = field(default=(), compare=False, hash=False)
    #: the model and its call (:mod:`ncd.trace.other_sizes`): a module lowered at other sizes is checked against it
    origin: Any = field(default=None, compare=False, hash=False)
    #: the custom autograd.Functions its opaque boxes call (:class:`ncd.trace.functions.Boxed`): defined again where a
    #: pickled diagram is lowered
    functions: tuple[Boxed, ...] = field(default=(), compare=False, hash=False)
    #: ids of the ``tensors`` the forward made from no parameter (:func:`ncd.trace.params.constants`: constants even
    #: where their values equal a parameter's)
    made: frozenset[int] = field(default=frozenset(), compare=False, hash=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and (self.body, self.name, self.meta) == (other.body, other.name, other.meta)

    def __hash__(self) -> int:
        return hash((self.body, self.name, self.meta))

    @property
    def opaque_count(self) -> int:
        return sum(n for _, n in self.opaque)

    def as_block(self) -> Block:
        """The plain diagram, without the traced values (lowered at other sizes, unchecked: :mod:`ncd.torch.read_back`)."""
        return Block(self.body, self.name, self.meta)

    def _own_block(self) -> Block:
        """The plain diagram as this one lowers it: without the meta a diagram away from its model reads."""
        from ncd.torch.read_back import without

        return Block(self.body, self.name, without(self.meta))

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Diagram:
        """As :meth:`Block.subs`, its custom Functions' operators defined first (a diagram pickled in another process:
        a box is rebuilt, and checks its call, when its sizes are bound, as :meth:`to_source` does)."""
        from ncd.trace.functions import registered

        if mapping:
            registered(self.functions, self.name)
        bound = super().subs(mapping)
        if isinstance(bound, Block) and (bound.get("tied") is not None or bound.get("views") is not None):  # (ties
            # are restored on a diagram read back from JSON; a bound one lowers as before: ncd.backward's plan reads no
            # ties, and ncd.cost counts its parameters per box)
            return Block(bound.body, bound.name, tuple((k, v) for k, v in bound.meta
                                                       if k not in ("tied", "views", "shared")))
        return bound

    def to_torch(self, /, **sizes: int) -> torch.nn.Module:
        """Lower to an ``nn.Module`` holding the traced model's parameters."""
        with _random_kept():  # (torch's random state as it was: the layers made first draw their initial weights)
            return self._lowered(**sizes)

    def to_source(self, /, **sizes: int) -> str:
        """Readable PyTorch source for this diagram; sizes the traced model holds (its parameters' widths, a scale
        read from a size, a box recorded at the traced sizes) are refused at other values, as :meth:`to_torch` refuses
        them."""
        from ncd.torch.codegen import defaults_of, typed_source
        from ncd.trace.functions import registered

        other = self._held(sizes, defaults_of(self.as_block()))
        if other:  # checked against the model at these sizes, as to_torch checks (raises where they differ)
            self.to_torch(**sizes)
        registered(self.functions, self.name)
        return typed_source(self._own_block(), self.as_block(), sizes)  # in the model's floating-point types

    def _held(self, sizes: Mapping[str, int], defaults: Mapping[str, Any]) -> dict[str, int]:
        """The sizes given at values other than the traced ones; raises where the traced model holds one, or where a box
        holds tensors or calls recorded at the traced sizes (``fixed``): :meth:`to_torch` and :meth:`to_source` both."""
        other = {k: v for k, v in sizes.items() if defaults.get(k) != v}
        held = sorted(k for k in other if k in self.constants)
        if held:
            raise TraceError(f"cannot lower {self.name} at {', '.join(f'{k}={other[k]}' for k in held)}: the traced model"
                             f" holds {', '.join(f'{k}={defaults[k]}' for k in held)} in its parameters and scales")
        fixed = [(held, box) for held, box in self.fixed if set(held) & set(other)]
        if fixed:
            sizes_held = sorted({k for held, _ in fixed for k in held if k in other})
            raise TraceError(f"cannot lower {self.name} at {({k: other[k] for k in sizes_held})} (traced at"
                             f" {({k: defaults[k] for k in sizes_held})}): these boxes hold tensors or calls"
                             " recorded at the traced sizes, which the trace cannot recompute at others (a table computed"
                             " in the model's forward from its input's shape is stored as its values):"
                             f" {'; '.join(box for _, box in fixed[:4])}; other sizes lower: "
                             f"{', '.join(sorted(set(defaults) - set(sizes_held))) or 'none'}")
        return other

    def _lowered(self, /, **sizes: int) -> torch.nn.Module:
        from ncd.torch.codegen import defaults_of
        from ncd.torch.module import _InputCheck, to_torch
        from ncd.trace.functions import registered

        registered(self.functions, self.name)  # a diagram pickled in another process: its Functions' operators
        defaults = defaults_of(self._own_block())
        other = self._held(sizes, defaults)
        try:
            module = to_torch(self._own_block(), check_inputs=True, **sizes)
        except SizeError as error:
            if not other or not set(other) <= set(defaults):  # a size the diagram has no symbol for: said as is
                raise
            raise TraceError(f"cannot lower {self.name} at {other} (traced at {({k: defaults.get(k) for k in other})}): a"
                             f" box holds a number of the traced sizes ({error}): a slice, write or view recorded at"
                             " the traced sizes; trace at the sizes you run at") from None
        module.train(self.training)  # the mode the model was traced in
        dtype = self._float_dtype()
        if dtype is not None:  # a model in float64 (or half precision) throughout: the lowered module too
            module.to(dtype)
        if other:  # the first-use order does not depend on sizes: read it at the traced ones
            at_trace = to_torch(self._own_block())
            at_trace.train(self.training)  # a batch norm in training mode reads one more buffer (its batch count)
            if dtype is not None:
                at_trace.to(dtype)
            order = _first_use(at_trace, self.example, self.tensors)
            state = _state_for(at_trace, self.tensors, self.example, order)
            held_here = dict(module.state_dict())
            wrong = [(k, tuple(v.shape), tuple(held_here[k].shape)) for k, v in state.items()
                     if k in held_here and held_here[k].shape != v.shape]
            if wrong:  # a learned box whose weight is sized by one of these sizes (Whisper's mel bins named t)
                k, was, now = wrong[0]
                raise TraceError(f"cannot lower {self.name} at {other} (traced at {({n: defaults[n] for n in other})}):"
                                 f" parameter {k} has shape {was} at the traced sizes but {now} at these; a parameter's"
                                 f" sizes cannot change ({len(wrong)} parameter(s) differ)")
            _typed_as(module, state)
            module.load_state_dict(state, strict=False)
            freeze(module, order, self.tensors, self._model(), self.made)
            tie(module, order, [t for group in self.tensors for t in group])  # tied weights stay tied at any size
        else:
            order = load_parameters(module, self.tensors, self.example, self._model(), self.made)
        hold(module, self.unused)
        by_model_name(module, self._model(), order, [t for group in self.tensors for t in group], self.unused)
        for hook in module._forward_pre_hooks.values():  # the model's inputs' axes exactly, no leading batch of copies
            if isinstance(hook, _InputCheck):
                hook.exact = True
        keywords(module, self.name, self.origin, len(self.dom))  # lowered(**inputs), as the model was called
        module.register_forward_pre_hook(TracedMode(self.name, self.training))  # .eval() changes nothing: said
        if other:
            from ncd.trace.other_sizes import check

            check(self.name, self.origin, module, self._own_block(), self.example, dict(sizes), defaults)
        return module

    def _model(self) -> torch.nn.Module | None:
        """The traced model, while the diagram holds it (not in one read back)."""
        model: torch.nn.Module | None = getattr(self.origin, "model", None)
        return model

    def _float_dtype(self) -> torch.dtype | None:
        """The one floating-point type of the traced values and inputs when it is not torch's default (else ``None``:
        the lowered module keeps torch's default type, and each value is cast to the type its tensor has there)."""
        return _float_type(self.tensors, self.example)

    def state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The traced values keyed by the parameter and buffer names of ``module`` (lowered from this diagram); the
        unread parameters too when ``module`` keeps them (it was lowered by :meth:`to_torch`).  The order the module
        first reads them in is read in the mode the model was traced in (a module read back from JSON is lowered in
        training mode, where a batch norm reads one more buffer: its batch count), and its mode is put back; tied
        parameters get their one value under each name."""
        from ncd.errors import InputError

        was = module.training
        module.train(self.training)
        # a module whose tied parameters are one (lowered by to_torch) reads that one once: the order is read on this
        # diagram lowered untied (the names are the same)
        shared = len(list(module.named_parameters(remove_duplicate=False))) != len(list(module.parameters()))
        try:
            state = self._state_at_trace(module) if shared else _state_for(module, self.tensors, self.example)
        except InputError:  # lowered at other sizes (read back): the order read at the traced ones, as to_torch does
            state = self._state_at_trace(module)
        finally:
            module.train(was)
        if hasattr(module, HOLDER):
            state.update({f"{HOLDER}.{name}": p.detach() for name, p in self.unused})
        return _shared_names(module, state)

    def _state_at_trace(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """:meth:`state_dict` for a module lowered at other sizes than traced (it refuses the traced inputs): the
        first-use order read on this diagram lowered at the traced sizes (its names are the same at any size)."""
        from ncd.torch.module import to_torch

        at_trace = to_torch(self._own_block())
        at_trace.train(self.training)
        dtype = self._float_dtype()
        if dtype is not None:
            at_trace.to(dtype)
        own = module.state_dict()
        return {k: v for k, v in _state_for(at_trace, self.tensors, self.example).items() if k in own}


def _shared_names(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with a value for every name of ``module``'s state under which a tied parameter is held and ``state``
    has none: a parameter read as another view of a shared one (:func:`ncd.trace.params.tie`) is held as
    ``<box>.parametrizations.weight.original``, the shared parameter itself, whose value ``state`` has under its own
    name."""
    names: dict[int, str] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        if name in state:
            names.setdefault(id(p), name)
    for name, p in module.named_parameters(remove_duplicate=False):
        if name not in state and id(p) in names:
            state[name] = state[names[id(p)]]
    return state


def _float_type(tensors: tuple[tuple[torch.Tensor, ...], ...], example: tuple[torch.Tensor, ...]) -> torch.dtype | None:
    """The one floating-point type of the traced values and inputs when it is not torch's default, else ``None``."""
    import torch

    kinds = {t.dtype for group in (*tensors, example) for t in group if t.is_floating_point() and t.dim()}
    # (a number held as a tensor of no axes, 1.0 in float32 beside float16 weights, decides no type: in torch's
    # promotion it takes the type of the tensors it meets)
    (kind,) = kinds if len(kinds) == 1 else (None,)
    return kind if kind is not None and kind != torch.get_default_dtype() else None


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


@contextlib.contextmanager
def _random_kept() -> Iterator[None]:
    """torch's global random state as it was (a lowered module's layers draw their placeholder weights)."""
    import torch

    state = torch.random.get_rng_state()
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


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
    from ncd.trace.wiring import assemble

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

    def captured_as(decided: str | None, walk: _Walk | None) -> Any:
        # caches the model fills while it runs would make the next trace differ; experts proven equal to their dense
        # reading (every expert on every token, weighted by the routing) are recorded as it
        with _state_kept(model, said=True, walk=walk), \
                dense_experts(model, tuple(example_inputs), dict(example_kwargs), decided, walk), \
                _data_refused(model), _grad_mode_as_called(model), _python_random_watched(model):
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

    body, meta, fixed, held = _symbolic(body, conv, fixed_boxes(conv, captured.escaped))
    tensors = tuple(tuple(t) for t in conv.emitted.tensors)
    # the state the model holds after the capture, read once for the two below: the walk the recording made after the
    # model ran, when the model still holds just that (checked: nothing rebound, registered or dropped since)
    after = walk.after if walk is not None else None
    walk = after if after is not None and after.holds(model) else _Walk(model)
    made = _made(captured.nodes, tensors)
    unused = unread(model, tensors, walk, made)
    from ncd.torch.read_back import traced_meta

    meta = (*meta, *traced_meta(model.training, (*held, *(k for sizes, _ in fixed for k in sizes)), unused,
                                _float_type(tensors, example), tuple(t for group in tensors for t in group),
                                lambda wanted: storages((p for _, p in walk.parameters) if walk.faithful
                                                        else model.parameters(), wanted)))
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
    from ncd.errors import NCDError
    from ncd.trace.symbolic import symbolize

    sizes: dict[str, int] = {}
    for vid in conv.inputs:
        for a in conv.segs[vid].axes:
            if a.name in ("b", "t") and not a.size.free_symbols:
                sizes.setdefault(a.name, int(a.size))
    constants: dict[str, int] = dict(conv.__dict__.get("_constants", {}))  # sizes factors are read as (k**-0.5)
    defaults = {**constants, **sizes}
    if not defaults:
        return body, (), (), ()
    meta: tuple[Any, ...] = (("defaults", tuple(sorted(defaults.items()))),)
    failed = False
    found: set[Any] = set()  # the symbols of every size symbolize met or made: no walk of its result when all are known
    try:
        new, fixed = symbolize(body, sizes, conv.__dict__.get("_merges"), found, where=conv.__dict__.get("_made_at")) \
            if sizes else (body, [])
        fixed = fixed + [(held, box) for held, box in sized if set(held) & set(sizes)]
        if (not sizes or any(str(s) not in defaults for s in found)) and any(str(s) not in defaults for s in new.free_symbols):
            new, fixed, failed = body, [], True
    except NCDError:
        new, fixed, failed = body, [], True
    if failed and sizes:  # the batch and sequence stay numbers: only the constants are defaults
        meta = (("defaults", tuple(sorted(constants.items()))),) if constants else ()
        sizes = {}
    return new, meta, tuple(fixed), tuple(sorted(set(constants) - set(sizes)))
