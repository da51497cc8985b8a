"""A traced model's lowered module called as the model was: its inputs by the names the traced call gave them.

The lowered module takes the diagram's inputs by position (``lowered(input_ids, attention_mask)``); called with
keywords (``lowered(**inputs)``, as the model was traced), a forward pre-hook (:class:`Keywords`) puts each keyword's
tensors at its inputs' positions and the positional arguments at the others, in order.  A keyword the traced call did
not pass, or one holding another number of tensors, raises an :class:`~ncd.errors.InputError` naming the inputs.
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.errors import InputError, user_stacklevel


class Keywords:
    """The forward pre-hook (``with_kwargs``) of a traced model's lowered module (a class: it pickles)."""

    def __init__(self, model: str, slots: dict[str, tuple[int, ...]], held: dict[str, list[Any]], count: int) -> None:
        self.model = model
        self.slots = slots  # an argument's name -> the positions of the inputs its tensors are
        self.held = held  # an argument's name -> what else it held when traced (a flag, a number: computed with it)
        self.count = count

    def _inputs(self) -> str:
        return ", ".join(self.slots) if self.slots else "not known: the traced call passed an object holding tensors"

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if not kwargs:
            return None
        if not self.slots:
            raise InputError(f"the lowered {self.model} takes its {self.count} input tensor(s) by position, not by"
                             f" keyword ({', '.join(kwargs)})")
        placed: list[Any] = [None] * self.count
        given = [False] * self.count
        for name, value in kwargs.items():
            where = self.slots.get(name)
            if where is None:
                raise InputError(f"the lowered {self.model} takes no input {name!r}; its inputs, by position or by"
                                 f" name: {self._inputs()}")
            leaves = torch.utils._pytree.tree_leaves(value)
            tensors = [v for v in leaves if isinstance(v, torch.Tensor)]
            others = [v for v in leaves if not isinstance(v, torch.Tensor)]
            if not _same(others, self.held[name]):
                raise InputError(f"the lowered {self.model} computes the traced call, made with {name}="
                                 f"{_said(self.held[name], len(where))}; given {name}="
                                 f"{_said(others) if others or not tensors else 'a tensor'} (trace the model called so)")
            if len(tensors) != len(where):
                raise InputError(f"input {name!r} of the lowered {self.model} holds {len(where)} tensor(s) as traced,"
                                 f" but {len(tensors)} were given")
            for i, t in zip(where, tensors):
                placed[i], given[i] = t, True
        rest = list(args)
        if len(rest) != given.count(False):
            missing = [name for name, where in self.slots.items() if not any(given[i] for i in where)]
            raise InputError(f"the lowered {self.model} takes {self.count} input tensor(s) ({self._inputs()}): given"
                             f" {len(rest)} by position and {', '.join(kwargs)} by name"
                             + (f"; not given: {', '.join(missing)}" if len(rest) < given.count(False) else ""))
        for i in range(self.count):
            if not given[i]:
                placed[i] = rest.pop(0)
        return tuple(placed), {}


def _same(given: list[Any], held: list[Any]) -> bool:
    try:
        return len(given) == len(held) and all(a is b or bool(a == b) for a, b in zip(given, held))
    except Exception:  # noqa: BLE001 - values that do not compare: not the same
        return False


def _said(values: list[Any], tensors: int = 0) -> str:
    if not values and tensors:  # an argument that held only tensors (given None instead: "made with mask=[]")
        return "a tensor" if tensors == 1 else f"{tensors} tensors"
    return repr(values[0])[:40] if len(values) == 1 else repr(values)[:60]


def keywords(module: torch.nn.Module, model: str, origin: Any, count: int) -> None:
    """Let ``module`` (lowered from the trace of ``model`` called as ``origin`` says, ``count`` input tensors) take its
    inputs by name too."""
    from ncd.trace.capture import input_names
    from ncd.trace.other_sizes import _Slot

    slots: dict[str, tuple[int, ...]] = {}
    held: dict[str, list[Any]] = {}
    call_args, call_kwargs = getattr(origin, "args", ()), getattr(origin, "kwargs", None)
    traced = getattr(origin, "model", None)
    if call_kwargs is not None and traced is not None:
        names = input_names(traced, len(call_args), call_kwargs)
        for name, value in zip(names, (*call_args, *call_kwargs.values())):
            leaves = torch.utils._pytree.tree_leaves(value, is_leaf=lambda v: isinstance(v, _Slot))
            slots[name] = tuple(v.index for v in leaves if isinstance(v, _Slot))
            held[name] = [v for v in leaves if not isinstance(v, _Slot)]
    module.register_forward_pre_hook(Keywords(model, slots, held, count), with_kwargs=True, prepend=True)


class TracedMode:
    """The forward pre-hook of a traced model's lowered module that warns, once, when it runs in the other mode than
    the model was traced in (a class: it pickles): the lowered module computes the traced call, so ``.eval()`` on a
    module traced in training mode still normalises by the batch's statistics and drops what the model dropped, and
    ``.train()`` on one traced in eval mode drops nothing — except in layers lowered as torch modules that read their
    own mode (a batch norm traced in eval mode, an ``nn.BatchNorm``, then uses the batch's statistics): it computes
    neither, and the warning says so (it said "computes the model as traced")."""

    def __init__(self, model: str, training: bool) -> None:
        self.model, self.training, self.said = model, training, False

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if module.training != self.training and not self.said:
            import warnings

            self.said = True
            traced, now = ("training", "eval") if self.training else ("eval", "training")
            warnings.warn(f"the lowered {self.model} runs in {now} mode, but it was traced in {traced} mode: it"
                          f" computes the traced call (dropout and any other branch on self.training as then), except"
                          f" the layers lowered as torch modules that read their own mode (a batch norm traced in eval"
                          f" mode is an nn.BatchNorm: in training mode it normalises by the batch's statistics and"
                          f" updates its running ones), so it computes neither the model in {now} mode nor the traced"
                          f" call; trace the model in {now} mode (model.{'eval' if now == 'eval' else 'train'}()) to"
                          " compute that", RuntimeWarning, stacklevel=4)


class TracedTypes:
    """The forward pre-hook of a traced model's lowered module that warns, once, when a floating-point input comes in
    another type than the model was traced on (a class: it pickles).  The diagram computes what the model computed in
    the traced type: a branch the model's Python took on ``x.dtype`` (``if x.dtype == torch.float16: ...``), a number
    it made of it (``torch.finfo(x.dtype).eps``) and each cast it recorded hold the traced type's, so a lowered module
    converted to another type (``lowered.double()``, or a module without parameters given float64 inputs) computes
    the traced call in that type, which the model run in that type may not (a branch on float16 gave 1.4 off, an
    ``eps`` 0.02 off float64's, with no word).  ``traced``: ``(position, dtype name)`` of each floating-point input."""

    def __init__(self, model: str, traced: tuple[tuple[int, str], ...]) -> None:
        self.model, self.traced, self.said = model, traced, False

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self.said:
            return
        for i, kind in self.traced:
            given = args[i] if i < len(args) else None
            if isinstance(given, torch.Tensor) and given.is_floating_point() and str(given.dtype) != kind:
                import warnings

                self.said = True
                warnings.warn(f"the lowered {self.model} is given input {i} in {given.dtype}, but the model was traced"
                              f" on {kind}: it computes the traced call in {given.dtype} (the branches the model took"
                              f" on the type it was given, numbers it made of it such as torch.finfo(x.dtype).eps, and"
                              f" its casts, as in {kind.removeprefix('torch.')}), which the model run in"
                              f" {given.dtype} may not compute; trace the model on {given.dtype} inputs to compute that",
                              RuntimeWarning, stacklevel=user_stacklevel())
                return
