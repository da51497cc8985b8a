"""``ncd source``: print the generated PyTorch source of a zoo model or a diagram JSON file."""

from __future__ import annotations

import argparse

from ncd.cli import load_diagram, parse_sizes


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
