"""``ncd gallery`` writes each model's JSON and generated source, and reports what it skipped."""

from __future__ import annotations

import json
from pathlib import Path

import ncd
from ncd.cli import main


def test_gallery_writes_json_that_reads_back_and_the_source_it_lowers(tmp_path: Path, capsys) -> None:
    code = main(["gallery", "--out", str(tmp_path), "--no-pictures", "--no-cost", "attention", "multi_head_attention"])
    assert code == 0
    for name in ("attention", "multi_head_attention"):
        text = (tmp_path / f"{name}.json").read_text()
        diagram = ncd.load_json(text)
        factory = getattr(__import__("ncd.zoo", fromlist=[name]), name)
        assert diagram == factory()
        assert (tmp_path / f"{name}.py").read_text() == diagram.to_source()
        assert json.loads(text)["format"]
    assert "2 model(s) written" in capsys.readouterr().out


def test_gallery_rejects_unknown_models(tmp_path: Path, capsys) -> None:
    assert main(["gallery", "--out", str(tmp_path), "no_such_model"]) == 2
    assert "unknown zoo model(s) no_such_model" in capsys.readouterr().err


def test_gallery_page_shows_each_picture_with_the_code_and_the_reference(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    assert main(["gallery", "--out", str(tmp_path), "--no-cost", "--page", str(page), "mlp"]) == 0
    text = page.read_text()
    assert (tmp_path / "mlp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "mlp.svg").read_text()
    assert "![MLP](./mlp.svg)" in text
    assert "def mlp(" in text and "Proven equal to `nn.Sequential`" in text
    assert "class MLP(nn.Module)" in text  # the generated source
