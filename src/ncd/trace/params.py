"""The traced model's parameters in the lowered module: every one of them, tied ones once.

A lowered module holds the parameters its boxes read (:func:`ncd.trace.load_parameters` copies the traced values
in and ties the ones read from one tensor).  A parameter the model has but its forward never reads on the traced
input (XLNet's ``mask_emb``, MRA's projections without its CUDA kernel, heads of another task) is no box of the
diagram; it is kept all the same, under its own name below ``unused``, so the lowered module has the original's
parameters — the same count, and every one of them in its ``state_dict`` — and parameters tied in the model stay
one parameter there too.

>>> import torch, ncd
>>> class Masked(torch.nn.Module):
...     def __init__(self) -> None:
...         super().__init__()
...         self.proj = torch.nn.Linear(4, 4)
...         self.mask_emb = torch.nn.Parameter(torch.zeros(4))  # read only when a mask is given
...     def forward(self, x: torch.Tensor) -> torch.Tensor:
...         return self.proj(x)
>>> model = Masked()
>>> lowered = ncd.trace(model, torch.randn(2, 4)).to_torch()
>>> sorted(n for n, _ in lowered.named_parameters() if n.startswith("unused."))
['unused.mask_emb']
>>> sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ncd.trace.capture import Node

__all__ = ["HOLDER", "hold", "pieces", "unread"]

#: The submodule of a lowered module holding the model's parameters its forward does not read.
HOLDER = "unused"


def unread(model: torch.nn.Module, tensors: tuple[tuple[torch.Tensor, ...], ...]) -> tuple[tuple[str, torch.Tensor], ...]:
    """The parameters of ``model`` (every name, tied ones under each of theirs) whose storage no traced tensor reads.

    A traced tensor that is a view of a parameter (a transposed weight, a row of a table) reads it, and so does one
    that is a copy of all of it (a table read at every row in order: ``position_embedding(arange(n))``); a parameter on
    the ``meta`` device counts as read when a traced tensor is that very object."""
    import torch

    flat = [t for group in tensors for t in group]
    read = {id(t) for t in flat}
    real = [t for t in flat if t.device.type != "meta" and t.untyped_storage().nbytes()]
    storages = {t.untyped_storage().data_ptr() for t in real}
    shaped: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for t in real:
        shaped.setdefault(tuple(t.shape), []).append(t)
    out = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in read:
            continue
        if p.device.type != "meta" and p.untyped_storage().nbytes() and (
                p.untyped_storage().data_ptr() in storages
                or any(t.dtype == p.dtype and torch.equal(t, p.detach()) for t in shaped.get(tuple(p.shape), []))):
            continue
        out.append((name, p))
    return tuple(out)


def hold(module: torch.nn.Module, parameters: tuple[tuple[str, torch.Tensor], ...]) -> None:
    """Register ``parameters`` (copies, one per distinct tensor: tied names share it) under ``module.unused``."""
    import torch

    if not parameters:
        return
    if hasattr(module, HOLDER):
        from ncd.errors import TraceError

        raise TraceError(f"cannot keep the unread parameters of the model: the lowered module has a {HOLDER!r} already")
    holder = torch.nn.Module()
    made: dict[int, torch.nn.Parameter] = {}
    for name, p in parameters:
        owner = holder
        *path, leaf = name.split(".")
        for part in path:
            if part not in owner._modules:
                owner.add_module(part, torch.nn.Module())
            owner = owner._modules[part]  # type: ignore[assignment]
        if id(p) not in made:
            made[id(p)] = torch.nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
        owner.register_parameter(leaf, made[id(p)])
    module.add_module(HOLDER, holder)


def pieces(nodes: list[Node], learned: Callable[[Node], bool]) -> set[int]:
    """Views that read part of one parameter (``pre, post = base.split(n)``, ``a, b = scale.unbind(0)``) and are read
    as data by computations on the inputs, never as a learned box's own tensor (ids of those view nodes).

    Folded, each piece would be a parameter of its own (and a piece read as the first rows, the whole table again):
    the lowered module would hold entries twice or not at all.  Read as wires, they are one parameter box and the
    boxes that take it apart (``ncd.trace.convert.Converter._wire_learned_chains``)."""
    import torch

    from ncd.trace.capture import Node, refs
    from ncd.trace.convert import VIEWS, WEIGHTS, op_name

    readers: dict[int, list[tuple[Node, bool]]] = {}
    for node in nodes:
        if node.kind != "call":
            continue
        keep = WEIGHTS.get(op_name(node.target)[0], ())
        for k, arg in enumerate(node.args):
            for r in refs(arg):
                readers.setdefault(id(r), []).append((node, k in keep))
        for key, arg in node.kwargs.items():
            for r in refs(arg):
                readers.setdefault(id(r), []).append((node, key in ("weight", "bias")))

    def root(node: Node) -> Node | None:
        while node.kind == "call" and not node.live and op_name(node.target)[0] in VIEWS:
            args = [a for a in node.args if isinstance(a, Node)]
            if not args:
                return None
            node = args[0]
        return node if node.kind == "parameter" else None

    out = set()
    for node in nodes:
        if node.kind != "call" or node.live or op_name(node.target)[0] not in VIEWS or not learned(node):
            continue
        if not isinstance(node.value, torch.Tensor):
            continue
        parameter = root(node)
        if parameter is None or not isinstance(parameter.value, torch.Tensor):
            continue
        if node.value.numel() >= parameter.value.numel():
            continue
        read = readers.get(id(node), [])
        if read and all(reader.live and not weight for reader, weight in read):
            out.add(id(node))
    return out
