"""The ATen ops each einsum op of the program records (:class:`ncd.ir.program.Contraction`) are the ops ATen runs.

For every einsum op of every gallery model and per-primitive sample (scan bodies included), the call is run on meta
tensors of its operands' shapes under a dispatch mode: the sums within one operand (elements in and out), the one
``bmm`` (its operand shapes) or ``mul``, or none, must be those the op records.  The cost analysis reads these
ops (``ncd.analysis.linear``), so this pins its saved tensors and FLOPs to what torch runs.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ncd
import ncd.zoo
from ncd.errors import NCDError
from ncd.ir.program import Contraction, Op
from ncd.ir.size import evaluate
from ncd.torch.aten_einsum import contraction_of
from ncd.torch.codegen import to_program
from tests.opdb import SAMPLES, load

load()


class _Dispatched(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[tuple[int, ...]], tuple[int, ...]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        self.calls.append((func.overloadpacket.__name__, shapes, tuple(out.shape) if isinstance(out, torch.Tensor) else ()))
        return out


def _check(op: Op) -> None:
    contraction = op.option("contraction")
    assert isinstance(contraction, Contraction), op.code
    shapes = [tuple(evaluate(a.size) for a in v.axes) for v in op.args]
    equation = op.code.split("'")[1]
    size = {c: s for letters, shape in zip(contraction.inputs, shapes) for c, s in zip(letters, shape[len(shape) - len(letters):])
            if s != 1}
    with _Dispatched() as mode:
        torch.einsum(equation, *(torch.empty(s, device="meta") for s in shapes))
    names = [name for name, _, _ in mode.calls]
    sums = [math.prod(ins[0]) // max(math.prod(out), 1) for name, ins, out in mode.calls if name == "sum"]
    expected = [math.prod(size.get(c, 1) for c in letters) for letters in contraction.summed if letters]
    if contraction.product == "sum":
        expected = [math.prod(shapes[0]) // max(math.prod(size.get(c, 1) for c in contraction.output), 1)]
    assert sums == expected, (op.code, mode.calls)
    assert ("bmm" in names) == (contraction.product == "bmm") and names.count("bmm") <= 1, (op.code, names)
    assert ("mul" in names) == (contraction.product == "mul"), (op.code, names)
    if contraction.product == "bmm":
        (left, right), _ = next((ins, out) for name, ins, out in mode.calls if name == "bmm")
        group = [math.prod(size.get(c, 1) for c in g) for g in (contraction.batch, contraction.rows, contraction.inner,
                                                                  contraction.cols)]
        shapes_ = ((group[0], group[1], group[2]), (group[0], group[2], group[3]))
        at = [contraction.output.index(c) for c in contraction.output if size.get(c, 1) != 1]
        rows, cols = ([contraction.output.index(c) for c in g] for g in (contraction.rows, contraction.cols))
        if Contraction.right_first([at.index(p) for p in rows], [at.index(p) for p in cols]):
            shapes_ = ((group[0], group[3], group[2]), (group[0], group[2], group[1]))
        assert (left, right) == shapes_, (op.code, left, right)
    if contraction.product == "view":
        assert not {"sum", "bmm", "mul", "clone", "copy_"} & set(names), (op.code, names)


def test_every_einsum_records_the_aten_ops_it_runs() -> None:
    checked, products = 0, set()
    diagrams: list[tuple[Any, dict[str, int]]] = [(make(), {}) for _, make in sorted(ncd.zoo.MODELS.items())]
    diagrams += [(s.build(), s.sizes) for s in SAMPLES]
    for d, sizes in diagrams:
        try:
            program = to_program(d, **sizes)
        except NCDError:
            continue
        for op in program.inlined():
            contraction = op.option("contraction")
            if op.target == "torch.einsum" and contraction is not None:
                _check(op)
                checked += 1
                products.add(op.option("contraction").product)
    assert checked >= 15 and products >= {"bmm", "mul", "sum"}, (checked, products)


@pytest.mark.parametrize("spec, sizes", [
    ("a b, b c -> a c", dict(a=3, b=4, c=5)),
    ("a b, c d -> a", dict(a=3, b=4, c=5, d=2)),  # b, c and d summed within their operands first
    ("a b, b c -> a b c", dict(a=3, b=4, c=5)),  # nothing contracted: a mul
    ("a b, b c -> a c", dict(a=3, b=1, c=5)),  # a size-one contraction broadcasts: a mul
    ("y k h, x k h -> y x h", dict(y=4, k=3, h=2, x=5)),
    ("a b -> b", dict(a=3, b=4)),
    ("a b -> b a", dict(a=3, b=4)),
    ("a c, b a -> b c", dict(a=4, b=5, c=3)),  # the right operand's rows lead the output: bmm(right, left)
    ("a c d, b d -> c b a", dict(a=3, b=2, c=4, d=5)),  # interleaved: bmm(left, right)
])
def test_edge_cases_record_what_aten_runs(spec: str, sizes: dict[str, int]) -> None:
    program = to_program(ncd.Einsum(spec), **sizes)
    ops = [op for op in program.inlined() if op.target == "torch.einsum"]
    assert ops
    for op in ops:
        _check(op)


def test_three_operands_are_not_planned_as_one_call() -> None:
    assert contraction_of("...a,...b,...c->...abc", [(2,), (3,), (4,)]) is None
