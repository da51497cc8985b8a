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

import ctypes
import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ncd.trace.capture import Node
    from ncd.trace.walk import _Walk

__all__ = ["HOLDER", "constants", "freeze", "hold", "pieces", "storages", "tie", "unread"]

#: The submodule of a lowered module holding the model's parameters its forward does not read.
HOLDER = "unused"


def unread(model: torch.nn.Module, tensors: tuple[tuple[torch.Tensor, ...], ...],
           walk: _Walk | None = None, made: frozenset[int] = frozenset()) -> tuple[tuple[str, torch.Tensor], ...]:
    """The parameters of ``model`` (every name, tied ones under each of theirs) whose storage no traced tensor reads
    (``walk``: the model's state read already, :class:`ncd.trace.walk._Walk`).

    A traced tensor that is a view of a parameter (a transposed weight, a row of a table) reads it, and so does one
    that is a copy of all of it (a table read at every row in order: ``position_embedding(arange(n))``), not a view of
    another parameter equal to it (T5's encoder norms, all ones, beside the decoder's when only the decoder runs: they
    were dropped, the lowered module had fewer parameters than the model), nor a tensor the forward made from no
    parameter (``made``, :func:`constants`: ``torch.ones(n)`` given to ``F.layer_norm`` is a constant, so an unread
    parameter of ones beside it is unread, not dropped); a parameter on the ``meta`` device counts as read when a
    traced tensor is that very object."""
    import torch

    flat = [t for group in tensors for t in group]
    read = {id(t) for t in flat}
    storages: set[int] = set()
    # the traced tensors by shape, and by shape, dtype and first entry (:func:`_first`): a parameter is compared with
    # those it could equal only, not with every one of its shape (SeamlessM4T: 1,315 unread parameters, 37,428 pairs)
    shaped: dict[tuple[int, ...], list[torch.Tensor]] | None = None
    typed: set[tuple[tuple[int, ...], torch.dtype]] = set()  # (a parameter of none of these equals no traced tensor)
    keyed: dict[tuple[object, ...], list[torch.Tensor]] = {}
    unkeyed: dict[tuple[int, ...], list[torch.Tensor]] = {}  # (of no first entry read: compared with every parameter)
    out = []
    types, plain = _raw()
    sizes = {dtype: ctypes.sizeof(c) for dtype, c in types.items()}
    strided = torch.strided
    named = walk.parameters if walk is not None and walk.faithful else model.named_parameters(remove_duplicate=False)
    others: set[int] | None = None

    def owned(t: torch.Tensor) -> bool:  # a view of a parameter reads that one, not every other of its values
        nonlocal others
        if others is None:  # (asked only of a parameter equal to a traced tensor: once, if ever)
            others = {q.untyped_storage().data_ptr() for q in model.parameters() if not q.is_meta}
        return t.untyped_storage().data_ptr() in others

    for name, p in named:
        if id(p) in read:
            continue
        if shaped is None:
            shaped = {}
            for t in flat:
                held = None if t.device.type == "meta" or t.layout is not strided else t.untyped_storage()
                if held is not None and held.nbytes():
                    storages.add(held.data_ptr())
                    shaped.setdefault(tuple(t.shape), []).append(t)
                    typed.add((tuple(t.shape), t.dtype))
                    first = _first(t, held)
                    if first is _UNREAD:
                        unkeyed.setdefault(tuple(t.shape), []).append(t)
                    elif first == first:  # (a NaN first entry: equal to no tensor)
                        keyed.setdefault((tuple(t.shape), t.dtype, first), []).append(t)
        # a plain CPU parameter with entries, its storage allocated, is decided without a storage object made (the
        # first touch of one after a fork is ~2 µs: SeamlessM4T's 1,403 parameters took ~2.5 ms): a strided tensor's
        # storage holds its entries, from data_ptr() - storage_offset() entries on (0: freed, as FSDP frees a shard's)
        dtype = p.dtype  # (read once: each read of a tensor's attribute is a call into torch)
        raw = types.get(dtype) if type(p) in plain else None
        at = p.data_ptr() if raw is not None and p.is_cpu and p.layout is strided and p.numel() and not p.is_neg() \
            else 0
        start = at - p.storage_offset() * sizes[dtype] if at else 0
        if raw is not None and start:
            if start in storages:  # (storage.data_ptr() of its storage)
                continue
            shape = tuple(p.shape)
            if (shape, dtype) not in typed:
                out.append((name, p))
                continue
            first = raw.from_address(at).value  # (as _first reads it)
        else:
            storage = None if p.is_meta or p.layout is not strided else p.untyped_storage()
            if storage is None or not storage.nbytes():
                out.append((name, p))
                continue
            if storage.data_ptr() in storages:
                continue
            shape = tuple(p.shape)
            if (shape, dtype) not in typed:  # (its first entry not read: SeamlessM4T, 330 of 1,407 parameters)
                out.append((name, p))
                continue
            first = _first(p, storage)
        if first is _UNREAD:
            candidates = shaped.get(shape, [])
        else:
            candidates = keyed.get((shape, dtype, first), []) + unkeyed.get(shape, [])
        if any(t.dtype == dtype and id(t) not in made and torch.equal(t, p.detach()) and not owned(t)
               for t in candidates):
            continue
        out.append((name, p))
    return tuple(out)


def storages(parameters: Iterable[torch.Tensor], wanted: frozenset[int] | None = None) -> frozenset[int]:
    """The storages (``untyped_storage().data_ptr()``) of ``parameters`` not on the ``meta`` device; ``wanted``: only
    those of these storages (read until all are met).  A plain CPU tensor with entries is read without a storage object
    made, as :func:`unread` reads it (a strided tensor's storage starts ``storage_offset()`` entries before its first:
    SeamlessM4T's 1,403 parameters ~1.5 ms, not ~8 after a fork)."""
    import torch

    plain, strided = _raw()[1], torch.strided
    out: set[int] = set()
    for p in parameters:
        if p.is_meta:
            continue
        at = p.data_ptr() if type(p) in plain and p.is_cpu and p.layout is strided and p.numel() else 0
        out.add(int(at - p.storage_offset() * p.element_size()) if at else int(p.untyped_storage().data_ptr()))
        if wanted is not None and wanted <= out:
            break
    return frozenset(out) if wanted is None else frozenset(out & wanted)


#: :func:`_first` of a tensor whose first entry is not read
_UNREAD = object()


@functools.cache
def _raw() -> tuple[dict[torch.dtype, type[ctypes._SimpleCData[Any]]], tuple[type, ...]]:
    """The C types of the dtypes whose first entry :func:`_first` reads from memory, and the tensor types it reads
    so (no subclass: it may hold its values elsewhere)."""
    import torch

    return ({torch.float32: ctypes.c_float, torch.float64: ctypes.c_double, torch.int64: ctypes.c_int64,
             torch.int32: ctypes.c_int32, torch.int16: ctypes.c_int16, torch.int8: ctypes.c_int8,
             torch.uint8: ctypes.c_uint8, torch.bool: ctypes.c_bool}, (torch.Tensor, torch.nn.Parameter))


def _first(t: torch.Tensor, storage: torch.UntypedStorage | None = None) -> object:
    """The first entry of ``t`` as a Python number, which two equal tensors (``torch.equal``) share; :data:`_UNREAD`
    for an empty, quantized or not strided tensor.  ``storage``: ``t``'s (its ``untyped_storage()``): a plain CPU
    tensor of a dtype of :func:`_raw` whose first entry lies in it is read from memory, as ``item()`` gives it (~1 µs,
    not the ~4 µs of a view and ``item()``: SeamlessM4T reads 1,078 of them on a trace)."""
    import torch

    types, plain = _raw()
    raw = types.get(t.dtype)  # (no quantized dtype)
    if raw is not None and storage is not None and type(t) in plain and t.is_cpu and t.layout is torch.strided \
            and t.numel() and not t.is_neg():
        at, start = t.data_ptr(), storage.data_ptr()
        if start <= at and at + ctypes.sizeof(raw) <= start + storage.nbytes():
            return raw.from_address(at).value
    if not t.numel() or t.is_quantized or t.layout != torch.strided:
        return _UNREAD
    try:
        if t.is_conj() or t.is_neg():  # (a view whose values its bits change: read as indexed)
            return t.detach()[(0,) * t.dim()].item()
        return t.detach().as_strided((), (), t.storage_offset()).item()  # (entry 0, ..., 0: one view, not one a dim)
    except Exception:  # noqa: BLE001 - a dtype Python does not read: compared with every tensor of its shape
        return _UNREAD


def constants(model: torch.nn.Module, tensors: list[torch.Tensor], made: frozenset[int] = frozenset()) -> list[bool]:
    """Whether each of ``tensors`` is no parameter of ``model``: a buffer or a literal a learned box reads as its weight
    (``F.prelu(x, torch.tensor([0.25]))``, ``F.linear(x, self.buffer)``).

    A tensor reads a parameter when it shares its storage (a view) or, not a buffer's, equals one of its shape (a copy);
    a tensor on the ``meta`` device is taken to read one.  One the forward made from no parameter (``made``: ids of
    such traced tensors) is a constant whatever its values (``F.layer_norm(x, s, torch.ones(n))`` beside a LayerNorm
    of ones was a parameter of the lowered module, trained where the model's stays ones)."""
    import torch

    storages: set[int] = set()
    buffers: set[int] = set()
    shaped: dict[tuple[tuple[int, ...], torch.dtype], list[torch.Tensor]] = {}
    strided = torch.strided  # (a sparse parameter or buffer has no storage: the diagram holds it dense)
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None and p.device.type != "meta" and p.layout is strided:
                storages.add(p.untyped_storage().data_ptr())
                shaped.setdefault((tuple(p.shape), p.dtype), []).append(p)
        buffers.update(b.untyped_storage().data_ptr() for b in module._buffers.values()
                       if b is not None and b.device.type != "meta" and b.layout is strided)
    out = []
    for t in tensors:
        if t.device.type == "meta" or not t.untyped_storage().nbytes():
            out.append(False)
            continue
        ptr = t.untyped_storage().data_ptr()
        out.append(ptr not in storages and (ptr in buffers or id(t) in made or not any(
            torch.equal(p.detach(), t) for p in shaped.get((tuple(t.shape), t.dtype), ()))))
    return out


def freeze(module: torch.nn.Module, order: list[str], tensors: tuple[tuple[torch.Tensor, ...], ...],
           model: torch.nn.Module | None, made: frozenset[int] = frozenset()) -> None:
    """The parameters of ``module`` loaded from a constant of ``model`` (``order``: the names the traced ``tensors``
    were loaded into) become buffers holding the same tensor: the model trains no constant, nor does the lowered
    module (a literal slope of ``F.prelu`` was a parameter of its own).  A parameter loaded from a parameter of
    ``model`` that requires no gradient (Marian's sinusoidal positions) requires none either: an optimiser over the
    lowered module's parameters leaves it as the model's leaves it."""
    if model is None:
        return
    params = dict(module.named_parameters(remove_duplicate=False))
    loaded = [(name, t) for name, t in zip(order, (t for group in tensors for t in group)) if name in params]
    frozen = _Frozen(model)
    for (name, t), constant in zip(loaded, constants(model, [t for _, t in loaded], made)):
        if not constant:
            if frozen.only(t):
                params[name].requires_grad_(False)
            continue
        prefix, _, leaf = name.rpartition(".")
        owner = module.get_submodule(prefix)
        value = owner._parameters.pop(leaf)
        assert value is not None
        owner.register_buffer(leaf, value.detach())


class _Frozen:
    """The parameters of a model by storage, to tell whether a traced tensor reads only ones requiring no gradient."""

    def __init__(self, model: torch.nn.Module) -> None:
        params = [p for p in dict.fromkeys(model.parameters()) if p.device.type != "meta"]
        self.any = any(not p.requires_grad for p in params)
        self.params = params if self.any else []
        self.by_storage: dict[int, list[torch.Tensor]] = {}
        for p in self.params:
            self.by_storage.setdefault(p.untyped_storage().data_ptr(), []).append(p)

    def only(self, t: torch.Tensor) -> bool:
        """Whether ``t`` reads only parameters that require no gradient: a view of one (its storage), or a copy of all
        of one (Whisper's ``embed_positions(arange(n))``) equal to none that requires one."""
        import torch

        if not self.any or t.device.type == "meta" or not t.untyped_storage().nbytes():
            return False
        shared = self.by_storage.get(t.untyped_storage().data_ptr()) or [
            p for p in self.params if p.shape == t.shape and p.dtype == t.dtype and torch.equal(p.detach(), t)]
        return bool(shared) and not any(p.requires_grad for p in shared)


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


def tie(module: torch.nn.Module, order: list[str], flat: list[torch.Tensor]) -> None:
    """Parameters of ``module`` loaded from one tensor of the model become one parameter (``order``: the names the
    traced values ``flat`` were loaded into).

    A value laid out as the earlier one (a tied LM head, one layer called twice) is that parameter itself; a value
    that is another view of it (``x @ w`` after ``F.linear(x, w)`` reads ``w.T``; ``onehot @ table`` after
    ``table[ids]``) is computed from it on every read (``torch.nn.utils.parametrize``: ``as_strided`` of its entries,
    reshaped as the lowered module stores it), checked equal to the loaded values first — so training the lowered
    module updates one tensor, as it does the model's."""
    params = dict(module.named_parameters(remove_duplicate=False))
    first: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {}
    loaded: dict[int, list[tuple[str, torch.Tensor]]] = {}  # a storage -> the values loaded from it, each untied
    for name, value in zip(order, flat):
        if name not in params or value.device.type == "meta" or not value.untyped_storage().nbytes():
            continue
        ptr = value.untyped_storage().data_ptr()
        key = (int(ptr + value.storage_offset() * value.element_size()), tuple(value.shape), tuple(value.stride()))
        if key in first and params[first[key]].shape == params[name].shape:
            _set(module, name, params[first[key]])
            continue
        others = loaded.setdefault(ptr, [])
        base = next((n for n, b in others if b.is_contiguous() and _within(value, b)
                     and _view_of(module, name, params[n], value, b)), None)
        if base is not None:
            continue
        if value.is_contiguous():  # an earlier value read another view of this one: computed from it
            viewed = {n for n, b in others if _within(b, value) and _view_of(module, n, params[name], b, value)}
            others[:] = [(n, b) for n, b in others if n not in viewed]
            first = {k: n for k, n in first.items() if n not in viewed}
        first.setdefault(key, name)
        others.append((name, value))


def _set(module: torch.nn.Module, name: str, value: torch.nn.Parameter) -> None:
    owner, _, attr = name.rpartition(".")
    setattr(module.get_submodule(owner) if owner else module, attr, value)


def _within(value: torch.Tensor, base: torch.Tensor) -> bool:
    """Whether every entry of ``value`` lies in the contiguous ``base`` (same storage, same element type)."""
    if value.dtype != base.dtype or value.numel() == 0 or any(s < 0 for s in value.stride()):
        return False
    low = value.storage_offset()
    high = low + sum((n - 1) * s for n, s in zip(value.shape, value.stride()))
    return base.storage_offset() <= low and high < base.storage_offset() + base.numel()


def _view_of(module: torch.nn.Module, name: str, shared: torch.nn.Parameter, value: torch.Tensor,
             base: torch.Tensor) -> bool:
    """``module``'s parameter ``name`` computed from ``shared`` (loaded from ``base``) as ``value`` reads ``base``'s
    storage, if that computation gives its loaded entries exactly (else it is left as it is: ``False``)."""
    import torch
    from torch.nn.utils import parametrize

    owner, _, attr = name.rpartition(".")
    sub = module.get_submodule(owner) if owner else module
    current = getattr(sub, attr)
    if parametrize.is_parametrized(sub, attr) or current is shared or current.dtype != shared.dtype:
        return False
    view = _strided_view()(tuple(value.shape), tuple(value.stride()), value.storage_offset() - base.storage_offset(),
                           tuple(current.shape))
    with torch.no_grad():
        if view(shared).shape != current.shape or not torch.equal(view(shared), current):
            return False
    parametrize.register_parametrization(sub, attr, view, unsafe=True)
    sub.parametrizations[attr].original = shared  # type: ignore[union-attr, index]
    return True


@functools.cache
def _strided_view() -> type:
    import torch

    class StridedView(torch.nn.Module):
        """A parameter read as another view of a shared one: ``as_strided`` of its entries, reshaped."""

        def __init__(self, size: tuple[int, ...], stride: tuple[int, ...], offset: int, shape: tuple[int, ...]) -> None:
            super().__init__()
            self.size, self.stride, self.offset, self.shape = size, stride, offset, shape

        def forward(self, original: torch.Tensor) -> torch.Tensor:
            flat = original.reshape(-1)
            return torch.as_strided(flat, self.size, self.stride, flat.storage_offset() + self.offset).reshape(self.shape)

    return StridedView


def pieces(nodes: list[Node], learned: Callable[[Node], bool]) -> set[int]:
    """Views that read part of one parameter (``pre, post = base.split(n)``, ``a, b = scale.unbind(0)``) and are read
    as data by computations on the inputs, never as a learned box's own tensor (ids of those view nodes).

    Folded, each piece would be a parameter of its own (and a piece read as the first rows, the whole table again):
    the lowered module would hold entries twice or not at all.  Read as wires, they are one parameter box and the
    boxes that take it apart (``ncd.trace.convert.Converter._wire_learned_chains``)."""
    import torch

    from ncd.trace.capture import Node, refs
    from ncd.trace.convert import VIEWS, WEIGHTS, op_name

    def root(node: Node) -> Node | None:
        while node.kind == "call" and not node.live and op_name(node.target)[0] in VIEWS:
            args = [a for a in node.args if isinstance(a, Node)]
            if not args:
                return None
            node = args[0]
        return node if node.kind == "parameter" else None

    candidates = []  # views of a part of a parameter (most models have none: their readers are not looked up)
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
        candidates.append(node)
    if not candidates:
        return set()
    readers: dict[int, list[tuple[Node, bool]]] = {id(node): [] for node in candidates}  # (theirs alone)
    for node in nodes:
        if node.kind != "call":
            continue
        keep = WEIGHTS.get(op_name(node.target)[0], ())
        for k, arg in enumerate(node.args):
            for r in refs(arg):
                if (found := readers.get(id(r))) is not None:
                    found.append((node, k in keep))
        for key, arg in node.kwargs.items():
            for r in refs(arg):
                if (found := readers.get(id(r))) is not None:
                    found.append((node, key in ("weight", "bias")))
    out = set()
    for node in candidates:
        read = readers[id(node)]
        if read and all(reader.live and not weight for reader, weight in read):
            out.add(id(node))
    return out
