"""The ``ncd`` command line: a thin layer over the public API.

Each sub-command lives beside the interpreter it drives and is imported only when used:
``ncd draw`` (``ncd.render.cli``), ``ncd gallery`` (``ncd.zoo.cli``), ``ncd trace``
(``ncd.torch.trace_cli``), ``ncd cost`` (``ncd.analysis.cli``), ``ncd source`` (below).
A module providing a command defines ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ncd.errors import NCDError

COMMANDS: dict[str, tuple[str, str]] = {
    "draw": ("ncd.render.cli", "draw a zoo model or a diagram JSON file to SVG, PNG, PDF, TikZ or HTML"),
    "gallery": ("ncd.zoo.cli", "render (and analyse) every gallery architecture into a folder"),
    "trace": ("ncd.torch.trace_cli", "turn a PyTorch model (module:factory) into a diagram"),
    "cost": ("ncd.analysis.cli", "print FLOPs, parameters and memory of a diagram"),
    "source": ("ncd.torch.source_cli", "print the generated PyTorch source of a diagram"),
}


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


if __name__ == "__main__":
    sys.exit(main())
