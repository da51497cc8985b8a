"""Compile generated source into ``nn.Module``\\ s, and make example inputs.

The module returned by :func:`to_torch` is an instance of the generated top class; its
source is registered with ``linecache`` so tracebacks show the generated lines.  A forward
pre-hook checks input shapes against the diagram's domain and raises
:class:`~ncd.errors.InputError` naming the axes and sizes.  A lowered module pickles
(``torch.save``; :mod:`ncd.torch.pickling`).
"""

from __future__ import annotations

import itertools
import linecache
import sys
import types
from typing import Any

import torch

from ncd.errors import InputError, NCDError
from ncd.ir.axes import Type
from ncd.ir.collector import no_collector
from ncd.ir.diagram import Diagram, check_option_names, defaults_of
from ncd.ir.size import evaluate
from ncd.torch.codegen import NamedSizes, bind_all, lower
from ncd.torch.pickling import mark
from ncd.torch.read_back import guard, restore
from ncd.torch.run_errors import explain

__all__ = ["to_torch", "example_inputs", "compile_source"]

_counter = itertools.count()


def compile_source(source: str, name: str = "diagram") -> dict[str, Any]:
    """Execute generated source in a fresh module (registered for tracebacks, and in ``sys.modules``:
    ``torch.compile`` imports the module of the code it inlines).  Its classes pickle (:mod:`ncd.torch.pickling`)."""
    number = next(_counter)
    filename = f"<ncd-generated {name} #{number}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(f"ncd_generated_{name}_{number}")
    module.__file__ = filename
    sys.modules[module.__name__] = module
    namespace: dict[str, Any] = vars(module)
    code = compile(source, filename, "exec")
    exec(code, namespace)  # noqa: S102 - our own generated code
    mark(module, source, code)
    return namespace


def to_torch(diagram: Diagram, /, *, check_inputs: bool = True, **sizes: int) -> torch.nn.Module:
    """Lower ``diagram`` to an ``nn.Module`` whose forward takes one tensor per input segment.

    Extra leading batch dimensions are accepted on every input.

    >>> import ncd, torch
    >>> m = ncd.Linear("m -> k h").to_torch(m=8, k=2, h=4)
    >>> m(torch.randn(5, 8)).shape
    torch.Size([5, 2, 4])
    """
    check_option_names(diagram, "to_torch", {"check_inputs": check_inputs}, defaults_of(diagram))
    guard(diagram, sizes, "to_torch")  # a traced model's diagram read back: its other sizes are not checked
    with no_collector():  # lowering and building the modules allocate many acyclic records (ncd.ir.collector)
        bound = bind_all(diagram, sizes)
        program = lower(bound, NamedSizes.of(diagram, sizes))  # produced once: printed, compiled, kept on the module
        source = program.to_source()
        namespace = compile_source(source)
        module = reporting_class(namespace[program.top.name])()
    vars(module).update(ncd_diagram=bound, ncd_program=program, ncd_source=source)  # plain attributes
    if check_inputs:
        module.register_forward_pre_hook(_checker(bound.dom), with_kwargs=True)
    restore(diagram, module)  # a traced model's diagram read back: its mode and unread parameters
    return module


def reporting_class(cls: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """The generated top class, whose calls re-raise torch's errors as :class:`~ncd.errors.RunError` naming the
    generated line that failed (the original error is its ``__cause__``); one per generated class."""
    made: type[torch.nn.Module] | None = vars(cls).get("ncd_reporting_class")
    if made is None:
        made = _reporting(cls)
        cls.ncd_reporting_class = made  # type: ignore[attr-defined]
    return made


def _reporting(cls: type[torch.nn.Module]) -> type[torch.nn.Module]:

    def __call__(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        try:
            return torch.nn.Module.__call__(self, *args, **kwargs)
        except NCDError:
            raise
        except (RuntimeError, ValueError, IndexError, ArithmeticError) as error:
            raise explain(self, args, error, cls.__name__) from error

    return type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__, "ncd_reporting": True,
                                       "__qualname__": cls.__qualname__, "__doc__": cls.__doc__})


def _checker(dom: Type) -> Any:
    return _InputCheck(str(dom), [tuple(evaluate(a.size) for a in seg) for seg in dom],
                       [" ".join(a.name for a in seg) for seg in dom], [seg.dtype for seg in dom])


class _InputCheck:
    """The forward pre-hook checking a lowered module's inputs against its diagram's domain (a class: it pickles)."""

    #: inputs must have exactly the domain's axes (a traced model's lowered module: the model reads a leading axis
    #: more otherwise — a mean over the batch, a flatten —, while a diagram would broadcast over it)
    exact = False

    def __init__(self, dom: str, expected: list[tuple[int, ...]], names: list[str], dtypes: list[str]) -> None:
        self.dom, self.expected, self.names, self.dtypes = dom, expected, names, dtypes

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        """``kwargs``: the call's keywords (``None``: a hook registered without them, as modules pickled before)."""
        dom, expected, names, dtypes = self.dom, self.expected, self.names, self.dtypes
        if kwargs:  # the forward's own parameter names (``lowered(x0=a, x1=b)``): put at their positions
            args = _by_name(module, args, kwargs, dom)
        if len(args) != len(expected):
            raise InputError(f"the diagram takes {len(expected)} tensor(s) of type '{dom}', but {len(args)} were given")
        for j, (x, shape) in enumerate(zip(args, expected)):
            if not isinstance(x, torch.Tensor):
                raise InputError(f"input {j} ('{names[j]}') must be a tensor, not {type(x).__name__}")
            n = len(shape)
            got = tuple(x.shape[x.dim() - n :]) if x.dim() >= n else tuple(x.shape)
            if x.dim() < n or got != shape:
                want = ", ".join(f"{a}={s}" for a, s in zip(names[j].split(), shape))
                raise InputError(
                    f"input {j} should end in axes '{names[j]}' of sizes ({want}), but has shape {tuple(x.shape)}"
                )
            if self.exact and x.dim() != n:
                raise InputError(f"input {j} ('{names[j]}') has shape {tuple(x.shape)}, {x.dim() - n} axis(es) more than"
                                 " the traced model's input: the lowered module computes the traced call, and the model"
                                 " may read a leading axis otherwise than as copies (a mean over the batch, a flatten);"
                                 f" call it on {n}-axis inputs")
            if dtypes[j] == "index" and (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool):
                raise InputError(f"input {j} ('{names[j]}') holds indices and must be an integer tensor, not {x.dtype}")
        # int8/int16/uint8 ids: the same indices as int64 for the boxes of a diagram; a traced model's lowered module
        # (``exact``) takes them as the model does (its casts are boxes: ``x // 3`` of uint8 ids is uint8, as the model's)
        narrow = [] if self.exact else [j for j, x in enumerate(args)
                                        if dtypes[j] == "index" and x.dtype not in (torch.int64, torch.int32)]
        if narrow:
            args = tuple(x.long() if j in narrow else x for j, x in enumerate(args))
        elif not kwargs:
            return None
        return args if kwargs is None else (args, {})


def _by_name(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], dom: str) -> tuple[Any, ...]:
    """The inputs of a call of ``module`` given (partly) by its forward's parameter names, in order."""
    import inspect

    params = [p.name for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    placed: list[Any] = list(args) + [None] * max(0, len(params) - len(args))
    for name, value in kwargs.items():
        if name not in params:
            raise InputError(f"the diagram takes no input {name!r}; its inputs, by position or by name:"
                             f" {', '.join(params)} (of type '{dom}')")
        j = params.index(name)
        if j < len(args):
            raise InputError(f"input {j} ({name!r}) of the diagram was given twice: by position and by name")
        placed[j] = value
    missing = [params[j] for j in range(len(args), len(placed)) if placed[j] is None]
    if missing:
        raise InputError(f"the diagram takes {len(params)} tensor(s) of type '{dom}' ({', '.join(params)}), but"
                         f" {', '.join(missing)} {'was' if len(missing) == 1 else 'were'} not given")
    return tuple(placed)


def example_inputs(diagram: Diagram, /, *batch: int, seed: int | None = 0, **sizes: int) -> tuple[torch.Tensor, ...]:
    """Random tensors matching ``diagram.dom``, with optional leading ``batch`` sizes.

    >>> import ncd
    >>> [tuple(t.shape) for t in ncd.Einsum("y k, x k -> y x").example_inputs(y=2, x=3, k=4)]
    [(2, 4), (3, 4)]
    """
    check_option_names(diagram, "example_inputs", {"seed": seed}, defaults_of(diagram))
    for b in batch:
        if isinstance(b, bool) or not isinstance(b, int) or b < 0:
            raise InputError(f"example_inputs: the leading batch sizes {batch} must be whole numbers ≥ 0, not {b!r}")
    bound = bind_all(diagram, sizes)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    tensors = []
    for seg in bound.dom:
        shape = tuple(batch) + tuple(evaluate(a.size, what=f"axis {a.name}") for a in seg)
        if seg.dtype == "index":
            high = evaluate(seg.range, what="index range")
            tensors.append(torch.randint(0, high, shape, generator=generator))
        elif seg.dtype == "bool":
            tensors.append(torch.rand(shape, generator=generator) > 0.2)
        elif seg.dtype == "complex":
            tensors.append(torch.randn(shape, generator=generator, dtype=torch.complex64))
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tuple(tensors)
