"""One table: every primitive × every interpreter, each cell a rule or an explicit, tested "unsupported".

Interpreters keyed on primitives: lowering, cost, backward (``ncd.ir.rules``), drawing (a family's
``DRAWING`` rule, a pictogram of ``ncd.render``, or the deliberate labelled box), import (an ATen
recogniser that makes the primitive, or a reason it never appears in a forward trace), the IO model,
the sharding derivation and decoding (``IO_MODEL``, ``DISTRIBUTED``, ``DECODE``: a rule of their own or their
kind's, run here on every primitive sample against a count or a run made independently of them), and the IO
model's streamed lowering (``STREAMED``: a rule on tiles, or "unsupported" by kind, tested in test_iomodel_lower).  A new
primitive fails here until every cell is filled; an "unsupported" cell must raise an error quoting
its reason.  ``PYTHONPATH=. python tests/test_rule_coverage.py`` prints the table.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import sympy
import torch

import ncd  # noqa: F401  (declares every primitive)
from ncd.errors import LoweringError, NCDError
from ncd.ir.primitive import PRIMITIVES, Primitive
from ncd.ir.rules import (
    BACKWARD,
    COST,
    DECODE,
    DISTRIBUTED,
    DRAWING,
    IMPORT,
    IO_MODEL,
    LOWERING,
    SCALAR_DRAWING,
    STREAMED,
    RuleTable,
    load,
)
from ncd.render.pictograms import BOX_RULES, LABELLED_BOX_FAMILIES, LABELLED_BOX_OPS, SCALAR_RULES, box_rule
from tests.opdb import SAMPLES
from tests.opdb import load as load_samples

INTERPRETERS = ("lowering", "cost", "backward", "drawing", "import", "io model", "distributed", "decode", "streamed")
RULED: dict[str, RuleTable] = {"lowering": LOWERING, "cost": COST, "backward": BACKWARD, "io model": IO_MODEL,
                               "distributed": DISTRIBUTED, "decode": DECODE, "streamed": STREAMED}
LABELLED = "unsupported: drawn as its label in a box (a deliberate choice: no pictogram)"


def _drawing(cls: type[Primitive]) -> str | None:
    box_rule(cls.op)  # loads the renderer's pictogram families
    if DRAWING.has(cls) or SCALAR_DRAWING.has(cls) or cls.op in BOX_RULES or cls.op in SCALAR_RULES:
        return "rule"
    if cls.op in LABELLED_BOX_OPS or cls.family in LABELLED_BOX_FAMILIES:
        return LABELLED
    return None


def _import_rules() -> None:
    from ncd.trace.idioms import load_rules

    load_rules()


def cell(cls: type[Primitive], interpreter: str) -> str | None:
    """``"rule"``, ``"unsupported: <why>"`` or ``None`` (missing)."""
    if interpreter in RULED:
        return RULED[interpreter].status(cls)
    if interpreter == "drawing":
        return _drawing(cls)
    return IMPORT.status(cls)


def table() -> dict[str, dict[str, str | None]]:
    load()
    return {op: {i: cell(cls, i) for i in INTERPRETERS} for op, cls in sorted(PRIMITIVES.items())}


def test_every_primitive_has_a_rule_or_an_explicit_unsupported_entry_in_every_interpreter() -> None:
    missing = [f"{op} × {i}" for op, row in table().items() for i, status in row.items() if status is None]
    assert not missing, "cells without a rule or an 'unsupported' entry:\n  " + "\n  ".join(missing)


@pytest.mark.parametrize("interpreter", sorted(RULED))
def test_unsupported_cells_raise_errors_that_say_why(interpreter: str) -> None:
    table_ = RULED[interpreter]
    for op, why in table_.unsupported_ops().items():
        prim = object.__new__(PRIMITIVES[op])  # the look-up reads only the class and its op
        with pytest.raises(NCDError, match="is not supported: " + re.escape(why)):
            table_.lookup(prim)


def test_a_rule_and_an_unsupported_entry_exclude_each_other() -> None:
    for name, table_ in RULED.items():
        both = set(table_.rules()) & set(table_.unsupported_ops())
        assert not both, (name, both)


def test_every_declared_import_source_has_a_recogniser() -> None:
    from ncd.trace.convert import RULES

    _import_rules()
    for op, cls in PRIMITIVES.items():
        for aten in IMPORT.sources(cls):
            assert aten in RULES or IMPORT.get(aten) is not None, f"{op}: no recogniser for {aten}"
        for module in IMPORT.makers(cls):
            source = Path(importlib.import_module(module).__file__ or "").read_text(encoding="utf-8")
            assert re.search(rf"\b{cls.__name__}\(", source), f"{op}: {module} never builds {cls.__name__}"


def test_every_rule_is_reachable_from_its_primitives_family_module() -> None:
    """One home per primitive: each rule is defined in (or imported by name into) the module declaring the
    primitive, or built there by a family rule builder of ``ncd.prims.kinds``; no legacy rule modules."""
    import sys

    from ncd.ir import rules

    assert rules.LEGACY == ()
    # the IO model's, the sharding derivation's, decoding's and the streamed lowering's rules read their interpreter's
    # internals: they live there
    tables = {name: t for name, t in rules.TABLES.items()
              if name not in ("io model", "distributed", "decode", "streamed lowering")}
    tables["batched backward"] = rules.BATCHED_BACKWARD
    strays = []
    for name, table_ in tables.items():
        for op, fn in table_.rules().items():
            home = PRIMITIVES[op].__module__
            if fn.__module__ != "ncd.prims.kinds" and getattr(sys.modules[home], fn.__name__, None) is not fn:
                strays.append(f"{name} rule of {op} ({home}): {fn.__module__}.{fn.__name__}")
    assert not strays, "\n".join(strays)


#: learned maps are bilinear in their input and their weight: an explicit rule gives both partial transposes
LEARNED_LINEAR = {"linear", "conv", "conv_transpose", "embedding", "unembed"}


def test_linear_and_multilinear_primitives_derive_their_backward_from_their_kind() -> None:
    from ncd.ir.rules import SECOND_ORDER
    from ncd.prims.kinds import DERIVED

    load()
    for op, cls in PRIMITIVES.items():
        if cls.kind not in ("linear", "multilinear"):
            assert op not in DERIVED, op
            continue
        if op in LEARNED_LINEAR:
            assert cls.learned and BACKWARD.status(cls) == "rule" and op not in DERIVED, op
        elif BACKWARD.why(cls) != SECOND_ORDER:
            assert DERIVED.get(op) == cls.kind, f"{op}: a {cls.kind} primitive whose backward is not derived from its kind"


def test_a_builder_refuses_a_primitive_of_another_kind() -> None:
    from ncd.prims.kinds import partials, transpose
    from ncd.prims.linear import EinsumOp
    from ncd.prims.softmax import SoftmaxOp

    with pytest.raises(TypeError, match="SoftmaxOp is of kind 'nonlinear'"):
        transpose(SoftmaxOp)
    with pytest.raises(TypeError, match="EinsumOp is of kind 'multilinear'"):
        transpose(EinsumOp)
    with pytest.raises(TypeError, match="only a multilinear primitive"):
        partials(SoftmaxOp)


load_samples()
#: samples of one box (the IO model's fusion decides the traffic of several)
SINGLE = [s for s in SAMPLES if len(list(s.build().boxes())) == 1]
#: samples with an input to broadcast over
FED = [s for s in SAMPLES if len(s.build().dom)]


def _numel(t: Any) -> int:
    return sum(int(sympy.Mul(*(a.size for a in seg.axes))) for seg in t)


ROUTING = {"copy", "delete", "swap", "transpose", "rename"}  # no kernel: arrays are passed on, not moved


@pytest.mark.parametrize("sample", SINGLE, ids=lambda s: s.id)
def test_io_model_cell_on_every_sample(sample: Any) -> None:
    """A box alone is one kernel: it moves its inputs, weights and outputs across the top boundary once
    (a routing box moves nothing; zeros reads nothing); an "unsupported" cell raises its reason."""
    diagram = sample.build()
    (box,) = diagram.boxes()
    bound = diagram.bind(**sample.sizes) if sample.sizes else diagram
    hierarchy = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")  # type: ignore[attr-defined]
    why = IO_MODEL.why(box.prim)
    if why:
        with pytest.raises(NCDError, match=re.escape(why)):
            ncd.io(bound, hierarchy)  # type: ignore[attr-defined]
        return
    report = ncd.io(bound, hierarchy)  # type: ignore[attr-defined]
    (bound_box,) = bound.boxes()
    params = sum(int(sympy.Mul(*shape)) for shape in bound_box.prim.params().values())
    if box.prim.op in ROUTING:
        expected = 0
    elif box.prim.op == "zeros":  # writes its output, reads nothing
        expected = _numel(bound_box.cod)
    else:
        expected = _numel(bound.dom) + _numel(bound.cod) + params
    assert report.transfers["smem"] == expected


#: boxes that make a tensor without the split axis (from nothing, or from a store): it is gathered to meet it
CREATORS = {"sinusoidal", "parameter", "save", "load", "constant"}


@pytest.mark.parametrize("sample", FED, ids=lambda s: s.id)
def test_distributed_cell_on_every_sample(sample: Any) -> None:
    """Data parallelism over an axis every box is broadcast over needs no collective in the forward pass
    (each rank runs its slice); a learned box's weights are gathered (FSDP), never anything else."""
    diagram = sample.build()
    sharded = ncd.shard(diagram.weave("β:4"), ncd.Mesh(dp=2), {"β": "dp"})  # type: ignore[attr-defined]
    try:
        report = ncd.cost(sharded, **sample.sizes)  # type: ignore[attr-defined]
        moved = {k: v for k, v in report.collectives.items() if v}
    except LoweringError:  # no program runs it (batch statistics woven over a batch), so it has no cost
        with pytest.raises(LoweringError):
            diagram.weave("β:4").to_source(**sample.sizes)  # type: ignore[attr-defined]
        from ncd.distributed.derive import derive

        moved = {c.kind: c.count for c in derive(sharded).collectives if c.phase == "forward"}
    ops = {b.prim.op for b in diagram.boxes()}
    if ops & CREATORS or any(b.prim.learned for b in diagram.boxes()):
        assert set(moved) <= {"all_gather", "reduce_scatter", "all_reduce"}
    else:
        assert moved == {}, (sample.id, [DISTRIBUTED.status(b.prim) for b in diagram.boxes()])


def _runs_woven(sample: Any) -> bool:
    """Whether the sample lowers and runs woven over a leading axis (batch statistics, weights given as inputs and
    int or mask inputs with their own meaning do not; their primitive is checked on another sample)."""
    if sample.inputs is not None or sample.train:
        return False
    try:
        woven = sample.build().weave("τ")
        woven.to_torch(τ=2, **sample.sizes)(*woven.example_inputs(*sample.batch, τ=2, **sample.sizes))
    except (NCDError, RuntimeError):
        return False
    return True


#: per primitive, its first sample that runs woven over a leading axis
WOVEN: dict[str, Any] = {}
for _s in FED:
    if _s.op not in WOVEN and _runs_woven(_s):
        WOVEN[_s.op] = _s


@pytest.mark.parametrize("sample", list(WOVEN.values()), ids=lambda s: s.id)
def test_decode_cell_on_every_sample(sample: Any) -> None:
    """Woven over a token axis, a box acts on each token alone: the one-token step its decode rule derives, run
    on the last token, equals the last position of the whole sequence run as lowered (the weights shared)."""
    from ncd.inference.derive import _Walk, _Wire
    from ncd.ir.size import symbol

    woven = sample.build().weave("τ")
    one_token = woven.subs({symbol("τ"): sympy.Integer(1)})
    walk = _Walk("step", frozenset(), frozenset({"τ"}), {}, symbol("c"), sympy.Integer(1))
    step, _ = walk.run(one_token, [_Wire(seg) for seg in one_token.dom])
    whole = woven.to_torch(τ=3, **sample.sizes).eval()
    one = step.to_torch(**sample.sizes).eval()
    one.load_state_dict(whole.state_dict())
    xs = woven.example_inputs(*sample.batch, τ=3, **sample.sizes)
    def at(seg: Any, x: torch.Tensor) -> int:  # the dim of τ (the batch axes before the segment broadcast)
        return x.dim() - len(seg) + seg.names.index("τ")

    with torch.no_grad():
        ys = whole(*xs)
        last = one(*(x.narrow(at(seg, x), 2, 1) for x, seg in zip(xs, woven.dom)))
    ys, last = (ys if isinstance(ys, tuple) else (ys,)), (last if isinstance(last, tuple) else (last,))
    assert len(ys) == len(last) == len(woven.cod)
    for y, got, seg in zip(ys, last, woven.cod):
        if y.dim() < len(seg):  # an output made without the inputs is broadcast over τ, not expanded: the same in both
            assert got.shape == y.shape
            torch.testing.assert_close(got, y, atol=sample.atol, rtol=1e-5, equal_nan=True)
            continue
        torch.testing.assert_close(got, y.narrow(at(seg, y), 2, 1), atol=sample.atol, rtol=1e-5, equal_nan=True)


def test_decode_is_checked_on_every_primitive_with_a_plain_sample() -> None:
    """Each primitive with a sample on random inputs is checked above, but batch normalisation (its statistics span
    the batch; its eval sample shares the training module's buffers) and a convolution given its weight as input."""
    plain = {s.op for s in FED if s.inputs is None and not s.train}
    assert plain - set(WOVEN) <= {"batchnorm", "conv_with_weight"}, sorted(plain - set(WOVEN))


def test_labelled_drawing_cells_draw_the_label_in_a_box() -> None:
    for op, cls in PRIMITIVES.items():
        if _drawing(cls) == LABELLED:
            assert box_rule(op).__name__ == "draw_fallback", op


def test_rules_receive_their_own_primitive() -> None:
    """A registered rule is called as ``rule(prim, ...)``: here a fake table shows the calling convention."""
    from ncd.prims.softmax import SoftmaxOp

    seen: list[object] = []
    fake: RuleTable[[int], str] = RuleTable("fake")

    @fake.rule(SoftmaxOp)
    def _rule(prim: SoftmaxOp, n: int) -> str:
        seen.append(prim)
        return prim.axis.name * n

    prim = SoftmaxOp(ncd.Axis("x", 3))  # type: ignore[attr-defined]
    assert fake.apply(prim, 2) == "xx" and seen == [prim]
    with pytest.raises(NCDError, match="no fake rule for primitive 'rename'"):
        fake.lookup(object.__new__(PRIMITIVES["rename"]))


def test_the_internals_page_example_runs() -> None:
    import doctest

    page = (Path(__file__).resolve().parent.parent / "docs" / "internals.md").read_text(encoding="utf-8")
    section = page.split("## Primitive families", 1)[1].split("\n## ", 1)[0]
    test = doctest.DocTestParser().get_doctest(section, {}, "internals.md: primitive families", None, 0)
    assert test.examples
    assert doctest.DocTestRunner().run(test).failed == 0


def test_unsupported_by_kind_yields_to_a_rule_of_its_own() -> None:
    """The streamed lowering's rules are keyed by primitive, and every other primitive is unsupported by its kind."""
    from ncd.prims.softmax import SoftmaxOp

    assert STREAMED.status("einsum") == "rule" and STREAMED.status("causal_mask") == "rule"
    assert (STREAMED.why(SoftmaxOp) or "").startswith("a tile loop needs")
    assert "einsum" not in STREAMED.unsupported_ops() and "softmax" in STREAMED.unsupported_ops()


def _short(status: str | None) -> str:
    if status is None:
        return "MISSING"
    return "kind" if status.startswith("rule: ") else status.split(":")[0]


if __name__ == "__main__":
    rows = table()
    print(f"{'primitive':<22}" + "".join(f"{i:<13}" for i in INTERPRETERS))
    for op, row in rows.items():
        print(f"{op:<22}" + "".join(f"{_short(s):<13}" for s in row.values()))
