"""A DSL user's repeated layers: blocks built in a Python loop (``layers.0`` … ``layers.199``, equal contents) are
drawn as one repetition, as ``ncd.repeat`` of that block is drawn and as ``ncd.trace`` draws a model's numbered
layers.  Checked on the finished drawings: the written SVG's page size, the texts drawn (each block name, count and
index), and the SVG of the same network written with an explicit ``ncd.repeat``."""

from __future__ import annotations

import re
from pathlib import Path

import ncd
from ncd.render import layout
from ncd.render.check import problems
from ncd.render.measure import drawing_figures
from ncd.render.model import Text


def _layer(k: int, body: ncd.Diagram | None = None) -> ncd.Diagram:
    return (body if body is not None else ncd.Linear("m -> m") >> ncd.ReLU()).block(f"layers.{k}")


def _chain(blocks: list[ncd.Diagram]) -> ncd.Diagram:
    d = ncd.Identity.of("b m")
    for b in blocks:
        d = d >> b
    return d


def _texts(d: ncd.Diagram, **options: object) -> list[str]:
    return [t.string for t in layout(d, **options).of(Text)]


def _svg_size(path: Path) -> tuple[float, float]:
    head = path.read_text()[:400]
    w, h = (float(re.search(rf'{k}="([\d.]+)', head).group(1)) for k in ("width", "height"))  # type: ignore[union-attr]
    return w, h


def test_two_hundred_numbered_layers_fit_a_page_as_one_repetition(tmp_path: Path) -> None:
    looped = _chain([_layer(k) for k in range(200)])
    path = ncd.draw(looped, tmp_path / "looped.svg")
    w, h = _svg_size(Path(path))
    assert w <= 612 and h <= 648, (w, h)  # was 567 x 6,508 pt: 67 rows of the 200 blocks
    drawing = layout(looped)
    assert not problems(drawing) and drawing_figures(drawing).min_label_pt >= 6.0
    texts = [t.string for t in drawing.of(Text)]
    assert "layers.i" in texts and not [s for s in texts if re.fullmatch(r"layers\.\d+", s)]
    assert "199" in texts  # the last index, as a repetition i = 0 ... 199 writes it
    # the same network written as a repetition is drawn byte for byte alike
    explicit = ncd.Identity.of("b m") >> ncd.repeat((ncd.Linear("m -> m") >> ncd.ReLU()).block("layers.i"), "i", 0, 200,
                                                    "layers.i")
    other = ncd.draw(explicit, tmp_path / "explicit.svg")
    assert Path(path).read_bytes() == Path(other).read_bytes()
    assert len(looped.parts) == 200  # only the drawing folds: the diagram keeps its 200 blocks


def test_a_run_stops_where_a_block_differs_or_an_index_is_skipped() -> None:
    wider = ncd.Linear("m -> k") >> ncd.Linear("k -> m")
    narrow = ncd.Linear("m -> n") >> ncd.Linear("n -> m")
    biased = ncd.Linear("m -> m", bias=True) >> ncd.ReLU()
    cases = {
        # another box type / learned bias at layers.3: runs 0-2 and 4-5 fold, layers.3 is drawn alone
        "bias": ([_layer(k, biased if k == 3 else None) for k in range(6)], ["layers.3"], ["layers.i", "layers.i"]),
        # inner sizes differ (k, n) in a block of the same shape: no repetition of the two
        "sizes": ([_layer(0, wider), _layer(1, narrow)], ["layers.0", "layers.1"], []),
        # indices 0, 2, 4: not one after another, nothing to repeat
        "skipped": ([_layer(k) for k in (0, 2, 4)], ["layers.0", "layers.2", "layers.4"], []),
    }
    for name, (blocks, alone, families) in cases.items():
        texts = _texts(_chain(blocks), page="none")
        assert sorted(s for s in texts if re.fullmatch(r"layers\.\d+", s)) == alone, name
        assert [s for s in texts if s == "layers.i"] == families, name
    texts = _texts(_chain([_layer(k, biased if k == 3 else None) for k in range(6)]), page="none")
    assert "2" in texts and "5" in texts  # the runs' last indices, 0 ... 2 and 4 ... 5


def test_equal_blocks_explicit_repeats_and_fold_false_are_unchanged() -> None:
    same = _chain([(ncd.Linear("m -> m") >> ncd.ReLU()).block("layer") for _ in range(4)])
    assert "×4" in _texts(same) and _texts(same).count("layer") == 1
    explicit = ncd.Identity.of("b m") >> ncd.repeat(lambda i: ncd.Linear("m -> m").block("layer"), "i", 0, "N")
    assert _texts(explicit) == ["b", "m", "layer", "L", "i = 0", "N − 1", "b", "m"]
    unfolded = _texts(_chain([_layer(k) for k in range(5)]), fold=False)
    assert sorted(s for s in unfolded if s.startswith("layers.")) == [f"layers.{k}" for k in range(5)]


def test_an_unnamed_learned_pattern_written_in_a_loop_is_drawn_once_with_its_count(tmp_path: Path) -> None:
    looped = ncd.Identity.of("b m")
    for _ in range(200):
        looped = looped >> ncd.Linear("m -> m") >> ncd.ReLU()
    path = ncd.draw(looped, tmp_path / "flat.svg")
    w, h = _svg_size(Path(path))
    assert w <= 612 and h <= 648, (w, h)  # was 605 x 3,664 pt: 400 boxes in rows
    texts = _texts(looped)
    assert texts.count("L") == 1 and texts.count("R") == 1 and "×200" in texts
    assert len(looped.parts) == 400
    # named boxes (an imported model's are named by their modules) and unlearned ones alone are drawn one by one
    named = ncd.Identity.of("b m")
    for k in range(10):
        named = named >> ncd.Linear("m -> m", name=f"fc{k}") >> ncd.ReLU()
    assert not [s for s in _texts(named, page="none") if s.startswith("×")]
    relus = ncd.Identity.of("b m")
    for _ in range(20):
        relus = relus >> ncd.ReLU()
    assert _texts(relus, page="none").count("R") == 20
    # a pattern that breaks off: eight full repetitions of L R (16 parts), then L alone
    tail = ncd.Identity.of("b m")
    for _ in range(8):
        tail = tail >> ncd.Linear("m -> m") >> ncd.ReLU()
    texts = _texts(tail >> ncd.Linear("m -> m"), page="none")
    assert texts.count("L") == 2 and "×8" in texts


def test_a_short_unnamed_run_is_drawn_as_written() -> None:
    """Seven repetitions of ``L R`` (14 parts, fewer than LONG_RUN) fit two rows: drawn box by box, no count."""
    short = ncd.Identity.of("b m")
    for _ in range(7):
        short = short >> ncd.Linear("m -> m") >> ncd.ReLU()
    texts = _texts(short)
    assert texts.count("L") == 7 and texts.count("R") == 7
    assert not [s for s in texts if s.startswith("×")]
