"""The calls the recorder (:class:`ncd.trace.recording._Recording`) takes apart from the path of every call: a write
reading memory it writes (:meth:`CallsApart.overlapped`), a custom ``torch.autograd.Function`` applied
(:meth:`~CallsApart.function`), indices computed on meta from the real values kept (:meth:`~CallsApart.real_values`),
an in-place operator's functional form (:meth:`~CallsApart.functional`) and the operations a write stands for
(:meth:`~CallsApart.emit`, :meth:`~CallsApart.known`).  Moved as they were from :mod:`ncd.trace.recording`; its
``__init__`` sets the state they read."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import torch

from ncd.trace.aliases import _memory_of
from ncd.trace.capture import Node, refs, user_line
from ncd.trace.overlaps import _span, differing, in_model_order, operands, read_first
from ncd.trace.refusals import Unsupported, _NeedValues
from ncd.trace.tensors import _device, _shares


class CallsApart:
    """The recorder's methods for calls taken apart (mixed into :class:`ncd.trace.recording._Recording`)."""

    meta: bool
    switched: dict[int, torch.Tensor]
    overlapping_now: bool
    overlapping: dict[str, str]
    by_id: dict[int, Node]
    keep: list[Any]
    nodes: list[Node]
    stack: list[tuple[str, str]]
    counts: dict[str, int]
    state: dict[int, tuple[str, bool]]
    twins: dict[int, list[torch.Tensor]]
    views: dict[int, list[torch.Tensor]]
    derived: dict[int, Any]
    stale: set[int]
    functions: dict[str, str]
    device: torch.device
    real: dict[int, torch.Tensor]
    input_of: dict[int, str]
    inputs_written: set[str]
    params_written: dict[str, str]
    buffers_written: dict[str, str]

    if TYPE_CHECKING:
        def call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...
        def ref(self, value: Any) -> Any: ...
        def add(self, node: Node, value: Any) -> None: ...
        def check_writes(self) -> None: ...
        def held_at(self, at: int) -> list[torch.Tensor]: ...

    def overlapped(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A write (:meth:`call`) whose operand shares the memory it writes (``y /= y[:, :1]``): recorded as any write,
        the model's result compared with the diagram's reading of it (:mod:`ncd.trace.overlaps`), the line kept where
        they differ; on the meta device, recorded again on real values."""
        if self.meta or self.switched:
            if operands(func, args, kwargs)[1] and any(r.live for r in refs(self.ref((args, kwargs)))):
                raise _NeedValues(f"{func} reads memory it writes")
            pairs = []
        else:
            pairs = read_first(func, args, kwargs)
        self.overlapping_now = True
        try:
            out = self.call(func, args, kwargs)
        except Unsupported as error:  # (an out= write: torch.export records it, reading the operands first)
            if in_model_order(func, args, kwargs, pairs):
                error.overlapping = {user_line() or "?": func.overloadpacket.__name__}  # type: ignore[attr-defined]
            raise
        finally:
            self.overlapping_now = False
        if pairs and differing(pairs):
            self.overlapping.setdefault(user_line() or "?", func.overloadpacket.__name__)
        return out

    def _constant_detached(self, x: Any) -> bool:
        """Whether ``x.detach_()`` leaves the recording as it is: ``x`` is a recorded value of no input (the tensor
        ``torch.tensor(data)`` makes, lifted), not a view, not one of the model's parameters or buffers, with no other
        name.  The write changes no value, only ``x``'s place in autograd (which a constant has none of): ``x`` keeps
        its node.  (Recorded as a write, it cost a copy of ``x``, its functional ``detach`` and the model's state
        indexed: ~0.2 ms a ``torch.tensor`` in a forward, SEW-D's 10 of them.)"""
        if type(x) is not torch.Tensor or x._base is not None:
            return False
        key = id(x)
        node = self.by_id.get(key)
        return node is not None and not node.live and node.kind == "call" and node.value is x \
            and key not in self.state and key not in self.twins and key not in self.views and key not in self.derived \
            and key not in self.stale

    def function(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
        """A custom ``torch.autograd.Function`` applied (its forward already run, unrecorded): one call of the operator
        that applies it (:func:`~ncd.trace.functions.function_op`), so the lowered module's backward is the Function's."""
        from ncd.errors import TraceError
        from ncd.trace.functions import function_op

        self.check_writes()
        line = user_line() or "?"
        many = not isinstance(out, torch.Tensor)
        items = list(out) if isinstance(out, (tuple, list)) else [out]
        if not all(isinstance(t, torch.Tensor) for t in items):
            raise TraceError(f"cannot trace the custom autograd.Function {cls.__qualname__} at {line}: it returns"
                             f" {', '.join(type(t).__name__ for t in items)}, not tensors only")
        self.functions.setdefault(line, cls.__qualname__)
        target = function_op(cls, args, kwargs, many)
        leaves = [v for v in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(v, torch.Tensor)]
        real = _device(leaves, self.device) if self.meta else leaves
        arg_refs = self.ref(real)
        live = any(r.live for r in refs(arg_refs))
        packet = target.overloadpacket.__name__
        k = self.counts[packet] = self.counts.get(packet, 0) + 1
        node = Node(f"{packet}_{k}", "call", target, (arg_refs,), {}, value=out if not many else tuple(items),
                    stack=tuple(self.stack), live=live, line=line if live else "")
        if not many:
            self.add(node, out)
            return out
        self.nodes.append(node)
        self.keep.append(out)
        for j, item in enumerate(items):
            self.add(Node(f"getitem_{len(self.nodes)}", "call", operator.getitem, (node, j), {}, value=item,
                          stack=tuple(self.stack), live=live), item)
        return out

    def real_values(self, value: Any, packet: str) -> Any:
        if isinstance(value, torch.Tensor):
            if value.device.type != "meta":
                return value
            if id(value) not in self.real:
                raise _NeedValues(f"{packet} computes indices from values recorded without them")
            return self.real[id(value)]
        if isinstance(value, tuple):
            return tuple(self.real_values(v, packet) for v in value)
        if isinstance(value, list):
            return [self.real_values(v, packet) for v in value]
        if isinstance(value, dict):
            return {k: self.real_values(v, packet) for k, v in value.items()}
        return value

    def functional(self, func: Any, args: tuple[Any, ...]) -> Any:
        name = func.overloadpacket.__name__
        base = name[:-1] if name.endswith("_") and not name.startswith("_") else None
        mutated = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if base is None or mutated is None or not func._schema.arguments[0].alias_info \
                or any(a.alias_info and a.alias_info.is_write for a in func._schema.arguments[1:]):
            raise Unsupported(f"{func} mutates its arguments")
        root = mutated if mutated._base is None else mutated._base
        if id(root) in self.input_of:
            self.inputs_written.add(self.input_of[id(root)])
        held = self.state.get(id(root))
        for name, learned in [held] if held is not None else self.held_in(mutated, root):
            if not name.endswith("num_batches_tracked"):  # a parameter: under the model's no_grad
                (self.params_written if learned else self.buffers_written).setdefault(name, user_line() or "?")
        if mutated._base is not None and self.meta and any(r.live for r in refs(self.ref(args))):
            raise _NeedValues(f"{func} writes through a view a value that depends on the inputs")
        packet = getattr(torch.ops.aten, base, None)
        overload = getattr(packet, func._overloadname, None) if packet is not None else None
        if overload is None and func._overloadname == "Tensor" and packet is not None:
            overload = _same_arguments(func, getattr(packet, "default", None))  # floor_divide_.Tensor: floor_divide
        if overload is None:
            raise Unsupported(f"{func} has no functional version")
        previous = self.by_id.get(id(mutated))
        if previous is not None and (not isinstance(previous.value, torch.Tensor) or _shares(previous.value, mutated)) \
                and not self._frozen_by_write(mutated):
            previous.value = previous.value.clone()  # the earlier value must not change under the nodes that read it
        return overload

    def held_in(self, mutated: torch.Tensor, root: torch.Tensor) -> list[tuple[str, bool]]:
        """The model's parameters and buffers (name, learned) whose memory a write into ``mutated`` (of memory
        ``root``, no parameter or buffer itself) meets: a buffer that is a view of a tensor made before it
        (``torch.arange(10.0).reshape(2, 5)`` registered: the write's root is the ``arange``, another tensor object),
        written whole (``self.state.add_(1)``) or through a view (``self.state[:, 1:] += 1``).  Looked up by memory,
        as :func:`ncd.trace.overlaps.watched` does, where ``root`` is not a value the recording made."""
        node = self.by_id.get(id(root))
        if (node is not None and node.kind != "constant") or mutated.layout != torch.strided \
                or not mutated.numel():
            return []
        at = _memory_of(mutated)
        if not at:
            return []
        low, high = _span(mutated)
        return [self.state[id(t)] for t in self.held_at(at) if id(t) in self.state and t.layout == torch.strided
                and t.numel() and low < _span(t)[1] and _span(t)[0] < high]

    def _frozen_by_write(self, mutated: torch.Tensor) -> bool:
        """Whether :meth:`write` records this write into a recorded view of a tensor (not on meta, some entries): its
        :meth:`freeze` keeps the view's recorded value before the model writes, as a view of memory the model never
        sees where it can (longformer: the slice written of a (8, 2, 256, 513) score tensor, 54 MB of copies a
        trace), so :meth:`functional` need not copy it first."""
        root = mutated._base
        return root is not None and not self.meta and bool(mutated.numel()) \
            and any(v is mutated for v in self.views.get(id(root), ()))

    def emit(self, op: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Run ``op`` on recorded tensors and record it (the operations an in-place write stands for)."""
        return self.known(op, op(*args, **kwargs), *args, **kwargs)

    def known(self, op: Any, value: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Record ``op`` on recorded tensors, whose result ``value`` is known (:func:`ncd.trace.writes.write_back`)."""
        out = value
        arg_refs, kwarg_refs = self.ref((args, kwargs))
        live = any(r.live for r in refs((arg_refs, kwarg_refs)))
        packet = op.overloadpacket.__name__
        k = self.counts[packet] = self.counts.get(packet, 0) + 1
        self.add(Node(f"{packet}_{k}", "call", op, arg_refs, kwarg_refs, value=out, stack=tuple(self.stack), live=live,
                      line=user_line() if live else ""), out)
        return out


def _same_arguments(inplace: Any, functional: Any) -> Any:
    """``functional`` if it takes the arguments of ``inplace`` (same names and types, in order), else ``None``: the
    functional form of an in-place op whose overload is named otherwise (``floor_divide_.Tensor`` and
    ``floor_divide.default`` both take ``(Tensor self, Tensor other)``)."""
    if functional is None:
        return None
    ours, theirs = inplace._schema.arguments, functional._schema.arguments
    same = len(ours) == len(theirs) and all(a.name == b.name and str(a.type) == str(b.type) for a, b in zip(ours, theirs))
    return functional if same else None
