"""Memory hierarchies: levels with capacities, pipe bandwidths, sibling counts and tile constraints.

A hierarchy is a chain of memory levels, top = largest and slowest (HBM), then e.g. L2 →
shared memory (SMEM) → registers.  Each level has a capacity ``M_ℓ`` (bytes, per unit), the
bandwidth ``B_ℓ`` of the pipe between it and its parent (bytes/s, summed over all units),
the number of sibling units under one parent, and optional tile-shape constraints.  Compute
rates (FLOP/s per element type) sit at the bottom.

>>> import ncd
>>> h100 = ncd.Hierarchy.preset("h100")
>>> h100.levels
('hbm', 'l2', 'smem', 'registers')
>>> two = h100.restrict("hbm", "smem")
>>> two.levels, two.level("smem").bandwidth == h100.level("l2").bandwidth
(('hbm', 'smem'), True)
>>> h100.capacity("smem", "float16")     # 227 KB usable per block, in fp16 elements
116224
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ncd.errors import NCDError, SizeError

__all__ = ["DTYPES", "HierarchyError", "Level", "TileConstraint", "Hierarchy", "element_bytes"]


class HierarchyError(NCDError, ValueError):
    """A hierarchy, level, element type or schedule does not exist or is not feasible."""


#: Bytes per element of the element types the model knows.
DTYPES: dict[str, int] = {
    "float64": 8, "float32": 4, "tfloat32": 4, "float16": 2, "bfloat16": 2,
    "float8": 1, "float8_e4m3": 1, "float8_e5m2": 1,
}

#: Which compute rate an element type uses (fp8 variants share one rate).
_RATE_CLASS = {"float8_e4m3": "float8", "float8_e5m2": "float8", "bfloat16": "float16"}


def element_bytes(dtype: str) -> int:
    """``q``: bytes per element of ``dtype`` (``"float16"``, ``"float8"``, ...)."""
    if dtype not in DTYPES:
        raise HierarchyError(f"unknown element type {dtype!r}; known: {', '.join(DTYPES)}")
    return DTYPES[dtype]


@dataclass(frozen=True)
class TileConstraint:
    """Tile sizes along ``axis`` must be a multiple of ``elements`` (or of ``bytes`` / q).

    ``axis`` is an axis name, or ``"*"`` for every tiled axis; several constraints on one
    axis combine by least common multiple (:meth:`Hierarchy.multiple`).
    """

    axis: str
    elements: int = 1
    bytes: int = 0
    why: str = ""

    def multiple(self, q: int) -> int:
        by_bytes = max(1, self.bytes // q) if self.bytes else 1
        return math.lcm(self.elements, by_bytes)


@dataclass(frozen=True)
class Level:
    """One memory level.

    ``capacity``: bytes per unit (a block's usable SMEM, one SM's register file, the L2);
    ``bandwidth``: bytes/s of the pipe between this level and its parent, all units together
    (``None`` at the top); ``units``: sibling units under one parent (SMs under the L2).
    """

    name: str
    capacity: int
    bandwidth: float | None = None
    units: int = 1
    constraints: tuple[TileConstraint, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class Hierarchy:
    """A chain of memory levels, top first, and compute rates (FLOP/s) per element type.

    ``rates`` holds the tensor-core (matrix) rate per element type; ``vector_rate`` the rate
    of non-matrix arithmetic (exponentials, sums, scaling), in FLOP/s.
    """

    name: str
    chain: tuple[Level, ...]
    rates: Mapping[str, float] = field(default_factory=dict)
    vector_rate: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        names = [lv.name for lv in self.chain]
        if not names:
            raise HierarchyError(f"hierarchy {self.name!r} has no levels")
        if len(set(names)) != len(names):
            raise HierarchyError(f"hierarchy {self.name!r}: level names repeat: {names}")
        for lv in self.chain[1:]:
            if not lv.bandwidth or lv.bandwidth <= 0:
                raise HierarchyError(f"hierarchy {self.name!r}: level {lv.name!r} needs the bandwidth of the pipe above it")

    # -- presets ---------------------------------------------------------------
    @staticmethod
    def preset(name: str) -> Hierarchy:
        """A preset GPU: ``"h100"`` (H100 SXM5), ``"a100"`` (A100 SXM4 80 GB) or ``"h200"`` (H200 SXM).

        >>> import ncd
        >>> ncd.Hierarchy.preset("a100").level("hbm").capacity
        80000000000
        """
        from ncd.iomodel.presets import PRESETS

        key = name.lower().replace("-", "").replace(" ", "")
        if key not in PRESETS:
            raise HierarchyError(f"no hierarchy preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return PRESETS[key]()

    # -- structure ---------------------------------------------------------------
    @property
    def levels(self) -> tuple[str, ...]:
        """Level names, top (largest, slowest) first."""
        return tuple(lv.name for lv in self.chain)

    def level(self, name: str) -> Level:
        for lv in self.chain:
            if lv.name == name:
                return lv
        raise HierarchyError(f"hierarchy {self.name!r} has no level {name!r}; its levels are {', '.join(self.levels)}")

    def parent(self, name: str) -> str | None:
        i = self.levels.index(self.level(name).name)
        return self.levels[i - 1] if i else None

    def restrict(self, *names: str) -> Hierarchy:
        """Keep only the named levels (in hierarchy order).

        A kept level's pipe becomes the slowest pipe on the way up to the next kept level
        (the bottleneck of the levels removed in between): the paper's two-level HBM–SMEM
        model is ``restrict("hbm", "smem")``.
        """
        if not names:
            raise HierarchyError(f"restrict: name at least one level of {', '.join(self.levels)}")
        for n in names:
            self.level(n)
        keep = [lv for lv in self.chain if lv.name in names]
        out: list[Level] = []
        for i, lv in enumerate(self.chain):
            if lv.name not in names:
                continue
            if out:
                j = self.levels.index(out[-1].name)
                pipes = [x.bandwidth for x in self.chain[j + 1 : i + 1] if x.bandwidth]
                lv = replace(lv, bandwidth=min(pipes))
            else:
                lv = replace(lv, bandwidth=None)
            out.append(lv)
        assert len(out) == len(keep)
        return replace(self, name=f"{self.name}[{','.join(names)}]", chain=tuple(out))

    # -- element types -------------------------------------------------------------
    def capacity(self, level: str, dtype: str = "float16") -> int:
        """Capacity of ``level`` in elements of ``dtype`` (``M_ℓ / q``)."""
        return self.level(level).capacity // element_bytes(dtype)

    def rate(self, dtype: str) -> float:
        """Dense matrix (tensor-core) FLOP/s for ``dtype``."""
        element_bytes(dtype)
        key = _RATE_CLASS.get(dtype, dtype)
        if key not in self.rates:
            raise HierarchyError(
                f"{self.name} has no matrix rate for {dtype}; it has rates for {', '.join(self.rates)}"
            )
        return float(self.rates[key])

    def multiple(self, level: str, axis: str, dtype: str = "float16") -> int:
        """The tile multiple required along ``axis`` at ``level`` (constraints combined by LCM)."""
        q = element_bytes(dtype)
        m = 1
        for c in self.level(level).constraints:
            if c.axis in ("*", axis):
                m = math.lcm(m, c.multiple(q))
        return m

    def describe(self) -> str:
        """A text table of the levels."""
        rows = [f"{self.name}: " + " -> ".join(self.levels)]
        for lv in self.chain:
            bw = f"{lv.bandwidth / 1e12:.2f} TB/s above" if lv.bandwidth else "top"
            rows.append(f"  {lv.name:<10} {lv.capacity / 1e6:>12,.3f} MB x {lv.units:<4} {bw}")
        rows.append("  rates: " + ", ".join(f"{k} {v / 1e12:.1f} TFLOP/s" for k, v in self.rates.items()))
        return "\n".join(rows)


def check_positive(value: float, what: str) -> None:
    if value <= 0:
        raise SizeError(f"{what} must be positive, not {value}")
