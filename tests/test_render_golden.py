"""Golden SVG and TikZ files for reference diagrams, and TikZ compiled by pdflatex.

The reference diagrams are built here with the public DSL (not the zoo), so a change in the
zoo never moves a golden file.  Regenerate deliberately, after looking at the pictures:

    NCD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_render_golden.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import ncd
from ncd.render import layout, to_svg, to_tikz

GOLDEN = Path(__file__).parent / "golden" / "render"
UPDATE = os.environ.get("NCD_UPDATE_GOLDEN") == "1"


def scaled_attention() -> ncd.Diagram:
    scores = ncd.Einsum("~y k, ~x k -> ~y ~x") >> ncd.Scale("k**-0.5") >> ncd.Softmax("~x")
    return ((scores @ ncd.Identity.of("~x k")) >> ncd.Einsum("~y ~x, ~x k -> ~y k")).block("Scaled Dot-Product Attention")


def multi_head() -> ncd.Diagram:
    heads = ncd.Einsum("~y k h, ~x k h -> ~y ~x h") >> ncd.Scale("k**-0.5") >> ncd.Softmax("~x")
    attend = ((heads @ ncd.Identity.of("~x k h")) >> ncd.Einsum("~y ~x h, ~x k h -> ~y k h")).block("Scaled Dot-Product Attention")
    q = ncd.Identity.of("~y m") >> ncd.Linear("m -> k h", name="Q")
    key = ncd.Identity.of("~x m") >> ncd.Linear("m -> k h", name="K")
    value = ncd.Identity.of("~x m") >> ncd.Linear("m -> k h", name="V")
    kv = ncd.Identity.of("~x m") >> ncd.Copy("~x m") >> (key @ value)
    out = ncd.Identity.of("~y k h") >> ncd.Linear("k h -> m", name="O")
    return ((q @ kv) >> attend >> out).block("Multi-Head Attention")


def digit_mlp() -> ncd.Diagram:
    layers = (ncd.Linear("(x y) -> 512", bias=True) >> ncd.ReLU() >> ncd.Linear("512 -> 512", bias=True) >> ncd.ReLU()
              >> ncd.Linear("512 -> k:10", bias=True)).block("Linear")
    body = ncd.Bind("~x ~y -> (x y)") >> layers >> ncd.Softmax("k:10")
    return body.bind(x=28, y=28).block("Basic Image Recogniser for Digits")


def residual_block() -> ncd.Diagram:
    def unit(c_in: str, c_out: str, k: int) -> ncd.Diagram:
        return ncd.BatchNorm(f"{c_in} ~x") >> ncd.ReLU() >> ncd.Conv(f"{c_in} ~x -> {c_out} ~x", kernel=k, padding=k // 2)

    branch = (unit("n_1", "n_b", 1) >> unit("n_b", "n_b", 3) >> unit("n_b", "n_1", 1)).block("Residual Component")
    body = ncd.residual(ncd.Identity.of("n_1 ~x") >> branch)
    return ncd.repeat(body.block("Identity ResNet block"), "λ", 1, "N")


def unet_level() -> ncd.Diagram:
    down = (ncd.Conv("c_0 ~x ~y -> c_1 ~x ~y", kernel=3, padding=1) >> ncd.ReLU()).block("Double Convolution")
    save = ncd.Save("c_1 ~x ~y", "C", "λ")
    pool = ncd.MaxPool("~x ~y", 2)
    up = ncd.ConvTranspose("c_1 ~x:x/2 ~y:y/2 -> c_1 ~x ~y", kernel=2, stride=2)
    load = ncd.Identity.of("c_1 ~x ~y") @ ncd.Load("c_1 ~x ~y", "C", "λ")
    merge = ncd.Concat("c_1, c_1 -> d:2*c_1")
    out = ncd.Conv("d ~x ~y -> c_1 ~x ~y", kernel=3, padding=1)
    return (down >> save >> pool >> up >> load >> merge >> out).block("U-Net level", legend={"c_i": "64*2**i"})


def inner_broadcast() -> ncd.Diagram:
    return ncd.Einsum("y k, x k -> y x").weave("h", shared=[1]) >> ncd.Softmax("x")


def folded_layers() -> ncd.Diagram:
    layer = ncd.residual(ncd.LayerNorm("m") >> ncd.Linear("m -> n:4*m", bias=True) >> ncd.GELU()
                         >> ncd.Linear("n:4*m -> m", bias=True)).block("MLP layer")
    return (ncd.Identity.of("~t m") >> layer >> layer >> layer).block("Stack")


REFERENCES: dict[str, tuple[Callable[[], ncd.Diagram], dict]] = {
    "scaled_attention": (scaled_attention, {}),
    "multi_head_attention": (multi_head, {}),
    "digit_mlp": (digit_mlp, {}),
    "residual_block": (residual_block, {}),
    "residual_block_collapsed": (residual_block, {"depth": 0}),
    "unet_level": (unet_level, {}),
    "inner_broadcast": (inner_broadcast, {}),
    "folded_layers": (folded_layers, {}),
}


def _compare(path: Path, text: str) -> None:
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"golden file {path} is missing; run with NCD_UPDATE_GOLDEN=1 after looking at the picture")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{path.name} changed; look at it, then NCD_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_svg_matches_golden(name: str) -> None:
    build, options = REFERENCES[name]
    _compare(GOLDEN / f"{name}.svg", to_svg(build(), **options))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_tikz_matches_golden(name: str) -> None:
    build, options = REFERENCES[name]
    _compare(GOLDEN / f"{name}.tex", to_tikz(build(), **options))


@pytest.mark.parametrize("name", ["multi_head_attention", "residual_block", "unet_level"])
def test_tikz_compiles_with_pdflatex_to_the_drawing_size(name: str, tmp_path: Path) -> None:
    build, options = REFERENCES[name]
    diagram = build()
    drawing = layout(diagram, **options)
    source = to_tikz(diagram, **options)
    (tmp_path / "d.tex").write_text("\\pdfcompresslevel=0\\pdfobjcompresslevel=0\n" + source, encoding="utf-8")
    assert shutil.which("pdflatex"), "pdflatex is needed (scripts/test.sh installs Debian's texlive packages)"
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "d.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    pdf = (tmp_path / "d.pdf").read_bytes()
    box = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", pdf)
    assert box is not None
    # TikZ's points are TeX points (1/72.27 in); the PDF's are big points (1/72 in).
    width, height = float(box.group(1)), float(box.group(2))
    assert width == pytest.approx(drawing.width * 72 / 72.27, abs=1.0)
    assert height == pytest.approx(drawing.height * 72 / 72.27, abs=1.0)
    assert "Missing character" not in (tmp_path / "d.log").read_text(errors="replace")
