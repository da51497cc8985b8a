"""What one token costs: FLOPs of the prefill and of a step, bytes a step reads, arithmetic intensity.

FLOPs come from ``ncd.cost`` on the derived diagrams (inference mode), so they are the FLOPs
of the lowered modules: the matrix-product part equals ``torch.utils.flop_counter`` on them.
Bytes read by a step are the **weights** it touches (every parameter once, except an embedding
table that is only looked up — its new tokens' rows — and a learned table sliced at the new
position — that row) plus the **past cache** (``c`` positions × bytes per token, at most ``window-1`` positions under a
sliding window); the new
token's cache entry is written, not read.  Element types come from ``dtype`` (one for
everything) or an :class:`~ncd.inference.policy.Policy`.

>>> import ncd
>>> from ncd.inference.examples import gqa_decoder
>>> costs = ncd.decode(gqa_decoder()).costs(c=100)
>>> costs.step_flops == costs.step_matmul + costs.step_other
True
>>> costs.step_bytes == costs.weight_bytes + costs.cache_read_bytes
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sympy

from ncd.inference.derive import DecodeError
from ncd.ir.diagram import Box, Diagram, Seq, unweave
from ncd.ir.size import evaluate, symbol
from ncd.prims.embedding import EmbeddingOp, UnembedOp
from ncd.prims.movement import SliceOp

if TYPE_CHECKING:
    from ncd.inference.decoding import Decoding
    from ncd.inference.policy import Policy

__all__ = ["DecodeCosts", "decode_costs", "Roofline"]


@dataclass(frozen=True)
class Roofline:
    """A machine as the roofline sees it: peak FLOP/s and the bandwidth of the memory holding weights and caches."""

    name: str
    flops_per_second: float
    bytes_per_second: float

    @property
    def ridge(self) -> float:
        """FLOPs per byte above which a kernel is compute-bound."""
        return self.flops_per_second / self.bytes_per_second


@dataclass
class DecodeCosts:
    """Costs of a prefill of ``t`` tokens and of one step after ``c`` cached positions (numbers).

    ``*_matmul`` is what ``torch.utils.flop_counter`` counts; ``*_other`` the elementwise,
    softmax and normalisation arithmetic it does not.  ``layers`` maps each repeated block to its
    per-layer step FLOPs.  ``roofline`` (when given) decides ``bound``: ``"memory"`` or ``"compute"``.
    """

    sizes: dict[str, int]
    prefill_matmul: int
    prefill_other: int
    step_matmul: int
    step_other: int
    weight_bytes: int | float
    cache_per_token: int | float
    cache_read_bytes: int | float
    params: int
    layers: dict[str, int] = field(default_factory=dict)
    prefill_layers: dict[str, int] = field(default_factory=dict)
    roofline: Roofline | None = None

    @property
    def prefill_flops(self) -> int:
        return self.prefill_matmul + self.prefill_other

    @property
    def step_flops(self) -> int:
        return self.step_matmul + self.step_other

    @property
    def step_bytes(self) -> int | float:
        """Bytes one step reads: weights plus the past cache."""
        return self.weight_bytes + self.cache_read_bytes

    @property
    def intensity(self) -> float:
        """Arithmetic intensity of a step: FLOPs per byte read."""
        return float(self.step_flops) / float(self.step_bytes)

    @property
    def bound(self) -> str | None:
        """``"memory"`` or ``"compute"`` on the roofline, ``None`` without one."""
        if self.roofline is None:
            return None
        return "compute" if self.intensity >= self.roofline.ridge else "memory"

    @property
    def step_seconds(self) -> float | None:
        """Roofline time of one step: the larger of compute and memory time (latency assumed hidden)."""
        if self.roofline is None:
            return None
        return max(self.step_flops / self.roofline.flops_per_second, float(self.step_bytes) / self.roofline.bytes_per_second)


def _number(value: Any, what: str) -> Any:
    if isinstance(value, sympy.Expr) and value.free_symbols:
        raise DecodeError(f"decode costs: {what} still depends on {', '.join(sorted(map(str, value.free_symbols)))};"
                          " bind it (e.g. costs(c=1024, t=128))")
    return value


def _weight_elements(step: Diagram, params: int, sizes: dict[str, int]) -> int:
    """Parameters a step touches: all, except looked-up tables (the new tokens' rows) and sliced tables (the slice)."""
    tied = {b.prim.tied_to for b in step.boxes() if isinstance(b.prim, UnembedOp) and b.prim.tied_to}
    total = sympy.Integer(params)
    for b in step.boxes():
        prim = b.prim
        if isinstance(prim, EmbeddingOp) and b.label not in tied:
            (shape,) = prim.params().values()
            total += -sympy.Mul(*shape) + sympy.Mul(*shape[1:])  # one row per new token (per sequence)
    for node in step.walk():
        if isinstance(node, Seq):
            for left, right in zip(node.parts, node.parts[1:]):
                core, _ = unweave(right)
                if isinstance(left, Box) and left.prim.learned and isinstance(core, Box) and isinstance(core.prim, SliceOp):
                    (shape,) = left.prim.params().values()
                    whole = sympy.Mul(*shape)
                    total += -whole + whole / core.prim.axis.size * core.prim.output.size
    return int(evaluate(total.xreplace({symbol(k): v for k, v in sizes.items()}), what="weights read per step"))


def decode_costs(decoding: Decoding, dtype: str = "bfloat16", roofline: Roofline | None = None,
                 policy: Policy | None = None, **sizes: int) -> DecodeCosts:
    """Prefill and step costs of ``decoding`` at ``sizes`` (``t`` prompt tokens, ``c`` cached positions)."""
    from ncd.analysis import cost
    from ncd.inference.dtypes import element_bytes

    base = {k: v for k, v in decoding.sizes.items()}
    all_sizes = {**base, **sizes}
    token, past = decoding.token, all_sizes.get("c", all_sizes.get(decoding.token, 8))
    all_sizes["c"] = past
    pre_sizes = {k: v for k, v in all_sizes.items() if k != "c"}
    step_sizes = {k: v for k, v in all_sizes.items() if k != token}
    # bound before costing: numbers only (a symbolic peak-memory formula is slow to build and not needed)
    prefill = cost(decoding.prefill.bind(**_only(decoding.prefill, pre_sizes)), training=False)
    step = cost(decoding.step.bind(**_only(decoding.step, step_sizes)), training=False)
    params = int(_number(step.params, "the parameter count"))
    weights = _weight_elements(decoding.step, params, step_sizes)
    if policy is not None:
        weight_bytes = policy.weight_bytes(decoding.step, step_sizes, weights)
        per_token = policy.cache_bytes(decoding, **all_sizes)
        held = policy.cache_bytes_at(decoding, past, **all_sizes)
    else:
        weight_bytes = weights * element_bytes(dtype)
        per_token = decoding.cache_bytes(dtype=dtype, **all_sizes)
        held = decoding.cache_bytes_at(past, dtype=dtype, **all_sizes)
    layers, prefill_layers = _per_layer(decoding, step), _per_layer(decoding, prefill)
    return DecodeCosts(
        all_sizes,
        int(_number(prefill.forward_matmul, "prefill FLOPs")), int(_number(prefill.forward_other, "prefill FLOPs")),
        int(_number(step.forward_matmul, "step FLOPs")), int(_number(step.forward_other, "step FLOPs")),
        _plain(weight_bytes), _plain(per_token), _plain(held), params, layers, prefill_layers, roofline,
    )


def _per_layer(decoding: Decoding, report: Any) -> dict[str, int]:
    """Forward FLOPs of one layer of every repeated block (the repetitions add up in ``report.blocks``)."""
    layers = {}
    for name, metrics in report.blocks.items():
        count = _repeat_count(decoding, name.split("/")[-1])
        if count:
            layers[name] = int(_number(metrics.forward_flops, f"block {name}")) // count
    return layers


def _plain(value: Any) -> int | float:
    value = sympy.nsimplify(value) if isinstance(value, sympy.Basic) else value
    if isinstance(value, sympy.Basic):
        _number(value, "a byte count")
        return int(value) if value.is_integer else float(value)
    return value  # type: ignore[no-any-return]


def _only(diagram: Diagram, sizes: dict[str, int]) -> dict[str, int]:
    free = {str(s) for s in diagram.free_symbols}
    return {k: v for k, v in sizes.items() if k in free}


def _repeat_count(decoding: Decoding, block: str) -> int:
    """How many layers the repeated block ``block`` stands for (0 when it is not repeated)."""
    from ncd.ir.diagram import Block, Repeat

    for node in decoding.step.walk():
        if isinstance(node, Repeat) and isinstance(node.body, Block) and node.body.name == block:
            return int(node.count())
    return 0


def roofline_for(hierarchy: Any = None, peak_flops: float | None = None, bandwidth: float | None = None,
                 dtype: str = "bfloat16") -> Roofline | None:
    """A :class:`Roofline` from a memory-hierarchy preset (name or ``ncd.Hierarchy``) or from two numbers.

    From a hierarchy: the matrix rate for ``dtype`` and the bandwidth of the pipe out of the top level
    (HBM), where weights and caches live.  ``None`` when nothing is given.
    """
    if hierarchy is not None:
        import ncd
        from ncd.inference.dtypes import canonical

        if isinstance(hierarchy, str):
            factory = getattr(ncd, "Hierarchy", None)
            if factory is None:
                raise DecodeError(f"hierarchy {hierarchy!r}: the IO model (ncd.Hierarchy) is not in this build;"
                                  " give the machine as --peak-flops and --bandwidth")
            hierarchy = factory.preset(hierarchy)
        rate = hierarchy.rate(canonical(dtype))  # an error names the element types it has rates for
        return Roofline(hierarchy.name, float(rate), float(hierarchy.chain[1].bandwidth))
    if peak_flops is None and bandwidth is None:
        return None
    if not peak_flops or not bandwidth or peak_flops <= 0 or bandwidth <= 0:
        raise DecodeError(f"a roofline needs both a positive peak FLOP/s and bandwidth, not {peak_flops} and {bandwidth}")
    return Roofline(f"{peak_flops / 1e12:g} TFLOP/s, {bandwidth / 1e12:g} TB/s", peak_flops, bandwidth)
