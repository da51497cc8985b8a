"""How many files under ``src/ncd/`` name each primitive class (the issue's "one home per primitive").

Prints one row per primitive class (its ``op`` and the number of files naming the class as a
word) and the median.  Target: median at most 2 (its family module and, at most, one interpreter
that builds or recognises it: the importer, a derived pass).

Run: ``.venv/bin/python benchmarks/primitive_homes.py [--root src/ncd] [--rows]``.
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

import ncd  # noqa: F401  (declares every primitive)
from ncd.ir.primitive import PRIMITIVES
from ncd.ir.rules import load


def homes(root: Path) -> dict[str, tuple[str, int, list[str]]]:
    """Class name -> (op, number of files naming it, those files)."""
    load()  # every family module, so every primitive is declared
    texts = {p: p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py"))}
    result = {}
    for op, cls in sorted(PRIMITIVES.items(), key=lambda kv: kv[1].__name__):
        word = re.compile(rf"\b{re.escape(cls.__name__)}\b")
        files = [str(p.relative_to(root)) for p, text in texts.items() if word.search(text)]
        result[cls.__name__] = (op, len(files), files)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "src" / "ncd"))
    parser.add_argument("--rows", action="store_true", help="print every primitive, not only the summary")
    args = parser.parse_args()
    table = homes(Path(args.root))
    counts = [n for _, n, _ in table.values()]
    if args.rows:
        print(f"{'primitive':<24} {'op':<22} files")
        for name, (op, n, files) in table.items():
            print(f"{name:<24} {op:<22} {n:>5}  {', '.join(files)}")
    print(f"primitives: {len(counts)}; files naming each class: median {statistics.median(counts)},"
          f" max {max(counts)}, min {min(counts)}")


if __name__ == "__main__":
    main()
