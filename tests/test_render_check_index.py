"""The drawing checker's wire-through-text test finds the texts a piece of wire may meet through an index (a grid of
cells for short pieces, columns sorted by height for tall ones): it must report what testing every text against
every piece reports, in the same order (the first piece of the first wire that runs through each text)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import ncd
from ncd.render import layout
from ncd.render.check import EPS, _crosses, _segments, _wires_through_text, problems


def _every_text(wires: list[Any], texts: list[Any], boxes: dict[int, Any]) -> list[str]:
    """The reference: every piece of every wire against every text, the texts met in the order of the 64-point cells
    the piece's bounding box covers (row by row; in a cell, the texts' order), each text reported once."""
    inner = []
    for t in texts:
        b = boxes[id(t)]
        if b[2] - b[0] > 2 * EPS and b[3] - b[1] > 2 * EPS:
            inner.append(((b[0] + EPS, b[1] + EPS, b[2] - EPS, b[3] - EPS), t))
    out, hit = [], set()
    for w in wires:
        for seg in _segments(w):
            x0, x1 = min(seg[0], seg[2]), max(seg[0], seg[2])
            y0, y1 = min(seg[1], seg[3]), max(seg[1], seg[3])
            met = [(max(int(x0 // 64), int(b[0] // 64)), max(int(y0 // 64), int(b[1] // 64)), k)
                   for k, (b, t) in enumerate(inner) if b[0] < x1 and x0 < b[2] and b[1] < y1 and y0 < b[3]]
            for _, _, k in sorted(met):
                b, t = inner[k]
                if id(t) not in hit and _crosses(seg, b):
                    hit.add(id(t))
                    out.append(f"a wire ending at ({w.ends[1][0]:.1f}, {w.ends[1][1]:.1f}) runs through text "
                               f"{t.string!r} at ({seg[0]:.1f}, {seg[1]:.1f})")
    return out


def _wire(commands: list[tuple[Any, ...]]) -> Any:
    last = [c for c in commands if c[0] != "Z"][-1]
    return SimpleNamespace(commands=commands, ends=[commands[0][1:3], last[-2:]])


def test_wires_through_text_reports_what_testing_every_text_reports() -> None:
    rng = random.Random(7)
    reported = 0
    for _ in range(300):
        height, width = rng.choice([100.0, 600.0, 3000.0]), rng.choice([60.0, 300.0, 800.0])
        texts = [SimpleNamespace(string=f"t{i}") for i in range(rng.randint(0, 50))]
        boxes = {}
        for t in texts:
            x, y = rng.uniform(-20, width), rng.uniform(-20, height)
            boxes[id(t)] = (x, y, x + rng.choice([0.5, 5.0, 20.0, 200.0]) * rng.random(),
                            y + rng.choice([1.0, 12.0, 100.0]) * rng.random())
        wires = []
        for _ in range(rng.randint(0, 30)):
            commands: list[tuple[Any, ...]] = [("M", rng.uniform(-20, width), rng.uniform(-20, height))]
            for _ in range(rng.randint(1, 4)):
                if rng.random() < 0.5:
                    commands.append(("L", rng.uniform(-20, width), rng.uniform(-20, height)))
                else:
                    commands.append(("C",) + tuple(rng.uniform(-20, width) if j % 2 == 0 else rng.uniform(-20, height)
                                                   for j in range(6)))
            if rng.random() < 0.1:
                commands.append(("Z",))
            wires.append(_wire(commands))
        want = _every_text(wires, texts, boxes)
        reported += len(want)
        assert _wires_through_text(wires, texts, boxes) == want  # type: ignore[arg-type]
    assert reported > 1000  # (the cases cross many texts, with tall pieces and short)


def test_a_tall_wire_reports_the_labels_it_runs_through_top_down() -> None:
    texts = [SimpleNamespace(string=f"label {i}") for i in range(40)]
    boxes = {id(t): (10.0 + 3 * (i % 2), 50.0 * i, 40.0, 50.0 * i + 10.0) for i, t in enumerate(texts)}
    wires = [_wire([("M", 20.0, -5.0), ("L", 20.0, 2100.0)]), _wire([("M", 30.0, 2100.0), ("L", 30.0, -5.0)])]
    found = _wires_through_text(wires, texts, boxes)  # type: ignore[arg-type]
    assert found == _every_text(wires, texts, boxes)
    assert [line.split("text ")[1].split(" at")[0] for line in found] == [f"'label {i}'" for i in range(40)]


def test_a_wide_copy_checks_clean() -> None:
    assert problems(layout(ncd.Copy(" ".join(f"a{i}" for i in range(60)), 12))) == []
