"""Capture a model as an ATen-level graph, with real values for every node.

By default the model is run once eagerly and its ATen calls recorded (:mod:`ncd.trace.record`);
when that recording cannot stand for the model, ``torch.export`` (non-strict) is used; when it fails for a reason other than
data-dependent control flow, a dispatch-mode trace (``make_fx``) over the parameters is
used instead (both in :mod:`ncd.trace.export`).  Data-dependent control flow is an :class:`~ncd.errors.TraceError`.

The result is a flat list of :class:`Node`\\ s in execution order.  Every node carries its
real value (the graph is run once on the example inputs), its module path, and whether it
depends on the inputs at all (nodes that do not are folded into constants).
"""

from __future__ import annotations

import copy
import functools
import inspect
import os
import sys
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.fx

from ncd.errors import TraceError, user_stacklevel
from ncd.trace.functions import functions_refused
from ncd.trace.refusals import ReadsValue, Unsupported

if TYPE_CHECKING:
    from ncd.trace.walk import _Walk

__all__ = ["Node", "Captured", "capture"]


@dataclass
class Node:
    """One operation of the captured graph (or an input, parameter or constant)."""

    name: str
    kind: str  # "input" | "parameter" | "constant" | "call"
    target: Any = None  # the ATen OpOverload (calls)
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    value: Any = None  # real tensor (or tuple of tensors)
    stack: tuple[tuple[str, str], ...] = ()  # (module path, class name), outermost first
    source: str = ""  # parameter / buffer name in the model's state dict, or input name
    live: bool = False  # depends on an input
    line: str = ""  # the user's source line that made the call ("file.py:12"), where known
    guard: bool = False  # a truth value the model read into Python (its branch): checked at run time (ncd.prims.guard)
    sized: dict[Any, Any] | None = None  # scalar arguments computed from input shapes -> their expression (trace.shapes)


@dataclass
class Captured:
    nodes: list[Node]
    outputs: list[Any]  # Node refs (or constants) in output order
    method: str  # "export" or "make_fx"
    input_names: list[str]
    #: sizes of live tensors the model turned into Python floats (``math.sqrt(t)``), with the line (ncd.trace.shapes)
    escaped: list[Any] = field(default_factory=list)


#: values that hold no tensors: never looked into
_PLAIN = (str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device, torch.Size, type)


def held_tensors(value: Any, depth: int = 0, objects: frozenset[int] | None = None) -> list[torch.Tensor]:
    """The tensors ``value`` holds, in order: its pytree leaves, and inside a leaf that is an object of its own (a key/value
    cache: ``DynamicCache.layers[i].keys``), the tensors its attributes hold, in the order they were set.

    ``objects``: look inside only the objects of these ids (every object when ``None``)."""
    import dataclasses

    found: list[torch.Tensor] = []
    for leaf in torch.utils._pytree.tree_leaves(value):
        if isinstance(leaf, torch.Tensor):
            found.append(leaf)
        elif depth < 4 and dataclasses.is_dataclass(leaf) and not isinstance(leaf, type):
            # a record the model returns (``@dataclass class Out: logits; hidden``): its fields, in order
            found += held_tensors([getattr(leaf, f.name) for f in dataclasses.fields(leaf)], depth + 1, objects)
        elif depth < 4 and not isinstance(leaf, (_PLAIN, torch.nn.Module)) and not callable(leaf) \
                and isinstance(getattr(leaf, "__dict__", None), dict) and (objects is None or id(leaf) in objects):
            found += held_tensors(list(vars(leaf).values()), depth + 1)
    return found


def holds_tensors(value: Any) -> bool:
    """A non-tensor argument that holds tensors (a key/value cache, a tuple of tensors)."""
    return not isinstance(value, torch.Tensor) and bool(held_tensors(value))


def copied(values: list[Any]) -> list[Any]:
    """``values`` with every argument that holds tensors deep-copied: the model may write into it (a cache grows by the
    tokens it is run on), and the user's object, or the next run's, must stay as it was."""
    import copy

    out = []
    for v in values:
        if holds_tensors(v):  # its tensors cloned first (a tensor with a history cannot be deep-copied)
            v = copy.deepcopy(v, {id(t): t.detach().clone() for t in held_tensors(v)})
        out.append(v)
    return out


class _Flat(torch.nn.Module):
    """Calls the model and returns the tensors of its output as a flat tuple: its pytree leaves, and the tensors held by
    an object passed in and returned (state threaded through the call: a cache grown by a decoding step).  An object the
    call makes (a cache ``use_cache=True`` starts) is not looked into: ``ncd.decode`` derives caches from the diagram."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        passed = frozenset(id(v) for v in torch.utils._pytree.tree_leaves((args, kwargs)) if holds_tensors(v))
        out = self.model(*args, **kwargs)
        found = held_tensors(out, objects=passed)
        if not found:  # every tensor it returns is inside an object of its own making: those are its outputs
            found = held_tensors(out)
        if not found:
            raise TraceError(f"cannot trace {type(self.model).__name__}: its output ({type(out).__name__}) holds no"
                             " tensors (a diagram needs at least one output)")
        return tuple(found)


_SIGNATURES: weakref.WeakKeyDictionary[Any, inspect.Signature] = weakref.WeakKeyDictionary()


def forward_signature(module: torch.nn.Module) -> inspect.Signature:
    """``inspect.signature(module.forward)``, read once per forward function (raises as it does).

    A forward bound from the module's class is keyed by its function: the signature depends on nothing else."""
    forward = module.forward
    fn = getattr(forward, "__func__", None)
    if fn is None or getattr(forward, "__self__", None) is not module:
        return inspect.signature(forward)
    found = _SIGNATURES.get(fn)
    if found is None:
        found = _SIGNATURES[fn] = inspect.signature(forward)
    return found


def input_names(model: torch.nn.Module, n_args: int, kwargs: dict[str, Any]) -> list[str]:
    try:
        params = [p.name for p in forward_signature(model).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = [params[k] if k < len(params) else f"input{k}" for k in range(n_args)]
    return names + list(kwargs)


#: how :func:`capture` may capture: one eager run recorded at the pre-dispatch level (falling back to
#: export), or ``torch.export`` itself (falling back to ``make_fx``)
METHODS = ("dispatch", "export")


#: the __torch_function__ of a tensor subclass that adds no behaviour: Tensor's own, or Parameter's (disabled)
_NO_BEHAVIOUR = (torch.Tensor.__torch_function__.__func__, torch._C._disabled_torch_function_impl)  # type: ignore[attr-defined]


def _plain_inputs(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                  ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The inputs with each tensor of a subclass that adds no behaviour (``class MyT(torch.Tensor): pass``, a
    ``Parameter``) read as a plain tensor: recorded as it is, its results are new objects the recorder never saw, and
    the model's input was drawn as a constant (the lowered module ignored its input).  A subclass with its own
    ``__torch_function__`` or ``__torch_dispatch__`` computes something else than torch: refused, naming it."""
    def plain(value: Any) -> Any:
        kind = type(value)
        if kind is torch.Tensor or not isinstance(value, torch.Tensor):
            return value
        function = getattr(kind.__torch_function__, "__func__", kind.__torch_function__)
        if function not in _NO_BEHAVIOUR or kind.__torch_dispatch__ is not torch.Tensor.__torch_dispatch__:
            raise TraceError(f"cannot trace {type(model).__name__}: an input is a {kind.__name__}, a tensor subclass with"
                             " its own __torch_function__ or __torch_dispatch__ (what it computes is not torch's); pass"
                             " a plain tensor (x.as_subclass(torch.Tensor)) if it computes what torch does")
        return value.as_subclass(torch.Tensor)

    if all(type(v) is torch.Tensor or not isinstance(v, torch.Tensor)
           for v in torch.utils._pytree.tree_leaves((args, kwargs))):
        return args, kwargs
    return torch.utils._pytree.tree_map(plain, (tuple(args), dict(kwargs)))  # type: ignore[no-any-return]


def capture(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], method: str = "dispatch",
            walk: _Walk | None = None) -> Captured:
    """The model's call as captured by ``method`` (:data:`METHODS`); ``walk``: its modules and state read already
    (:class:`ncd.trace.walk._Walk`), for the recording."""
    if method not in METHODS:
        raise TraceError(f"unknown capture {method!r}; known: {', '.join(METHODS)}")
    args, kwargs = _plain_inputs(model, args, kwargs)
    flat = _Flat(model)
    reads: Exception | None = None
    overlapping: dict[str, str] = {}
    if method == "dispatch" and recorder_works():
        from ncd.trace.record import record

        try:
            return record(model, args, kwargs, flat, walk)
        except Unsupported as error:  # torch.export decides (and reports data-dependent control flow)
            reads = error if isinstance(error, ReadsValue) else None
            overlapping = getattr(error, "overlapping", {})
        except TraceError:  # refused, naming why (a custom autograd.Function returning a non-tensor)
            raise
        except Exception:  # noqa: BLE001 - anything the eager recording cannot take: export is the reference
            pass
    from ncd.trace.export import _distinct, _exported, _torch_errors_unlogged
    from ncd.trace.watched import _identity_watched

    names = input_names(model, len(args), kwargs)
    args, kwargs, same = _distinct(args, kwargs, names)
    identity: dict[str, str] = {}
    with functions_refused(model), _torch_errors_unlogged(), \
            _identity_watched([(group, tensors) for group, tensors, _ in same], identity, alike=True):
        captured = _exported(model, flat, args, kwargs, names, reads, same)
    from ncd.trace.overlaps import watched
    from ncd.trace.record_warnings import random_of, warn_overlapping, warn_random

    warn_random(model, *random_of(captured.nodes))  # (as a recording warns of its own: record_warnings.warn_recorded)
    # a write into memory its operand reads: export reads the operand first (the recording's out= write, or any write
    # the model's eager run shows: an explicit capture="export", a recording that fell back for another reason)
    warn_overlapping(model, {**watched(model, flat, args, kwargs), **overlapping})
    if identity:  # (as the recording says it: :func:`ncd.trace.record_warnings.warn_recorded`)
        import warnings

        where = ", ".join(f"{who} at {line}" for line, who in identity.items())
        warnings.warn(f"ncd.trace({type(model).__name__}): one tensor passed as several inputs, which the model may test"
                      f" with `is` ({where}); the diagram takes them as separate inputs (the model was exported with a"
                      " copy of each), so it holds the branch for different tensors: called with one tensor twice, the"
                      " model takes the other branch and computes otherwise than the lowered module (trace it with the"
                      " tensor passed once, or with different tensors)", RuntimeWarning, stacklevel=user_stacklevel())
    return captured


_RECORDER: list[bool] = []  # the self-check's verdict, once per process


def recorder_works() -> bool:
    """Whether the fast recorder runs on the installed torch: checked on first use on a tiny model.

    It relies on torch internals (a dispatch mode at the pre-dispatch key); when they change, it warns once — naming
    the torch version and what the fallback costs — and ``ncd.trace`` uses ``torch.export`` instead.
    """
    if not _RECORDER:
        from ncd.trace.record import record

        with torch.random.fork_rng(devices=[]):  # (its weights and input drawn apart: the user's next draw unchanged)
            model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
            x = torch.randn(2, 3)
        try:
            got = record(model, (x,), {}, _Flat(model))
            ops = [str(getattr(n.target, "__name__", n.target)) for n in got.nodes if n.kind == "call"]
            ok = any("linear" in o for o in ops) and any("relu" in o for o in ops)
            error = "" if ok else f"it recorded {ops}"
        except Exception as e:  # noqa: BLE001 - any failure of the recorder itself
            ok, error = False, f"{type(e).__name__}: {_first_line(e)}"
        if not ok:
            import warnings

            warnings.warn(f"ncd.trace: the fast recorder does not run on torch {torch.__version__} ({error}); tracing falls"
                          " back to torch.export, typically 3-6x slower to trace", RuntimeWarning, stacklevel=user_stacklevel())
        _RECORDER.append(ok)
    return _RECORDER[0]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else ""


def _strip(path: str) -> str:
    if path == "model":
        return ""
    return path[len("model."):] if path.startswith("model.") else path


@functools.lru_cache(maxsize=4096)  # asked for every frame of the stack at every recorded call
def _internal(filename: str) -> bool:
    """Whether a source file belongs to torch or ncd (not to the user's model); remembered per file name (the
    recording asks for every operator, about a dozen frames each)."""
    found = _INTERNAL.get(filename)
    if found is None:
        path = filename.replace(os.sep, "/")
        found = _INTERNAL[filename] = any(part in path for part in ("/torch/", "/ncd/", "/contextlib.py", "/functools.py",
                                                                    "<frozen")) or path.startswith("<") \
            or filename == copy.__file__  # (``copy.copy(x)`` of a tensor: the line is the model's call of it)
    return found


_INTERNAL: dict[str, bool] = {}


#: a code object's id -> the code object and ``"file.py:"`` when its file is the user's, "" when it is torch's or
#: ncd's (:func:`user_line`).  Keyed by id, the entry holding its code object (alive, so its id is not reused; the
#: entry is checked to be it): a code object's own hash hashes its bytecode, constants and names each time (~3 µs for
#: ``Module._call_impl``), and a recorded call asks for about a dozen frames
_FILE_OF: dict[int, tuple[Any, str]] = {}

#: ``(id of a code object, offset of an instruction in it)`` -> the code object and ``"file.py:12"`` of that
#: instruction (:func:`user_line`): a frame's ``f_lineno`` reads the code's line table from its start to the instruction
#: (~5 µs in a forward of 400 lines, at every recorded call of it), the same answer for the same instruction
_LINE_OF: dict[tuple[int, int], tuple[Any, str]] = {}


def user_line() -> str:
    """``file.py:12`` of the innermost frame of the caller's stack outside torch and ncd (asked at every recorded
    call: each frame's code object is looked up once, each instruction's line once)."""
    frame = sys._getframe(1)
    files = _FILE_OF
    while frame is not None:
        code = frame.f_code
        known = files.get(id(code))
        if known is None or known[0] is not code:
            if len(files) > 8192:  # code made at run time (exec'd, generated) is not kept forever
                files.clear()
            name = code.co_filename
            known = files[id(code)] = (code, "" if _internal(name) else f"{os.path.basename(name)}:")
        file = known[1]
        if file:
            at = (id(code), frame.f_lasti)
            line = _LINE_OF.get(at)
            if line is None or line[0] is not code:
                if len(_LINE_OF) > 65536:
                    _LINE_OF.clear()
                line = _LINE_OF[at] = (code, f"{file}{frame.f_lineno}")
            return line[1]
        frame = frame.f_back  # type: ignore[assignment]
    return ""


def refs(value: Any) -> list[Node]:
    """Every node referenced inside an argument structure (in order, depth first).

    A module-level recursion (a recursive closure would be a reference cycle per call, garbage only the cyclic
    collector frees) looking into tuples, lists and dicts only: asked tens of thousands of times a trace."""
    found: list[Node] = []
    _refs_into(found, value)
    return found


def wrapped(node: Node) -> bool:
    """Whether ``node`` makes or reads a tensor a ``torch.func`` transform wraps (a ``torch.vmap``'s batched tensor),
    which no box stands for."""
    from torch._C._functorch import is_functorch_wrapped_tensor

    return any(isinstance(v, torch.Tensor) and is_functorch_wrapped_tensor(v)
               for v in (node.value, *(a.value for a in refs((node.args, node.kwargs)))))


def live_call(node: Node) -> bool:
    """Whether ``node`` is a call computed from the inputs (what :func:`upstream` follows to reach them)."""
    return node.kind == "call" and node.live


def from_state(node: Node) -> bool:
    """Whether ``node`` is no literal the forward made: an input, a parameter, or a constant with a state-dict source
    (a buffer, the model's state) — neither a call nor a literal (``torch.ones(n)``, a mask made at the traced sizes)."""
    return node.kind not in ("call", "constant") or (node.kind == "constant" and bool(node.source))


def upstream(node: Node, follow: Callable[[Node], bool] | None = None) -> Iterator[Node]:
    """``node`` and the nodes its value is computed from, each once, depth first through the nodes each refers to
    (:func:`refs` of its arguments); ``follow``: the nodes whose own arguments are walked (all when ``None``).  The one
    walk up the recording: a caller stops it by leaving the loop (the first input reached, a limit)."""
    seen: set[int] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        if follow is None or follow(n):
            todo.extend(refs((n.args, n.kwargs)))


def _refs_into(found: list[Node], value: Any) -> None:
    kind = type(value)
    if kind is tuple or kind is list:
        items: Any = value
    elif kind is Node:
        found.append(value)
        return
    elif kind in _LEAVES:
        return
    elif kind is dict:
        items = value.values()
    elif isinstance(value, Node):
        found.append(value)
        return
    elif isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, dict):
        items = value.values()
    else:
        return
    for v in items:
        kind = type(v)
        if kind is Node:
            found.append(v)
        elif kind not in _LEAVES:  # most arguments: nothing to look into
            _refs_into(found, v)


def without_unread(nodes: list[Node], outputs: list[Any], dropped: set[int]) -> list[Node]:
    """``nodes`` less the ``dropped`` ones that neither the outputs nor a node that stays reads (in order)."""
    used = {id(r) for r in refs(outputs)}
    kept: list[Node] = []
    for node in reversed(nodes):
        if id(node) in dropped and id(node) not in used:
            continue
        used.update(id(r) for r in refs((node.args, node.kwargs)))
        kept.append(node)
    return kept[::-1]


#: argument types with no node inside
_LEAVES = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device})


