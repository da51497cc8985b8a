"""The ``ncd`` command line: a thin layer over the public API.

Each sub-command lives beside the interpreter it drives and is imported only when used:
``ncd draw`` (``ncd.render.cli``), ``ncd gallery`` (``ncd.zoo.cli``), ``ncd trace``
(``ncd.torch.trace_cli``), ``ncd cost`` (``ncd.analysis.cli``), ``ncd source`` (below),
``ncd shard`` (``ncd.distributed.cli``), ``ncd decode`` (``ncd.inference.cli``), ``ncd io`` (``ncd.iomodel.cli``).
A module providing a command defines ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ncd.errors import InputError, NCDError, SizeError
from ncd.ir.diagram import Diagram

COMMANDS: dict[str, tuple[str, str]] = {
    "draw": ("ncd.render.cli", "draw a zoo model or a diagram JSON file to SVG, PNG, PDF, TikZ or HTML"),
    "gallery": ("ncd.zoo.cli", "render (and analyse) every gallery architecture into a folder"),
    "trace": ("ncd.torch.trace_cli", "turn a PyTorch model (module:factory) into a diagram"),
    "cost": ("ncd.analysis.cli", "print FLOPs, parameters and memory of a diagram"),
    "source": ("ncd.torch.source_cli", "print the generated PyTorch source of a diagram"),
    "shard": ("ncd.distributed.cli", "place axes on a device mesh; print per-rank costs and the collectives"),
    "decode": ("ncd.inference.cli", "prefill and per-token step costs, cache bytes per token of a causal model"),
    "io": ("ncd.iomodel.cli", "IO-aware costs on a memory hierarchy: transfers, memory and time per level"),
}


def parse_sizes(items: Sequence[str] | None) -> dict[str, int]:
    """``["m=512", "h=8"]`` (repeated ``--size`` options) -> ``{"m": 512, "h": 8}``."""
    sizes: dict[str, int] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip().isdigit():
            raise SizeError(f"--size {item!r} must look like name=whole-number, e.g. --size m=512")
        sizes[key.strip()] = int(value)
    return sizes


def load_diagram(target: str, sizes: dict[str, int] | None = None) -> Diagram:
    """A diagram from a JSON file, or a zoo model by name built with ``sizes`` (``ncd.zoo`` is imported only here)."""
    import os

    if os.path.exists(target) or target.endswith(".json"):
        from ncd.ir.serialize import load_json

        try:
            with open(target, encoding="utf-8") as handle:
                diagram = load_json(handle.read())
        except OSError as error:
            raise InputError(f"cannot read {target}: {error.strerror}") from None
        return diagram.bind(**sizes) if sizes else diagram
    import ncd.zoo

    models = ncd.zoo.MODELS
    if target not in models:
        raise InputError(f"{target!r} is neither a diagram JSON file nor a zoo model; zoo models: {', '.join(models)}")
    try:
        return models[target](**(sizes or {}))
    except TypeError as error:
        raise InputError(f"zoo model {target!r} does not accept sizes {sorted(sizes or {})}: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ncd", description="Neural circuit diagrams as software.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and error.name.startswith("ncd"):
                continue  # command not built yet
            raise
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except NCDError as error:
        print(f"ncd {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``ncd source mlp | head``): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
