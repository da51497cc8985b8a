"""``ncd source``: print the generated PyTorch source of a zoo model or a diagram JSON file."""

from __future__ import annotations

import argparse
import importlib
import os

from ncd.errors import NCDError
from ncd.ir.diagram import Diagram


def parse_sizes(items: list[str] | None) -> dict[str, int]:
    """``["m=512", "h=8"]`` -> ``{"m": 512, "h": 8}``."""
    sizes: dict[str, int] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip().isdigit():
            raise NCDError(f"size {item!r} must look like name=integer, e.g. m=512")
        sizes[key.strip()] = int(value)
    return sizes


def load_diagram(target: str) -> Diagram:
    """A diagram from a JSON file path or a zoo model name."""
    if os.path.exists(target):
        from ncd.ir.serialize import load_json

        with open(target, encoding="utf-8") as handle:
            return load_json(handle.read())
    try:
        zoo = importlib.import_module("ncd.zoo")
    except ModuleNotFoundError:
        raise NCDError(f"{target!r} is not a file, and the zoo is not available") from None
    factory = getattr(zoo, target, None)
    if factory is None or not callable(factory):
        names = ", ".join(getattr(zoo, "__all__", []))
        raise NCDError(f"{target!r} is neither a file nor a zoo model; zoo models: {names}")
    return factory()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("diagram", help="a zoo model name (e.g. transformer) or a diagram JSON file")
    parser.add_argument("--size", "-s", action="append", metavar="NAME=INT", help="bind a size (repeatable)")
    parser.add_argument("-o", "--output", help="write the source to this file instead of printing it")


def run(args: argparse.Namespace) -> int:
    source = load_diagram(args.diagram).to_source(**parse_sizes(args.size))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(source)
    else:
        print(source)
    return 0
