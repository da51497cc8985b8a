"""Numbers a model computes in Python from its inputs' shapes, followed from the recording to the diagram.

While a model is recorded (:mod:`ncd.trace.record`), a tensor's sizes read into Python
(``x.shape``, ``x.size(d)``, ``x.numel()``) of a tensor that depends on the inputs are
:class:`SizeInt` — ints that remember which wire they measure — and Python arithmetic on them
(``x.shape[0] * t``, ``1 / b``, ``(t * m) ** -0.5``, ``d // h``) keeps an expression of those
sizes (:class:`SizeFloat` for a non-integer result).  A torch call handed such a number
(``x / b``, ``x * (t * m) ** -0.5``, ``sdpa(..., scale=t ** -0.5)``: a torch function mode, pushed at
the first size read, sees it) marks the recorded call's argument with its expression (``Node.sized``); the
converter draws a scale by it as that expression of the size symbols (``*1/b``), so the diagram lowered at another batch or length
divides by that one.  An argument of the sizes the converter does not draw that way is listed
among the diagram's ``fixed`` boxes: lowering at other values of those sizes is refused, naming
the call and the sizes.  So is a size turned into a Python float outside torch (``math.sqrt(t)``):
what the model computed from it cannot be followed.

``len(x)`` (Python makes its result a plain int) on the model's own line is noted as a size turned into a plain int:
it holds the traced size, as ``math.sqrt(t)`` does; so do a stride, ``storage_offset()``, ``untyped_storage()`` (every size
of the tensor) and the number of pieces of ``unbind`` (its dimension's size) read on the model's line.  ``torch.numel(x)``,
``x.nelement()``, ``x.nbytes`` and ``divmod(t, 2)`` are followed as ``x.numel()`` and ``t // 2`` are.  Not followed: a
float written first (``0.5 * b``, ``1.0 / t``: Python's float arithmetic reads the int directly) -- documented in
``docs/trace.md``.  Held as ``len(x)`` is: ``int()``, ``round()``, ``math.floor``/``ceil`` of a :class:`SizeFloat`, bitwise
``&``/``|``/``^``, ``int(t)`` (:mod:`ncd.trace.sized`), ``math.log2(t)``, ``math.gcd(t, 4)`` and their kin
(:mod:`ncd.trace.size_math`, patched), ``numel()`` of a shape (:mod:`ncd.trace.size_numel`), the sizes handed
to ``torch.tensor`` (:data:`_MAKERS`); a slice's bounds are looked into like a list's items.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ncd.trace.shape_expressions import check_node, expression, factor_of, fixed_boxes
from ncd.trace.size_math import Patched
from ncd.trace.size_numel import numel_next
from ncd.trace.sized import _ALIVE, _SIZED, SizeFloat, SizeInt, Tree, _internal_caller

__all__ = ["SizeInt", "SizeFloat", "Tree", "Shapes", "expression", "factor_of", "check_node", "fixed_boxes", "sizes_plain"]

#: the argument types :func:`_found` looks at or into
_LOOKED_INTO = frozenset({SizeInt, SizeFloat, list, tuple, torch.Size, slice})
#: the torch calls making a tensor of the numbers handed (``torch.tensor(x.size(1))``, ``torch.tensor(x.shape)``): a
#: constant in the diagram, so each sized number among them is held (as ``len(x)`` is)
_MAKERS = frozenset({torch.tensor, torch.as_tensor, torch.scalar_tensor, torch.asarray, torch.Tensor.new_tensor})


def _found(values: Any, window: list[tuple[Any, Tree]] | None, slices: bool = True) -> list[tuple[Any, Tree]] | None:
    """``window`` with the sized numbers among a call's arguments ``values`` (and in their lists) noted; a slice's
    bounds only where ``slices`` (indexing outside torch's own code: torch's ``w[E:2 * E]`` inside its attention
    marked a layer whose E was sized but not its twin whose E came from a parameter, and the twin was no longer
    copied, :mod:`ncd.trace.reuse`)."""
    for value in values:
        kind = type(value)
        if kind is SizeInt or kind is SizeFloat:
            window = window if window is not None else []
            window.append((value._plain(), value.expr))
        elif kind is list or kind is tuple or kind is torch.Size or (kind is slice and slices):
            for v in (value.start, value.stop, value.step) if kind is slice else value:
                if type(v) in _SIZED:
                    window = window if window is not None else []
                    window.append((v._plain(), v.expr))
                elif type(v) is slice and slices:  # ``x[:, :t // 2]``: a slice's bounds in the tuple of indices
                    window = _found((v,), window)
    return window


class _Calls(TorchFunctionMode):
    """Pushed once the model read a size: a torch call handed sized numbers (``x / b``, ``sdpa(scale=t ** -0.5)``)
    opens a window; the live calls recorded in it get their scalar arguments of those values marked."""

    def __init__(self, shapes: Shapes) -> None:
        super().__init__()
        self.shapes = shapes

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        for value in args:  # most calls hand no number and no list: straight on (asked at every torch call)
            if type(value) in _LOOKED_INTO:
                break
        else:
            if not kwargs:
                return func(*args)
            for value in kwargs.values():
                if type(value) in _LOOKED_INTO:
                    break
            else:
                return func(*args, **kwargs)
        kwargs = kwargs or {}
        caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")  # torch's or ncd's own indexing:
        own = "/torch/" not in caller and "/ncd/" not in caller  # its slices are not looked into
        window = _found(kwargs.values(), _found(args, None, own), own) if kwargs else _found(args, None, own)
        if window is None:
            return func(*args, **kwargs)
        shapes = self.shapes
        if func in _MAKERS:  # a constant of the sizes: held (the model's line made it)
            from ncd.trace.capture import user_line

            made = getattr(func, "__name__", "tensor")
            shapes.escaped.extend((expr, user_line() or "?", f"torch.{made}({have})") for have, expr in window)
        nodes = shapes.nodes
        start = len(nodes)
        shapes.calling += 1
        try:
            return func(*args, **kwargs)
        finally:
            shapes.calling -= 1
            for node in nodes[start:]:
                if node.kind == "call" and node.live:
                    _mark(node, window)


def _listed(target: str) -> bool:
    """Whether a call's list arguments are numbers whose sizedness is checked item by item (a pad's, a roll's)."""
    return "pad" in target or "roll" in target


def _mark(node: Any, window: list[tuple[Any, Tree]]) -> None:
    for key, value in (*enumerate(node.args), *node.kwargs.items()):
        if type(value) in (list, tuple) and _listed(str(node.target)):  # a pad's amounts, a roll's shifts: each
            _mark_items(node, key, value, window)  # sized or not, marked ``(key, j)`` (ncd.trace.boxes.pad: ``fit``)
            continue
        if type(value) not in (int, float) or (node.sized and key in node.sized):
            continue
        for have, expr in window:
            if have == value:
                if node.sized is None:
                    node.sized = {}
                node.sized[key] = expr
                break


def _mark_items(node: Any, key: Any, items: Any, window: list[tuple[Any, Tree]]) -> None:
    """The items of the list argument ``key`` computed from sizes, marked ``(key, j)`` (read by the rule of the call
    only: :func:`check_node` reads scalar arguments)."""
    for j, item in enumerate(items):
        if type(item) is not int or (node.sized and (key, j) in node.sized):
            continue
        for have, expr in window:
            if have == item:
                if node.sized is None:
                    node.sized = {}
                node.sized[(key, j)] = expr
                break


#: the tensor attributes that read sizes into Python, patched on ``torch.Tensor`` while recording (``len(x)``: Python
#: makes ``__len__``'s result a plain int, so a length read by the model's own line is noted as escaped instead)
_READS = ("shape", "size", "numel", "nelement", "nbytes", "__len__", "stride", "storage_offset", "untyped_storage",
          "unbind", "split", "chunk", "__iter__")
#: the methods cutting a tensor into a Python tuple of pieces: how many is a number the diagram holds
_CUTS = ("split", "chunk")  # (tensor_split: its arguments decide how many)
#: the same reads as functions of ``torch`` (``torch.numel(x)``, ``torch.unbind(x, 1)``), patched there
_TORCH_READS = ("numel", "unbind")


class Shapes:
    """While recording: sizes read from the tensors ``node_of`` knows (live ones) are :class:`SizeInt` (``Tensor.shape``,
    ``size`` and ``numel`` patched), and the recorded ``nodes`` of a torch call handed sized numbers get their
    arguments marked (``Node.sized``, by :class:`_Calls`)."""

    active: Shapes | None = None

    def __init__(self, node_of: Any, nodes: list[Any]) -> None:
        self.node_of = node_of  # a tensor -> its live recorded node, or None
        self.nodes = nodes  # the recording's nodes, in order
        self.escaped: list[tuple[Any, ...]] = []  # (tree, line) of a float(t); (tree, line, how) of a len(x)
        self.calling = 0
        self.kernels = 0  # inside torch's own kernel on meta copies, or the recorder's own work for an in-place write
        # (ncd.trace.inplace): its size reads are torch's or the recorder's, not the model's
        self._saved: dict[str, Any] = {}
        self._saved_torch: dict[str, Any] = {}
        self._calls: _Calls | None = None  # the mode marking calls, pushed at the first size read
        self.math = Patched()  # math.log2, math.gcd, operator.index of a size: held (ncd.trace.size_math)

    def __enter__(self) -> Shapes:
        Shapes.active = self
        cls = torch.Tensor
        self._saved = {name: cls.__dict__.get(name) for name in _READS}
        self._saved_torch = {name: getattr(torch, name) for name in _TORCH_READS}
        self.math.__enter__()
        base: Any = torch._C.TensorBase
        get_shape, size, numel = base.shape.__get__, base.size, base.numel
        stride, offset, storage, unbind = base.stride, base.storage_offset, base.untyped_storage, base.unbind
        torch_numel, torch_unbind = torch.numel, torch.unbind
        node_of = self.node_of

        plain = torch.Tensor
        modes = torch._C._len_torch_function_stack
        at = torch._C._get_function_stack_at
        unmoded = torch._C.DisableTorchFunction

        def sized(tensor: torch.Tensor, dims: Any, shape: Any = None) -> Any:
            if self.kernels:
                return None
            node = node_of(tensor)
            if node is None:
                return None
            if shape is None:
                shape = get_shape(tensor)
            if self._calls is None:  # models that never read a size pay nothing per call
                self._calls = _Calls(self)
                self._calls.__enter__()  # type: ignore[no-untyped-call]
                frame: Any = sys._getframe(2)
                while frame is not None and _internal_caller(frame):  # (the model's code: its from-math imports patched)
                    frame = frame.f_back
                if frame is not None:
                    self.math.reach(frame.f_globals)
            return tuple(SizeInt(shape[d], ("atom", node, d)) for d in dims)

        def shape_of(tensor: torch.Tensor, depth: int = 1) -> Any:  # (depth: the model's frame, x.size() calls it)
            if type(tensor) is plain and self._calls is not None and modes() == 1 and at(0) is self._calls:
                # the mode marking calls is the only one: a shape read hands it no sized number, read past it
                with unmoded():
                    shape = get_shape(tensor)
                sizes = sized(tensor, range(len(shape)), shape)
            else:
                shape, sizes = None, sized(tensor, range(tensor.dim()))
            if sizes and numel_next(sys._getframe(depth)):  # x.shape.numel(): a plain int, held (ncd.trace.size_numel)
                held(tensor, f"shape.numel() = {numel(tensor)}", up=depth + 1)
            return torch.Size(sizes) if sizes is not None else shape if shape is not None else get_shape(tensor)

        def size_of(tensor: torch.Tensor, dim: Any = None) -> Any:
            if dim is None:
                return shape_of(tensor, 2)
            n = tensor.dim()
            if type(dim) is not int or not -n <= dim < n:  # a dimension's name, or one torch refuses
                return size(tensor, dim)
            sizes = sized(tensor, (dim % n,))
            return sizes[0] if sizes is not None else size(tensor, dim)

        def numel_of(tensor: torch.Tensor) -> Any:
            sizes = sized(tensor, range(tensor.dim()))
            if not sizes:
                return numel(tensor)
            total: Any = sizes[0]
            for s in sizes[1:]:
                total = total * s
            return total

        length: Any = cls.__len__
        internal = _internal_caller

        def len_of(tensor: torch.Tensor) -> int:
            n: int = length(tensor)
            if not self.calling and not self.kernels and not internal(sys._getframe(1)):
                sizes = sized(tensor, (0,))
                if sizes is not None:  # ``8 - len(ids[0])``: what the model computes from it is not followed
                    from ncd.trace.capture import user_line

                    self.escaped.append((sizes[0].expr, user_line() or "?", f"len() = {n}"))
            return n

        def held(tensor: torch.Tensor, how: str, dim: Any = None, layout: str = "", up: int = 2) -> None:
            """A number read from ``tensor``'s layout (a stride, an offset, its storage) or how many pieces it is cut
            into along ``dim``, that ncd does not follow, read on the model's own line: noted as a plain int, as
            ``len(x)`` is, holding the sizes of ``tensor`` (all of them, and of the tensor it is a view of, but
            ``dim``'s alone for the pieces)."""
            if self.calling or self.kernels or internal(sys._getframe(up)):  # (up: the model's frame)
                return
            from ncd.trace.capture import user_line
            from ncd.trace.watched_layout import laid_as_given, noted

            for whole in (tensor, None if dim is not None else tensor._base):
                if whole is None or not whole.dim():
                    continue
                sizes = sized(whole, range(whole.dim()) if dim is None else (dim % whole.dim(),))
                if sizes is not None:
                    if layout and laid_as_given(tensor, node_of):  # (ncd.trace.watched_layout checks it)
                        noted(layout, user_line() or "?")
                    total: Any = sizes[0]
                    for s in sizes[1:]:
                        total = total * s
                    self.escaped.append((total.expr, user_line() or "?", how))

        def stride_of(tensor: torch.Tensor, *dim: Any) -> Any:
            out = stride(tensor, *dim)
            held(tensor, f"stride() = {out}", layout=".stride()")
            return out

        def offset_of(tensor: torch.Tensor) -> int:
            out: int = offset(tensor)
            held(tensor, f"storage_offset() = {out}", layout=".storage_offset()")
            return out

        def storage_of(tensor: torch.Tensor) -> Any:
            held(tensor, "untyped_storage()")
            return storage(tensor)

        def unbind_of(tensor: torch.Tensor, dim: Any = 0) -> Any:
            out = unbind(tensor, dim)
            held(tensor, f"unbind() into {len(out)}", dim)
            return out

        def torch_unbind_of(tensor: Any, dim: Any = 0) -> Any:  # (held() looks two frames up: the model's line)
            if type(tensor) is not plain:
                return torch_unbind(tensor, dim)
            out = unbind(tensor, dim)
            held(tensor, f"unbind() into {len(out)}", dim)
            return out

        def torch_numel_of(tensor: Any) -> Any:
            return numel_of(tensor) if type(tensor) is plain else torch_numel(tensor)

        cls.shape = property(shape_of)  # type: ignore[assignment]
        cls.__len__ = len_of  # type: ignore[method-assign]
        cls.size = size_of  # type: ignore[assignment, method-assign]
        cls.numel = cls.nelement = numel_of  # type: ignore[assignment, method-assign]
        cls.nbytes = property(lambda tensor: numel_of(tensor) * tensor.element_size())  # type: ignore[assignment]
        cls.stride = stride_of  # type: ignore[assignment, method-assign]
        cls.storage_offset = offset_of  # type: ignore[assignment, method-assign]
        cls.untyped_storage = storage_of  # type: ignore[assignment, method-assign]
        cls.unbind = unbind_of  # type: ignore[assignment, method-assign]
        torch.numel, torch.unbind = torch_numel_of, torch_unbind_of  # type: ignore[assignment]
        for name in _CUTS:
            setattr(cls, name, _cut(getattr(cls, name), name, held))
        whole_iter = cls.__iter__

        def iter_of(tensor: torch.Tensor) -> Any:  # ``for row in x``: as many steps as x's first size
            if tensor.dim():
                held(tensor, f"iterated {len(tensor)} times", 0)
            return whole_iter(tensor)  # type: ignore[no-untyped-call]

        cls.__iter__ = iter_of  # type: ignore[method-assign]
        return self

    def rest(self) -> None:
        """While no sized number exists, the mode marking calls is popped (pushed again at the next size read): the
        torch calls in between go straight to torch (a model reading sizes once per layer: ``F.pad`` by a size read
        just before it).  Only when it is the innermost torch-function mode (asked between calls: a module's end)."""
        calls = self._calls
        if calls is None or _ALIVE:
            return
        depth = torch._C._len_torch_function_stack()
        if depth and torch._C._get_function_stack_at(depth - 1) is calls:
            calls.__exit__(None, None, None)
            self._calls = None

    def __exit__(self, *exc: Any) -> None:
        Shapes.active = None
        if self._calls is not None:
            self._calls.__exit__(None, None, None)  # type: ignore[no-untyped-call]
            self._calls = None
        cls = torch.Tensor
        for name, value in self._saved_torch.items():
            setattr(torch, name, value)
        self.math.__exit__()
        for name, value in self._saved.items():
            if value is None:
                delattr(cls, name)
            else:
                setattr(cls, name, value)


@contextlib.contextmanager
def sizes_plain() -> Iterator[None]:
    """ncd's own run of torch code while a model is recorded (a proof outside the recording, its dispatch modes off):
    the sizes it reads are plain ints (:attr:`Shapes.kernels`: torch's reads, not the model's) and the mode marking
    calls handed sized numbers (:class:`_Calls`, which marks recorded calls only) is off, where it is the innermost
    torch-function mode.  Nothing is noted for such a run either way; it only skips making and checking numbers that
    no one reads.

    >>> with sizes_plain():
    ...     type(torch.zeros(2, 3).shape[0]).__name__
    'int'
    """
    shapes = Shapes.active
    if shapes is None:
        yield
        return
    calls = shapes._calls
    depth = torch._C._len_torch_function_stack()
    popped = calls is not None and depth > 0 and torch._C._get_function_stack_at(depth - 1) is calls
    if popped:
        torch._C._pop_torch_function_stack()
    shapes.kernels += 1
    try:
        yield
    finally:
        shapes.kernels -= 1
        if popped:
            torch._C._push_on_torch_function_stack(calls)



def _cut(method: Any, name: str, held: Any) -> Any:
    """``method`` (``x.split(2, 1)``) noting the number of pieces it cut as held (the size of the dimension cut)."""

    def cut(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = method(tensor, *args, **kwargs)
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        held(tensor, f"{name}() into {len(out)}", dim if type(dim) is int else None)
        return out

    return cut


# the numbers themselves: ncd.trace.sized; the converter's side (a tree read as a size expression, the fixed
# boxes): ncd.trace.shape_expressions
