"""Hostile diagram files past the schema: block meta that readers of sharded and traced diagrams trust, and sizes
whose products expand to more terms than any machine can hold.

The references are independent of the code under test: ``ncd.shard`` makes the honest file a hostile one edits,
sympy's own ``expand`` counts the terms the bound bounds, and a subprocess shows what the command line prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import sympy
import torch

import ncd
from ncd.analysis.expansion import expanded_terms
from ncd.distributed.mesh import ShardingError
from ncd.errors import LimitError, SchemaError
from ncd.limits import override
from ncd.viewer import to_html


def _sharded() -> ncd.Diagram:
    layer = ncd.Identity.of("~t m") >> ncd.Linear("m -> f", bias=True) >> ncd.GELU() >> ncd.Linear("f -> m")
    return ncd.shard(layer.bind(m=8, f=32, t=4), ncd.Mesh(tp=4), {"f": "tp"})


def _with_meta(diagram: ncd.Diagram, key: str, value: Any) -> str:
    doc = json.loads(diagram.to_json())
    entries = [e for e in doc["diagram"]["meta"]["tuple"] if e["tuple"][0] != key]
    doc["diagram"]["meta"]["tuple"] = [*entries, {"tuple": [key, value]}]
    return json.dumps(doc)


def _pairs(*pairs: tuple[Any, Any]) -> dict[str, Any]:
    return {"tuple": [{"tuple": list(p)} for p in pairs]}


# -- 1. a sharded diagram's meta ---------------------------------------------------------------------
BAD_SHARDING = [
    ("mesh", 4), ("mesh", "tp"), ("mesh", {"tuple": [1, 2]}), ("mesh", _pairs(("tp", "4"))), ("mesh", _pairs(("tp", 0))),
    ("mesh", _pairs(("tp", 4), ("tp", 2))), ("mesh", _pairs(("tp", 1.5))), ("mesh", {"diagram": {"node": "identity",
    "type": {"type": []}}}), ("placements", 3), ("placements", _pairs(("f", 3))), ("placements", _pairs(("f", "zz"))),
    ("placements", _pairs(("f", "tp"), ("f", "tp"))), ("fsdp", "no"), ("fsdp", 1),
]


@pytest.mark.parametrize(("key", "value"), BAD_SHARDING, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD_SHARDING)])
def test_a_sharded_files_mesh_placements_and_fsdp_are_checked_where_they_are_read(key: str, value: Any) -> None:
    """Every reader of the sharding (costs, the drawing, the viewer) refuses the edited file naming the entry; the
    file ``ncd.shard`` wrote, read back, costs as the diagram it made."""
    honest = _sharded()
    assert ncd.cost(ncd.load_json(honest.to_json())).numbers == ncd.cost(honest).numbers
    loaded = ncd.load_json(_with_meta(honest, key, value))
    for read in (lambda: ncd.cost(loaded), lambda: ncd.render.to_svg(loaded), lambda: ncd.render.to_tikz(loaded),
                 lambda: to_html(loaded)):
        with pytest.raises(ShardingError, match=f"block {honest.name!r}: meta (mesh|placements|fsdp)"):
            read()


def test_a_count_of_shared_parameters_past_what_the_boxes_hold_is_refused() -> None:
    d = ncd.Block(ncd.Linear("m -> k", name="Q") >> ncd.Softmax("k"), "B")
    params = ncd.cost(d, m=4, k=4).numbers.params
    assert params == sum(p.numel() for p in d.to_torch(m=4, k=4).parameters())  # torch's count
    fine = ncd.load_json(_with_meta(d, "shared", 4))
    assert ncd.cost(fine, m=4, k=4).numbers.params == params - 4
    hostile = ncd.load_json(_with_meta(d, "shared", 10**6))
    with pytest.raises(SchemaError, match="shared=1000000 is more parameter entries"):
        ncd.cost(hostile, m=4, k=4)


# -- 2. sizes whose products expand past any budget ---------------------------------------------------
def _summed(diagram: ncd.Diagram, names: str, terms: int) -> str:
    """``diagram``'s JSON with each axis of ``names`` sized by a sum of ``terms`` symbols (``p0+p1+...``)."""
    text = diagram.to_json()
    for a in names:
        text = text.replace(f'"size": "{a}"', '"size": "' + "+".join(f"{a}{j}" for j in range(terms)) + '"')
    return text


def test_the_bound_of_expanded_terms_is_sympys_count_for_products_and_powers_of_sums() -> None:
    """Against ``sympy.expand`` itself: exact for products and powers of sums of distinct symbols, never below."""
    syms = sympy.symbols("a0:9", positive=True)
    cases = [syms[0] * syms[1], (syms[0] + syms[1]) * (syms[2] + syms[3] + syms[4]), (syms[0] + syms[1] + 1) ** 5,
             sum(syms[:4]) ** 3 * (syms[5] + syms[6]), 1 / (syms[0] + syms[1]) ** 3, sympy.floor((syms[0] + syms[1]) ** 2 / 3),
             (syms[0] + syms[1]) ** syms[2], sympy.sqrt(syms[0] + syms[1]) * (syms[2] + syms[3]),
             (syms[0] + syms[1]) * (syms[0] - syms[1]), 7 * (syms[0] + 2) ** 2 + syms[3] * (syms[4] + syms[5])]
    exact = {0, 1, 2, 3, 7}  # (a power below 1 is one term, its denominator expanded: bounded as that)
    for k, expr in enumerate(cases):
        actual = len(sympy.Add.make_args(sympy.expand(expr)))
        bound = expanded_terms(expr, 10**6)
        assert bound >= actual, (expr, bound, actual)
        if k in exact:
            assert bound == actual, (expr, bound, actual)
    assert expanded_terms(sum(syms) ** 64, 1000) == 1001  # C(72, 8) is past the cap: said as cap + 1, not computed


@pytest.mark.parametrize(("names", "terms"), [("pqr", 12), ("pq", 40)])
def test_a_file_whose_sizes_expand_past_the_limit_is_refused_before_expanding(names: str, terms: int) -> None:
    """12-term sums on three axes: 1,728 terms per formula (seconds of sympy each; 60 terms on four axes would be 13
    million): refused by ``ncd.cost``, ``ncd.io`` and ``decode`` with a LimitError naming the box and the limit."""
    loaded = ncd.load_json(_summed(ncd.Einsum(" ".join(names) + ", " + " ".join(names) + " -> " + names[0]), names, terms))
    with pytest.raises(LimitError, match=rf"of einsum would expand to {terms ** len(names)} terms, more than the limit"
                                         r" of 1000 \(terms in ncd.limits\)"):
        ncd.cost(loaded)
    with pytest.raises(LimitError, match="terms in ncd.limits"):
        ncd.io(loaded, ncd.Hierarchy.preset("h100"))
    with override(terms=10**5):  # the limit lifted, the same file costs as the plain einsum with the sums put in
        report = ncd.cost(loaded)
    plain = ncd.cost(ncd.Einsum(" ".join(names) + ", " + " ".join(names) + " -> " + names[0])).formulas.forward_matmul
    sums = {sympy.Symbol(a, positive=True): sum(sympy.Symbol(f"{a}{j}", positive=True) for j in range(terms)) for a in names}
    assert sympy.expand(plain.subs(sums)) == report.formulas.forward_matmul


def test_a_power_of_a_long_sum_is_refused_and_a_short_one_costs_as_sympy_expands_it() -> None:
    d = ncd.Linear("m -> k", name="Q")
    with pytest.raises(LimitError, match="the forward matmul of L\\^Q would expand to more than 10000 terms"):
        ncd.cost(ncd.load_json(d.to_json().replace('"size": "m"', '"size": "(a+b+c+d+e+f+g+h)**64"')))
    report = ncd.cost(ncd.load_json(d.to_json().replace('"size": "m"', '"size": "(a+b)**3"')))
    a, b, k = (sympy.Symbol(n, positive=True) for n in "abk")
    assert sympy.expand(report.formulas.forward_matmul - 2 * (a + b) ** 3 * k) == 0


def test_the_command_line_says_the_limit_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "sums.json"
    path.write_text(_summed(ncd.zoo.gpt2(), "mkt", 12), encoding="utf-8")
    for command in ("cost", "io", "decode"):
        done = subprocess.run([sys.executable, "-m", "ncd", command, str(path)], capture_output=True, text=True,
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=600)
        assert done.returncode == 2, (command, done.stderr[-500:])
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "terms in ncd.limits" in lines[0], (command, lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sums.json"]


def test_the_models_ncd_ships_stay_far_below_the_limit() -> None:
    """The gallery, with its sizes left symbolic: every formula ``ncd.cost`` expands has a few terms (ResNet's
    largest, 55: within 100)."""
    for build in ncd.zoo.MODELS.values():
        d = build()
        body = d.body if isinstance(d, ncd.Block) else d
        with override(terms=100):
            ncd.cost(ncd.Block(body, "B"))


# -- 3. nesting within the limits ------------------------------------------------------------------------
def test_sequences_nested_in_a_file_to_the_limit_draw_and_the_viewer_refuses_them_with_an_ncd_error(tmp_path: Path
                                                                                                     ) -> None:
    """A file may nest sequences in sequences (``>>`` flattens them; a file need not) 149 deep, within ``nesting``:
    costs and the SVG hold; the viewer's layout is deeper per level than Python's recursion limit allows there, and
    says so (it raised RecursionError), writing no file."""
    doc = json.loads(ncd.Linear("m -> m", name="Q").to_json())
    identity = json.loads(ncd.Identity.of("m").to_json())["diagram"]
    for _ in range(149):
        doc["diagram"] = {"node": "seq", "parts": [doc["diagram"], identity]}
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    d = ncd.load_json(path.read_text(encoding="utf-8"))
    flat = ncd.Linear("m -> m", name="Q")
    assert ncd.cost(d, m=3).numbers == ncd.cost(flat, m=3).numbers
    assert ET.fromstring(ncd.render.to_svg(d)).tag.endswith("svg")
    with pytest.raises(LimitError, match="nested deeper than Python's recursion limit"):
        to_html(d)
    done = subprocess.run([sys.executable, "-m", "ncd", "draw", str(path), "-o", str(tmp_path / "deep.html")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr[-300:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.json"]


class _Spare(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(64, 64, bias=False)
        self.spare = torch.nn.Parameter(torch.zeros(3))  # never read: a traced diagram lists it as unused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_a_read_back_files_unused_parameters_count_against_the_budget_with_its_other_tensors() -> None:
    """The budget bounds all parameters together: an unused entry edited to 38,400 bytes beside the 16,384 of the
    weight is refused under a 40,000-byte budget (it was kept: 54,784 bytes held); the honest file lowers to a
    module holding the parameters the model holds."""
    model, x = _Spare(), torch.randn(2, 64)
    text = ncd.trace(model, x).to_json()
    with override(memory=40_000):
        module = ncd.load_json(text).to_torch()
    assert sorted(p.numel() for p in module.parameters()) == sorted(p.numel() for p in model.parameters())  # torch's
    hostile = text.replace('"spare", {"tuple": [3]}', '"spare", {"tuple": [2400, 4]}')
    assert hostile != text
    with override(memory=40_000), pytest.raises(SchemaError, match="unused parameters take more than the memory"
                                                                   " limit \\(40000 bytes"):
        ncd.load_json(hostile).to_torch()


@pytest.mark.parametrize("held", [3, {"tuple": [1, 2]}, {"diagram": {"node": "identity", "type": {"type": []}}}])
def test_a_read_back_files_held_sizes_that_are_not_names_are_refused_at_other_sizes(held: Any) -> None:
    """``held`` (sizes a traced box holds at their traced values) is read when lowering at other sizes: a file's
    non-list raised TypeError there; now a SchemaError naming it. Its honest value, ``("m",)``, refuses m=5."""
    d = ncd.Block(ncd.Linear("m -> k", name="Q") >> ncd.Softmax("k"), "B", meta=(("traced", "eval"),
                                                                                 ("defaults", (("m", 4), ("k", 3)))))
    honest = ncd.load_json(_with_meta(d, "held", {"tuple": ["m"]}))
    with pytest.raises(ncd.TraceError, match="cannot lower B at m=5"):
        honest.to_torch(m=5)
    hostile = ncd.load_json(_with_meta(d, "held", held))
    for lower in (lambda: hostile.to_torch(m=5), lambda: hostile.to_source(m=5)):
        with pytest.raises(SchemaError, match="meta held=.* is not a tuple of size names"):
            lower()
