"""The ``ncd`` command line: a thin layer over the public API.

Each sub-command lives beside the interpreter it drives and is imported only when used:
``ncd draw`` (``ncd.render.cli``), ``ncd gallery`` (``ncd.zoo.cli``), ``ncd trace``
(``ncd.torch.trace_cli``), ``ncd cost`` (``ncd.torch.cost_cli``), ``ncd source`` (below),
``ncd shard`` (``ncd.distributed.cli``), ``ncd decode`` (``ncd.inference.cli``), ``ncd io`` (``ncd.iomodel.cli``).
A module providing a command defines ``add_arguments(parser)`` and ``run(args) -> int``;
adding a command is one line in :data:`COMMANDS`.

Any bad file or argument ends the command with one line on standard error and exit status 2,
never a traceback (``NCD_DEBUG=1`` shows the traceback of an unexpected error); everything
printed is stripped of control characters and terminal escapes, and torch's own logging is
kept quiet (``--verbose`` shows it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from ncd.errors import InputError, NCDError, SizeError, printable
from ncd.ir.diagram import Diagram, bind_known

COMMANDS: dict[str, tuple[str, str]] = {
    "draw": ("ncd.render.cli", "draw a zoo model or a diagram JSON file to SVG, PNG, PDF, TikZ or HTML"),
    "gallery": ("ncd.zoo.cli", "render (and analyse) every gallery architecture into a folder"),
    "trace": ("ncd.torch.trace_cli", "turn a PyTorch model (module:factory) into a diagram"),
    "cost": ("ncd.torch.cost_cli", "print FLOPs, parameters and memory of a diagram"),
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
        value = value.strip()
        if not sep or not key.strip() or not (value.isascii() and value.isdigit()) or len(value) > 18 or int(value) <= 0:
            raise SizeError(f"--size {item!r} must look like name=whole-number (positive), e.g. --size m=512")
        sizes[key.strip()] = int(value)
    return sizes


def read_text(path: str) -> str:
    """A UTF-8 text file's content, or :class:`~ncd.errors.InputError` (missing, unreadable, too large, not UTF-8)."""
    from ncd.limits import limits

    limit = limits().file_bytes
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > limit:
        raise InputError(f"{path} is larger than {limit} bytes (file_bytes in ncd.limits)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason})") from None


def load_diagram(target: str, sizes: dict[str, int] | None = None) -> Diagram:
    """A diagram from a JSON file, or a zoo model by name built with ``sizes`` (``ncd.zoo`` is imported only here)."""
    if os.path.exists(target) or target.endswith(".json"):
        from ncd.ir.serialize import load_json

        diagram = load_json(read_text(target))
        return bind_known(diagram, sizes) if sizes else diagram
    import ncd.zoo

    models = ncd.zoo.MODELS
    if target not in models:
        raise InputError(f"{target!r} is neither a diagram JSON file nor a zoo model; zoo models: {', '.join(models)}")
    try:
        return models[target](**(sizes or {}))
    except TypeError as error:
        raise InputError(f"zoo model {target!r} does not accept sizes {sorted(sizes or {})}: {error}") from None


class UsageError(NCDError):
    """A command line that does not parse (argparse's own message)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, no usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


#: SGR colour sequences (what ``rich`` writes to a terminal) are kept; every other escape is removed.
_KEEP = re.compile(r"(\x1b\[[0-9;]*m)")


class _Printable:
    """A text stream that passes only printable text on (and the colour codes of a terminal); with ``ours_only``,
    only lines ``ncd`` wrote (they start with ``ncd``): a failed trace makes torch print whole graphs."""

    def __init__(self, stream: TextIO, ours_only: bool = False) -> None:
        self._stream = stream
        self._ours_only = ours_only
        self._line = ""

    def write(self, text: str) -> int:
        written = len(text)
        if self._ours_only:
            self._line += text
            *lines, self._line = self._line.split("\n")
            text = "".join(line + "\n" for line in lines if line.startswith("ncd"))
        parts = _KEEP.split(text)
        self._stream.write("".join(p if k % 2 else printable(p) for k, p in enumerate(parts)))
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _guarded(verbose: bool) -> Iterator[None]:
    """Printable standard streams; torch's logging and warnings quiet unless ``verbose``."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Printable(out), _Printable(err, ours_only=not verbose)
    disabled = logging.root.manager.disable
    try:
        with warnings.catch_warnings():
            if not verbose:
                logging.disable(logging.CRITICAL)  # torch logs whole graphs when a trace fails
                warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
        sys.stdout, sys.stderr = out, err


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    parser = _Parser(prog="ncd", description="Neural circuit diagrams as software.")
    parser.add_argument("--verbose", action="store_true", help="show torch's logging and warnings")
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
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # before torch is imported by a command
    parser, modules = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(f"ncd: error: {error}", file=sys.stderr)
        return 2
    command = args.command
    with _guarded(args.verbose):
        try:
            return int(modules[command].run(args) or 0)
        except NCDError as error:
            print(f"ncd {command}: error: {_one_line(str(error))}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # the reader went away (``ncd source mlp | head``): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())  # type: ignore[union-attr]
            return 0
        except OSError as error:
            where = f"{error.filename}: " if error.filename else ""
            print(f"ncd {command}: error: {_one_line(where + (error.strerror or str(error)))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"ncd {command}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # a bug of ncd: still one line, with a way to see more
            if os.environ.get("NCD_DEBUG"):
                raise
            print(f"ncd {command}: internal error: {type(error).__name__}: {_one_line(str(error))} (please report it;"
                  " NCD_DEBUG=1 shows the traceback)", file=sys.stderr)
            return 2


def _one_line(text: str) -> str:
    line = " ".join(printable(text).split())
    return line if len(line) <= 2000 else line[:1997] + "..."


if __name__ == "__main__":
    sys.exit(main())
