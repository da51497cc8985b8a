"""Build the fonts bundled in ``src/ncd/render/fonts/`` from Debian's ``fonts-cmu`` and ``fonts-dejavu-core``.

Each is subset (fontTools) to the characters a drawing can use and renamed ``NCD …`` so it never
shadows an installed font.  Text widths are measured from these files and the SVG/PDF writers
embed them, so a drawing looks the same on every machine.  Re-run after changing the ranges:

    .venv/bin/python scripts/make_fonts.py            # the fonts, then their metrics (metrics.json)
    .venv/bin/python scripts/make_fonts.py --metrics  # only metrics.json, from the bundled fonts
"""

from __future__ import annotations

import os

from fontTools import subset
from fontTools.ttLib import TTFont

OUT = os.path.join(os.path.dirname(__file__), "..", "src", "ncd", "render", "fonts")
CMU = "/usr/share/fonts/truetype/cmu"
DEJAVU = "/usr/share/fonts/truetype/dejavu"

TEXT_RANGES = [(0x20, 0x17F), (0x370, 0x3FF), (0x2010, 0x2027), (0x2032, 0x203A), (0x2192, 0x2192), (0x2212, 0x221A)]
SYMBOL_RANGES = [(0x2032, 0x2037),  # primes: the text faces (Computer Modern) lack them
                 (0x2070, 0x209F), (0x1D00, 0x1DBF), (0x02B0, 0x02FF), (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2300, 0x23FF),
                 (0x25A0, 0x25FF), (0x2600, 0x26FF), (0x2700, 0x27BF), (0x2900, 0x297F), (0x29F0, 0x29FF), (0x1D538, 0x1D56B)]

FACES = {  # bundled file: (source, family, style, ranges)
    "ncd-sans.ttf": (f"{CMU}/cmunss.ttf", "NCD Sans", "Regular", TEXT_RANGES),
    "ncd-sans-bold.ttf": (f"{CMU}/cmunsx.ttf", "NCD Sans", "Bold", TEXT_RANGES),
    "ncd-serif-italic.ttf": (f"{CMU}/cmunti.ttf", "NCD Serif", "Italic", TEXT_RANGES),
    "ncd-serif.ttf": (f"{CMU}/cmunrm.ttf", "NCD Serif", "Regular", TEXT_RANGES),
    "ncd-symbols.ttf": (f"{DEJAVU}/DejaVuSans.ttf", "NCD Symbols", "Regular", SYMBOL_RANGES),
}


def build(source: str, target: str, family: str, style: str, ranges: list[tuple[int, int]]) -> None:
    font = TTFont(source, recalcTimestamp=False)
    options = subset.Options()
    options.layout_features = ["kern"]
    options.name_IDs = ["*"]
    options.notdef_outline = True
    sub = subset.Subsetter(options)
    sub.populate(unicodes=[c for lo, hi in ranges for c in range(lo, hi + 1)])
    sub.subset(font)
    names = font["name"]
    full = family if style == "Regular" else f"{family} {style}"
    for rec in list(names.names):
        if rec.nameID in (1, 16):
            rec.string = family
        elif rec.nameID in (2, 17):
            rec.string = style
        elif rec.nameID == 4:
            rec.string = full
        elif rec.nameID == 6:
            rec.string = full.replace(" ", "")
    font.save(target)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for name, (source, family, style, ranges) in FACES.items():
        build(source, os.path.join(OUT, name), family, style, ranges)
        print(name, os.path.getsize(os.path.join(OUT, name)))
    write_metrics()


def write_metrics() -> None:
    """``metrics.json``: each bundled face's metrics (:func:`ncd.render.fonts.read_metrics`), read at run time
    instead of the font files (a test checks they agree)."""
    import json

    from ncd.render.fonts import METRICS, read_metrics

    table = {name: read_metrics(os.path.join(OUT, name)) for name in FACES}
    with open(METRICS, "w", encoding="utf-8") as f:
        json.dump(table, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print("metrics.json", os.path.getsize(METRICS))


if __name__ == "__main__":
    import sys

    write_metrics() if sys.argv[1:] == ["--metrics"] else main()
