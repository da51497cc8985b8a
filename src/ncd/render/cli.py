"""``ncd draw``: draw a zoo model or a diagram JSON file.

    ncd draw transformer -o transformer.svg
    ncd draw my_diagram.json -o out.png --depth 1 --size m=512 --size h=8
"""

from __future__ import annotations

import argparse

from ncd.cli import load_diagram, parse_sizes

__all__ = ["add_arguments", "run"]


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


def run(args: argparse.Namespace) -> int:
    from ncd.render import draw

    diagram = load_diagram(args.diagram, parse_sizes(args.size))
    path = draw(diagram, args.output, depth=args.depth, labels=args.labels, fold=not args.no_fold, title=args.title,
                scale=args.scale)
    print(path)
    return 0
