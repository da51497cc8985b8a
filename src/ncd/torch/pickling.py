"""Pickling lowered modules: ``torch.save(module)`` / ``torch.load(..., weights_only=False)``, ``copy.deepcopy``.

A lowered module is an instance of a class compiled from generated source (:func:`ncd.torch.module.compile_source`),
whose module exists only in the process that lowered it.  Each generated class pickles as its source and its name
(:func:`reduce_generated`), and so do the functions the generated code made (the state_dict hooks that keep a
weight's declared axis order): their code is found again in the compiled source.  Loading compiles a source once per
process (:func:`namespace`), or finds the class itself while the module that defined it is loaded (``copy.deepcopy``).

>>> import io, ncd, torch
>>> m = ncd.Linear("m -> k h").to_torch(m=8, k=2, h=4)
>>> buffer = io.BytesIO()
>>> torch.save(m, buffer)
>>> _ = buffer.seek(0)
>>> x = torch.randn(3, 8)
>>> torch.equal(torch.load(buffer, weights_only=False)(x), m(x))
True
"""

from __future__ import annotations

import hashlib
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard

import torch

__all__ = ["mark", "namespace", "reduce_generated"]

#: the namespaces of sources compiled to load a pickle, by the hash of the source
_COMPILED: dict[str, dict[str, Any]] = {}
#: the instance attributes of an ``nn.Module`` that hold its parameters, buffers and submodules (no hooks)
_STATE = frozenset({"_parameters", "_buffers", "_modules"})


def mark(module: types.ModuleType, source: str, code: types.CodeType) -> None:
    """Make the ``nn.Module`` classes generated in ``module`` (from ``source``, compiled to ``code``) picklable."""
    namespace = vars(module)
    namespace["__ncd_source__"], namespace["__ncd_code__"] = source, code
    for value in list(namespace.values()):
        if isinstance(value, type) and issubclass(value, torch.nn.Module) and value.__module__ == module.__name__:
            value.ncd_class_source = source  # type: ignore[attr-defined]
            value.__reduce_ex__ = reduce_generated  # type: ignore[method-assign,assignment]


def namespace(source: str, module: str) -> dict[str, Any]:
    """The namespace of the generated ``module`` if it is loaded and compiled from ``source``, else ``source``
    compiled (once per process)."""
    from ncd.torch.module import compile_source

    loaded = sys.modules.get(module)
    if loaded is not None and vars(loaded).get("__ncd_source__") == source:
        return vars(loaded)
    digest = hashlib.sha256(source.encode()).hexdigest()
    if digest not in _COMPILED:
        _COMPILED[digest] = compile_source(source)
    return _COMPILED[digest]


def reduce_generated(self: torch.nn.Module, protocol: Any = None) -> tuple[Any, ...]:
    """Pickle an instance of a generated class as (its source, its module, its class name, whether it is the class
    reporting errors as ``ncd.RunError``) and its attributes, the generated functions among them by reference."""
    cls = type(self)
    reporting = bool(vars(cls).get("ncd_reporting", False))
    name = cls.__bases__[0].__name__ if reporting else cls.__name__
    return _restore, (cls.ncd_class_source, cls.__module__, name, reporting), _portable_state(self, self)  # type: ignore[attr-defined]


def _restore(source: str, module: str, name: str, reporting: bool) -> torch.nn.Module:
    """An empty instance of the generated class ``name`` (pickle then sets its attributes)."""
    from ncd.torch.module import reporting_class

    cls = namespace(source, module)[name]
    if reporting:
        cls = reporting_class(cls)
    return cls.__new__(cls)  # type: ignore[no-any-return]


def _generated(fn: object) -> TypeGuard[types.FunctionType]:
    return isinstance(fn, types.FunctionType) and "__ncd_code__" in fn.__globals__


def _portable(value: Any, owner: torch.nn.Module, copy: torch.nn.Module) -> Any:
    """``value`` (an attribute of the module ``owner``, pickled as ``copy``) with the functions of generated code, bare
    or wrapped by torch's hook registry, made picklable."""
    if _generated(value):
        return _GeneratedFunction(value)
    hook = getattr(value, "hook", None) if type(value).__name__ == "_WrappedHook" else None
    if _generated(hook):
        wrapped = object.__new__(type(value))
        vars(wrapped).update(vars(value), hook=_GeneratedFunction(hook))
        if getattr(value, "with_module", False) and value.module() is owner:
            wrapped.module = weakref.ref(copy)  # the hook is called with the module: the one pickled
        return wrapped
    if isinstance(value, torch.nn.Module) and not hasattr(type(value), "ncd_class_source") and _holds_generated(value):
        proxy = object.__new__(type(value))  # a module of torch with hooks of generated code: pickled as a copy
        vars(proxy).update(_portable_state(value, proxy))
        return proxy
    return value


def _portable_state(module: torch.nn.Module, copy: torch.nn.Module) -> dict[str, Any]:
    """The attributes of ``module`` (pickled as ``copy``) made picklable."""
    state = dict(vars(module))
    for key, value in state.items():
        if isinstance(value, dict) and (key == "_modules" or key not in _STATE):
            state[key] = type(value)((k, _portable(v, module, copy)) for k, v in value.items())
    return state


def _holds_generated(module: torch.nn.Module) -> bool:
    """Whether a hook of ``module`` or of a submodule is a function of generated code."""
    for sub in module.modules():
        for key, value in vars(sub).items():
            if key not in _STATE and isinstance(value, dict):
                if any(_generated(v) or _generated(getattr(v, "hook", None)) for v in value.values()):
                    return True
    return False


class _GeneratedFunction:
    """A function of generated code, pickled as its source and the place of its code in the compiled source."""

    def __init__(self, fn: types.FunctionType) -> None:
        self.fn = fn

    def __reduce__(self) -> tuple[Callable[..., types.FunctionType], tuple[Any, ...]]:
        fn = self.fn
        if fn.__closure__ or fn.__kwdefaults__:
            raise TypeError(f"cannot pickle the generated function {fn.__qualname__}: it closes over local values")
        index = next(i for i, code in enumerate(_codes(fn.__globals__["__ncd_code__"])) if code is fn.__code__)
        return _function, (fn.__globals__["__ncd_source__"], fn.__globals__["__name__"], index, fn.__defaults__)


def _function(source: str, module: str, index: int, defaults: tuple[Any, ...] | None) -> types.FunctionType:
    space = namespace(source, module)
    code = next(c for i, c in enumerate(_codes(space["__ncd_code__"])) if i == index)
    return types.FunctionType(code, space, code.co_name, defaults)


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """Every code object of a compiled source, depth first (a function's place in the source)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)
