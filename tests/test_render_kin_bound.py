"""The page layout's bound on a family's blocks (``ncd.render.wrap._most_kin``): a column is asked whether it holds
a family of sibling blocks that differ in sizes only when the diagram has that many blocks of one family, its scans'
bodies included.  Compared against the page laid out without the bound (every column asked), byte for byte."""

from __future__ import annotations

import pytest

import ncd
from ncd.render import to_svg, wrap

WIDTHS = [3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43]


def _family(prefix: str = "n") -> ncd.Diagram:
    return ncd.Seq.of(*[(ncd.Linear(f"{prefix}{k}:{WIDTHS[k]} -> {prefix}{k + 1}:{WIDTHS[k + 1]}") >> ncd.GELU()
                         >> ncd.Linear(f"{prefix}{k + 1} -> {prefix}{k + 1}")).block(f"layers.{k}: Layer")
                        for k in range(len(WIDTHS) - 1)])


def _scanned() -> ncd.Diagram:
    """A recurrence whose step holds the family: its blocks are the scan box's body, not the diagram's children."""
    step = ncd.Identity.of("h:4") @ _family()
    return ncd.Scan(step, "t:6", carry=1).weave("b")


def _few() -> ncd.Diagram:
    """Two blocks of each family: fewer than a family drawn by one definition needs."""
    layer = [(ncd.Linear("m:64 -> f:256") >> ncd.GELU() >> ncd.Linear("f:256 -> m:64")).block(f"layers.{k}: Layer")
             for k in range(2)]
    return ncd.Seq.of(*layer, *[(ncd.Linear("m:64 -> m:64") >> ncd.ReLU()).block(f"head.{k}: Head") for k in range(2)])


def _wrapped() -> ncd.Diagram:
    """A narrow block holding a family of three blocks, then wide blocks the page wraps: the block is collapsed for
    the family it holds (ncd.render.definitions._holds_kin), not for its width."""
    widths = [3, 5, 7, 11]
    family = ncd.Seq.of(*[ncd.Linear(f"n{k}:{widths[k]} -> n{k + 1}:{widths[k + 1]}").block(f"layers.{k}: Layer")
                          for k in range(3)])
    tail = [(ncd.Linear("n3:11 -> f:300") >> ncd.GELU() >> ncd.Linear("f:300 -> n3:11") >> ncd.Softmax("n3"))
            .block(f"post.{k}: Post{k}") for k in range(8)]
    return ncd.Seq.of(family.block("enc: Encoder"), *tail)


CASES = {"scanned": _scanned, "wrapped": _wrapped, "family": _family, "few": _few, "resnet": ncd.zoo.resnet, "unet": ncd.zoo.unet,
         "gpt2": ncd.zoo.gpt2}


def test_the_bound_counts_the_blocks_of_a_scan_body() -> None:
    diagram = _scanned()
    bodies: list[ncd.Diagram] = []
    families = wrap._families(diagram, bodies)
    assert families == {} and len(bodies) == 1  # (no block is a child of the diagram: all are in the scan's body)
    assert wrap._most_kin(diagram, families, bodies) == len(WIDTHS) - 1  # layers.0 … layers.11: one family
    assert wrap._most_kin(diagram, families, []) == 0  # (what the children alone hold)
    assert wrap._most_kin(_few(), wrap._families(_few()), []) == 2


@pytest.mark.parametrize("page", ["column", "slide"])
def test_a_column_holding_a_family_is_found_by_the_bound(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bounded = to_svg(_wrapped(), page=page, embed_fonts=False)
    monkeypatch.setattr(wrap, "_most_kin", lambda *args: 0)  # (a bound too low: the family is not looked for)
    assert to_svg(_wrapped(), page=page, embed_fonts=False) != bounded


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("page", ["column", "slide"])
def test_the_page_is_the_same_without_the_bound(name: str, page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    diagram = CASES[name]()
    bounded = to_svg(diagram, page=page, embed_fonts=False)
    monkeypatch.setattr(wrap, "_most_kin", lambda *args: 10**9)  # every column asked whether it holds a family
    assert to_svg(diagram, page=page, embed_fonts=False) == bounded
