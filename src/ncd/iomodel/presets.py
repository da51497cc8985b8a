"""Preset GPU hierarchies, with their sources.

Figures are vendor datasheet values where NVIDIA publishes them; where it does not (L2 and
shared-memory bandwidths), the value is derived from published per-clock widths and the
boost clock, and the derivation is written next to it.  Capacities are per unit (one SM's
shared memory and register file; the whole L2; the whole HBM); bandwidths are the whole
chip's.

>>> from ncd.iomodel.presets import PRESETS
>>> sorted(PRESETS)
['a100', 'h100', 'h200']
"""

from __future__ import annotations

from collections.abc import Callable

from ncd.iomodel.hierarchy import Hierarchy, Level, TileConstraint

__all__ = ["PRESETS", "h100", "a100", "h200"]

KB = 1024
#: 128-byte global-memory transactions: a tile's contiguous axis should span whole sectors.
_COALESCE = TileConstraint("*", bytes=128, why="128-byte coalesced transactions")
#: mma fragments: 16 x 8 x 16 (fp16) tiles for warp-level matrix multiply-accumulate.
_FRAGMENT = TileConstraint("*", elements=16, why="tensor-core mma fragment 16x8x16")


def _hopper(name: str, hbm_bytes: int, hbm_bandwidth: float, hbm_source: str) -> Hierarchy:
    clock = 1.98e9  # H100/H200 SXM boost clock
    sms = 132
    return Hierarchy(
        name,
        (
            Level("hbm", hbm_bytes, None, 1, (), hbm_source),
            Level("l2", 50 * 10**6, hbm_bandwidth, 1, (_COALESCE,),
                  "50 MB L2 (NVIDIA H100 datasheet); the pipe above is the HBM bandwidth"),
            Level("smem", 227 * KB, 5120 * clock, sms, (_COALESCE,),
                  "228 KB SMEM per SM, 227 KB usable by one block (CUDA C Programming Guide, compute capability 9.0);"
                  " L2->SM bandwidth 5120 B/clk (the A100 whitepaper's L2 read width, which Hopper keeps)"
                  " x 1.98 GHz boost = 10.1 TB/s (NVIDIA publishes no H100 L2 bandwidth)"),
            Level("registers", 256 * KB, 128 * sms * clock, sms, (_FRAGMENT,),
                  "64K 32-bit registers = 256 KB per SM (H100 whitepaper); SMEM->registers 128 B/clk/SM"
                  " x 132 SMs x 1.98 GHz = 33.5 TB/s"),
        ),
        {"float8": 1978.9e12, "float16": 989.4e12, "tfloat32": 494.7e12, "float32": 494.7e12, "float64": 66.9e12},
        66.9e12,
        "NVIDIA H100 Tensor Core GPU datasheet (SXM5): dense tensor rates fp8 1,979, fp16/bf16 989, tf32 495,"
        " fp64 67 TFLOP/s; fp32 (non-tensor) 67 TFLOP/s; 132 SMs; boost 1.98 GHz",
    )


def h100() -> Hierarchy:
    """H100 SXM5 80 GB: 80 GB HBM3 at 3.35 TB/s, 50 MB L2, 132 SMs x 228 KB SMEM, 989 TFLOP/s fp16.

    Source: NVIDIA H100 Tensor Core GPU datasheet (SXM5 column) and the H100 architecture
    whitepaper; L2/SMEM bandwidths derived as written on each level.
    """
    return _hopper("h100", 80 * 10**9, 3.35e12, "80 GB HBM3 at 3.35 TB/s (NVIDIA H100 datasheet, SXM5)")


def h200() -> Hierarchy:
    """H200 SXM 141 GB: 141 GB HBM3e at 4.8 TB/s; the compute die is the H100's (same rates, L2, SMs).

    Source: NVIDIA H200 Tensor Core GPU datasheet (SXM column).
    """
    return _hopper("h200", 141 * 10**9, 4.8e12, "141 GB HBM3e at 4.8 TB/s (NVIDIA H200 datasheet, SXM)")


def a100() -> Hierarchy:
    """A100 SXM4 80 GB: 80 GB HBM2e at 2.039 TB/s, 40 MB L2, 108 SMs x 164 KB SMEM, 312 TFLOP/s fp16.

    Source: NVIDIA A100 Tensor Core GPU datasheet (80 GB SXM column) and the A100 architecture
    whitepaper (L2 read bandwidth 5120 B/clk; 164 KB SMEM per SM, 163 KB per block). No fp8.
    """
    clock = 1.41e9
    sms = 108
    return Hierarchy(
        "a100",
        (
            Level("hbm", 80 * 10**9, None, 1, (), "80 GB HBM2e at 2,039 GB/s (NVIDIA A100 datasheet, 80 GB SXM)"),
            Level("l2", 40 * 10**6, 2.039e12, 1, (_COALESCE,), "40 MB L2 (A100 whitepaper)"),
            Level("smem", 163 * KB, 5120 * clock, sms, (_COALESCE,),
                  "164 KB SMEM per SM, 163 KB per block; L2 read 5120 B/clk x 1.41 GHz = 7.2 TB/s (A100 whitepaper)"),
            Level("registers", 256 * KB, 128 * sms * clock, sms, (_FRAGMENT,),
                  "256 KB register file per SM; 128 B/clk/SM x 108 x 1.41 GHz = 19.5 TB/s"),
        ),
        {"float16": 312e12, "tfloat32": 156e12, "float32": 156e12, "float64": 19.5e12},
        19.5e12,
        "NVIDIA A100 Tensor Core GPU datasheet: dense fp16/bf16 312, tf32 156, fp64 19.5 TFLOP/s;"
        " fp32 (non-tensor) 19.5 TFLOP/s; 108 SMs; boost 1.41 GHz",
    )


PRESETS: dict[str, Callable[[], Hierarchy]] = {"h100": h100, "a100": a100, "h200": h200}
