"""A run of sibling blocks that differ only in sizes is drawn as one box and one family definition.

Compared against the diagram itself: the run's box carries the first block's input sizes and the last one's output
sizes, and the legend gives every instance's sizes, from which each block's wires are recovered."""

from __future__ import annotations

import re

import ncd
from ncd.render import to_svg

WIDTHS = [3, 5, 7, 11, 13]


def _layers() -> ncd.Diagram:
    blocks = [(ncd.Linear(f"n{k}:{WIDTHS[k]} -> n{k + 1}:{WIDTHS[k + 1]}") >> ncd.GELU()).block(f"layers.{k}: Layer")
              for k in range(len(WIDTHS) - 1)]
    return ncd.Seq.of(*blocks)


def _text(svg: str) -> str:
    """The drawing's text, every run joined with no spaces (a subscript, an italic name: runs of their own)."""
    runs = (re.sub(r"<[^>]+>", "", t) for t in re.findall(r"<text\b[^>]*>(.*?)</text>", svg, re.S))
    return "".join(runs).replace(" ", "").replace("\xa0", "")


def test_a_run_of_blocks_of_one_family_is_one_box_and_one_definition() -> None:
    text = _text(to_svg(_layers()))
    assert "layers.0–3:Layer" in text  # the run's one box
    assert "layers.i:Layer" in text  # its one definition
    # the legend lists the index's values and every instance's input and output width, in order
    assert "i=0,1,2,3" in text, text
    assert "=3,5,7,11" in text and "=5,7,11,13" in text, text


def test_the_run_box_is_labelled_by_its_first_inputs_and_last_outputs() -> None:
    text = _text(to_svg(_layers()))
    assert "n0=3" in text and "n4=13" in text, text  # the run's wires: the first block's input, the last's output
    assert not re.search(r"n\d=(5|7|11)(?!\d)", text), text  # an inner width is in the legend only


def test_blocks_that_are_equal_are_not_a_family() -> None:
    same = [(ncd.Linear("n:4 -> n:4") >> ncd.GELU()).block(f"layers.{k}: Layer") for k in range(4)]
    text = _text(to_svg(ncd.Seq.of(*same)))
    assert "–" not in text and "Legend" not in text
