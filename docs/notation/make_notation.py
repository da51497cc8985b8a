"""Generate ``docs/notation.md``: each paper figure ncd reproduces, next to ncd's drawing of the same model.

    .venv/bin/python docs/notation/make_notation.py

The paper's figures are not redistributed here: each row names the figure (as in the paper's
figure set) and what it shows; ncd's drawing is generated into this folder as PNG, with its
measured figures (width:height, smallest text printed in a 6.5-inch column, layout problems),
and every departure from the paper is listed with its reason.  Look at every PNG before committing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ncd
import ncd.zoo
from ncd.render.check import problems
from ncd.render.measure import drawing_figures
from ncd.zoo.resnets import identity_block

HERE = Path(__file__).parent
PAGE = HERE.parent / "notation.md"

#: Departures every drawing shares.
COMMON = [
    ("Callouts and equations beside the figures are not drawn.",
     "ncd draws the diagram of a model; commentary is the author's (a title and legend are options)."),
    ("Long drawings are wrapped into rows, blocks that do not fit a row drawn as `box =` definitions.",
     "`page=\"column\"` keeps every drawing within 3:1 and its text at 6 pt or more in a 6.5-inch column; "
     "`page=\"none\"` draws the paper's single row."),
    ("Sizes are legend rows: a size shared by the instances of one definition is a symbol with one value per "
     "instance, written in closed form only when three or more instances follow a pattern (`x_i = x·2^{1−i}`, "
     "as the paper's `x̄_i = 512·2^{1−i}`); numbered modules of one list (`stages.1`, `stages.2`) share one "
     "definition `stages.i =` with the row `i = 1, 2`, and a list alternating two shapes keeps one index "
     "(`blocks.2i =` and `blocks.2i+1 =`, the row `i = 0, 1, 2`).",
     "the paper writes a closed form it chose by hand; ncd writes one only where the values prove it (geometric "
     "with a whole or unit-fraction ratio, or arithmetic) and lists the values otherwise."),
]


PAPER = "https://arxiv.org/abs/2402.05424"


@dataclass(frozen=True)
class Figure:
    name: str  # the paper figure's file name in the figure set (without .png)
    number: str  # the figure's number in the paper ("" when the figure set does not record it)
    caption: str  # what the paper's figure shows, in our words
    build: Callable[[], ncd.Diagram]
    options: dict
    departures: list[tuple[str, str]]


def _inner_broadcast() -> ncd.Diagram:
    return ncd.Einsum("y k, x k -> y x").weave("h", shared=[1]) >> ncd.Softmax("x")


def _broadcast() -> ncd.Diagram:
    return ncd.Identity.of("r:4 a:3") >> ncd.Linear("a:3 -> b:2", name="G")


def _elementwise() -> ncd.Diagram:
    return ncd.Identity.of("r:4 a:3") >> ncd.ReLU()


FIGURES = [
    Figure("broadcasting0", "", "broadcasting: an operation G on a row of 3 applied to each of 4 rows", _broadcast, {}, [
        ("The data tiles (grids of cells) beside the wires are not drawn; wires are labelled `r = 4`, not `4`.",
         "a wire is an axis; it carries its name and size (the paper's figure is about sizes only)."),
        ("G is drawn as a learned linear map, bold **L** with its name as superscript.",
         "the diagram needs a concrete operation; a linear map is the paper's own example of one.")]),
    Figure("elementwise0", "", "an elementwise function: f on one value broadcast over every value (4 × 3)",
           _elementwise, {}, [
               ("The function is ReLU, drawn as the paper's arrow glyph `➤R➤` above the wires.",
                "the paper draws named activations this way; a generic `f` has no primitive.")]),
    Figure("scaled_attention", "20", "scaled dot-product attention", ncd.zoo.attention, {}, [
        ("The scale `∗k^−1/2` is a glyph on the wire, not a tinted box.",
         "scalar maps are drawn on the wires they act on (LANGUAGE.md §5), like `➤R➤`."),
        ("The query, key and value inputs are not lettered Q, K, V.",
         "wires carry their axes; the block's inputs are its dashed-separated segments.")]),
    Figure("multihead0", "21", "multi-head attention", ncd.zoo.multi_head_attention, {}, [
        ("The *Concat (Diagonalize)* fence is a dot joining the h wires.",
         "the dot is the diagonal itself; a fence is drawn only for a block the model defines.")]),
    Figure("imagerec", "2", "a basic image recogniser for digits (flatten, three linear layers, softmax)", ncd.zoo.mlp, {}, [
        ("The input `X` and output `Ŷ` tiles are not drawn.",
         "the diagram's boundary wires are its input and output."),
        ("The title is the definition's box (`box =`) rather than a heading.",
         "the one-row drawing is 3.5:1, wider than the 3:1 page limit; `title=` adds a heading.")]),
    Figure("IdResNet_block", "26", "the identity ResNet block",
           lambda: identity_block("n1", "n2", 2, "x").block("Identity ResNet block"), {"legend": {"n_b": "n_2/4"}}, [
        ("Block parameters (s, N) are shown as the concrete sizes of this instance.",
         "a diagram is one instance; its component box shows the sizes it was built with.")]),
    Figure("IdResNet_overall", "26", "the identity ResNet, its blocks as component boxes", ncd.zoo.resnet, {"depth": 1}, [
        ("BatchNorm & activate, pooling, linear and softmax are fenced by the blocks the model defines.",
         "fences come from the model's blocks, not from a drawing choice.")]),
    Figure("unet", "27", "the U-Net, skip tensors saved and loaded across levels", ncd.zoo.unet, {}, [
        ("Each block's definition follows the overview instead of one figure with nested parentheses.",
         "blocks too wide for a row are defined once below (`box =`)."),
        ("Pooling is one trapezoid labelled `★2→Max`, not the trapezoid followed by a `Max➤` glyph.",
         "pooling is one primitive in ncd; its reduction is written in its label.")]),
    Figure("visual_attention", "28", "visual attention: 1×1 convolutions into multi-head attention over pixels",
           ncd.zoo.visual_attention, {}, []),
    Figure("inner_broadcasting0", "", "inner broadcasting: an operation lifted over an axis only some of its inputs carry",
           _inner_broadcast, {}, [
        ("The shared segment's wire is drawn past the woven box, joined by a dot.",
         "the same wiring as the paper's; ncd draws every weave this way.")]),
]


def page(png: Path | None = HERE) -> str:
    """The text of ``docs/notation.md``; each drawing is also written as a PNG into ``png`` (``None``: not written)."""
    rows = ["# Notation: the paper's figures and ncd's drawings", "",
            "Generated by `docs/notation/make_notation.py` (do not edit by hand). Each figure of the paper "
            f"([Abbott, *Neural Circuit Diagrams*, TMLR 2024, arXiv 2402.05424]({PAPER})) that ncd reproduces: on the "
            "left the figure — its number, what it shows, a link to the paper (the figures themselves are not "
            "redistributed here) — and on the right ncd's default drawing of the same model, with every departure "
            "from the paper and its reason below. Measured: width:height, the smallest text once printed in a "
            "6.5-inch column, and `ncd.render.check` problems (overlaps of any kind, wires through labels).", "",
            "Departures in every drawing:", ""]
    rows += [f"* {what} — *why:* {why}" for what, why in COMMON]
    rows.append("")
    for fig in FIGURES:
        diagram = fig.build()
        drawing = ncd.render.layout(diagram, **fig.options)
        figures = drawing_figures(drawing)
        if png is not None:
            ncd.draw(diagram, png / f"{fig.name}.png", scale=1.5, **fig.options)
        number = f"Figure {fig.number}" if fig.number else "Figure (unnumbered in our figure set)"
        left = f"**{number}** (`{fig.name}`)<br>{fig.caption}<br>[in the paper]({PAPER})"
        rows += [f"## {fig.caption[0].upper()}{fig.caption[1:]}", "",
                 "| the paper | ncd |", "|---|---|",
                 f"| {left} | ![ncd's drawing: {fig.caption}](notation/{fig.name}.png) |", "",
                 f"ncd: {drawing.width:.0f}×{drawing.height:.0f} pt, {figures.aspect:.2f}:1, smallest text "
                 f"{figures.min_label_pt:.1f} pt in a column, {len(problems(drawing))} layout problems.", ""]
        if fig.departures:
            rows += ["Departures:", ""] + [f"* {what} — *why:* {why}" for what, why in fig.departures] + [""]
    return "\n".join(rows)


def main() -> None:
    PAGE.write_text(page(), encoding="utf-8")


if __name__ == "__main__":
    main()
