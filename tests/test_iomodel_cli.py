"""`ncd io` on the command line, and the IO drawings (rendered and measured)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ncd
from ncd.cli import main
from ncd.iomodel.drawing import LEVEL_COLOURS, io_drawing, pseudocode_drawing
from ncd.render.model import Path as Stroke
from ncd.render.model import Polygon, Rect, Text

ARGS = ["attention", "--hierarchy", "h100", "--online", "--group", "smem:y=128", "--stream", "smem:x=128",
        "--size", "y=16384", "--size", "x=16384", "--size", "k=128"]


def test_cli_two_and_three_level_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["io", *ARGS, "--levels", "hbm,smem"]) == 0
    two = capsys.readouterr().out
    assert "memory-bound" in two and "541,065,216" in two  # 2ȳk + 2ȳx̄k/B_r
    assert main(["io", *ARGS, "--levels", "hbm,l2,smem"]) == 0
    three = capsys.readouterr().out
    assert "compute-bound" in three and re.search(r"l2\s+8,388,608", three)


def test_cli_errors_name_the_rewrite_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = [a for a in ARGS if a != "--online"]
    assert main(["io", *args]) == 2
    assert "ncd.online_softmax" in capsys.readouterr().err
    assert main(["io", "attention", "--group", "smem:y"]) == 2
    assert "'y' must look like AXIS=positive-whole-number" in capsys.readouterr().err
    assert main(["io", "attention", "--hierarchy", "v100"]) == 2
    assert "no hierarchy preset" in capsys.readouterr().err


def test_cli_unfused_baseline_and_drawings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["io", "attention", "--size", "y=64", "--size", "x=64", "--size", "k=16"]) == 0
    out = capsys.readouterr().out
    assert "unfused" in out and f"{4 * 64 * 64 + 4 * 64 * 16:,}" in out  # 4ȳx̄ + 2ȳk + 2x̄k
    png, svg = tmp_path / "io.png", tmp_path / "loops.svg"
    assert main(["io", *ARGS, "--levels", "hbm,smem", "--draw", str(png), "--pseudocode", str(svg)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and svg.read_text().startswith("<svg")


def test_io_drawing_marks_relabelled_wires_in_level_colours() -> None:
    att = ncd.online_softmax(ncd.zoo.attention())
    h = ncd.Hierarchy.preset("h100").restrict("hbm", "l2", "smem")
    r = ncd.io(att, h, group={"smem": {"y": 4}}, stream={"smem": {"x": 2}})
    d = io_drawing(att, r)
    smem = LEVEL_COLOURS["smem"][0]
    labels = [t for t in d.of(Text) if t.role == "label" and t.string in ("y", "x")]
    chevrons = [p for p in d.of(Polygon) if p.fill == smem]
    bars = [p for p in d.of(Stroke) if p.stroke == smem]
    assert len(chevrons) == len({(t.x, t.y) for t in labels if t.string == "x"}) > 0
    assert len(bars) == 2 * len({(t.x, t.y) for t in labels if t.string == "y"})
    # every mark sits beside its label, inside the drawing
    for p in chevrons:
        x, y = p.points[0]
        assert any(abs(x - (t.x + t.width + 2.5)) < 0.5 and abs(y - t.y) < 12 for t in labels)
        assert 0 <= x <= d.width and 0 <= y <= d.height
    texts = [t.string for t in d.of(Text)]
    assert "g=4" in texts and "s=2" in texts
    # the cost table: one coloured row per level, under the diagram
    swatches = [rect for rect in d.of(Rect) if rect.role == "legend" and rect.fill]
    assert [s.stroke for s in swatches] == [LEVEL_COLOURS[lv][0] for lv in h.levels]
    assert all(t.y <= d.height for t in d.of(Text))


def test_pseudocode_diagram_lists_loops_and_live_arrays() -> None:
    att = ncd.online_softmax(ncd.zoo.attention(y=64, x=64, k=16))
    h = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
    r = ncd.io(att, h, group={"smem": {"y": 16}}, stream={"smem": {"x": 8}})
    d = pseudocode_drawing(r)
    texts = [t.string for t in d.of(Text)]
    assert any(t.startswith("parallel for y in 4 chunks of 16") for t in texts)
    assert any(t.startswith("for x in 8 chunks of 8") for t in texts)
    assert any("M = " + f"{r.memory['smem']:,}" in t for t in texts)
    # the widest column's boxes add up to M (heights ∝ elements; the widest column is 150 pt)
    cols: dict[float, float] = {}
    for rect in d.of(Rect):
        if rect.role == "box":
            cols[rect.x] = cols.get(rect.x, 0.0) + rect.h
    assert max(cols.values()) == pytest.approx(150.0, abs=10)
    for t in d.of(Text):
        assert t.x + t.width <= d.width + 1 and t.y <= d.height
