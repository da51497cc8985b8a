"""``ncd.draw(..., costs=True)``: every block's title is followed by its FLOPs and parameters from ``ncd.cost``."""

from __future__ import annotations

import html
import re

import ncd
import ncd.zoo
from ncd.analysis.annotate import annotations, human


def _texts(svg: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", t)) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg, re.S)]


def test_block_annotations_are_the_cost_reports_numbers(tmp_path) -> None:
    d = ncd.zoo.multi_head_attention()
    report = ncd.cost(d)
    notes = annotations(d)
    assert set(notes) == set(report.blocks)
    for path, metrics in report.blocks.items():
        flops, params = report.value(metrics.forward_flops), report.value(metrics.params)
        assert isinstance(flops, int) and isinstance(params, int)
        assert notes[path] == f"{human(flops)} FLOPs · {human(params)} params"
    svg = open(ncd.draw(d, tmp_path / "mha.svg", costs=True), encoding="utf-8").read()
    texts = " ".join(_texts(svg)).replace("\xa0", " ")
    for text in notes.values():
        assert text.replace(" ", "") in texts.replace(" ", ""), text
    plain = " ".join(_texts(open(ncd.draw(d, tmp_path / "plain.svg"), encoding="utf-8").read()))
    assert "FLOPs" not in plain


def test_costs_with_sizes_and_short_numbers() -> None:
    d = (ncd.Identity.of("b m") >> ncd.Linear("m -> n", bias=True)).block("Layer")
    assert annotations(d, b=2, m=3, n=4) == {"Layer": "56 FLOPs · 16 params"}  # 2·2·3·4 + 2·4 bias adds; 12 + 4
    assert [human(v) for v in (999, 1500, 2_500_000, 12_900_000_000)] == ["999", "1.5k", "2.5M", "12.9G"]
