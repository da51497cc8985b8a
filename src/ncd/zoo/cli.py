"""``ncd gallery --out DIR``: render and analyse every zoo architecture into a folder.

For each model it writes ``<name>.json`` and ``<name>.py`` (the generated PyTorch source)
and, when the optional interpreters exist, ``<name>.svg`` / ``<name>.png`` and a cost line.
What could not be produced is reported, never fatal.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", "-o", default="out", help="folder to write into (default: out)")
    parser.add_argument("names", nargs="*", help="zoo models to include (default: all)")
    parser.add_argument("--page", help="also write the Markdown gallery page to this path (e.g. docs/gallery.md)")
    parser.add_argument("--no-pictures", action="store_true", help="skip drawing")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost analysis")


def run(args: argparse.Namespace) -> int:
    from ncd.zoo.gallery import build_gallery, write_page

    entries = build_gallery(args.out, args.names, pictures=not args.no_pictures, costs=not args.no_cost)
    width = max(len(e.name) for e in entries)
    for e in entries:
        if e.error:
            print(f"{e.name:<{width}}  FAILED to build: {e.error}")
            continue
        made = ", ".join(sorted(e.files))
        print(f"{e.name:<{width}}  wrote {made}" + (f"  | cost: {e.cost}" if e.cost else ""))
        for reason in e.skipped:
            print(f"{'':<{width}}  skipped {reason}")
    if args.page:
        print(f"page: {write_page(entries, args.page, args.out)}")
    failed = [e.name for e in entries if e.error]
    print(f"{len(entries) - len(failed)} model(s) written to {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
