"""Module methods called by another module: a frame of the module stack, as a forward call is.

A model may call a submodule through a method of its own instead of ``forward`` (encodec's residual quantizer calls
``layer.encode(x)`` and ``layer.decode(codes)`` on each of its quantizers): no forward hook sees those calls, so their
operations were recorded in the caller's frame and drawn unrolled there, one box each.  While the model is recorded,
:func:`methods_framed` wraps the public methods of the model's own classes (not torch's): a call of one on a module of
the model, from outside that module (its caller's frame is another module's), pushes ``(path, "Class.method")`` onto
the recording's module stack, so the calls become a block titled ``layers.3: EncodecVectorQuantization.encode``, and
equal blocks of a module list are wired once (:func:`ncd.trace.wiring_fold.realise`).  Only the drawing's grouping changes:
what is recorded, and so computed, is the same.  A method a module calls on itself stays in its own frame.

The class part names the method, so no idiom that recognises a module by its class (:mod:`ncd.trace.module_idioms`)
reads a method's operations as the module's forward.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import types
from collections.abc import Iterator
from typing import Any

__all__ = ["methods_framed"]

#: methods never framed: the forward (its hooks frame it), and what a module's machinery calls
_SKIPPED = frozenset({"forward", "extra_repr", "reset_parameters", "train", "eval", "state_dict", "load_state_dict",
                      "named_modules", "modules", "parameters", "named_parameters", "buffers", "named_buffers",
                      "children", "named_children", "apply", "to", "cpu", "cuda", "type", "float", "double", "half",
                      "bfloat16", "zero_grad", "requires_grad_", "register_buffer", "register_parameter",
                      "add_module", "get_submodule", "get_parameter", "get_buffer"})

#: code flags of functions whose body runs after they return (generators, coroutines): never framed
_LAZY = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE


def _framed(name: str, function: types.FunctionType, rec: Any) -> Any:
    """``function`` (a method ``name``) wrapped: called on a module of the model from another module's frame, it runs
    in a frame ``(path, "Class.method")`` of ``rec.stack``."""
    paths, stack = rec.paths, rec.stack

    @functools.wraps(function)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        path = paths.get(id(self))
        if path is None or id(self) in rec.shared_paths or (stack and stack[-1][0] == path):
            return function(self, *args, **kwargs)
        stack.append((path, f"{type(self).__name__}.{name}"))
        depth = len(stack)
        try:
            return function(self, *args, **kwargs)
        finally:
            if len(stack) >= depth:  # (balanced by every forward hook inside)
                del stack[depth - 1:]

    return method


def _methods(classes: list[type]) -> list[tuple[type, str, types.FunctionType]]:
    """The public methods the model's own classes define (their own and their bases', up to torch's classes): each
    ``(class defining it, name, function)`` once."""
    import torch

    found: dict[tuple[int, str], tuple[type, str, types.FunctionType]] = {}
    for cls in classes:
        for c in cls.__mro__:
            if c is torch.nn.Module or c is object or _generic(c.__module__):
                continue
            for name, value in vars(c).items():
                if (type(value) is types.FunctionType and not name.startswith("_") and name not in _SKIPPED
                        and not value.__code__.co_flags & _LAZY and (id(c), name) not in found):
                    found[(id(c), name)] = (c, name, value)
    return list(found.values())


def _generic(module: str) -> bool:
    """Whether a class of this module is machinery, not a model's layer: torch's, ncd's, and a library's base classes
    (transformers' ``PreTrainedModel`` and mixins, outside ``transformers.models``): each has hundreds of methods and
    of subclasses, and setting a class attribute walks every subclass (T5's trace took ~7 % longer)."""
    top = module.split(".", 1)[0]
    return top in ("torch", "ncd", "builtins") or (top == "transformers" and not module.startswith("transformers.models."))


@contextlib.contextmanager
def methods_framed(rec: Any) -> Iterator[None]:
    """While recording: the public methods of the model's classes frame their calls from other modules
    (:func:`_framed`); put back after."""
    classes = list({id(type(m)): type(m) for p, m in rec.walk.modules if p}.values())
    patched = []
    try:
        for c, name, function in _methods(classes):
            try:
                setattr(c, name, _framed(name, function, rec))
            except (AttributeError, TypeError):  # (a class that refuses attributes: left as it is)
                continue
            patched.append((c, name, function))
        yield
    finally:
        for c, name, function in reversed(patched):
            setattr(c, name, function)
