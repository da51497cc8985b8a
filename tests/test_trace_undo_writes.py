"""``ncd.trace.undo.writes``: the arguments an operator writes into, read from ``FunctionSchema.is_mutable`` first
(an immutable schema's arguments are not read) — the same answer as reading every argument's alias, on every ATen
operator and on custom operators that write into their first, a later or a keyword argument."""

from __future__ import annotations

from typing import Any

import torch

from ncd.trace.undo import _WRITES, STATISTICS, writes


def _by_arguments(func: torch._ops.OpOverload) -> tuple[tuple[int, str], ...]:
    """The answer read from every argument's alias (independent of ``is_mutable``)."""
    arguments = func._schema.arguments
    found = tuple((i, a.name) for i, a in enumerate(arguments) if a.alias_info is not None and a.alias_info.is_write)
    if func.overloadpacket.__name__ in STATISTICS and len(arguments) > 4:
        found += ((3, arguments[3].name), (4, arguments[4].name))
    return found


def _overloads(namespace: str) -> list[torch._ops.OpOverload]:
    ops = []
    space = getattr(torch.ops, namespace)
    for name in dir(space):
        try:
            packet = getattr(space, name)
        except Exception:  # noqa: BLE001 - a name torch lists but cannot make
            continue
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        for overload in packet.overloads():  # type: ignore[no-untyped-call]
            try:
                ops.append(getattr(packet, overload))
            except Exception:  # noqa: BLE001
                continue
    return ops


def test_every_aten_operator_as_its_arguments_say() -> None:
    ops = _overloads("aten") + _overloads("prims")
    assert len(ops) > 2000
    written = 0
    for func in ops:
        _WRITES.pop(func, None)
        want = _by_arguments(func)
        assert writes(func) == want, func
        assert _WRITES[func] == want
        written += bool(want)
    assert written > 300  # (in-place and out= overloads: both answers met)
    for name in ("add_.Tensor", "copy_.default", "index_put_.default", "batch_norm.default", "native_batch_norm.out",
                 "_native_batch_norm_legit.default"):
        packet, overload = name.split(".")
        func = getattr(getattr(torch.ops.aten, packet), overload)
        _WRITES.pop(func, None)
        assert writes(func) == _by_arguments(func) and writes(func), name  # (running statistics: not in the schema)


def test_custom_operators_that_write() -> None:
    lib: Any = torch.library.Library("ncd_undo_writes_test", "DEF")  # type: ignore[no-untyped-call]
    for schema in ("first(Tensor(a!) x, Tensor y) -> ()", "later(Tensor x, Tensor(a!) y, Tensor(b!) z) -> ()",
                   "keyword(Tensor x, *, Tensor(a!) out) -> Tensor(a!)", "reads(Tensor x, Tensor y) -> Tensor"):
        lib.define(schema)
    space = torch.ops.ncd_undo_writes_test
    assert writes(space.first.default) == ((0, "x"),)
    assert writes(space.later.default) == ((1, "y"), (2, "z"))
    assert writes(space.keyword.default) == ((1, "out"),)
    assert writes(space.reads.default) == ()
