"""In-place writes recorded as the functional operations they stand for: a write through a view as the written
tensor with that region replaced (:mod:`ncd.trace.writes`), the views it makes out of date read again as regions of it,
each written tensor compared with what its recorded writes give before anything reads it.  The recorder
(:class:`ncd.trace.recording._Recording`) takes these methods from :class:`InPlace`; its ``__init__`` sets the state they
keep (``views``, ``stale``, ``own``, ``derived``, ``pending``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ncd.trace.capture import Node, refs, user_line
from ncd.trace.refusals import Unsupported
from ncd.trace.tensors import _one_memory, _same, _shares
from ncd.trace.writes import Region

#: the size in bytes above which :meth:`InPlace.release` frees a copy a write replaced (below, a release costs more than
#: the memory it returns)
RELEASE_ABOVE = 1 << 20


def _forget(nodes: list[Node]) -> None:
    """The nodes' values as ``meta`` tensors of the same sizes, strides and dtype (their entries no longer held)."""
    for n in nodes:
        v = n.value
        n.value = torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device="meta")


#: the creation operations whose result is all zeros (:func:`_zeros_kept`)
_ZEROS = frozenset({"new_zeros", "zeros", "zeros_like"})

#: integer types of each element size: a tensor's bits read as integers (:func:`_zeros_kept`)
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _zeros_kept(node: Node, t: torch.Tensor) -> torch.Tensor | None:
    """The recorded value of ``node``, a ``new_zeros``/``zeros``/``zeros_like`` whose value is ``t`` itself (no write
    recorded into it yet), kept through a write into ``t`` as a zero expanded to its shape (no memory of its own)
    where ``t``'s bits are checked all zero: no copy of it (longformer: its 8 MB and 2 MB score tensors, copied at their
    first write); else None."""
    target = getattr(node.target, "overloadpacket", None)
    if node.kind != "call" or target is None or target.__name__ not in _ZEROS or node.value is not t \
            or t.layout != torch.strided or t.device.type == "meta" or not t.is_contiguous() \
            or t.numel() * t.element_size() < RELEASE_ABOVE or t.element_size() not in _BITS or t.is_complex():
        return None
    flat = t.reshape(-1)
    bits = flat.view(torch.int64) if flat.numel() * flat.element_size() % 8 == 0 else flat.view(_BITS[t.element_size()])
    low, high = torch.aminmax(bits)  # (the bits, as integers: a -0.0 is no zero made; one pass, nothing allocated)
    if bool(low) or bool(high):
        return None
    return torch.zeros((), dtype=t.dtype, device=t.device).expand(t.shape)


def _may_widen(mutated: torch.Tensor, operand: Any) -> bool:
    """Whether ``operand`` may promote a write into ``mutated`` to a wider type: a tensor of another type of the same
    kind (floats, integers), with axes unless ``mutated`` has none (a 0-dim operand does not promote)."""
    if not isinstance(operand, torch.Tensor) or operand.dtype == mutated.dtype or operand.dtype == torch.bool \
            or (operand.dim() == 0 and mutated.dim() > 0):
        return False
    floats = mutated.is_floating_point() or mutated.is_complex()
    return floats == (operand.is_floating_point() or operand.is_complex())


def widened(functional: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """What the functional form of an in-place write computes when it is wider than the written tensor, else ``None``:
    ``h.add_(x)`` of a float16 ``h`` and a float32 ``x`` is ``add(h, x)`` in float32, rounded to float16 as it is
    written (recorded as the functional call and a cast back, not as a float32 result).  Run before the write."""
    mutated = args[0]
    if not any(_may_widen(mutated, a) for a in (*args[1:], *kwargs.values())):
        return None  # (masks, indices and 0-dim operands leave the type: no second call, ``masked_fill_`` is common)
    try:
        with torch._C._DisablePythonDispatcher():
            wide = functional(*args, **kwargs)
    except Exception:  # noqa: BLE001 - no such functional call (devices, overloads): recorded as before
        return None
    return wide if isinstance(wide, torch.Tensor) and wide.dtype != mutated.dtype else None


class InPlace:
    """The recorder's methods for in-place writes (mixed into :class:`ncd.trace.recording._Recording`)."""

    by_id: dict[int, Node]
    keep: list[Any]
    meta: bool
    stack: list[tuple[str, str]]
    counts: dict[str, int]
    #: a tensor's id -> the recorded views of it (``_base``)
    views: dict[int, list[torch.Tensor]]
    #: views whose recorded value a later in-place write made out of date
    stale: set[int]
    #: ids of recorded values in memory the model never sees (copies made before a write, a write's result)
    own: set[int]
    #: a view out of date -> the tensor it reads and how: its region, or the view operations that made it from it
    derived: dict[int, tuple[torch.Tensor, Region | list[tuple[Any, tuple[Any, ...], dict[str, Any]]]]]
    #: a tensor written through a view -> (the recorded tensor the write gives, the tensor, the operator)
    pending: dict[int, tuple[torch.Tensor, torch.Tensor, Any]]
    #: a tensor's id -> it and its ``detach()``es (one memory: :class:`ncd.trace.aliases.Aliases`)
    twins: dict[int, list[torch.Tensor]]
    #: the address of memory of :attr:`own` -> the nodes whose recorded values it holds (:meth:`release`)
    holders: dict[int, list[Node]]
    #: such an address -> how many tensors ``keep`` holds on it whose nodes no longer read it (:meth:`reused`)
    retired: dict[int, int]
    memory: dict[int, list[torch.Tensor]]
    nodes: list[Node]

    if TYPE_CHECKING:
        def add(self, node: Node, value: Any) -> None: ...
        def ref(self, value: Any) -> Any: ...
        def emit(self, op: Any, *args: Any, **kwargs: Any) -> torch.Tensor: ...
        def known(self, op: Any, value: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor: ...

    def check_writes(self) -> None:
        """Compare every tensor written through a view since the last comparison with what its recorded writes give.

        Called before anything reads memory (every call but a view operation and a plain copy through a view, which
        decides in :meth:`write`; a custom Function; a read into Python; the end of the run): the values anyone
        observes are the ones a comparison after every write would have checked.  A copy overwrites its region
        without reading it, so a difference there before it is seen by no one; one anywhere else stays to the end."""
        if not self.pending:
            return
        from ncd.trace.functions import _unrecorded

        with _unrecorded():  # (called from a Function's apply or a Python read, the recording's modes are on)
            for final, base, func in self.pending.values():
                if not _same(final, base):  # (kept: a model catching the error meets it again, at the latest at the end)
                    raise Unsupported(f"{func} through a view: the recorded write does not give the tensor the model"
                                      " wrote")
        self.pending = {}

    def freeze(self, root: torch.Tensor, *kept: torch.Tensor) -> list[torch.Tensor]:
        """Before a write into ``root`` (or a view of it): recorded values that share its memory keep their values;
        its other views (not ``kept``), returned, go out of date once the write is recorded (:meth:`retire`).

        A view's value is made again by its view operation from its argument's recorded value where that is memory the
        model never sees (:attr:`own`: a copy made here, an earlier write's result): no copy of its own (longformer: the
        slices and reshapes of a (8, 2, 256, 513) score tensor written six times a layer, 54M of 88M entries copied
        per trace)."""
        from ncd.trace.writes import viewed_again

        stale = []
        for t in [root] + self.views.pop(id(root), []):
            node = self.by_id.get(id(t))
            if node is not None and isinstance(node.value, torch.Tensor) and _shares(node.value, root):
                again = viewed_again(node, root, self.own)
                if again is None and t is root:
                    again = _zeros_kept(node, t)
                node.value = again if again is not None else node.value.clone()
                self.own.add(id(node.value))
                self.keep.append(node.value)  # (alive while its id is in ``own``)
                if node.value.device.type != "meta":
                    self.holders.setdefault(node.value.untyped_storage().data_ptr(), []).append(node)
            if t is not root and not any(t is k for k in kept):
                stale.append(t)
        return stale

    def retire(self, views: list[torch.Tensor], base: torch.Tensor | None, before: Node | None = None) -> None:
        """Views out of date after a write: read again as a region of ``base`` (the written tensor, recorded after
        the write) where they are one, or else as the view operations that made them from ``base``'s value
        ``before`` the write (a reshape merging dimensions, then a transpose: no region); else never read again
        (reading one is unsupported)."""
        from ncd.trace.writes import region

        if before is None and base is not None:
            before = self.by_id.get(id(base))
        for t in views:
            found: Region | list[tuple[Any, tuple[Any, ...], dict[str, Any]]] | None = None
            if base is not None and not self.meta:
                found = region(base, t)
                if found is None and before is not None:
                    found = self.made_from(t, before)
            if found is None:
                self.stale.add(id(t))
            else:
                self.derived[id(t)] = (base, found)  # type: ignore[assignment]

    def made_from(self, view: torch.Tensor, origin: Node) -> list[tuple[Any, tuple[Any, ...], dict[str, Any]]] | None:
        """The recorded view operations (``view``, ``transpose``, ``select`` ...) that made ``view`` from ``origin``."""
        ops: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
        node = self.by_id.get(id(view))
        while node is not None and node is not origin:
            if node.kind != "call" or not getattr(node.target, "is_view", False) or not node.args \
                    or not isinstance(node.args[0], Node) or refs((node.args[1:], node.kwargs)) or len(ops) > 32:
                return None
            ops.append((node.target, tuple(node.args[1:]), dict(node.kwargs)))
            node = node.args[0]
        return ops[::-1] if node is origin and ops else None

    def rederive(self, view: torch.Tensor) -> Node:
        """A view read after a write into the tensor it views: its region of that tensor's recorded value (the
        operations that cut it run as C++ kernels, without the Python dispatcher, as for a write)."""
        with torch._C._DisablePythonDispatcher():
            return self._rederive(view)

    def _rederive(self, view: torch.Tensor) -> Node:
        from ncd.trace.writes import cut

        base, found = self.derived.pop(id(view))
        if isinstance(found, Region):
            x = cut(self.emit, base, found, tuple(view.shape))
        else:
            x = base
            try:
                for op, args, kwargs in found:
                    x = self.emit(op, x, *args, **kwargs)
            except RuntimeError as error:
                raise Unsupported(f"a view read after a write into the tensor it views cannot be made again ({error})")\
                    from None
        if not (_one_memory(x, view) or _same(x, view)):  # (cut from the model's tensor: its memory, where the region is)
            raise Unsupported("a view read after a write into the tensor it views is not the region it was")
        node = self.by_id[id(x)]
        self.by_id[id(view)] = node
        if view._base is not None:
            self.views.setdefault(id(view._base), []).append(view)
        return node

    def container(self, root: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor | None, Region | None]:
        """The largest recorded tensor sharing ``root``'s memory (``root`` itself, else a view of it: a library's
        result may be a view of a tensor it never returned) of which ``view`` is a region, and that region (its other
        views are read again as regions of it, where they are one)."""
        from ncd.trace.writes import region

        candidates = ([root] if id(root) in self.by_id else []) + [
            t for t in self.views.get(id(root), []) if t is not view and id(t) in self.by_id and id(t) not in self.stale]
        for t in sorted(candidates, key=lambda t: -t.numel()):
            found = region(t, view)
            if found is not None:
                return t, found
        return None, None

    def write(self, func: Any, functional: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Record an in-place write (``copy_``/``fill_`` anywhere, any write through a view) as the functional
        operations it stands for (:mod:`ncd.trace.writes`); ``None``: record it as its functional operator.

        The sizes it reads are plain ints (:attr:`ncd.trace.shapes.Shapes.kernels`): the recorder's own, not the
        model's (longformer: ~6,500 sized numbers a trace made and freed by regions, sorts and comparisons)."""
        from ncd.trace.shapes import Shapes

        shapes = Shapes.active
        if shapes is None:
            return self._write(func, functional, args, kwargs)
        shapes.kernels += 1
        try:
            return self._write(func, functional, args, kwargs)
        finally:
            shapes.kernels -= 1

    def _write(self, func: Any, functional: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from ncd.trace.writes import cut, diagonal_of, put_diagonal, write_back

        packet = func.overloadpacket.__name__
        mutated = args[0]
        root = mutated._base
        if self.pending and (root is None or packet not in ("copy_", "fill_", "zero_") or any(
                isinstance(a, torch.Tensor) and any(_shares(a, b) for _, b, _ in self.pending.values())
                for a in (*args[1:], *kwargs.values()))):  # a write that reads what it writes, or memory written
            self.check_writes()
        if self.meta or (root is None and packet not in ("copy_", "fill_", "zero_")):
            return None
        if not mutated.numel():  # a write into no entries (an empty slice) changes nothing
            return func(*args, **kwargs)
        arg_refs, kwarg_refs = self.ref((args, kwargs))  # what the write reads, before it
        base, found = self.container(root, mutated) if root is not None and mutated.numel() else (None, None)
        square = None  # a diagonal written: the square whose main diagonal it is, a region of ``base``
        if root is not None and base is None:
            diagonal = diagonal_of(([root] if id(root) in self.by_id else []) + [
                t for t in self.views.get(id(root), []) if t is not mutated and id(t) in self.by_id
                and id(t) not in self.stale], mutated)
            if diagonal is not None:
                base, found = self.container(root, diagonal[1])
                square = diagonal if base is not None else None
        twins = [t for t in self.twins.get(id(root), ()) if t is not root] if root is not None else []
        for t in twins:  # ``m.detach()[0] = v`` writes m: its recorded value keeps the values before the write
            node = self.by_id.get(id(t))
            if node is not None and isinstance(node.value, torch.Tensor) and _shares(node.value, root):
                node.value = node.value.clone()
        before = self.by_id.get(id(base if base is not None else mutated))  # the written tensor's recorded value
        recorded = before is not None and before.value is base
        stale = self.freeze(mutated if root is None else root, mutated, *([base] if base is not None else []))
        old = None
        if base is not None:  # its value before the write: the copy freeze made of it, or a tensor of its own recorded
            # for it (an earlier write's result into it, laid out as it is: the check below compares the tensor the
            # recorded write gives with the one the model wrote), else a copy of its own
            held = before.value if before is not None else None
            old = held if isinstance(held, torch.Tensor) and held is not base and (recorded or (
                held.shape == base.shape and held.dtype == base.dtype and held.stride() == base.stride()
                and not _shares(held, base))) else base.clone()
        if self.pending and (square is not None or base is None or old is not self.pending.get(id(base), (None,))[0]):
            self.check_writes()  # (before the write: the tensors compared hold the values they held after the last)
        if root is not None and base is not root:  # a region no recorded tensor holds: from here on it is not read
            self.stale.add(id(root))
        if packet in ("copy_", "fill_", "zero_"):
            src = args[1] if packet != "zero_" else 0
            out = func(*args, **kwargs)
            new = self.written(src, out)
        else:
            wide = widened(functional, args, kwargs)
            out = func(*args, **kwargs)
            live = any(r.live for r in refs((arg_refs, kwarg_refs)))
            new = out  # the view written, as the model holds it: a later write into its memory makes :meth:`freeze`
            # keep its recorded value (a copy then, where one is needed; longformer: none of its two 8 MB ``+=``)
            k = self.counts[packet] = self.counts.get(packet, 0) + 1
            node = Node(f"{packet}_{k}", "call", functional, arg_refs, kwarg_refs, value=new, stack=tuple(self.stack),
                        live=live, line=user_line() if live else "")
            self.add(self.cast_back(node, wide, new), new)
        self.by_id[id(out)] = self.by_id[id(new)]
        if base is not None and found is not None and old is not None and root is not None:
            start = len(self.nodes)  # the nodes recorded for the write from here on (:meth:`release`)
            self.by_id[id(old)] = self.by_id[id(base)]
            self.keep.append(old)
            if square is not None:  # the square's new value: its diagonal replaced
                _, region_, d1, d2 = square
                new = put_diagonal(self.emit, cut(self.emit, old, found, tuple(region_.shape)), new, d1, d2)
            freed = self.freeable(old, id(base)) if square is None and old.is_contiguous() else None
            final = write_back(self.emit, old, found, new, self.known, reuse=freed is not None)
            self.pending[id(base)] = (final, base, func)  # compared before anything reads it (:meth:`check_writes`)
            self.by_id[id(base)] = self.by_id[id(final)]
            if freed is not None and _shares(final, old):  # the new value written into ``old``'s memory
                self.reused(old, freed, start, self.by_id[id(final)])
            else:
                if not _shares(final, new):  # made by the recorded operations, not the model's tensor written (or a view)
                    self.own.add(id(final))
                    address = final.untyped_storage().data_ptr()
                    self.holders.setdefault(address, []).extend(
                        n for n in self.nodes[start:] if isinstance(n.value, torch.Tensor)
                        and n.value.untyped_storage().data_ptr() == address)
                self.release(old, start)
            self.views.setdefault(id(root), []).extend(([out] if out is not new else []) + ([base] if base is not root
                                                                                            else []))  # (``add``: new)
            if base is root:
                for t in twins:  # and reads it written from here on
                    self.by_id[id(t)] = self.by_id[id(base)]
        self.retire(stale, base if base is not None else (mutated if root is None else None), before)
        return out

    def cast_back(self, node: Node, wide: torch.Tensor | None, out: torch.Tensor) -> Node:
        """``node`` (an in-place write recorded as its functional call); with ``wide`` (:func:`widened`): ``node`` recorded
        with that wider value, and the node returned a cast of it to the written tensor's dtype, whose value is ``out``."""
        if wide is None:
            return node
        node.value = wide
        self.add(node, wide)
        k = self.counts["_to_copy"] = self.counts.get("_to_copy", 0) + 1
        return Node(f"_to_copy_{k}", "call", torch.ops.aten._to_copy.default, (node,), {"dtype": out.dtype}, value=out,
                    stack=node.stack, live=node.live, line=node.line)

    def release(self, old: torch.Tensor, start: int) -> None:
        """Free the memory of ``old``, a copy of the recorder's own that a write through a view just replaced (the
        value before the write, made by :meth:`freeze` or by the write before it), where only the recording's nodes of
        values of the inputs (floating point, each read later for its shape only) hold it: their values become
        ``meta`` tensors of the same sizes and strides, and the memory returns to the allocator for the model's next
        tensors (longformer: 4-6 writes into each (8, 2, 256, 513) score tensor, a copy of it per write kept to the end
        of the trace, ~120 of ~350 MB).

        Kept as it is where anything else may read it: memory the model sees, a write not compared yet
        (:attr:`pending`), a constant (drawn by its values), indices, or a tensor sharing the memory that no node
        holds (counted: the memory's users are exactly the nodes' tensors and ``old``)."""
        memory = old.untyped_storage() if old.device.type != "meta" else None
        nodes = self.holders.pop(memory.data_ptr(), []) + [
            n for n in self.nodes[start:] if isinstance(n.value, torch.Tensor) and n.value.device.type != "meta"
            and n.value.untyped_storage().data_ptr() == memory.data_ptr()] if memory is not None else []
        if memory is None or not self._held_only_by(old, nodes):
            return
        _forget(nodes)
        self.memory.pop(memory.data_ptr(), None)  # (its address may be the model's next tensor's: no alias of it kept)
        self.retired.pop(memory.data_ptr(), None)
        memory.resize_(0)  # (the tensors ``keep`` holds stay, so their ids stay unique; none is read again)

    def freeable(self, old: torch.Tensor, written: int) -> list[Node] | None:
        """The nodes holding ``old`` (the written tensor's value before a write), if :meth:`release` could free it once
        the write is recorded: then the write's new value is made in its memory (:func:`ncd.trace.writes.write_back`,
        ``reuse``), not in a copy of it (longformer: 27 copies of 2-8 MB a trace); ``written``: the id of the tensor
        written, whose write not compared yet (:attr:`pending`) is this one's value before it."""
        if old.device.type == "meta":
            return None
        nodes = self.holders.get(old.untyped_storage().data_ptr(), [])
        return nodes if self._held_only_by(old, nodes, written) else None

    def reused(self, old: torch.Tensor, nodes: list[Node], start: int, final: Node) -> None:
        """``old``'s memory holds the written tensor's new value now (:meth:`freeable`): the nodes that held its value
        before (``nodes``), and the write's cuts of it (whose entries the write changed), read as ``meta`` tensors;
        ``final`` (the new value) and the joins that make it (parts of it) keep their values."""
        address = old.untyped_storage().data_ptr()
        self.holders.pop(address, None)
        made = [n for n in self.nodes[start:] if isinstance(n.value, torch.Tensor) and n.value.device.type != "meta"
                and n.value.untyped_storage().data_ptr() == address]
        kept = [n for n in made if n is final or n.target is torch.ops.aten.cat.default]
        gone = [n for n in nodes if n not in kept] + [n for n in made if n not in kept]
        alive = {id(old)} | {id(n.value) for n in kept}
        self.retired[address] = self.retired.get(address, 0) + len({id(n.value) for n in gone} - alive)
        _forget(gone)  # (their tensors, which ``keep`` holds, still use the memory: counted in :attr:`retired`)
        self.holders[address] = kept

    def _held_only_by(self, old: torch.Tensor, nodes: list[Node], written: int | None = None) -> bool:
        """Whether ``old``'s memory is the recorder's own (:attr:`own`), floating point, at least
        :data:`RELEASE_ABOVE` bytes, held by ``nodes`` only (values of the inputs; their tensors and ``old`` are its
        only users: counted) and compared by no pending write (but the one into ``written``, whose value is ``old``)."""
        if id(old) not in self.own or not old.is_floating_point() or old.numel() * old.element_size() < RELEASE_ABOVE:
            return False
        memory = old.untyped_storage()
        if memory.nbytes() < RELEASE_ABOVE:  # (a zero expanded: :func:`_zeros_kept`)
            return False
        address = memory.data_ptr()
        held = {id(old): old}
        for n in nodes:
            if not n.live or not isinstance(n.value, torch.Tensor) or not n.value.is_floating_point() \
                    or n.value.device.type == "meta" or n.value.untyped_storage().data_ptr() != address:
                return False
            held[id(n.value)] = n.value
        return not any(f.untyped_storage().data_ptr() == address for key, (f, _, _) in self.pending.items()
                       if not (key == written and f is old)) \
            and torch._C._storage_Use_Count(memory._cdata) == len(held) + 1 + self.retired.get(address, 0)  # (+1:
        # ``memory`` itself)

    def written(self, src: Any, out: torch.Tensor) -> torch.Tensor:
        """The value ``out.copy_(src)`` / ``out.fill_(src)`` wrote, as recorded operations on ``src``."""
        if not isinstance(src, torch.Tensor):
            return self.emit(torch.ops.aten.full.default, list(out.shape), src, dtype=out.dtype, device=out.device)
        x = src
        if x.dtype != out.dtype:
            x = self.emit(torch.ops.aten._to_copy.default, x, dtype=out.dtype)
        if tuple(x.shape) != tuple(out.shape):
            x = self.emit(torch.ops.aten.expand.default, x, list(out.shape))
        self.ref(x)
        return x
