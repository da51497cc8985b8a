"""IO-aware costs: memory hierarchies, relabelling (group / stream), transfers, memory and time.

The model of Abbott & Zardini, *FlashAttention on a Napkin* (TMLR 2025), as software: see
``docs/io.md`` (which states where it departs from the paper).  A diagram is relabelled — axes grouped
(parallel groups on sibling units) or streamed (sequential chunks carrying a state) at each
memory level — and the report gives, per level, the elements moved across the boundary above
it, the elements live in it, feasibility against its capacity, the roofline time and whether
the schedule is compute- or memory-bound.

>>> import ncd
>>> h = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
>>> fa2 = ncd.io(ncd.online_softmax(ncd.zoo.attention()), h,
...              group={"smem": {"y": 128}}, stream={"smem": {"x": 128}}, y=16384, x=16384, k=128)
>>> fa2.transfers["smem"] == 2 * 16384 * 128 + 2 * 16384 * 16384 * 128 // 128
True
"""

from __future__ import annotations

from ncd.iomodel.hierarchy import DTYPES, Hierarchy, HierarchyError, Level, TileConstraint, element_bytes
from ncd.iomodel.online import online_softmax
from ncd.iomodel.report import IOReport, io
from ncd.iomodel.schedule import Schedule, StreamError

__all__ = ["DTYPES", "Hierarchy", "HierarchyError", "Level", "TileConstraint", "element_bytes",
           "online_softmax", "IOReport", "io", "Schedule", "StreamError"]
