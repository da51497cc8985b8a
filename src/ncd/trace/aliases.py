"""A value of the recording under another name: a parameter or input written through ``w.detach()`` / ``w.data``, an
input read as ``x.data``, a tensor of a ``torch.vmap`` / ``torch.func`` transform.  The recorder
(:class:`ncd.trace.recording._Recording`) takes these methods from :class:`Aliases`; its ``__init__`` sets the state they
keep (``twins``, ``at``, ``rebinding``, ``transformed``, ``params_written``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch._C._functorch import get_unwrapped, is_functorch_wrapped_tensor

from ncd.trace.capture import _PLAIN, Node, held_tensors, user_line
from ncd.trace.refusals import Unsupported

#: torch's own readers of a tensor's address, strides, shape and storage, and of a storage's address (the recording
#: patches ``torch.Tensor``'s and ``torch.UntypedStorage``'s: :mod:`ncd.trace.shapes`, :mod:`ncd.trace.reads`)
_BASE: Any = torch._C.TensorBase
_ADDRESS, _STRIDE, _SHAPE, _STORAGE = _BASE.data_ptr, _BASE.stride, _BASE.shape.__get__, _BASE.untyped_storage
_STORAGES: Any = torch._C.StorageBase
_STORAGE_AT = _STORAGES.data_ptr

if TYPE_CHECKING:
    from ncd.trace.undo import Undo


class Aliases:
    """The recorder's methods for values under another name (mixed into :class:`ncd.trace.recording._Recording`)."""

    by_id: dict[int, Node]
    keep: list[Any]
    root: torch.nn.Module
    state: dict[int, tuple[str, bool]]
    buffers_written: dict[str, str]
    params_written: dict[str, str]
    at: dict[tuple[int, tuple[int, ...], tuple[int, ...]], list[torch.Tensor]] | None
    #: the parameters and buffers by the address of their memory (:meth:`keep_memory`), made at its first call
    in_memory: dict[int, list[torch.Tensor]] | None
    undo: Undo
    rebinding: bool
    twins: dict[int, list[torch.Tensor]]
    #: the ``detach()``es of values a gradient reaches (drawn ``sg``), by id
    cut: set[int]
    #: the model's lines cutting values from autograd, by what they do (warned unless drawn)
    detached: dict[str, str]
    transformed: bool
    #: the kept tensors by their memory's address (:meth:`_live_alias`), made from ``keep[:indexed]``
    memory: dict[int, list[torch.Tensor]]
    #: the kept meta tensors by their storage (its ``_cdata``: they have no address), made with :attr:`memory`
    meta_memory: dict[int, list[torch.Tensor]]
    indexed: int

    if TYPE_CHECKING:
        counts: dict[str, int]
        stack: list[tuple[str, str]]

        def call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...
        def ref(self, value: Any) -> Any: ...
        def add(self, node: Node, value: Any) -> None: ...

    def parameter_view(self, value: torch.Tensor) -> Node | None:
        """``value`` (a tensor no recorded call made, taking a gradient) read as a permutation of a parameter's axes over
        the parameter's own memory — autograd's saved ``w.t()`` of a ``linear``, read by the derivative a model takes
        with ``create_graph=True`` (a gradient penalty, forces as the gradient of an energy) — recorded as ``permute``
        of the parameter, exactly that view: the lowered module's gradients reach the parameter there as the model's
        do (drawn as a constant of its values, they did not: 2x off, with no word).  None for any other tensor."""
        if not value.requires_grad or value.device.type == "meta" or is_functorch_wrapped_tensor(value) \
                or not value.untyped_storage().nbytes():
            return None
        address = value.untyped_storage().data_ptr()
        for held in self.root.parameters():
            if held.device.type == "meta" or held.dtype != value.dtype or held.dim() != value.dim() \
                    or held.untyped_storage().data_ptr() != address or held.storage_offset() != value.storage_offset():
                continue
            pairs = list(zip(held.shape, held.stride()))
            perm: list[int] = []
            for pair in zip(value.shape, value.stride()):
                k = next((k for k, p in enumerate(pairs) if p == pair and k not in perm), None)
                if k is None:
                    break
                perm.append(k)
            else:
                source = self.ref(held)
                k = self.counts["permute"] = self.counts.get("permute", 0) + 1
                node = Node(f"permute_{k}", "call", torch.ops.aten.permute.default, (source, perm), {},
                            value=value.detach(), stack=tuple(self.stack), line=user_line() or "")
                self.add(node, value)
                return node
        return None

    def unknown(self, value: torch.Tensor) -> None:
        """A tensor no recorded call made, about to be drawn as a constant: refused when it is a value of the inputs
        under another name, which the constant would freeze at the traced input's values — ``x.data`` (an alias made
        without an operator: :class:`Unsupported`) or a tensor of a ``torch.vmap``/``torch.func`` transform wrapping a
        value of the inputs (its calls run on tensors wrapping the batch: :class:`~ncd.TraceError`).  A transform over
        values that do not depend on the inputs (``transformers`` builds masks by ``vmap`` over index ranges) is a
        constant like any other such value."""
        if is_functorch_wrapped_tensor(value):  # torch.export draws its batching calls, which no box stands for
            inner = value
            while is_functorch_wrapped_tensor(inner):
                inner = get_unwrapped(inner)
            self.transformed = True
            node = self.by_id.get(id(inner))
            if node.live if node is not None else self._live_alias(inner):
                from ncd.errors import TraceError

                raise TraceError(f"cannot trace {type(self.root).__name__}: it runs a torch.func transform (vmap, grad)"
                                 f" at {user_line() or '?'} on values of its inputs, whose calls run on tensors wrapping"
                                 " the batch; call the function on the whole batch instead (a diagram broadcasts it"
                                 " over the batch's wire)")
        elif self._live_alias(value):
            raise Unsupported(f"a value of the inputs is read under another name (x.data) at {user_line() or '?'}")

    def _live_alias(self, value: torch.Tensor) -> bool:
        """Whether ``value`` shares its memory with a recorded value of the inputs (tensors of a ``torch.func``
        transform, which have no memory of their own, are passed over).  A meta tensor (a recording on meta) has no
        address but shares its storage with the tensor it aliases: ``h.data`` of a value of the inputs recorded on
        meta, whose writes (``h.data.add_(1)``) no recorded call would say (drawn without them, silently)."""
        if not value.untyped_storage().nbytes():
            return False
        if value.device.type == "meta":
            self._indexed()
            return any(getattr(self.by_id.get(id(t)), "live", False)
                       for t in self.meta_memory.get(value.untyped_storage()._cdata, ()))
        return self._live_memory(value.untyped_storage().data_ptr())

    def _indexed(self) -> dict[int, list[torch.Tensor]]:
        """The kept tensors by the memory they hold (those kept since the last look added); the meta ones by their
        storage (:attr:`meta_memory`)."""
        memory = self.memory
        keep = self.keep
        new = [t for t in keep[self.indexed:] if isinstance(t, torch.Tensor) and not is_functorch_wrapped_tensor(t)]
        for t, address in zip(new, _read_plainly(new, lambda t: _STORAGE_AT(_STORAGE(t)))):
            if address is not None:
                memory.setdefault(address, []).append(t)
            elif t.device.type != "meta":
                memory.setdefault(t.untyped_storage().data_ptr(), []).append(t)
            else:
                self.meta_memory.setdefault(t.untyped_storage()._cdata, []).append(t)
        self.indexed = len(keep)
        return memory

    def constant_aliases(self, value: torch.Tensor) -> list[torch.Tensor]:
        """The tensors read as constants (no recorded call's, of no input's values) that ``value`` (a tensor no recorded
        call made either) is under another name: the same memory, dtype, shape and strides (``m.data`` of a tensor
        ``m`` the model made and read: a write through it writes ``m``, which no recorded call says)."""
        if value.device.type == "meta" or is_functorch_wrapped_tensor(value) or not value.untyped_storage().nbytes():
            return []
        found = []
        for t in self._indexed().get(value.untyped_storage().data_ptr(), ()):
            node = self.by_id.get(id(t))
            if t is not value and node is not None and node.kind == "constant" and not node.live \
                    and t.dtype == value.dtype and t.shape == value.shape and t.stride() == value.stride() \
                    and t.storage_offset() == value.storage_offset():
                found.append(t)
        return found

    def constant_twin(self, value: torch.Tensor) -> Node | None:
        """``value`` (a tensor no recorded call made) read as the constants it is under another name
        (:meth:`constant_aliases`), their twin from here on (a write into one writes all): their node, or None."""
        made = self.constant_aliases(value)
        if not made:
            return None
        twins = next((self.twins[id(t)] for t in made if id(t) in self.twins), [])
        for t in [*made, value]:
            if not any(t is u for u in twins):
                twins.append(t)
        for t in twins:
            self.twins[id(t)] = twins
        node = self.by_id[id(value)] = self.by_id[id(made[-1])]
        return node

    def _live_memory(self, address: int) -> bool:
        """Whether a recorded value of the inputs holds the memory at ``address``."""
        for t in self._indexed().get(address, ()):
            node = self.by_id.get(id(t))
            if node is not None and node.live:
                return True
        return False

    def twin_write(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """An in-place write into a tensor that has a twin (``x.detach()``, ``x`` itself): recorded once, and both
        read written from here on (before, ``x.detach().add_(1)`` left ``x`` read unwritten)."""
        from ncd.trace.tensors import _shares

        twins = [t for t in self.twins[id(args[0])] if t is not args[0]]
        if any(id(t) in self.cut for t in self.twins[id(args[0])]):  # one twin cut from autograd, one not: the write
            # reaches both values, autograd's graph of neither (h.detach().mul_(2); h * 1: the value 2h, the gradient
            # h's), which the diagram does not draw (its write is read through the sg box): said, as before 3e39018
            self.detached[user_line() or "?"] = "a write through a detach"  # (over "detach": drawn, not said)
        for t in twins:  # their recorded values keep the values before the write
            node = self.by_id.get(id(t))
            if node is not None and isinstance(node.value, torch.Tensor) and _shares(node.value, args[0]):
                node.value = node.value.clone()
        self.rebinding = True
        try:
            out = self.call(func, args, kwargs)
        finally:
            self.rebinding = False
        for t in twins:
            self.by_id[id(t)] = self.by_id[id(args[0])]
        return out

    def aliases(self, t: torch.Tensor) -> list[torch.Tensor]:
        """The model's parameters and buffers that are ``t`` under another name: the same memory, shape and strides
        (``w.detach()``, ``w.data``; ``nn.Embedding(max_norm=...)`` renorms its rows through ``weight.detach()``)."""
        if self.at is None:
            self.at = _by_layout([*self.root.parameters(), *self.root.buffers()])
        return [h for h in self.at.get((t.data_ptr(), tuple(t.shape), t.stride()), ()) if h is not t]

    def keep_memory(self, t: torch.Tensor) -> None:
        """Before the model reaches ``t``'s memory by a route no operator takes (``t.numpy()``, ``__dlpack__``,
        ``apply_``): the values of the parameters and buffers in that memory, put back if the recording fails
        (:meth:`~ncd.trace.undo.Undo.keep`; a write through such a route dispatches nothing the recorder sees)."""
        at = _memory_of(t)
        if at:
            self.keep_values(self.held_at(at))

    def held_at(self, at: int) -> list[torch.Tensor]:
        """The model's parameters and buffers in the memory at address ``at`` (:func:`_memory_of`)."""
        if self.in_memory is None:
            self.in_memory = by_memory(self.root)
        return self.in_memory.get(at, [])

    def keep_values(self, state: Iterable[torch.Tensor]) -> None:
        """The values of parameters and buffers ``state``, put back if the recording fails
        (:meth:`~ncd.trace.undo.Undo.keep`), copied outside the recording (its modes are on: not recorded)."""
        from ncd.trace.functions import _unrecorded

        held = list(state)
        if held:
            with _unrecorded():
                for t in held:
                    self.undo.keep(t)

    def state_write(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """An in-place write into a parameter or buffer through an alias: recorded as a write into it, so that it is
        read written from here on (it was read as its value before the write: the lowered module wrote nothing).

        The parameter's node keeps the parameter itself (not a copy of its value before the write): the lowered module
        holds its value after the trace, as the model's next call reads it, and applies the write again (renorming
        rows, clamping: idempotent writes give the model's values)."""
        held = self.aliases(args[0])
        node = self.ref(held[0])  # the parameter's (buffer's) node, made now if it was never read
        for h in held:
            name, learned = self.state[id(h)]
            (self.params_written if learned else self.buffers_written).setdefault(name, user_line() or "?")
        self.by_id[id(args[0])] = node  # the alias (never recorded: ``w.data``) read as the parameter itself
        value = node.value
        self.rebinding = True
        try:
            out = self.call(func, args, kwargs)
        finally:
            self.rebinding = False
            node.value = value  # the parameter (the write froze a copy of its value before it)
        for h in held:  # read written from here on
            self.by_id[id(h)] = self.by_id[id(args[0])]
        return out


def _by_layout(tensors: list[torch.Tensor]) -> dict[tuple[Any, ...], list[torch.Tensor]]:
    """``tensors`` not on the meta device by (address, shape, strides), in order.  A plain tensor or parameter is read
    by torch's own readers with no ``__torch_function__`` on the way (the recording's mode and patched readers hand
    the recorder's own reads back unchanged: ~10 µs a tensor, encodec's 349 parameters and buffers ~2.5 ms); any
    other type as before, through whatever it overrides."""
    found: dict[tuple[Any, ...], list[torch.Tensor]] = {}
    for t, key in zip(tensors, _read_plainly(tensors, lambda t: (_ADDRESS(t), tuple(_SHAPE(t)), _STRIDE(t)))):
        if key is None:
            if t.device.type == "meta":
                continue
            key = (t.data_ptr(), tuple(t.shape), t.stride())
        found.setdefault(key, []).append(t)
    return found


def _read_plainly(tensors: list[torch.Tensor], read: Any) -> list[Any]:
    """``read(t)`` of each of ``tensors`` that is a plain tensor or parameter not on the meta device, with no
    ``__torch_function__`` on the way (``read`` calls torch's own readers: the recording's mode and patched readers
    would hand them back unchanged, ~10 µs a tensor); ``None`` for any other, to be read through what it overrides."""
    plain = (torch.Tensor, torch.nn.Parameter)
    with torch._C.DisableTorchFunction():
        return [read(t) if type(t) in plain and not t.is_meta else None for t in tensors]


def by_memory(model: torch.nn.Module) -> dict[int, list[torch.Tensor]]:
    """The model's parameters and buffers by the address of their memory (:func:`_memory_of`; none held: left out)."""
    found: dict[int, list[torch.Tensor]] = {}
    for tensors in (model.parameters(), model.buffers()):
        for state in tensors:
            at = _memory_of(state)
            if at:
                found.setdefault(at, []).append(state)
    return found


def _memory_of(t: torch.Tensor) -> int:
    """The address of ``t``'s memory (0: none, or none Python reaches: meta, empty, sparse, a transform's wrapper)."""
    if t.device.type == "meta":
        return 0
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return 0
    return storage.data_ptr() if storage.nbytes() else 0


def holds_transformed(value: Any) -> bool:
    """Whether ``value`` (a call's arguments) holds a tensor of a ``torch.func`` transform: as
    ``any(map(is_functorch_wrapped_tensor, held_tensors(value)))``, with the tuples, lists and dicts of tensors and
    numbers a call takes looked through directly (a pytree walk of every call's arguments costs ~15 µs once a model
    has built a mask by ``vmap``: gemma4_audio, 335 calls), anything else by :func:`held_tensors`."""
    stack = [value]
    while stack:
        v = stack.pop()
        kind = type(v)
        if kind is torch.Tensor or kind is torch.nn.Parameter:
            if is_functorch_wrapped_tensor(v):
                return True
        elif kind is tuple or kind is list:
            stack.extend(v)
        elif kind is dict:
            stack.extend(v.values())
        elif kind in _PLAIN:  # (a number, a dtype, a torch.Size: no tensor)
            continue
        elif any(map(is_functorch_wrapped_tensor, held_tensors(v))):
            return True
    return False
