"""Experts read densely, decided at their first call in the recording rather than by a run of the model before it.

:func:`~ncd.trace.moe_dense.dense_experts` proves an experts module equal to its dense reading on the arguments the
model gives it and on random ones.  It used to read those arguments by running the whole model once before the
capture (muse_spark: ~16 ms of a ~150 ms trace).  When the capture records the model on real values, the arguments
reach the module in that recording: at the module's first call, the recording is paused (its operations are not
recorded, as a custom Function's proof is not), the same check (:attr:`~ncd.trace.moe_dense.Reading.check`, given
copies of the arguments) decides, and the call — and every later one — runs the dense reading if it agrees, else the
module's own method.  The decision outlives a recording attempt that fails and is run again.

Where a module is first called outside a recording on real values (the recording failed before reaching it and
``torch.export`` captures on fake tensors), nothing can be checked there: :class:`Undecided` is raised, and the caller
(:func:`ncd.trace`) captures again with the arguments read by a run of the model first, as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ncd.trace.moe_dense import Reading

__all__ = ["Undecided", "decided_at_first_call", "decided_in", "recorded_on_values"]


class Undecided(BaseException):
    """An experts module first called where its check cannot run (not in a recording on real values).

    A ``BaseException``: the capture's fallbacks (``except Exception``) must not read it as the model failing."""


#: the recordings running, innermost last (:func:`decided_in`)
_RECORDINGS: list[Any] = []


@contextlib.contextmanager
def decided_in(rec: Any) -> Iterator[None]:
    """While ``rec`` (a :class:`~ncd.trace.recording._Recording`) records: experts modules first called are decided in
    it (:func:`ncd.trace.record._record` enters it)."""
    _RECORDINGS.append(rec)
    try:
        yield
    finally:
        _RECORDINGS.pop()


def recorded_on_values(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], capture: str) -> bool:
    """Whether :func:`~ncd.trace.capture.capture` records ``model`` on real values first (not on the meta device, not
    by ``torch.export``): where its experts modules can be decided at their first call."""
    from ncd.trace.capture import recorder_works
    from ncd.trace.record import _on_meta

    return capture == "dispatch" and recorder_works() and not _on_meta(model, args, kwargs)


@contextlib.contextmanager
def decided_at_first_call(readings: dict[str, Reading]) -> Iterator[list[str]]:
    """Within the block, each reading's module decides at the first call of its watched method (in a recording on
    real values) whether it runs its dense reading; yields the paths of those that do, as they are decided."""
    swapped: list[str] = []
    installed: list[tuple[torch.nn.Module, dict[str, Any]]] = []
    try:
        for path, reading in readings.items():
            module = reading.module
            names = list(dict.fromkeys([reading.method, *reading.swap]))
            before = {name: vars(module).get(name) for name in names}
            own = {name: getattr(module, name) for name in names}  # what the model runs, an instance's own first
            installed.append((module, before))
            decided: list[bool] = []
            for name in names:
                vars(module)[name] = _deciding(path, reading, name, own, before, decided, swapped)
        yield swapped
    finally:
        for module, before in installed:
            _put_back(module, before)


def _put_back(module: torch.nn.Module, before: dict[str, Any]) -> None:
    for name, value in before.items():
        if value is None:
            vars(module).pop(name, None)
        else:
            vars(module)[name] = value


def _deciding(path: str, reading: Reading, name: str, own: dict[str, Callable[..., Any]], before: dict[str, Any],
              decided: list[bool], swapped: list[str]) -> Callable[..., Any]:
    """The module's method ``name`` while the block runs: the dense reading's or its own, as decided (at the first
    call of the watched method); before that, its own."""
    def call(*args: Any, **kwargs: Any) -> Any:
        if not decided and name == reading.method:
            later: list[Any] = []  # the module's own result on these arguments, where the check left that to here
            decided.append(_decide(path, reading, before, args, kwargs, later))
            if decided[0]:
                swapped.append(path)
                if later:  # the dense reading runs on them recorded, and is compared with the module's own result
                    try:
                        out = reading.swap[name](*args, **kwargs)
                    except BaseException:  # the recording stops here (over its budget, …): compared unrecorded now,
                        if not _recomputed_agrees(reading.swap[name], args, kwargs, later[0]):  # as the next attempt
                            decided[0] = False                                 # takes the decision as it stands
                            swapped.remove(path)
                        raise
                    _confirm(path, out, later[0])
                    return out
        return (reading.swap[name] if decided and decided[0] and name in reading.swap else own[name])(*args, **kwargs)

    return call


def _decide(path: str, reading: Reading, before: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
            later: list[Any] | None = None) -> bool:
    """The reading's check on copies of this call's arguments, run unrecorded inside the recording (the module's own
    methods bound back meanwhile: the check runs them), outside autocast and without gradients, as a check run after
    a run of the model would.  ``later`` (where autocast is off, so the dense reading recorded next computes as the
    check would): the check may leave the dense reading on these arguments to the recording, and put the module's own
    result on them in it (:meth:`~ncd.trace.moe_dense.Reading.agrees`), for :func:`_confirm`."""
    from ncd.trace.functions import _unrecorded

    rec = _RECORDINGS[-1] if _RECORDINGS else None
    if rec is None or rec.meta:
        raise Undecided(f"the experts at {path!r} are first called outside a recording on real values")
    rec.plain = False  # (undecided on meta: not switched to it, :mod:`ncd.trace.switch`)
    if rec.pending:  # writes through views compared before the check reads the arguments
        rec.check_writes()
    module = reading.module
    mine = {name: vars(module).get(name) for name in before}
    rec.inside += 1
    _put_back(module, before)
    try:
        autocast = _no_autocast(args, kwargs)
        with _unrecorded(), torch.no_grad(), autocast:
            call = tuple(v.detach().clone() if isinstance(v, torch.Tensor) else v for v in [*args, *kwargs.values()])
            return reading.agrees(call, later=later if isinstance(autocast, contextlib.nullcontext) else None)
    finally:
        _put_back(module, mine)
        rec.inside -= 1


def _confirm(path: str, out: Any, want: Any) -> None:
    """The dense reading's result ``out`` on the traced arguments, as recorded, is the module's own result ``want`` on
    them (compared unrecorded, as the check compares, :func:`~ncd.trace.moe_proof._agree`); else :class:`Undecided`:
    the recording is let go and the model captured again with its experts decided by a run of it first (the check
    then compares the two itself)."""
    from ncd.trace.functions import _unrecorded
    from ncd.trace.moe_proof import _agree

    rec = _RECORDINGS[-1]
    rec.inside += 1
    try:
        with _unrecorded(), torch.no_grad():
            same = _agree(out.detach().clone() if isinstance(out, torch.Tensor) else out, want)
    finally:
        rec.inside -= 1
    if not same:
        raise Undecided(f"the experts at {path!r} recorded their dense reading unlike their own forward")


def _recomputed_agrees(dense: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], want: Any) -> bool:
    """The dense reading run unrecorded on copies of the traced arguments equals the module's own result ``want`` on
    them (the comparison :func:`_confirm` makes, where the recording stopped before the reading's result)."""
    from ncd.trace.functions import _unrecorded
    from ncd.trace.moe_proof import _agree

    rec = _RECORDINGS[-1] if _RECORDINGS else None
    if rec is None:
        return False
    rec.inside += 1
    try:
        with _unrecorded(), torch.no_grad():
            copies = [v.detach().clone() if isinstance(v, torch.Tensor) else v for v in [*args, *kwargs.values()]]
            return _agree(dense(*copies[:len(args)], **dict(zip(kwargs, copies[len(args):]))), want)
    except Exception:  # noqa: BLE001 - not shown equal: not read densely
        return False
    finally:
        rec.inside -= 1


def _no_autocast(args: tuple[Any, ...], kwargs: dict[str, Any]) -> contextlib.AbstractContextManager[Any]:
    """Autocast off on the arguments' device where the model turned it on (the check computes as the model's own
    forward does outside it)."""
    device = next((v.device.type for v in [*args, *kwargs.values()] if isinstance(v, torch.Tensor)), "cpu")
    if torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()
