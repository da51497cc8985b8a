"""What a model does while it is captured that no capture records: refused, warned about, or put back.

Context managers :func:`ncd.trace._trace` runs the capture under (and :func:`_warn_backward_hooks`, asked before it):
``y.data = v`` refused (:func:`_data_refused`); draws from Python's or numpy's global random generators
(:func:`_python_random_watched`), the model's own reads of the gradient and inference modes and of ``.requires_grad``
(:func:`_grad_mode_as_called`), backward hooks, and number attributes the model changes (:func:`_state_kept`, which
also puts the modules' public attributes back) warned about, naming the lines.  The diagram holds the traced call;
these say where the model called otherwise may compute otherwise.  The lines testing ``a is b`` of one tensor passed
twice are :mod:`ncd.trace.watched_identity`'s (:func:`_identity_watched`, imported here too).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any

from ncd.errors import TraceError, user_stacklevel
from ncd.trace.watched_identity import _identity_watched as _identity_watched

if TYPE_CHECKING:
    import torch

    from ncd.trace.walk import _Walk

__all__: list[str] = []


@contextlib.contextmanager
def _data_refused(model: torch.nn.Module) -> Any:
    """While the model is captured: ``y.data = v`` raises a ``TraceError`` naming the line (``v`` ``y`` itself, as
    ``module.to()`` of a module already there assigns, passes).

    The assignment swaps ``y``'s memory for ``v``'s without an operator: no capture sees it (the recorder, make_fx and
    torch.export alike), so the diagram would go on with ``y``'s old value, wrong on the traced input itself."""
    import torch

    from ncd.trace.capture import user_line

    data = torch._C.TensorBase.__dict__["data"]

    def assigned(self: torch.Tensor, value: torch.Tensor) -> None:
        if value is not self:
            raise TraceError(f"cannot trace {type(model).__name__}: it assigns a tensor's .data at {user_line() or '?'},"
                             " which swaps the tensor's memory without an operator any capture records, so the diagram"
                             " would go on with the old value; write y = v (or y.copy_(v) under torch.no_grad())")
        data.__set__(self, value)

    held = torch.Tensor.__dict__.get("data")
    torch.Tensor.data = property(data.__get__, assigned)  # type: ignore[assignment]
    try:
        yield
    finally:
        if held is None:
            del torch.Tensor.data
        else:
            torch.Tensor.data = held


def _warn_backward_hooks(model: torch.nn.Module, walk: _Walk | None = None) -> None:
    """A warning naming the model's backward hooks (a module's ``register_full_backward_hook``, a parameter's
    ``register_hook``, global ones): they change the model's gradients, and the lowered module, whose gradients are
    autograd's through the diagram, has none (before, its gradients differed from the model's with no word).
    ``walk``: the model's modules read already (:class:`ncd.trace.walk._Walk`)."""
    from torch.nn.modules import module as modules

    hooked = ["every module (global)"] if modules._global_backward_hooks or modules._global_backward_pre_hooks else []
    # (one pass over the modules' own dicts, names only when one is hooked: longformer's named_parameters took ~2 ms)
    if walk is not None and walk.faithful:  # (its modules, then every parameter they hold: one pass each)
        hooks = any(sub._backward_hooks or sub._backward_pre_hooks for _, sub in walk.modules) or any(
            p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None) for _, p in walk.parameters)
    else:
        hooks = any(sub._backward_hooks or sub._backward_pre_hooks
                    or any(p is not None and (p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None))
                           for p in sub._parameters.values()) for sub in model.modules())
    if hooks:
        for name, sub in model.named_modules():
            if sub._backward_hooks or sub._backward_pre_hooks:
                hooked.append(f"module {name or type(model).__name__}")
        for name, p in model.named_parameters():
            if p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None):
                hooked.append(f"parameter {name}")
    if hooked:
        warnings.warn(f"ncd.trace({type(model).__name__}): the model has backward hooks ({', '.join(hooked[:4])}"
                      f"{', ...' if len(hooked) > 4 else ''}); they change its gradients, and the lowered module has"
                      " none: its forward is the model's, its gradients are autograd's through the diagram",
                      RuntimeWarning, stacklevel=user_stacklevel())


def _warn_global_forward_hooks(model: torch.nn.Module) -> None:
    """A warning naming the global forward hooks registered where ``ncd.trace`` is called
    (``torch.nn.modules.module.register_module_forward_hook`` and ``..._pre_hook``): what they did to the model's
    modules is recorded, so drawn; while they stay registered they also fire on the lowered module and its own
    submodules, applying their effect again (a hook doubling every Linear's output gave 4x, the model 2x)."""
    from torch.nn.modules import module as modules

    hooks = [*modules._global_forward_pre_hooks.values(), *modules._global_forward_hooks.values()]
    if hooks:
        names = ", ".join(getattr(h, "__qualname__", type(h).__name__) for h in hooks[:4])
        warnings.warn(f"ncd.trace({type(model).__name__}): global forward hooks are registered ({names}"
                      f"{', ...' if len(hooks) > 4 else ''}); their effect on the model's modules is drawn, and while"
                      " they stay registered they fire again on the lowered module's own modules (remove them before"
                      " calling it)", RuntimeWarning, stacklevel=user_stacklevel())


def _python_random_states() -> tuple[Any, ...]:
    """The states of Python's and numpy's global random number generators (numpy's only if it is imported)."""
    import random
    import sys

    numpy = sys.modules.get("numpy")
    state = numpy.random.get_state(legacy=False) if numpy is not None else None
    return random.getstate(), None if state is None else (state["state"]["key"].tobytes(), state["state"]["pos"],
                                                          state["has_gauss"], state["gauss"])


@contextlib.contextmanager
def _python_random_watched(model: torch.nn.Module) -> Any:
    """While the model is captured: whether it draws from Python's or numpy's global random number generator (a
    random mask made with ``np.random``, ``random.random() < p`` skipping a layer).  No capture records those draws:
    the diagram holds the numbers drawn while tracing, as for torch's draws (:data:`ncd.trace.operators.RANDOM`), but
    nothing said so."""
    before = _python_random_states()
    yield
    after = _python_random_states()
    drawn = [name for name, a, b in zip(("Python's random", "numpy.random"), before, after) if a != b]
    if drawn:
        warnings.warn(f"ncd.trace({type(model).__name__}): the model draws random numbers from {' and '.join(drawn)}"
                      " while it runs; no capture records those draws, so the diagram holds the numbers drawn while"
                      " tracing (the lowered module computes with them at every call, the model draws anew)",
                      RuntimeWarning, stacklevel=user_stacklevel())


@contextlib.contextmanager
def _grad_mode_as_called(model: torch.nn.Module, inputs: Any = ()) -> Any:
    """While the model is captured (under ``torch.no_grad``, as every capture runs): ``torch.is_grad_enabled()`` read
    by the model's own code answers as it would have where ``ncd.trace`` was called, and one warning names the lines.

    The model computes what the diagram draws only when it takes the branch it takes when called: a model scaling by 2
    where gradients are on was drawn without the scale (the capture's answer, False), differing from the model called
    as usual, with no word.  torch's own code gets the capture's answer (its fast paths compute the same values).
    ``inputs``: the example inputs (any nesting), whose tensors the capture copies without their ``requires_grad``."""
    import sys

    import torch

    from ncd.trace.capture import _internal, user_line

    asked = torch.is_grad_enabled
    called = asked()
    lines: list[str] = []

    def is_grad_enabled() -> bool:
        if _internal(sys._getframe(1).f_code.co_filename):
            return asked()
        where = user_line() or "?"
        if where not in lines:
            lines.append(where)
        return called

    flag = torch._C.TensorBase.__dict__["requires_grad"]
    # a value the model computes from parameters (or example inputs) needing gradients needs one itself where it is
    # called with gradients on, but not under the capture's no_grad (each input a copy without it): its
    # ``.requires_grad`` read by the model answered False (``x * 2 if x.requires_grad else x`` of an input needing a
    # gradient was drawn as ``x``, off the model on the traced input itself, with no word); an input needing one
    # answers True under ``torch.no_grad`` too (and its views): warned about wherever ``ncd.trace`` is called.  Where
    # nothing of the traced call needed a gradient (traced under no_grad, or on inputs needing none in a model without
    # parameters needing any) the answer False is the model's there, but the lowered module called with gradients on
    # takes the other branch than the model (``y * 2 if y.requires_grad else y`` was y, silently half the model's):
    # warned too, as a read of ``torch.is_grad_enabled()`` is
    inputs_need = any(isinstance(t, torch.Tensor) and t.requires_grad for t in torch.utils._pytree.tree_leaves(inputs))
    learned = inputs_need or (called and any(p.requires_grad for p in model.parameters()))
    needs: list[str] = []

    def requires_grad(self: torch.Tensor) -> bool:
        value: bool = flag.__get__(self)
        if not value and not _internal(sys._getframe(1).f_code.co_filename):
            where = user_line() or "?"
            if where not in needs:
                needs.append(where)
        return value

    inference = torch.is_inference_mode_enabled
    in_inference = inference()
    inferred: list[str] = []

    def is_inference_mode_enabled() -> bool:  # (the same for torch.inference_mode: the model branches on it)
        if not _internal(sys._getframe(1).f_code.co_filename):
            where = user_line() or "?"
            if where not in inferred:
                inferred.append(where)
        return inference()

    # a tensor's autograd history, read by the model: under the capture (no_grad, each input a detached copy) every
    # value has none (``grad_fn`` None, ``is_leaf`` True); called with gradients on, values computed from parameters
    # needing them (or from inputs with a history) have one: a branch on it was drawn for the capture's answer
    histories: list[str] = []

    def history(name: str) -> Any:
        read = torch._C.TensorBase.__dict__[name]

        def get(self: torch.Tensor) -> Any:
            if called and not _internal(sys._getframe(1).f_code.co_filename):
                where = user_line() or "?"
                if where not in histories:
                    histories.append(where)
            return read.__get__(self)

        return property(get)

    held = {name: torch.Tensor.__dict__.get(name) for name in ("requires_grad", "grad_fn", "is_leaf")}
    torch.is_grad_enabled = is_grad_enabled
    torch.is_inference_mode_enabled = is_inference_mode_enabled
    torch.Tensor.requires_grad = property(requires_grad, flag.__set__)  # type: ignore[assignment]
    torch.Tensor.grad_fn = history("grad_fn")
    torch.Tensor.is_leaf = history("is_leaf")
    try:
        yield
    finally:
        torch.is_grad_enabled = asked
        torch.is_inference_mode_enabled = inference
        for name, was in held.items():
            if was is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, was)
    as_called = ", as ncd.trace was called; called otherwise, the model may compute otherwise"
    for what, where, then in (
            ("torch.is_grad_enabled()", lines,
             f": the diagram computes what it computes with gradients {'on' if called else 'off (torch.no_grad)'}{as_called}"),
            ("torch.is_inference_mode_enabled()", inferred, ": the diagram computes what it computes with inference mode"
             f" {'on (torch.inference_mode)' if in_inference else 'off'}{as_called}"),
            ("a tensor's .requires_grad", needs, ", which was False there (the capture runs without gradients); the"
             " diagram computes the branch that answer takes, so " + ("called with gradients on, where values computed"
             " from its parameters or inputs need gradients" if called and learned else "called on inputs needing"
             " gradients (as ncd.trace was, under torch.no_grad: they and their views answer True)" if learned else
             "called with gradients on (as the lowered module's parameters need them) or on inputs needing gradients,"
             " where its values need them") + ", the model may compute otherwise"),
            ("a tensor's autograd history (.grad_fn or .is_leaf)", histories, ", which the capture's values have none"
             " of (it runs without gradients, on copies of the inputs); the diagram computes the branch that answer"
             " takes, so called with gradients on, the model may compute otherwise")):
        if where:
            warnings.warn(f"ncd.trace({type(model).__name__}): the model reads {what} at {', '.join(where[:4])}{then}",
                          RuntimeWarning, stacklevel=user_stacklevel())


def _version(t: Any) -> int | None:
    """A tensor's version counter (each in-place write adds one); None for one that has none (inference mode)."""
    try:
        return int(t._version)
    except Exception:  # noqa: BLE001 - (an inference-mode tensor, a subclass of its own): none read
        return None


#: the types of attribute values that are no tensor and hold none
_PLAIN = frozenset({bool, int, float, str, type(None)})


def _held_tensors(model: torch.nn.Module, saved: list[tuple[Any, dict[str, Any], list[tuple[Any, Any]]]],
                  walk: _Walk | None = None) -> list[tuple[Any, str, Any, int | None]]:
    """The tensors the model holds outside its parameters and buffers, each with where it is held (a module or a
    file, and a name) and its version counter: its modules' plain tensor attributes and the tensors in the lists,
    tuples and dicts they hold (:func:`attributes_of`), the closures of functions they hold, and the tensors among the
    globals of its modules' ``forward`` (its own files, not torch's).  (~1 ms for 12-layer GPT-2: names are made only
    for a tensor written, :func:`_held_name`.)  ``walk``: the model's buffers read already."""
    import types

    import torch

    from ncd.trace.capture import _internal

    tensor, function = torch.Tensor, types.FunctionType
    found: list[tuple[Any, str, Any, int | None]] = []
    spaces: dict[int, tuple[str, dict[str, Any]]] = {}
    forwards: set[int] = set()
    tensors: dict[type, bool] = {}  # a type -> whether its values are tensors (isinstance once per type)
    classes: dict[type, Any] = {}  # a module's class -> its forward (the MRO read once per class)
    plain = _PLAIN
    for module, attrs, _ in saved:
        for k, v in attrs.items():
            kind = type(v)
            if kind in plain:  # (most: a module's flags and sizes)
                continue
            is_tensor = tensors.get(kind)
            if is_tensor is None:
                is_tensor = tensors[kind] = isinstance(v, tensor)
            if is_tensor:
                found.append((module, k, v, None))
            elif kind is list or kind is tuple:  # (a loop, not a generator for each: a conv holds five tuples)
                for j, item in enumerate(v):
                    if isinstance(item, tensor):
                        found.append((module, f"{k}[{j}]", item, None))
            elif kind is dict:
                for key, item in v.items():
                    if isinstance(item, tensor):
                        found.append((module, f"{k}[{key!r}]", item, None))
            elif kind is function:
                for cell in v.__closure__ or ():
                    with contextlib.suppress(ValueError):  # (an empty cell)
                        if isinstance(cell.cell_contents, tensor):
                            found.append((module, f"a closure of {k}", cell.cell_contents, None))
        # (looked up statically, along the class's MRO: a scripted module's is a descriptor whose lookup on the class
        # raises; a lambda, a partialmethod, a callable object: only what has code and globals is read)
        cls = type(module)
        if cls in classes:  # (its class's forward read already)
            continue
        forward = classes[cls] = next((vars(c)["forward"] for c in cls.__mro__ if "forward" in vars(c)), None)
        if forward is not None and id(forward) not in forwards:
            forwards.add(id(forward))
            try:
                code, space = getattr(forward, "__code__", None), getattr(forward, "__globals__", None)
            except Exception:  # noqa: BLE001 - a descriptor of its own: no globals read
                code = space = None
            if code is not None and type(space) is dict and not _internal(code.co_filename):
                spaces.setdefault(id(space), (code.co_filename, space))
    for file, space in spaces.values():
        found.extend((file, k, v, None) for k, v in list(space.items()) if isinstance(v, tensor))
    # a buffer under a plain attribute too (transformers' rotary ``self.original_inv_freq = self.inv_freq``) is the
    # buffer's: its writes are said as the buffer's (and the recording's undo of an attempt copies every buffer back)
    buffers = (b for _, b in walk.buffers) if walk is not None and walk.faithful else model.buffers()
    seen: set[int] = {id(b) for b in buffers} if found else set()
    held = []
    for where, name, t, _ in found:
        if id(t) not in seen and not isinstance(t, torch.nn.Parameter) and t.device.type != "meta":
            seen.add(id(t))
            held.append((where, name, t, _version(t)))
    return held


def _held_name(model: torch.nn.Module, where: Any, name: str) -> str:
    """A held tensor's name (:func:`_held_tensors`): ``layer.0.acc``, ``G (a global of model.py)``."""
    if isinstance(where, str):
        return f"{name} (a global of {where.replace(chr(92), '/').rsplit('/', 1)[-1]})"
    at = next((n for n, m in model.named_modules() if m is where), "")
    return f"{at}.{name}" if at and not name.startswith("a closure of ") else \
        f"a closure of {at}.{name.removeprefix('a closure of ')}" if at else name


#: the types of the number attributes :func:`_state_kept` watches
_NUMBERS = (int, float, bool)


def _same_number(now: Any, was: Any) -> bool:
    """Whether an attribute still holds the number it held (a NaN it held still is NaN: ``nan != nan``; a size read
    off an input's shape, an ``int`` of the tracer's own type, set to the number it held, is the same number)."""
    if not isinstance(now, (int, float, bool)):  # (made something else: changed)
        return False
    return bool(now == was or (now != now and was != was))


@contextlib.contextmanager
def _state_kept(model: torch.nn.Module, said: bool = False, walk: _Walk | None = None) -> Any:
    """Run the body, then put back the modules' public attributes as they were (contents of dicts and lists too);
    ``said``: a number attribute the run changed is warned about (the trace's own run, not a check's); ``walk``: the
    model's modules and buffers read already (:class:`ncd.trace.walk._Walk`).

    Models cache tensors computed from parameters on their first call (LeViT's attention biases, keyed by
    device): a trace that records such a call leaves the cache filled, and the next trace of the same model would
    read a tensor of unknown origin instead of the parameter it came from."""
    from ncd.trace.undo import attributes_back, kept, snapshot

    saved, held_names = snapshot(model, walk)
    held = _held_tensors(model, saved, walk) if said else []
    stack = kept()
    stack.append(saved)  # a failed recording attempt inside puts back the contents too (:meth:`Undo.undo`)
    try:
        yield
        written = [_held_name(model, where, name) for where, name, t, version in held if _version(t) != version]
    finally:
        stack.pop()
        rebound = attributes_back(saved, names=held_names)
    # (a number still bound to the very object it was bound to is the same number: NaN too; one bound to another
    # object is put back above)
    changed = [(module, k, v, now) for module, k, v, now in rebound
               if type(v) in _NUMBERS and not _same_number(now, v)] if said else []
    if said and written:  # (as for a buffer written in place: ``self.acc.add_(1)`` on a plain attribute, a global)
        warnings.warn(f"ncd.trace({type(model).__name__}): the model writes in place into tensors it holds outside its"
                      f" parameters and buffers ({', '.join(written[:4])}{', ...' if len(written) > 4 else ''}); the"
                      " diagram computes the traced call from their values before it and the lowered module does not"
                      " update them, so later calls of the model differ from it (and tracing ran the model once: they"
                      " were updated as by one call)", RuntimeWarning, stacklevel=user_stacklevel())
    if changed:  # a step counter (``self.step += 1``): its later calls compute otherwise, as for a buffer written
        names = {id(m): f"{n}." if n else "" for n, m in model.named_modules()}
        listed = ", ".join(f"{names.get(id(m), '')}{k} ({was!r} -> {now!r})" for m, k, was, now in changed[:4])
        warnings.warn(f"ncd.trace({type(model).__name__}): the model changes its attributes while it runs ({listed});"
                      " the diagram computes the traced call, with their values before it, and the lowered module does"
                      " not change them, so the model's later calls may differ from it (tracing put them back)",
                      RuntimeWarning, stacklevel=user_stacklevel())
