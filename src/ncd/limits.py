"""Resource limits: what ``ncd`` refuses before it reads, allocates or loops too much.

Every limit is checked *before* the work it bounds (reading a file, building a type, unrolling
a repetition, allocating tensors) and raises :class:`~ncd.errors.LimitError` naming what is too
large, where, and the limit.  The defaults suit every model ``ncd`` ships and leave a wide margin;
change them for a process with :func:`set_limits`, for a block of code with :func:`override`, or
the memory budget from the environment (``NCD_MEMORY_BUDGET=16GiB``).

=================  ==============  =====================================================================
limit              default         what it bounds
=================  ==============  =====================================================================
``file_bytes``     16 MiB          the text of a diagram file (``ncd.load_json``, the CLI)
``depth``          100             tagged values of a file one inside another (types, segments, axes, tuples)
``nodes``          100,000         diagram nodes in a file
``nesting``        150             diagram nodes one inside another (blocks, sequences, pars, ...), built or read
``string``         1,000           characters in any name, label or text of a file
``segments``       65,536          tensors in one type (a ``Copy`` into a million wires is refused; the backward of
                                   1,000 layers carries 7,001 stored values in one)
``axis_size``      2**31 - 1       the size of one axis once it is a number
``repeat``         10,000          the count of one repetition when it is lowered or costed
``memory``         8 GiB           bytes of any one tensor, and of all parameters, when lowered
``terms``          1,000           terms a product or power in a cost formula expands to (``ncd.cost`` expands them)
=================  ==============  =====================================================================

>>> import ncd
>>> from ncd.limits import limits, override
>>> limits().repeat
10000
>>> with override(memory=2**20):  # doctest: +ELLIPSIS
...     ncd.Linear("m -> n").to_torch(m=1024, n=1024)
Traceback (most recent call last):
ncd.errors.LimitError: L (built at ...): its weight (1024, 1024) needs 4 MiB, more than the memory budget of 1 MiB ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ncd.errors import LimitError

__all__ = ["Limits", "limits", "set_limits", "override", "byte_text", "parse_bytes"]


@dataclass(frozen=True)
class Limits:
    """The limits in force (see the module's table)."""

    file_bytes: int = 16 * 2**20
    depth: int = 100
    nodes: int = 100_000
    nesting: int = 150
    string: int = 1_000
    segments: int = 65_536
    axis_size: int = 2**31 - 1
    repeat: int = 10_000
    memory: int = 8 * 2**30
    terms: int = 1_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LimitError(f"limit {f.name}={value!r} must be a positive whole number")


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """``"8GiB"`` -> 8589934592 (units B, KiB/MiB/GiB/TiB, kB/MB/GB/TB; a bare number is bytes).

    >>> parse_bytes("512 MiB"), parse_bytes("2GB"), parse_bytes("4096")
    (536870912, 2000000000, 4096)
    """
    match = re.fullmatch(r"\s*(\d{1,15})\s*([A-Za-z]{0,3})\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise LimitError(f"cannot read {text!r} as a number of bytes, e.g. '8GiB' or '512MiB'")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def byte_text(n: int) -> str:
    """A byte count for messages.

    >>> byte_text(3 * 2**30), byte_text(1536), byte_text(10)
    ('3 GiB', '1.5 KiB', '10 B')
    """
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _from_environment() -> Limits:
    budget = os.environ.get("NCD_MEMORY_BUDGET")
    return Limits(memory=parse_bytes(budget)) if budget else Limits()


_current = _from_environment()


def limits() -> Limits:
    """The limits in force."""
    return _current


def set_limits(**changes: int) -> Limits:
    """Change limits for the whole process; returns the previous ones (pass them to restore)."""
    global _current
    previous = _current
    unknown = set(changes) - {f.name for f in dataclasses.fields(Limits)}
    if unknown:
        raise LimitError(f"no limit named {', '.join(sorted(unknown))}; limits: "
                         f"{', '.join(f.name for f in dataclasses.fields(Limits))}")
    _current = dataclasses.replace(previous, **changes)
    return previous


def _restore(previous: Limits) -> None:
    global _current
    _current = previous


@contextlib.contextmanager
def override(**changes: int) -> Iterator[Limits]:
    """Change limits inside a ``with`` block (process-wide while it runs)."""
    previous = set_limits(**changes)
    try:
        yield _current
    finally:
        _restore(previous)


# -- checks ------------------------------------------------------------------------------
def check_count(what: str, count: int, limit_name: str) -> None:
    """Refuse ``count`` things of a kind above the limit called ``limit_name``."""
    limit = getattr(_current, limit_name)
    if count > limit:
        raise LimitError(f"{what} is {count}, more than the limit of {limit} ({limit_name} in ncd.limits)")


def check_diagram(diagram: object, *, memory: bool = True) -> None:
    """Before lowering or costing a bound diagram: repetition counts (nested ones multiplied) and,
    with ``memory``, the bytes of every tensor and of all parameters against the memory budget.

    A tensor is a box's input or output segment together with the axes it is woven over. A
    repetition whose sizes do not depend on its variable is checked once, its parameters counted
    that many times; otherwise every iteration is checked (a size may peak anywhere in the range,
    e.g. ``(i-5)**2``), which the repetition limit keeps linear in the unrolled diagram.
    """
    from ncd.ir.diagram import Diagram

    assert isinstance(diagram, Diagram)
    _Budget(memory).visit(diagram, (), 1)


_ITEMSIZE = {"float": 4, "index": 8, "bool": 1, "complex": 8}


class _Budget:
    def __init__(self, memory: bool) -> None:
        self.memory = memory
        self.params = 0
        #: the tensors (a segment and the axes woven around it) already within the budget: equal boxes (the layers
        #: of a long chain) are checked once
        self.fits: set[tuple[object, tuple[object, ...]]] = set()
        #: per primitive, the bytes of each of its parameters
        self.weights: dict[object, list[tuple[str, list[int], int]]] = {}

    def visit(self, node: object, woven: tuple[object, ...], times: int) -> None:
        from ncd.ir.diagram import Box, Repeat, Weave
        from ncd.ir.size import symbol

        if isinstance(node, Repeat):
            name = node.name or node.var
            if (node.stop - node.start).free_symbols:  # a symbolic count (costs are summed, not unrolled)
                self.visit(node.body, woven, times)
                return
            count = node.count()
            check_count(f"the repetition count of {name!r}" + (f" (inside repetitions of {times} in all)" if times > 1 else ""),
                        count * times, "repeat")
            if symbol(node.var) not in node.body.free_symbols:  # every iteration has the same sizes
                self.visit(node.body, woven, times * count)
                return
            start = int(node.start)  # sizes vary with the iteration: check each one (no monotonicity assumed)
            for index in range(start, start + count):
                self.visit(node.iteration(index), woven, times)
            return
        if isinstance(node, Weave):
            self.visit(node.inner, (*woven, node.axis), times)
            return
        if isinstance(node, Box):
            if self.memory and not node.free_symbols:
                self.box(node, woven, times)
            return
        for child in node.children():  # type: ignore[attr-defined]
            self.visit(child, woven, times)

    def box(self, box: object, woven: tuple[object, ...], times: int) -> None:
        from ncd.ir.diagram import Box, describe

        assert isinstance(box, Box)
        budget = _current.memory
        for seg in (*box.dom, *box.cod):
            if (seg, woven) in self.fits:
                continue
            axes = (*woven, *seg.axes)
            entries, sizes = _entries(axes)
            need = entries * _ITEMSIZE.get(seg.dtype, 4)
            if need > budget:
                largest = max(zip(sizes, (a.name for a in axes)))
                raise LimitError(
                    f"{describe(box)}: its tensor '{' '.join(a.name for a in axes)}' needs {byte_text(need)}"
                    f" ({', '.join(f'{a.name}={s}' for a, s in zip(axes, sizes))}), more than the memory budget of"
                    f" {byte_text(budget)} (ncd.limits); its largest axis is {largest[1]} = {largest[0]}")
            self.fits.add((seg, woven))
        weights = self.weights.get(box.prim)
        if weights is None:
            weights = self.weights[box.prim] = list(_weights(box.prim))
        for name, dims, need in weights:
            self.params += need * times
            if need > budget or self.params > budget:
                what = f"its {name} {tuple(dims)} needs {byte_text(need)}" if need > budget else \
                    f"with its {name} {tuple(dims)} the parameters need {byte_text(self.params)}"
                raise LimitError(f"{describe(box)}: {what}, more than the memory budget of {byte_text(budget)} (ncd.limits)")


def _weights(prim: object) -> Iterator[tuple[str, list[int], int]]:
    """Each parameter of ``prim``: its name, its dimensions and its bytes."""
    from ncd.ir.size import evaluate

    for name, shape in prim.params().items():  # type: ignore[attr-defined]
        dims = [evaluate(s, what=f"a size of {name}") for s in shape]
        need = 4
        for d in dims:
            need *= d
        yield name, dims, need


def _entries(axes: tuple[object, ...]) -> tuple[int, list[int]]:
    from ncd.ir.size import evaluate

    sizes = [evaluate(a.size, what=f"axis {a.name}") for a in axes]  # type: ignore[attr-defined]
    total = 1
    for s in sizes:
        total *= s
    return total, sizes
