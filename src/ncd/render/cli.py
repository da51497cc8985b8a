"""``ncd draw``: draw a zoo model or a diagram JSON file.

    ncd draw transformer -o transformer.svg
    ncd draw my_diagram.json -o out.png --depth 1 --size m=512 --size h=8
"""

from __future__ import annotations

import argparse
import os

from ncd.errors import InputError

__all__ = ["add_arguments", "run", "load_diagram"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("diagram", help="a zoo model name (e.g. transformer) or a diagram JSON file")
    parser.add_argument("-o", "--output", required=True, help="output file: .svg .png .pdf .tex .tikz (the extension decides)")
    parser.add_argument("--depth", type=int, default=None, help="collapse blocks this deep or deeper into component boxes")
    parser.add_argument("--size", action="append", default=[], metavar="NAME=VALUE",
                        help="a size for the zoo model's constructor (repeatable), e.g. --size N=12")
    parser.add_argument("--labels", choices=("all", "ends", "none"), default="all", help="which wire labels to draw")
    parser.add_argument("--no-fold", action="store_true", help="draw runs of identical blocks one by one")
    parser.add_argument("--title", default=None, help="a heading above the diagram")
    parser.add_argument("--scale", type=float, default=2.0, help="PNG pixels per point (default 2)")


def _sizes(items: list[str]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().lstrip("-").isdigit():
            raise InputError(f"--size {item!r}: expected NAME=WHOLE_NUMBER, e.g. --size m=512")
        sizes[name.strip()] = int(value)
    return sizes


def load_diagram(source: str, sizes: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    """A diagram from a JSON file path, or from the zoo by name (``ncd.zoo`` is imported only here)."""
    sizes = sizes or {}
    if os.path.exists(source) or source.endswith(".json"):
        if not os.path.exists(source):
            raise InputError(f"draw: no such file {source!r}")
        from ncd.ir.serialize import load_json

        with open(source, encoding="utf-8") as fh:
            diagram = load_json(fh.read())
        return diagram.bind(**sizes) if sizes else diagram
    try:
        import ncd.zoo as zoo
    except ModuleNotFoundError as error:  # pragma: no cover - the zoo ships with ncd
        raise InputError(f"draw: {source!r} is not a file and the model zoo is not available") from error
    models = getattr(zoo, "MODELS", {})
    factory = models.get(source) or getattr(zoo, source, None)
    if not callable(factory):
        known = ", ".join(sorted(models)) or "(none)"
        raise InputError(f"draw: {source!r} is neither a diagram JSON file nor a zoo model; zoo models: {known}")
    try:
        return factory(**sizes)
    except TypeError as error:
        raise InputError(f"draw: zoo model {source!r} does not accept sizes {sorted(sizes)}: {error}") from None


def run(args: argparse.Namespace) -> int:
    from ncd.render import draw

    diagram = load_diagram(args.diagram, _sizes(args.size))
    path = draw(diagram, args.output, depth=args.depth, labels=args.labels, fold=not args.no_fold, title=args.title,
                scale=args.scale)
    print(path)
    return 0
