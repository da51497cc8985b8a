"""``x.shape.numel()``: ``torch.Size`` multiplies its sizes in C into a plain int, which no size the recording hands out
(:class:`ncd.trace.shapes.SizeInt`) can follow, and ``torch.Size`` can be neither patched nor subclassed.  So the
recording asks, where the model's own line reads ``x.shape`` (or ``x.size()``), whether that shape's ``numel`` is read:
then the product is held as ``len(x)`` is (refused at other sizes where the model is not at hand to check them).
``x.sum() / x.shape.numel()`` traced at 48 entries lowered from its JSON read-back at other sizes divided by 48, 0.03
off the model, with only the read-back's generic warning.  Read through the instructions of the model's code: the shape
read, then only what passes it on (a slice ``[1:]``, a call of it ``torch.Size(...)``), then ``numel``; or the shape
stored in a local (``s = x.shape``) whose ``numel`` the code reads anywhere (``s.numel()``, ``s[1:].numel()``).  What
this misses (the shape kept in a list, an attribute, another function's local) is not followed.

>>> import sys
>>> def reads(x): return numel_next(sys._getframe())
>>> reads(None)
False
"""

from __future__ import annotations

import dis
from typing import Any

__all__: list[str] = []

#: a code object's id -> the code object and the offsets of its shape reads whose ``numel`` is read
_NUMEL_AFTER: dict[int, tuple[Any, frozenset[int]]] = {}

_READS = ("LOAD_ATTR", "LOAD_METHOD")
#: instructions that pass the shape on (``[1:]``, ``torch.Size(...)``) before its ``numel`` is read
_PASSING = ("LOAD_CONST", "BUILD_SLICE", "BINARY_SUBSCR", "PRECALL", "CALL")


def _after(ops: list[Any], i: int) -> Any:
    """The first instruction from ``ops[i]`` on that does not pass the value on (None past the end)."""
    while i < len(ops) and ops[i].opname in _PASSING:
        i += 1
    return ops[i] if i < len(ops) else None


def _numel_reads(code: Any) -> frozenset[int]:
    """The offsets (where the frame stands while the shape is read) of ``code``'s shape reads whose ``numel`` is read."""
    ops = list(dis.get_instructions(code))
    reads: list[tuple[int, int]] = []  # (offset, index of the instruction after the read)
    for i, a in enumerate(ops):
        if a.opname == "LOAD_ATTR" and a.argval == "shape":
            reads.append((a.offset, i + 1))
        elif a.opname in _READS and a.argval == "size" and i + 3 < len(ops) and ops[i + 1].opname == "PRECALL" \
                and ops[i + 1].arg == 0 and ops[i + 2].opname == "CALL" and ops[i + 2].arg == 0:
            reads.append((ops[i + 3].offset - 2, i + 3))  # x.size(): at its CALL's last cache
    stored = {a.argval for i, a in enumerate(ops) if a.opname == "LOAD_FAST"
              and (b := _after(ops, i + 1)) is not None and b.opname in _READS and b.argval == "numel"}
    found = set()
    for offset, i in reads:
        b = _after(ops, i)
        if b is not None and (b.opname in _READS and b.argval == "numel" or b.opname == "STORE_FAST" and b.argval in stored):
            found.add(offset)
    return frozenset(found)


def numel_next(frame: Any) -> bool:
    """Whether ``frame`` is at a shape read (``x.shape``, ``x.size()``) whose ``numel`` its code reads; the offsets are
    found once per code object naming ``numel``."""
    code = frame.f_code
    if "numel" not in code.co_names:  # (most code reading shapes never names it: no disassembly)
        return False
    entry = _NUMEL_AFTER.get(id(code))
    if entry is None or entry[0] is not code:
        entry = _NUMEL_AFTER[id(code)] = (code, _numel_reads(code))
    return frame.f_lasti in entry[1]
