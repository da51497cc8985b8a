"""Past one machine: placements on wires, collectives derived from them, per-rank costs, and lowering
onto PyTorch's distributed engine (DTensor ``parallelize_module`` plans and FSDP2 ``fully_shard``).

>>> import ncd
>>> block = ncd.zoo.gpt2(N=1, m=64, k=16, h=4, v=100, n=16, t=8)
>>> sharded = ncd.shard(block, ncd.Mesh(tp=4), {"h": "tp", "f": "tp"})
>>> ncd.cost(sharded).collectives["all_reduce"]       # Megatron: one after attention, one after the MLP
2
"""

from __future__ import annotations

from ncd.distributed.derive import KINDS, Collective, Derivation, derive
from ncd.distributed.mesh import Mesh, ShardingError
from ncd.distributed.report import INFINIBAND, NVLINK, Link, ShardedCost, TwoLevel, collective_time
from ncd.distributed.shard import Sharding, shard, sharding_of

__all__ = ["Mesh", "ShardingError", "shard", "sharding_of", "Sharding", "derive", "Derivation", "Collective", "KINDS",
           "ShardedCost", "Link", "TwoLevel", "NVLINK", "INFINIBAND", "collective_time"]
