"""A traced diagram lowered at other sizes than it was traced at, checked against the model at those sizes.

Sizes a model reads into Python are followed where Python lets ncd see them (:mod:`ncd.trace.shapes`), but not
everywhere: a float written first (``x * (1.0 / x.shape[0])``, ``0.5 * t``: Python's float arithmetic reads the int
without asking it), ``len(x)`` (Python makes its result a plain int), ``math`` of a non-integer size
(``math.sqrt(t / 2)``) and the ``torch.export`` capture keep the traced value.  A module lowered at other sizes
(``d.to_torch(b=3)``) would then compute something else than the model, silently.  So, when the model is still at hand,
:func:`check` runs it and the lowered module on the traced inputs grown or cut to the new sizes (their entries repeated
along each axis whose size changes: ids stay ids, masks stay masks) and refuses (``TraceError``) when they differ.

The check is skipped (the module is returned unchecked) when the inputs cannot be remade at the new sizes: an input
that is an object holding tensors (a key/value cache), an input whose diagram type is not the tensor's, or a model that
raises at these sizes itself, or whose output is not the same on two runs; and when a parameter or buffer of the model
was replaced since the trace (it is no longer the model traced; one changed in place is, the diagram holds it too).
A lowered module that fails inside (not refusing its inputs: an ``InputError``) where the model runs is refused too.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ncd.errors import InputError, RunError, TraceError, user_stacklevel
from ncd.prims.guard import TRACED_READ

if TYPE_CHECKING:
    from ncd.trace.walk import _Walk

__all__ = ["Origin", "origin_of", "check"]


class _Slot:
    """Where the ``index``-th input tensor goes in the model's call."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


@dataclass(eq=False)
class Origin:
    """The traced model and how its call is made from the diagram's inputs (``args``/``kwargs`` with each input tensor
    a :class:`_Slot`); not pickled (a diagram read back has no model to check against)."""

    model: torch.nn.Module | None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    count: int = 0
    #: the model's parameters and buffers when traced (their ids): one replaced since, the model is not the one traced
    state: tuple[int, ...] = ()

    def __reduce__(self) -> Any:
        return (Origin, (None,))


def origin_of(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], walk: _Walk | None = None) -> Origin:
    """The model's call with its tensors as slots, in the order the recorder makes them inputs (pytree order within a
    list, tuple or dict argument); an argument that is an object holding tensors leaves the call unknown (``walk``:
    the model's state read already, :class:`ncd.trace.walk._Walk`)."""
    from ncd.trace.capture import holds_tensors

    count = 0

    def slotted(value: Any) -> Any:
        nonlocal count
        if isinstance(value, torch.Tensor):
            count += 1
            return _Slot(count - 1)
        items, spec = torch.utils._pytree.tree_flatten(value)
        if holds_tensors(value) and not any(isinstance(v, torch.Tensor) for v in items):
            raise LookupError  # a cache object: its tensors cannot be put back by position
        for i, v in enumerate(items):
            if isinstance(v, torch.Tensor):
                items[i] = _Slot(count)
                count += 1
        return torch.utils._pytree.tree_unflatten(items, spec)

    try:
        call_args = tuple(slotted(v) for v in args)
        call_kwargs = {k: slotted(v) for k, v in kwargs.items()}
    except LookupError:
        return Origin(model)
    return Origin(model, call_args, call_kwargs, count, _state(model, walk))


def _state(model: torch.nn.Module, walk: _Walk | None = None) -> tuple[int, ...]:
    """The ids of ``parameters()`` then of ``buffers()`` (each once, where first met: from ``walk`` if given)."""
    held = torch.Tensor.__hash__  # (torch tells tensors met twice apart by their hash)
    if walk is None or not walk.faithful or any(type(t).__hash__ is not held for _, t in walk.parameters) \
            or any(type(t).__hash__ is not held for _, t in walk.buffers):
        return tuple(id(t) for t in (*model.parameters(), *model.buffers()))
    ids: list[int] = []
    for named in (walk.parameters, walk.buffers):
        seen: set[int] = set()
        for _, t in named:
            if id(t) not in seen:
                seen.add(id(t))
                ids.append(id(t))
    return tuple(ids)


def _filled(value: Any, tensors: list[torch.Tensor]) -> Any:
    items, spec = torch.utils._pytree.tree_flatten(value, is_leaf=lambda v: isinstance(v, _Slot))
    return torch.utils._pytree.tree_unflatten([tensors[v.index] if isinstance(v, _Slot) else v for v in items], spec)


def _resized(example: torch.Tensor, shape: tuple[int, ...], unequal: bool = True) -> torch.Tensor:
    """``example`` at ``shape``: along each axis whose size changes its entries repeated (``0 1 0`` for 2 -> 3) or cut;
    with ``unequal``, the copies an axis grows by are unequal to the entries they copy (floating point: the k-th copy
    scaled 1 + k/2; integers such as ids and bools such as masks: the k-th copy's entries turned by k places, or where
    that changes nothing, ids of 2 or more shifted by k below their largest, 0/1 flags with an entry flipped)."""
    out = example
    for dim, (was, now) in enumerate(zip(example.shape, shape)):
        if was != now:
            out = out.index_select(dim, torch.arange(now, device=out.device) % was)
            if not unequal or now <= was or not out.numel():
                continue
            # grown: copies equal to the entries they copy would hide a model reading a fixed part of the axis (the
            # first row x[:1] at a batch of one, x[:2].mean(0) at two: the mean of 0 1 0 1 is the mean of 0 1)
            if out.is_floating_point():  # the k-th copy's entries scaled by 1 + k/2 and by its inverse, alternately
                # (the traced entries as they are): one factor for all would keep the least of |x| (the largest of
                # -|x|) in the traced entries, so x.abs()[:, :3].amin(1) at t=3 read the whole axis unseen
                copy = (torch.arange(now, device=out.device) // was).to(out.dtype)
                rows = torch.arange(now, device=out.device).reshape((now,) + (1,) * (out.dim() - dim - 1))
                inner = torch.arange(int(math.prod(out.shape[dim + 1:])), device=out.device).reshape(out.shape[dim + 1:])
                turn = ((rows + inner) % 2 * 2 - 1).to(out.dtype)  # -1, +1 alternately
                scale = (1 + 0.5 * copy).reshape(rows.shape) ** turn
                out = out * scale
            elif not out.is_complex():  # ids, flags, masks: the k-th copy's entries turned by k places (the same
                low, top = int(out.min()), int(out.max())  # values, in other places)
                for j in range(was, now):
                    k = j // was
                    row = out.select(dim, j)
                    turned = row.flatten().roll(k).view(row.shape)
                    if torch.equal(turned, row) and low >= 0 and top >= 2 and out.dtype != torch.bool:
                        turned = (row + k) % (top + 1)  # one id everywhere: other ids up to it
                    elif torch.equal(turned, row) and low >= 0 and top <= 1:  # one flag everywhere (a mask of ones):
                        turned = row.clone()  # one entry flipped, or a model reading the first mask row is unseen
                        flat = turned.view(-1)
                        at = (j - was) % flat.numel()
                        flat[at] = ~flat[at] if out.dtype == torch.bool else 1 - flat[at]
                    row.copy_(turned)
    return out.clone()


def _inputs(block: Any, example: tuple[torch.Tensor, ...], sizes: dict[str, int],
            unequal: bool = True) -> list[torch.Tensor] | None:
    """The inputs at ``sizes``: each example tensor resized to its diagram type bound at those sizes (None when the types
    do not match the tensors; ``unequal`` as :func:`_resized`)."""
    from ncd.ir.diagram import bind_all

    dom = bind_all(block, sizes).dom
    if len(dom) != len(example):
        return None
    out = []
    for seg, tensor in zip(dom, example):
        shape = tuple(int(a.size) for a in seg.axes)
        if len(shape) != tensor.dim() or any(n != m and (n < 1 or m < 1) for n, m in zip(shape, tensor.shape)):
            return None
        out.append(_resized(tensor, shape, unequal))
    return out


def _leaves(value: Any) -> list[torch.Tensor]:
    from ncd.trace.capture import held_tensors

    return [value] if isinstance(value, torch.Tensor) else held_tensors(value)


def _run(model: torch.nn.Module, call: Any, seed: int = 0) -> list[torch.Tensor]:
    """The model's output tensors on ``call`` (args, kwargs), its state put back afterwards: its buffers, attributes,
    and the values of every tensor it writes into in place (a parameter updated under ``no_grad``, an average kept
    as a plain tensor), with the bindings of its parameters and buffers (:class:`ncd.trace.undo.Undo`)."""
    try:
        return _run_once(model, call, seed, True)
    except Exception:  # noqa: BLE001 - run again as it was before, outside the dispatch mode (whatever it raises)
        return _run_once(model, call, seed, False)


def _run_once(model: torch.nn.Module, call: Any, seed: int, kept: bool) -> list[torch.Tensor]:
    from ncd.trace.capture import _Flat
    from ncd.trace.undo import Undo
    from ncd.trace.watched import _state_kept

    args, kwargs = call
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    undo = Undo(model)
    try:
        with _state_kept(model), torch.no_grad(), torch.random.fork_rng(devices=[]), \
                _Kept(undo) if kept else contextlib.nullcontext():
            torch.manual_seed(seed)
            return list(_Flat(model)(*args, **kwargs))
    finally:
        undo.undo()
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)


class _Kept(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """While the model runs for the check: before each in-place write into a tensor the run did not make (a parameter,
    a buffer, a tensor the model holds, an input), its value kept in ``undo``."""

    def __init__(self, undo: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.undo = undo
        self.made: dict[int, weakref.ref[torch.Tensor]] = {}  # the tensors the run's calls returned, by id

    def _made(self, t: torch.Tensor) -> bool:
        held = self.made.get(id(t))
        return held is not None and held() is t

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        from ncd.trace.undo import writes_of

        kwargs = kwargs or {}
        for _, root in writes_of(func, tuple(args), kwargs):
            if not self._made(root):  # (a view the run made of a parameter writes the parameter: kept)
                self.undo.keep(root)
        out = func(*args, **kwargs)
        for v in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(v, torch.Tensor):
                self.made[id(v)] = weakref.ref(v)
        return out


def _difference(got: list[torch.Tensor], want: list[torch.Tensor]) -> str | None:
    """What differs between the lowered module's outputs and the model's (None when equal)."""
    if len(got) != len(want):
        return f"{len(got)} outputs, the model {len(want)}"
    for k, (a, b) in enumerate(zip(got, want)):
        if tuple(a.shape) != tuple(b.shape):
            return f"output {k} has shape {tuple(a.shape)}, the model's {tuple(b.shape)}"
        if a.is_floating_point() or b.is_floating_point() or a.is_complex():
            kind = torch.complex128 if a.is_complex() or b.is_complex() else torch.float64
            x, y = a.detach().to(kind), b.detach().to(kind)
            # the absolute tolerance follows the model's largest finite output, below 1 too (of outputs about 1e-6,
            # a floor of 1e-4 passed anything)
            scale = float(y.abs().nan_to_num(0.0, 0.0, 0.0).max()) if y.numel() else 0.0
            tol = 2e-2 if torch.float16 in (a.dtype, b.dtype) or torch.bfloat16 in (a.dtype, b.dtype) else 1e-4
            if not torch.allclose(x, y, atol=tol * scale, rtol=tol, equal_nan=True):
                return f"output {k} differs by {float((x - y).abs().max()):.3g}"
        elif not torch.equal(a, b.to(a.dtype)):
            return f"output {k} differs in {int((a != b.to(a.dtype)).sum())} entries"
    return None


def _unchecked(name: str, sizes: dict[str, int], why: str) -> bool:
    """Warn that the module lowered at ``sizes`` was not compared with the model there, and ``why``: ``False`` (not
    compared, as :func:`check` answers)."""
    import warnings

    at = ", ".join(f"{k}={v}" for k, v in sizes.items())
    warnings.warn(f"{name} lowered at {at} unchecked: {why}, so the lowered module was not compared with the model at"
                  " these sizes; a size the model computes in Python where the trace cannot follow it"
                  " (x * (1.0 / x.shape[0]), len(x)) keeps its traced value there; compare it with the model on your"
                  " inputs", RuntimeWarning, stacklevel=user_stacklevel())
    return False


def check(name: str, origin: Origin | None, module: torch.nn.Module, block: Any, example: tuple[torch.Tensor, ...],
          sizes: dict[str, int], traced: dict[str, int], held: bool = False) -> bool:
    """Raise ``TraceError`` when ``module`` (the diagram lowered at ``sizes``) differs from the model at those sizes;
    whether they were compared (``False``: unchecked, warned).  With ``held`` (a size the model's Python turned into a
    number, ``len(x)``, ``math.sqrt(t)``, kept at its traced value: this comparison is all that says the number does
    not matter), compared again on the inputs' floating-point entries spread over magnitudes (:func:`_spread`)."""
    compared = _checked(name, origin, module, block, example, sizes, traced)
    if not compared or not held:
        return compared
    tensors = _inputs(block, example, sizes)  # (compared: the model is at hand)
    assert origin is not None
    if tensors is None:
        return False
    try:
        return _compare(name, origin, module, _spread(tensors), sizes, traced, guarded=False)
    except TraceError as error:
        raise TraceError(f"{error} (on inputs whose entries are spread from 1e-2 to 1e3 in size)") from None


def _spread(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` with their floating-point entries scaled by 1e-2, 1e-1 ... 1e3 in turn: a number made from a size and
    compared with values (``x.clamp(max=len(x) * 0.4)``: 2.0 traced, 3.6 at another length) is unseen by entries of
    about 1, so the lowered module, which keeps the traced number, agreed with the model on them and was wrong on
    others."""
    out = []
    for t in tensors:
        if t.is_floating_point() and t.numel():
            t = t * (10.0 ** (torch.arange(t.numel(), device=t.device) % 6 - 2)).to(t.dtype).reshape(t.shape)
        out.append(t)
    return out


def _checked(name: str, origin: Origin | None, module: torch.nn.Module, block: Any, example: tuple[torch.Tensor, ...],
             sizes: dict[str, int], traced: dict[str, int]) -> bool:
    """:func:`check` on the traced inputs remade at ``sizes``."""
    if origin is None or origin.model is None:  # pickled: said, not silent
        return _unchecked(name, sizes, "the traced model is not at hand (the diagram was pickled)")
    if origin.kwargs is None or origin.count != len(example):
        return _unchecked(name, sizes, "the traced call passed an object holding tensors, which the check cannot"
                                       " remake at these sizes")
    if _state(origin.model) != origin.state:  # a parameter replaced since: no longer the model traced
        return _unchecked(name, sizes, "a parameter or buffer of the model was replaced since the trace")
    tensors = _inputs(block, example, sizes)
    if tensors is None:
        return _unchecked(name, sizes, "the traced inputs cannot be remade at these sizes")
    try:
        return _compare(name, origin, module, tensors, sizes, traced)
    except _Guarded:  # the check's unequal copies (a flipped mask entry) take another branch of the model than the
        # traced one, which the lowered module's guard refuses: compared on copies of the traced inputs instead
        tensors = _inputs(block, example, sizes, unequal=False)
        if tensors is None:
            return False
        return _compare(name, origin, module, tensors, sizes, traced, guarded=False)


class _Guarded(Exception):
    """The lowered module's guard refused the check's inputs (they take a branch of the model the trace did not)."""


def _compare(name: str, origin: Origin, module: torch.nn.Module, tensors: list[torch.Tensor], sizes: dict[str, int],
             traced: dict[str, int], guarded: bool = True) -> bool:
    """Raise ``TraceError`` when ``module`` differs from the model on ``tensors`` (``_Guarded`` when, with ``guarded``,
    a guard of the lowered module refuses them); whether they were compared (``False``: the model raises there or
    gives another output on each run, warned; the lowered module refuses the inputs)."""
    assert origin.model is not None and origin.kwargs is not None
    call = (_filled(origin.args, tensors), _filled(origin.kwargs, tensors))
    try:
        want = _run(origin.model, call)
    except Exception as error:  # noqa: BLE001 - the model does not run at these sizes (a longer text than its positions)
        return _unchecked(name, sizes, f"the model itself raises at these sizes ({type(error).__name__})")
    mode = module.training
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
    at = ", ".join(f"{k}={v}" for k, v in sizes.items())
    was = ", ".join(f"{k}={traced[k]}" for k in sizes if k in traced)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            got = _leaves(module(*[t.clone() for t in tensors]))
    except InputError:  # the lowered module refuses these inputs: the user will see it on their own
        return False
    except Exception as error:  # noqa: BLE001 - it fails inside where the model runs: lowered wrong at these sizes
        if guarded and isinstance(error, RunError) and TRACED_READ in str(error):
            raise _Guarded from None
        raise TraceError(f"cannot lower {name} at {at} (traced at {was}): lowered there it fails where the model runs"
                         f" ({type(error).__name__}: {str(error)[:300]}); the model computes a size in Python from its"
                         " input's shape that the trace keeps at the traced value (an output size such as"
                         " interpolate(scale_factor=2) or size=2 * t); trace it at the sizes you run it at") from None
    finally:
        module.load_state_dict(saved)
        module.train(mode)
    wrong = _difference(got, want)
    if wrong is None:
        return True
    if _difference(_run(origin.model, call), want) is not None:  # nothing to compare with
        return _unchecked(name, sizes, "the model gives another output on each run")
    raise TraceError(f"cannot lower {name} at {at} (traced at {was}): lowered there it differs from the model run at"
                     f" those sizes ({wrong}); the model computes something in Python from its input's shape that the"
                     " trace keeps at the traced value (a slice, shift or output size such as x[:, t // 2:],"
                     " roll(x, t // 2) or interpolate(size=2 * t); a float written first, such as x * (1.0 / x.shape[0])"
                     " or 0.5 * t; len(x); math of a non-integer size, such as math.sqrt(t / 2)); trace it at the"
                     " sizes you run it at")
