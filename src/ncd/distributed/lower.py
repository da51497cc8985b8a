"""Lowering a sharded diagram onto PyTorch's distributed engine.

``to_distributed(sharded, device_mesh)`` lowers the diagram to its ``nn.Module`` (global sizes),
then hands it to PyTorch: a ``parallelize_module`` plan built from the derivation
(``ColwiseParallel`` where a weight is split along an output axis, ``RowwiseParallel`` along an
input axis, with the reduction the derivation chose as its output layout; ``SequenceParallel``
for normalisations running on a split sequence; ``PrepareModuleInput`` where one gather or one
gradient reduction serves several column-parallel maps of a block), and FSDP2 ``fully_shard``
over the data-parallel mesh axes (each repeated layer, then the model).

Activations between a column- and a row-parallel map stay DTensors, so every operation in
between runs under DTensor's sharding rules; attention's fused CPU kernel gets one (heads split,
everything else whole) through ``torch.distributed.tensor.experimental.register_sharding``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ncd.distributed.derive import PARTIAL, BoxPlan, Derivation, Path, Wire, derive
from ncd.distributed.shard import sharding_of
from ncd.errors import LoweringError
from ncd.ir.diagram import Block, Box, Diagram, Identity, Repeat, Weave, describe, unweave
from ncd.ir.interpreter import Fold
from ncd.ir.size import evaluate
from ncd.prims.linear import LinearOp
from ncd.prims.normalization import LayerNormOp, RMSNormOp

__all__ = ["to_distributed", "device_mesh", "module_paths", "tp_plan"]


def device_mesh(sharded: Diagram, device: str = "cpu") -> Any:
    """``init_device_mesh`` for the sharded diagram's mesh (the process group must be initialised)."""
    from torch.distributed.device_mesh import init_device_mesh

    sharding = sharding_of(sharded)
    if sharding is None:
        raise LoweringError(f"device_mesh: {describe(sharded)} is not sharded")
    return init_device_mesh(device, sharding.mesh.shape, mesh_dim_names=sharding.mesh.names)


def to_distributed(sharded: Diagram, mesh: Any = None, *, batch_dims: int = 0, dtype: torch.dtype | None = None,
                   seed: int | None = 0, **sizes: int) -> nn.Module:
    """The sharded diagram as a module parallelized by PyTorch (DTensor plans, FSDP2 over data axes).

    ``mesh`` is a ``DeviceMesh`` with the diagram's mesh axis names (default: :func:`device_mesh`);
    ``batch_dims`` the number of leading batch dimensions the inputs will have (sequence-parallel
    layouts name tensor dimensions); ``seed`` makes every rank start from the same parameters.
    """
    from torch.distributed.tensor.parallel import parallelize_module

    sharding = sharding_of(sharded)
    if sharding is None:
        raise LoweringError(f"to_distributed: {describe(sharded)} is not sharded; use ncd.shard first")
    derivation = derive(sharded)
    mesh = device_mesh(sharded) if mesh is None else mesh
    if seed is not None:
        torch.manual_seed(seed)
    module = sharded.to_torch(check_inputs=True, **sizes)
    if dtype is not None:
        module = module.to(dtype)
    paths = module_paths(sharded, module)
    register_attention_sharding()
    data = set(sharding.data_axes)
    for axis in sharding.mesh:
        if axis in data:
            continue
        plan = tp_plan(derivation, paths, axis, batch_dims)
        if plan:
            parallelize_module(module, mesh[axis], plan)
    if data:
        from torch.distributed.fsdp import fully_shard

        dp_mesh = mesh[tuple(a for a in sharding.mesh if a in data)] if len(data) > 1 else mesh[next(iter(data))]
        for path, _, _, root in derivation.fsdp_units:
            if root:
                continue
            for fqn in paths.get(path, []):
                fully_shard(module.get_submodule(fqn), mesh=dp_mesh)
        fully_shard(module, mesh=dp_mesh)
    module.ncd_derivation = derivation  # type: ignore[assignment]  # read back by ncd.distributed.verify
    module.ncd_mesh = mesh
    return module


def tp_plan(derivation: Derivation, paths: dict[Path, list[str]], axis: str, batch_dims: int) -> dict[str, Any]:
    """The ``parallelize_module`` plan for one mesh axis, read off the derivation."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
    )

    def layout(wire: Wire) -> Any:
        state = wire.state(axis)
        if state is None:
            return Replicate()
        if state == PARTIAL:
            raise LoweringError(f"a partial sum reaches a module boundary at {wire.label()}")
        return Shard(batch_dims + wire.names.index(state))

    plan: dict[str, Any] = {}
    colwise: dict[int, list[BoxPlan]] = {}
    for box in derivation.boxes:
        style = box.style.get(axis)
        if style is None:
            continue
        targets = _fqns(paths, box.path, box.box)
        if style == "colwise":
            colwise.setdefault(box.inputs[0].src, []).append(box)
            arrived = layout(box.arrived[0])
            make: Callable[[], Any] = functools.partial(ColwiseParallel, input_layouts=arrived, output_layouts=Shard(-1),
                                                        use_local_output=False)
        elif style == "rowwise":
            out = layout(box.resolved[0])
            came = box.arrived[0].state(axis)
            make = functools.partial(RowwiseParallel, input_layouts=Shard(-1) if came is not None else Replicate(),
                                     output_layouts=out, use_local_output=isinstance(out, Replicate))
        else:
            dim = layout(box.inputs[0]).dim
            make = functools.partial(SequenceParallel, sequence_dim=dim, use_local_output=False)
        for fqn in targets:
            plan[fqn] = make()
    # one gather (or one gradient reduction) for several column-parallel maps fed by the same tensor
    for src, boxes in colwise.items():
        if len(boxes) < 2:
            continue
        origin = boxes[0].arrived[0]
        block = _enclosing_block(derivation, [b.path for b in boxes], {origin.src, src})
        if block is None:
            raise LoweringError(f"{len(boxes)} column-parallel maps ({', '.join(describe(b.box) for b in boxes)}) share one"
                                " input but no block fences them; fence them in a block so one module prepares the input")
        inputs = derivation.block_inputs[block]
        for fqn in paths.get(block, []):
            plan[fqn] = PrepareModuleInput(input_layouts=tuple(layout(w) for w in inputs),
                                           desired_input_layouts=tuple(Replicate() if w.src in (origin.src, src) else
                                                                       layout(w) for w in inputs),
                                           use_local_output=False)
        for b in boxes:
            for fqn in _fqns(paths, b.path, b.box):
                plan[fqn] = ColwiseParallel(input_layouts=Replicate(), output_layouts=Shard(-1), use_local_output=False)
    # a split model input arrives as each rank's slice
    top = derivation.block_inputs.get(())
    if top and any(w.state(axis) not in (None, PARTIAL) for w in top):
        if "" in plan:
            raise LoweringError("the model's own input is split and also prepared for a fan-out; fence the fan-out in a block")
        plan[""] = PrepareModuleInput(input_layouts=tuple(layout(w) for w in top),
                                      desired_input_layouts=tuple(layout(w) for w in top), use_local_output=False)
    return plan


def _fqns(paths: dict[Path, list[str]], path: Path, box: Box) -> list[str]:
    found = paths.get(path)
    if found is None:
        raise LoweringError(f"no module found for {describe(box)}; the lowering gave it no submodule")
    return found


def _enclosing_block(derivation: Derivation, box_paths: list[Path], srcs: set[int]) -> Path | None:
    best: Path | None = None
    for path, wires in derivation.block_inputs.items():
        if path and all(p[: len(path)] == path for p in box_paths) and any(w.src in srcs for w in wires):
            if best is None or len(path) > len(best):
                best = path
    return best


# -- which submodule is which box --------------------------------------------------------------
_LEAVES: dict[type, type] = {LinearOp: nn.Linear, LayerNormOp: nn.LayerNorm, RMSNormOp: getattr(nn, "RMSNorm", nn.Module)}


def module_paths(diagram: Diagram, module: nn.Module) -> dict[Path, list[str]]:
    """Diagram paths (as the derivation numbers them) of blocks, repeats' layers, linear maps and norms -> module names.

    The lowering registers a class's submodules in the order it lowers their boxes; this walks the
    diagram in that order and checks each linear map's weight shape.
    """
    found: dict[Path, list[str]] = {(): [""]}
    body = diagram.body if isinstance(diagram, Block) else diagram
    _assign(body, (0,), module, "", list(module.named_children()), found)
    return found


def _take(children: list[tuple[str, nn.Module]], accept: Callable[[nn.Module], bool], what: str) -> tuple[str, nn.Module]:
    while children:
        name, child = children.pop(0)
        if accept(child):
            return name, child
    raise LoweringError(f"no submodule left for {what}; the generated module's layout was not as expected")


def _generated(module: nn.Module) -> bool:
    return type(module).__module__.startswith("ncd_generated")


def _assign(node: Diagram, path: Path, module: nn.Module, prefix: str, children: list[tuple[str, nn.Module]],
            found: dict[Path, list[str]]) -> None:
    _Assign(path, module, prefix, children, found).fold(node)


class _Assign(Fold[None]):
    """Diagram paths paired with the generated module's children, taken in lowering order (a
    :class:`~ncd.ir.interpreter.Fold` whose state is where it is: path, module, name prefix, children left)."""

    def __init__(self, path: Path, module: nn.Module, prefix: str, children: list[tuple[str, nn.Module]],
                 found: dict[Path, list[str]]) -> None:
        self.path, self.module, self.prefix, self.children, self.found = path, module, prefix, children, found

    def _at(self, node: Diagram, path: Path) -> None:
        saved = self.path
        self.path = path
        try:
            self.fold(node)
        finally:
            self.path = saved

    def part(self, node: Diagram, k: int, part: Diagram) -> None:
        self._at(part, self.path + (k,))

    def then(self, first: None, second: None) -> None:
        return None

    beside = then

    def identity(self, node: Identity) -> None:
        return None

    def weave(self, node: Weave) -> None:  # a woven box keeps the weave's path; a woven composite is walked inside
        core, weaves = unweave(node)
        self._at(core, self.path if isinstance(core, Box) else self.path + (0,) * len(weaves))

    def block(self, node: Block) -> None:
        name, child = _take(self.children, _generated, f"block {node.name!r}")
        self.found[self.path] = [self.prefix + name]
        _assign(node.body, self.path + (0,), child, self.prefix + name + ".", list(child.named_children()), self.found)

    def repeat(self, node: Repeat) -> None:
        name, child = _take(self.children, lambda m: isinstance(m, nn.ModuleList), f"repeat {node.name or node.var!r}")
        if not isinstance(node.body, Block):
            raise LoweringError(f"repeat {node.name or node.var!r}: only repeated blocks can be sharded")
        layers = list(child.named_children())
        path, prefix = self.path, self.prefix
        self.found[path + (0,)] = [f"{prefix}{name}.{i}" for i, _ in layers]
        for i, layer in layers:
            sub: dict[Path, list[str]] = {}
            _assign(node.body.body, path + (0, 0), layer, f"{prefix}{name}.{i}.", list(layer.named_children()), sub)
            for key, names in sub.items():
                self.found.setdefault(key, []).extend(names)

    def box(self, box: Box) -> None:
        if type(box.prim) not in _LEAVES:
            return
        kind = _LEAVES[type(box.prim)]
        name, child = _take(self.children, lambda m: isinstance(m, kind), describe(box))
        if isinstance(box.prim, LinearOp):
            _check_linear(box, child)
        self.found[self.path] = [self.prefix + name]


def _check_linear(box: Box, child: nn.Module) -> None:
    prim, weight = box.prim, child.weight
    assert isinstance(prim, LinearOp) and isinstance(weight, torch.Tensor)
    shape = tuple(weight.shape)
    try:
        out = evaluate(_product(prim.cod_axes.sizes))
        inp = evaluate(_product(prim.dom_axes.sizes))
    except Exception:
        return
    if shape != (out, inp):
        raise LoweringError(f"{describe(box)}: expected an nn.Linear with weight {out}×{inp}, found {shape[0]}×{shape[1]}")


def _product(sizes: Any) -> Any:
    total = 1
    for s in sizes:
        total = total * s
    return total


_REGISTERED = False


def register_attention_sharding() -> None:
    """Give the fused CPU attention kernel (forward and backward) a DTensor sharding rule: heads split, or all whole."""
    global _REGISTERED
    if _REGISTERED:
        return
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.experimental import register_sharding

    aten = torch.ops.aten

    @register_sharding(aten._scaled_dot_product_flash_attention_for_cpu.default)  # type: ignore[untyped-decorator]
    def _forward(query: Any, key: Any, value: Any, dropout_p: float = 0.0, is_causal: bool = False,
                 attn_mask: Any = None, scale: Any = None) -> list[tuple[list[Any], list[Any]]]:
        heads = query.ndim - 3
        r: Any = Replicate()
        rules: list[tuple[list[Any], list[Any]]] = [([r, r], [r, r, r, None, None])]
        if heads >= 0:
            rules.append(([Shard(heads), Shard(heads)], [Shard(heads), Shard(heads), Shard(heads), None, None]))
        return rules

    @register_sharding(aten._scaled_dot_product_flash_attention_for_cpu_backward.default)  # type: ignore[untyped-decorator]
    def _backward(grad_out: Any, query: Any, key: Any, value: Any, out: Any, logsumexp: Any, dropout_p: float,
                  is_causal: bool, attn_mask: Any = None, scale: Any = None) -> list[tuple[list[Any], list[Any]]]:
        heads = query.ndim - 3
        r, s = Replicate(), Shard(heads)
        rules: list[tuple[list[Any], list[Any]]] = [([r, r, r], [r, r, r, r, r, r, None, None])]
        if heads >= 0:
            rules.append(([s, s, s], [s, s, s, s, s, s, None, None]))
        return rules

    _REGISTERED = True
