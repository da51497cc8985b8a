"""``ncd trace module:factory --input 2x8:int [...] [-o out.json|.svg|.png]``: a model's diagram.

``factory`` is called without arguments and must return an ``nn.Module`` (it is put in
evaluation mode).  Each ``--input`` is a shape such as ``2x3x224x224`` (random floats) or
``2x8:int<V>`` (random indices below ``V``, default 100); ``--axes`` names their axes
(``--axes "b t"``, one per input).  Without ``-o`` the diagram's type and opaque boxes are
printed.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import warnings
from typing import Any

from ncd.errors import TraceError

__all__ = ["add_arguments", "run", "parse_input", "load_factory"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the model as module:factory (a callable returning an nn.Module)")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="SHAPE",
                        help="an input shape such as 2x3x32x32 or 2x8:int100 (repeat for several inputs)")
    parser.add_argument("--axes", "-a", action="append", default=[], metavar="NAMES",
                        help="axis names of an input, such as 'b t' (repeat, one per input)")
    parser.add_argument("--output", "-o", help="write the diagram: .json, or a drawing (.svg, .png, .pdf, .tex)")


def parse_input(text: str, seed: int = 0) -> Any:
    """A random tensor from ``2x8`` (floats) or ``2x8:int100`` (indices below 100)."""
    import torch

    shape_text, _, kind = text.partition(":")
    try:
        shape = tuple(int(s) for s in shape_text.lower().split("x") if s)
    except ValueError:
        raise TraceError(f"input {text!r}: a shape is sizes joined by 'x', such as 2x3x32x32") from None
    from ncd.limits import byte_text, limits

    entries = 1
    for n in shape:
        entries *= n
    if not shape or any(n <= 0 for n in shape) or entries * 8 > limits().memory:
        raise TraceError(f"input {text!r}: a shape of positive sizes whose tensor fits the memory budget of"
                         f" {byte_text(limits().memory)} (ncd.limits)")
    generator = torch.Generator().manual_seed(seed)
    if kind.startswith("int"):
        if not (kind[3:] or "100").isdigit() or not 0 < int(kind[3:] or 100) <= limits().axis_size:
            raise TraceError(f"input {text!r}: ':int<V>' needs a positive whole number V, such as :int100")
        high = int(kind[3:] or 100)
        return torch.randint(0, high, shape, generator=generator)
    if kind:
        raise TraceError(f"input {text!r}: the only kind is ':int<V>' (indices below V)")
    return torch.randn(shape, generator=generator)


def load_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise TraceError(f"model {spec!r} must be given as module:factory, e.g. mypackage.models:tiny_gpt")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise TraceError(f"cannot import {module_name!r}: {error}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TraceError(f"{module_name} has no callable {attr!r}")
    try:
        inspect.signature(factory).bind()
    except TypeError as error:  # (a class or function that needs arguments: torch.nn:Linear)
        raise TraceError(f"{spec} cannot be called without arguments ({error}); name a function that takes none and"
                         " returns the model, such as def tiny(): return MyModel(width=64)") from None
    except ValueError:  # no signature to read (a builtin): called as it is
        pass
    try:
        return factory()
    except Exception as error:  # noqa: BLE001 - the user's factory failed: its error, named (not one of ncd's)
        raise TraceError(f"{spec}() raised {type(error).__name__}: {error}") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from ncd.trace import trace

    model = load_factory(args.model)
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"{args.model} returned {type(model).__name__}, not an nn.Module")
    model.eval()
    if not args.input:
        raise TraceError("give at least one --input shape, such as --input 2x8:int100")
    inputs = [parse_input(text, seed=k) for k, text in enumerate(args.input)]
    axes = list(args.axes) + [None] * (len(inputs) - len(args.axes))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diagram = trace(model, *inputs, axes=axes if args.axes else None)
    for w in caught:
        print(f"ncd trace: {w.message}", file=sys.stderr)
    if args.output:
        if args.output.endswith(".json"):
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(diagram.as_block().to_json())
        else:
            from ncd.render import draw

            draw(diagram, args.output)
        print(f"wrote {args.output}")
    else:
        print(f"{diagram.name}: {diagram.dom} -> {diagram.cod}")
        print(f"opaque boxes: {diagram.opaque_count}")
    return 0
