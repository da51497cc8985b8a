"""Check a sharded diagram against PyTorch's distributed engine, on CPU, without GPUs.

* :func:`record` runs the lowered module under torch's fake process group (one process plays
  rank 0 of the whole mesh) with ``CommDebugMode`` and a recorder of every collective's buffer,
  forward and backward apart, and sums the parameter elements rank 0 holds;
* :func:`predict` gives the same figures from ``ncd.cost``;
* :func:`compare_gloo` runs the module on a real ``gloo`` group of processes and compares its
  outputs and gradients with the single-process module's (float64).

Command line (what the tests run in a subprocess, since a process group is process-wide)::

    python -m ncd.distributed.verify fake all      # or tp, tp_sp, dp_tp; prints JSON
    python -m ncd.distributed.verify gloo all 2    # tp, tp_sp and dp_tp (as 2 × 1) on 2 processes
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from typing import Any, cast

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ncd.distributed.derive import KINDS
from ncd.ir.diagram import Block, Diagram

__all__ = ["CollectiveRecorder", "record", "predict", "compare_gloo", "gpt2_block", "SCENARIOS"]

_KIND_OF = {
    "all_reduce": "all_reduce", "all_reduce_": "all_reduce", "allreduce_": "all_reduce",
    "all_gather_into_tensor": "all_gather", "_allgather_base_": "all_gather", "allgather_": "all_gather",
    "all_gather_into_tensor_out": "all_gather",
    "reduce_scatter_tensor": "reduce_scatter", "_reduce_scatter_base_": "reduce_scatter", "reduce_scatter_": "reduce_scatter",
    "all_to_all_single": "all_to_all", "alltoall_base_": "all_to_all", "alltoall_": "all_to_all",
}


class CollectiveRecorder(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's class is untyped
    """Every collective dispatched: its kind and its buffer's elements per rank (the convention of ``ncd.cost``)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.calls: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        name = func._overloadpacket.__name__
        if func.namespace in ("_c10d_functional", "c10d_functional", "c10d") and name in _KIND_OF:
            kind = _KIND_OF[name]
            if name == "all_gather_into_tensor":
                numel = args[0].numel() * int(args[1])
            elif name in ("_allgather_base_", "all_gather_into_tensor_out"):
                numel = args[0].numel()
            elif name == "_reduce_scatter_base_":
                numel = args[1].numel()
            else:
                first = args[0]
                numel = sum(t.numel() for t in first) if isinstance(first, (list, tuple)) else first.numel()
            self.calls.append((kind, numel))
        return func(*args, **(kwargs or {}))

    def summary(self) -> dict[str, dict[str, int]]:
        out = {k: {"count": 0, "numel": 0} for k in KINDS}
        for kind, numel in self.calls:
            out[kind]["count"] += 1
            out[kind]["numel"] += numel
        return out


def gpt2_block(m: int = 64, h: int = 8, k: int = 8, t: int = 16) -> Block:
    """One GPT-2 block of the gallery (``ncd.zoo.gpt2``), dropout off, as a model of its own."""
    import ncd
    from ncd.zoo._model import model

    gpt2 = ncd.zoo.gpt2(N=1, v=8, m=m, h=h, k=k, n=t, t=t, dropout=0.0)
    block = next(n for n in gpt2.walk() if isinstance(n, Block) and n.name == "Block")
    return model("GPT2Block", block.body, m=m, h=h, k=k, t=t)


#: the verified set-ups: (mesh, placements) on a GPT-2 block
SCENARIOS: dict[str, tuple[dict[str, int], dict[str, str]]] = {
    "tp": ({"tp": 8}, {"h": "tp", "f": "tp"}),
    "tp_sp": ({"tp": 8}, {"h": "tp", "f": "tp", "t": "tp"}),
    "dp_tp": ({"dp": 2, "tp": 4}, {"b": "dp", "h": "tp", "f": "tp"}),
}


def scenario(name: str, **sizes: int) -> Diagram:
    import ncd

    mesh, placements = SCENARIOS[name]
    return ncd.shard(gpt2_block(**sizes), ncd.Mesh(**mesh), placements)


def _inputs(sharded: Diagram, module: Any, batch: int, dtype: torch.dtype, seed: int) -> list[Any]:
    """Rank 0's inputs: ``batch`` samples, as DTensors where the model's input is split."""
    from torch.distributed.tensor import DTensor, Replicate, Shard

    derivation = module.ncd_derivation
    out = []
    for example, wire in zip(sharded.example_inputs(batch, seed=seed), derivation.block_inputs[()]):
        x = example.to(dtype).requires_grad_(True)
        split = [(m, s) for m, s in wire.place]
        if split:
            mesh = module.ncd_mesh
            placements = [Shard(1 + wire.names.index(dict(split)[m])) if m in dict(split) else None for m in mesh.mesh_dim_names]
            x = DTensor.from_local(_local(x, mesh, placements), mesh, [p or Replicate() for p in placements])
        out.append(x)
    return out


def _local(x: torch.Tensor, mesh: Any, placements: list[Any]) -> torch.Tensor:
    local = x.detach()
    for dim, p in enumerate(placements):
        if p is not None:
            ranks, me = mesh.size(dim), mesh.get_local_rank(dim)
            local = local.chunk(ranks, dim=p.dim)[me]
    return local.clone().requires_grad_(True)


def _plain(y: Any) -> torch.Tensor:
    result: torch.Tensor = y.to_local() if hasattr(y, "to_local") else y
    return result


def record(sharded: Diagram, batch: int = 2) -> dict[str, Any]:
    """Rank 0 of the mesh under the fake process group: collectives per pass and parameter elements held."""
    import torch.distributed as dist
    from torch.distributed.tensor.debug import CommDebugMode
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from ncd.distributed.lower import to_distributed
    from ncd.distributed.shard import sharding_of

    sharding = sharding_of(sharded)
    assert sharding is not None
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=sharding.mesh.world_size)
    try:
        module = to_distributed(sharded, batch_dims=1)
        params = sum(_plain(p.data).numel() for p in module.parameters())
        inputs = _inputs(sharded, module, batch, torch.float32, 0)
        result: dict[str, Any] = {"param_numel": params}
        with CommDebugMode() as debug, CollectiveRecorder() as recorder:  # type: ignore[no-untyped-call]
            out = module(*inputs)
        result["forward"], result["forward_debug"] = recorder.summary(), _debug_counts(debug)
        outs = out if isinstance(out, tuple) else (out,)
        loss = cast(torch.Tensor, sum(_plain(y).sum() for y in outs))
        with CommDebugMode() as debug, CollectiveRecorder() as recorder:  # type: ignore[no-untyped-call]
            loss.backward()  # type: ignore[no-untyped-call]
        result["backward"], result["backward_debug"] = recorder.summary(), _debug_counts(debug)
        return result
    finally:
        dist.destroy_process_group()


def _debug_counts(debug: Any) -> dict[str, int]:
    out = {k: 0 for k in KINDS}
    for op, n in debug.get_comm_counts().items():
        name = getattr(op, "__name__", str(op)).split(".")[-1]
        if name in _KIND_OF:
            out[_KIND_OF[name]] += n
    return out


def predict(sharded: Diagram, batch: int = 2) -> dict[str, Any]:
    """The same figures as :func:`record`, from ``ncd.cost`` (``batch`` samples per rank)."""
    import ncd
    from ncd.distributed.shard import sharding_of

    sharding = sharding_of(sharded)
    assert sharding is not None
    data = 1
    for m in sharding.data_axes:
        data *= sharding.mesh[m]
    report = ncd.cost(sharded, b=batch * data)
    result: dict[str, Any] = {"param_numel": report.per_rank.params}
    for phase in ("forward", "backward"):
        counts = report.per_rank.counts(phase)
        nbytes = report.per_rank.collective_bytes(phase)
        result[phase] = {k: {"count": int(counts[k]), "numel": int(nbytes[k]) // report.per_rank.itemsize} for k in KINDS}
    return result


# -- a real process group --------------------------------------------------------------------------
def _gloo_rank(rank: int, world: int, names: tuple[str, ...], store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        reports = {name: _gloo_compare(scenario_small(name, world)) for name in names}
        if rank == 0:
            with open(out, "w") as f:
                json.dump(reports, f)
    finally:
        dist.destroy_process_group()


def _gloo_compare(sharded: Diagram) -> dict[str, Any]:
    """This rank's outputs and every full gradient against the single-process module on the whole batch.

    Under data parallelism each rank runs its slice of the batch, and FSDP sums (rather than averages)
    the gradients, so that they equal the single-process gradients of the same loss.
    """
    from ncd.distributed.lower import to_distributed

    module: Any = to_distributed(sharded, batch_dims=1, dtype=torch.float64, seed=0)  # carries ncd_mesh, ncd_derivation
    torch.manual_seed(0)
    reference = sharded.to_torch().to(torch.float64)
    data = [m for m in module.ncd_mesh.mesh_dim_names if m in module.ncd_derivation.sharding.data_axes]
    batch = 2 * (module.ncd_mesh[data[0]].size() if data else 1)
    x = sharded.example_inputs(batch, seed=1)[0].to(torch.float64)
    rows = slice(None)
    if data:
        ranks, me = module.ncd_mesh[data[0]].size(), module.ncd_mesh[data[0]].get_local_rank()
        rows = slice(me * batch // ranks, (me + 1) * batch // ranks)
        for sub in module.modules():
            if hasattr(sub, "set_gradient_divide_factor"):
                sub.set_gradient_divide_factor(1.0)
    y = module(*_inputs_for(module, x[rows]))
    y_full = y.full_tensor() if hasattr(y, "full_tensor") else y
    weight = torch.randn((batch,) + tuple(y_full.shape[1:]), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (y_full * weight[rows]).sum().backward()
    grads = {n: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad) for n, p in module.named_parameters()}
    y_ref = reference(x)
    (y_ref * weight).sum().backward()
    named = dict(reference.named_parameters())
    return {"output": float((y_full - y_ref[rows]).detach().abs().max()),
            "grads": max(float((grads[n] - p.grad).abs().max()) for n, p in named.items()),
            "allclose": bool(torch.allclose(y_full, y_ref[rows]) and
                             all(p.grad is not None and torch.allclose(grads[n], p.grad) for n, p in named.items())),
            "params": len(grads), "same_names": sorted(grads) == sorted(named)}


def _inputs_for(module: Any, x: torch.Tensor) -> list[Any]:
    from torch.distributed.tensor import DTensor, Replicate, Shard

    wire = module.ncd_derivation.block_inputs[()][0]
    mesh = module.ncd_mesh
    if not wire.place:
        return [x]
    placements = [Shard(1 + wire.names.index(dict(wire.place)[m])) if m in dict(wire.place) else None
                  for m in mesh.mesh_dim_names]
    return [DTensor.from_local(_local(x, mesh, placements), mesh, [p or Replicate() for p in placements])]


@functools.cache
def scenario_small(name: str, world: int) -> Diagram:
    """A scenario on ``world`` ranks: tensor parallel over all of them, or data × tensor on 2 × world/2
    (on 2 processes the tensor axis has one rank: FSDP2 alone is checked)."""
    import ncd

    _, placements = SCENARIOS[name]
    mesh = ncd.Mesh(dp=2, tp=world // 2) if "dp" in placements.values() else ncd.Mesh(tp=world)
    return ncd.shard(gpt2_block(m=16, h=4, k=4, t=8), mesh, placements)


def compare_gloo(names: tuple[str, ...] = tuple(SCENARIOS), world: int = 2) -> dict[str, Any]:
    """Run the scenarios on ``world`` gloo processes; per scenario, max differences to the single-process module."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        store, out = os.path.join(tmp, "store"), os.path.join(tmp, "out.json")
        for name in names:  # build (and cache) the diagrams before forking: the ranks start at once
            scenario_small(name, world)
        mp.start_processes(_gloo_rank, args=(world, tuple(names), store, out),  # type: ignore[attr-defined, no-untyped-call]
                           nprocs=world, join=True, start_method="fork")
        with open(out) as f:
            result: dict[str, Any] = json.load(f)
            return result


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    names = tuple(SCENARIOS) if len(args) > 1 and args[1] == "all" else tuple(args[1:2])
    if len(args) < 2 or args[0] not in ("fake", "gloo") or not set(names) <= set(SCENARIOS):
        print(f"usage: python -m ncd.distributed.verify fake|gloo all|{'|'.join(SCENARIOS)} [world]", file=sys.stderr)
        return 2
    if args[0] == "fake":
        result = {n: {"recorded": record(scenario(n)), "predicted": predict(scenario(n))} for n in names}
    else:
        world = int(args[2]) if len(args) > 2 else 2
        result = compare_gloo(names, world)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
