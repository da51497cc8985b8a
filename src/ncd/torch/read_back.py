"""A traced diagram away from its model: read back from JSON (``ncd.load_json(d.to_json())``) or taken as a plain block
(``d.as_block()``).

:class:`ncd.trace.TracedDiagram` lowers at other sizes only after checking the module against the model run at those
sizes (:mod:`ncd.trace.other_sizes`: a size the model computes in Python, ``x[:, : x.shape[1] // 2]``, is a number in
the diagram), lowers in the mode the model was traced in and keeps the parameters its forward never read. Its block's
``meta`` carries what a diagram without the model needs for the same (:func:`traced_meta`): ``traced`` (the mode),
``dtype`` (the floating-point type it computes in, when not torch's default), ``held`` (sizes boxes hold at their
traced values: refused at others), ``unused`` (each unread parameter's name, shape, type and which tensor it is:
tied names share one) and ``tied`` (pairs ``(i, j, shape)`` of traced tensors, by their place in the order the lowered
module first reads them, where the ``j``-th is the ``i``-th tensor of the model: a tied LM head, one layer called
twice) and ``types`` (pairs ``(j, type)`` of traced tensors, by that place, held in another floating-point type than
the module computes in: a float16 layer inside a float32 model). Lowered from such a block (:func:`guard`,
:func:`restore`), the module is put in the traced mode, its tensors in their traced types, its tied parameters are one
parameter (as the traced diagram's own), it holds the unread parameters (zeros: a read-back diagram holds no values)
under ``unused``, and other sizes are refused where a box holds the traced ones, warned about everywhere else (there
is no model left to check against); its source (:func:`typed_init`) holds its tensors in their traced types too.

>>> import torch, ncd
>>> class Half(torch.nn.Module):
...     def forward(self, x: torch.Tensor) -> torch.Tensor:
...         return x[:, : x.shape[1] // 2] * 2  # a size computed in Python: 4 at the traced 9, held
>>> loaded = ncd.load_json(ncd.trace(Half(), torch.randn(2, 9, 3), axes="b t m").to_json())
>>> try:
...     loaded.to_torch(t=7)
... except ncd.TraceError as refused:
...     print(str(refused)[:40])
cannot lower Half at t=7 (traced at t=9)
>>> class Scaled(torch.nn.Module):
...     def forward(self, x: torch.Tensor) -> torch.Tensor:
...         return x * (0.5 * x.shape[1])  # a float written first: Python reads the int, not followed
>>> loaded = ncd.load_json(ncd.trace(Scaled(), torch.randn(2, 9, 3), axes="b t m").to_json())
>>> import warnings
>>> with warnings.catch_warnings(record=True) as said:
...     warnings.simplefilter("always")
...     _ = loaded.to_torch(t=7)
>>> "not checked against the model" in str(said[0].message)
True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from itertools import chain
from typing import TYPE_CHECKING, Any

from ncd.errors import SchemaError, TraceError, user_stacklevel
from ncd.ir.diagram import Block, Diagram

if TYPE_CHECKING:
    import torch

    from ncd.ir.program import Program

__all__ = ["KEYS", "traced_meta", "without", "guard", "restore", "typed_init"]

#: the meta keys of a traced diagram's block that only a diagram read back without its model reads
KEYS = ("traced", "dtype", "held", "unused", "tied", "views", "shared", "types", "guards")


def traced_meta(training: bool, held: tuple[str, ...], unused: tuple[tuple[str, torch.Tensor], ...],
                dtype: torch.dtype | None = None, flat: tuple[torch.Tensor, ...] = (),
                learned: frozenset[int] | Callable[[frozenset[int]], frozenset[int]] = frozenset()
                ) -> tuple[tuple[str, Any], ...]:
    """The ``meta`` entries of a traced diagram's block (:data:`KEYS`); ``held``: the sizes refused at other values;
    ``dtype``: the floating-point type the lowered module computes in (a model in float64 throughout), if not torch's
    default; ``flat``: the traced tensors in order (their ties: :func:`ties`, :func:`views`); ``learned``: the storages
    (data pointers) of the model's parameters (the entries the boxes count twice: :func:`shared_entries`), or a function
    giving those of the storages it is given that are (:func:`ncd.trace.params.storages`), called only when some traced
    tensors are tied or views of one storage, with theirs."""
    meta: list[tuple[str, Any]] = [("traced", "training" if training else "eval")]
    if dtype is not None:
        meta.append(("dtype", str(dtype).removeprefix("torch.")))
    if held:
        meta.append(("held", tuple(sorted(set(held)))))
    if unused:
        which: dict[int, int] = {}
        kinds: dict[Any, str] = {}  # (a dtype's name once: SeamlessM4T lists 1,315 unread parameters)
        # each shape a tuple of its torch.Size (~0.2 us, against ~0.7 for int() of each size), as int() reads it when
        # a size is not a plain int (a symbolic one)
        shapes = [tuple(p.shape) for _, p in unused]
        if not set(map(type, chain.from_iterable(shapes))) <= {int}:
            shapes = [tuple(map(int, shape)) for shape in shapes]
        meta.append(("unused", tuple((name, shape, kinds.get(p.dtype) or kinds.setdefault(
            p.dtype, str(p.dtype).removeprefix("torch.")), which.setdefault(id(p), len(which)))
            for (name, p), shape in zip(unused, shapes))))
    tied = ties(flat)
    if tied:
        meta.append(("tied", tied))
    laid = views(flat)
    if laid:
        meta.append(("views", laid))
    shared = shared_entries(flat, tied, laid, learned if isinstance(learned, frozenset) else learned(frozenset(
        storage_of(flat[j]) for j in {*(j for _, j, _ in tied), *(entry[0] for entry in laid)}))) if tied or laid else 0
    if shared:
        meta.append(("shared", shared))
    typed = types(flat, dtype)
    if typed:
        meta.append(("types", typed))
    return tuple(meta)


def types(flat: tuple[torch.Tensor, ...], dtype: torch.dtype | None) -> tuple[tuple[int, str], ...]:
    """``(j, type)`` for each traced tensor ``j`` (of one or more axes) held in a floating-point type other than
    ``dtype`` (torch's default when ``None``): the types :func:`ncd.trace.loading._typed_as` gives the traced
    diagram's own module, which a module read back without its values takes from this list."""
    if not flat:
        return ()
    import torch

    kind = dtype if dtype is not None else torch.get_default_dtype()
    return tuple((j, str(t.dtype).removeprefix("torch.")) for j, t in enumerate(flat)
                 if t.is_floating_point() and t.dim() and t.dtype != kind)


def shared_entries(flat: tuple[torch.Tensor, ...], tied: tuple[tuple[int, int, tuple[int, ...]], ...],
                   laid: tuple[View, ...], learned: frozenset[int]) -> int:
    """How many parameter entries the diagram's learned boxes count once per box that reads them but the lowered
    module holds once (what :func:`ncd.trace.params.tie` ties, of the ``learned`` storages): ``ncd.cost`` takes them
    off its parameter count, which is then the module's (T5's shared embedding: 44,800 counted per box, 43,200 held)."""
    def ptr(j: int) -> int:
        return storage_of(flat[j])

    again = {j for _, j, _ in tied}
    count = sum(math.prod(shape) for _, j, shape in tied if ptr(j) in learned)
    groups: dict[int, dict[tuple[int, tuple[int, ...], tuple[int, ...]], int]] = {}
    for j, group, offset, shape, stride in laid:
        if j not in again and ptr(j) in learned:
            groups.setdefault(group, {}).setdefault((offset, shape, stride), math.prod(shape))
    for layouts in groups.values():
        (offset, shape, _), most = max(layouts.items(), key=lambda item: item[1])
        within = all(offset <= low and low + sum((n - 1) * t for n, t in zip(s, st)) < offset + most
                     for (low, s, st) in layouts)
        if within and flat and len(layouts) > 1:
            count += sum(layouts.values()) - most  # the others are computed from the largest (a view of it)
    return count


def storage_of(t: torch.Tensor) -> int:
    """``int(t.untyped_storage().data_ptr())``."""
    return int(t.untyped_storage().data_ptr())


def ties(flat: tuple[torch.Tensor, ...]) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
    """``(i, j, shape)`` for each traced tensor ``j`` that is an earlier one ``i`` of the model, laid out the same (the
    same entries of one storage: one parameter read in two places), as :func:`ncd.trace.params.tie` ties them."""
    first: dict[tuple[int, tuple[int, ...], tuple[int, ...]], int] = {}
    out = []
    for j, value in enumerate(flat):
        if value.device.type == "meta" or not value.untyped_storage().nbytes():
            continue
        key = (int(value.untyped_storage().data_ptr() + value.storage_offset() * value.element_size()),
               tuple(value.shape), tuple(value.stride()))
        i = first.setdefault(key, j)
        if i != j:
            out.append((i, j, tuple(int(n) for n in value.shape)))
    return tuple(out)


#: a traced tensor's place in its storage: ``(j, group, offset, shape, stride)`` (:func:`views`)
View = tuple[int, int, int, tuple[int, ...], tuple[int, ...]]


def views(flat: tuple[torch.Tensor, ...]) -> tuple[View, ...]:
    """``(j, group, offset, shape, stride)`` of each traced tensor ``j`` of a storage that other traced tensors read
    laid out otherwise (``x @ w.T`` after ``F.linear(x, w)``, ``onehot @ table`` after ``table[ids]``), ``group``
    numbering the storages: :func:`ncd.trace.params.tie` computes such reads from one parameter, and so does a module
    read back (:func:`_retie`, on stand-ins of these layouts)."""
    groups: dict[tuple[int, Any], list[tuple[int, Any]]] = {}
    for j, value in enumerate(flat):
        if value.device.type == "meta" or not value.untyped_storage().nbytes() or value.numel() == 0:
            continue
        groups.setdefault((int(value.untyped_storage().data_ptr()), value.dtype), []).append((j, value))
    out: list[View] = []
    for members in groups.values():
        layouts = {(v.storage_offset(), tuple(v.shape), tuple(v.stride())) for _, v in members}
        if len(layouts) < 2 or any(n < 0 for _, v in members for n in v.stride()):
            continue
        g = len({e[1] for e in out})
        out.extend((j, g, int(v.storage_offset()), tuple(int(n) for n in v.shape), tuple(int(n) for n in v.stride()))
                   for j, v in members)
    return tuple(out)


def without(meta: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    """``meta`` less :data:`KEYS` (what the traced diagram itself lowers: it has its model)."""
    return tuple((k, v) for k, v in meta if k not in KEYS)


def _read_back(diagram: Diagram) -> Block | None:
    """``diagram`` when it is a traced model's block without the model (a plain :class:`Block`, not the
    ``TracedDiagram``, holding ``traced``)."""
    return diagram if type(diagram) is Block and diagram.get("traced") is not None else None


def guard(diagram: Diagram, sizes: Mapping[str, int], what: str, branches: bool = True) -> None:
    """Before lowering ``diagram`` at ``sizes``: a traced block read back refuses sizes its boxes hold at their traced
    values (``held``) and, with ``branches``, sizes where a comparison the model made of them comes out otherwise
    (``guards``: :mod:`ncd.trace.size_guards`), and warns at any other size than traced (``what``: ``to_torch``,
    ``to_source``)."""
    block = _read_back(diagram)
    if block is None:
        return
    defaults = dict(block.get("defaults", ()))
    other = {**_bound(block, defaults), **{k: v for k, v in sizes.items() if k in defaults and defaults[k] != v}}
    if not other:
        return
    named = block.get("held", ())
    if not isinstance(named, tuple) or not all(isinstance(n, str) for n in named):
        raise SchemaError(f"block {block.name!r}: meta held={named!r:.60} is not a tuple of size names")
    held = sorted(set(named) & set(other))
    if held:
        raise TraceError(f"cannot lower {block.name} at {', '.join(f'{k}={other[k]}' for k in held)} (traced at"
                         f" {', '.join(f'{k}={defaults[k]}' for k in held)}): a box of the traced diagram holds values or"
                         " calls recorded at the traced sizes; trace the model at the sizes you run at")
    if branches:
        from ncd.trace.size_guards import GUARDS, flipped

        flips = flipped(block.get(GUARDS), defaults, other)
        if flips:
            raise TraceError(f"cannot lower {block.name} at {', '.join(f'{k}={v}' for k, v in sorted(other.items()))}:"
                             f" {'; '.join(flips[:4])}: it takes another branch there than the traced one, and a"
                             " diagram read back has no model to check it; trace the model at the sizes you run at")
    at = ", ".join(f"{k}={v}" for k, v in sorted(other.items()))
    was = ", ".join(f"{k}={defaults[k]}" for k in sorted(other))
    warnings.warn(f"{what}({at}) of {block.name}, a traced diagram read without its model (traced at {was}): at these"
                  " sizes it is not checked against the model, and a size the model computes in Python (a slice to"
                  " half the tokens, a shift by a third) stays at its traced value; lower the traced diagram itself"
                  " (ncd.trace(...).to_torch(...), which checks) or trace at these sizes", RuntimeWarning,
                  stacklevel=user_stacklevel())


def _bound(block: Block, defaults: Mapping[str, int]) -> dict[str, int]:
    """The sizes of ``defaults`` bound in ``block`` itself at other values (``d.bind(t=7)``: no longer symbols of its
    body, its wires named after them are 7 long), read off the first wire of each name (primed or not)."""
    names = {str(s) for s in block.free_symbols}
    gone = {k for k in defaults if k not in names}
    if not gone:
        return {}
    found: dict[str, int] = {}
    for node in block.walk():
        for segment in (*node.dom.segments, *node.cod.segments):
            for axis in segment.axes:
                base = axis.name.rstrip("\u02b9")
                if base in gone and base not in found and getattr(axis.size, "is_Integer", False):
                    found[base] = int(axis.size)
        if len(found) == len(gone):
            break
    return {k: v for k, v in found.items() if v != defaults[k]}


def restore(diagram: Diagram, module: torch.nn.Module) -> None:
    """A module lowered from a traced block read back: in the traced mode (warning once when run in the other, as the
    traced diagram's own) and floating-point type, holding the unread parameters (zeros of their shapes, tied names sharing one)."""
    block = _read_back(diagram)
    if block is None:
        return
    from ncd.trace.keywords import TracedMode
    from ncd.trace.params import hold

    mode = block.get("traced")
    if mode not in ("training", "eval"):
        raise SchemaError(f"block {block.name!r}: meta traced={mode!r:.40} is neither 'training' nor 'eval'")
    module.train(mode == "training")
    dtype = block.get("dtype")
    if dtype is not None:
        import torch

        kind = getattr(torch, dtype, None) if isinstance(dtype, str) else None
        if not isinstance(kind, torch.dtype) or not kind.is_floating_point:
            raise SchemaError(f"block {block.name!r}: meta dtype={dtype!r:.40} is not a floating-point type of torch")
        module.to(kind)
    order = _order(block, module) if any(block.get(k, ()) for k in ("tied", "views", "types")) else None
    _retype(block, module, order)
    _retie(block, module, order)
    module.register_forward_pre_hook(TracedMode(block.name, mode == "training"))
    try:
        hold(module, _placeholders(block, sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))))
    except (KeyError, TypeError) as error:  # a name torch's modules refuse (``training``): the file is not a trace's
        raise SchemaError(f"block {block.name!r}: an unused parameter cannot be kept: {error}") from None


def _order(block: Block, module: torch.nn.Module) -> list[str] | None:
    """The names of the parameters and buffers of ``module`` (lowered from ``block``) in the order it first reads them
    (read on the block lowered at the traced sizes: its names are the same at any size); ``None``, with a warning,
    when it cannot be read."""
    import torch

    from ncd.errors import InputError
    from ncd.trace.loading import _first_use

    was = module.training
    try:
        return _first_use(module, block.example_inputs())
    except InputError:  # lowered at other sizes than traced: the order read at the traced ones, lowered untied
        from ncd.torch.module import to_torch

        plain = to_torch(Block(block.body, block.name, without(block.meta))).train(module.training)
        dtype = block.get("dtype")
        return _first_use(plain.to(getattr(torch, dtype)) if isinstance(dtype, str) else plain, block.example_inputs())
    except (RuntimeError, ValueError, IndexError, ArithmeticError) as error:
        warnings.warn(f"{block.name}, a traced diagram read without its model: its tied parameters are not tied in the"
                      f" lowered module, and each is held in the module's floating-point type (the order it reads them"
                      f" in could not be read: {error}); training it would untie them", RuntimeWarning,
                      stacklevel=user_stacklevel())
        return None
    finally:
        module.train(was)


def _retype(block: Block, module: torch.nn.Module, order: list[str] | None) -> None:
    """The parameters and buffers of ``module`` that ``types`` names (by first-use ``order``) in their traced
    floating-point types, as :func:`ncd.trace.loading._typed_as` types the traced diagram's own module; an entry out
    of range or not a floating-point type of torch is refused (a file is not trusted)."""
    entries = block.get("types", ())
    if not entries or order is None:
        return
    import torch

    from ncd.trace.loading import _held, _typed_as

    entries = entries if isinstance(entries, tuple) else (entries,)
    held = dict(_held(module))
    state: dict[str, torch.Tensor] = {}
    for entry in entries:
        kind = getattr(torch, entry[1], None) if isinstance(entry, tuple) and len(entry) == 2 \
            and isinstance(entry[1], str) and entry[1].isidentifier() else None
        if not (isinstance(kind, torch.dtype) and kind.is_floating_point and type(entry[0]) is int
                and 0 <= entry[0] < len(order) and order[entry[0]] in held):
            raise SchemaError(f"block {block.name!r}: a type {entry!r:.80} is not (j, floating-point type) naming one of"
                              f" the {len(order)} tensors the lowered module reads")
        state[order[entry[0]]] = torch.empty(0, dtype=kind)
    _typed_as(module, state)


def _retie(block: Block, module: torch.nn.Module, order: list[str] | None) -> None:
    """The parameters of ``module`` that ``tied`` names (by first-use ``order``) made one parameter, as
    :func:`ncd.trace.params.tie` does for the traced diagram; an entry out of range or of another size than the
    parameters it names is refused (a file is not trusted)."""
    entries = block.get("tied", ())
    laid = block.get("views", ())
    if not entries and not laid:
        return
    entries = entries if isinstance(entries, tuple) else (entries,)
    laid = laid if isinstance(laid, tuple) else (laid,)
    for entry in entries:
        if not (isinstance(entry, tuple) and len(entry) == 3 and type(entry[0]) is int and type(entry[1]) is int
                and 0 <= entry[0] < entry[1] and isinstance(entry[2], tuple)
                and all(type(n) is int and 0 <= n for n in entry[2])):
            raise SchemaError(f"block {block.name!r}: a tie {entry!r:.80} is not (i, j, shape) with 0 <= i < j")
    if order is None:
        return
    from ncd.trace.loading import _held
    from ncd.trace.params import _set

    held = dict(_held(module))
    for i, j, shape in entries:
        names = (order[i], order[j]) if j < len(order) else ()
        if len(names) != 2 or any(n not in held or held[n].numel() != math.prod(shape) for n in names):
            raise SchemaError(f"block {block.name!r}: a tie {(i, j, shape)!r:.80} names no two tensors of that size"
                              f" among the {len(order)} the lowered module reads")
        params = dict(module.named_parameters(remove_duplicate=False))
        a, b = (params.get(n) for n in names)
        if a is not None and b is not None and a is not b and a.shape == b.shape and a.dtype == b.dtype:
            _set(module, names[1], a)
    if laid:
        _retie_views(block, module, order, laid)


def _retie_views(block: Block, module: torch.nn.Module, order: list[str], laid: tuple[Any, ...]) -> None:
    """The parameters that ``views`` names read as other views of one storage, computed from one parameter as
    :func:`ncd.trace.params.tie` does on the traced values: here on stand-ins of the traced layouts, holding the
    module's own entries (a diagram read back holds no values), which the stand-ins load into it first."""
    import torch

    from ncd.limits import limits
    from ncd.trace.loading import _held
    from ncd.trace.params import tie

    held = dict(_held(module))
    held.update(module.named_parameters(remove_duplicate=False))  # (a name the ties above made another's too)
    extent: dict[int, int] = {}
    for entry in laid:
        ok = isinstance(entry, tuple) and len(entry) == 5 and all(type(n) is int and n >= 0 for n in entry[:3]) \
            and all(isinstance(t, tuple) and all(type(n) is int and n >= 0 for n in t) for t in entry[3:]) \
            and len(entry[3]) == len(entry[4])
        j, group, offset, shape, stride = entry if ok else (0, 0, 0, (), ())
        if not ok or j >= len(order) or order[j] not in held or held[order[j]].numel() != math.prod(shape) \
                or not math.prod(shape):
            raise SchemaError(f"block {block.name!r}: a view {entry!r:.80} is not (j, group, offset, shape, stride) of"
                              f" a tensor among the {len(order)} the lowered module reads")
        extent[group] = max(extent.get(group, 0), offset + 1 + sum((n - 1) * t for n, t in zip(shape, stride)))
    if sum(extent.values()) * 8 > limits().memory:
        raise SchemaError(f"block {block.name!r}: its views span more than the memory limit ({limits().memory} bytes)")
    bases: dict[int, torch.Tensor] = {}
    flat: list[torch.Tensor] = [torch.empty(0, device="meta")] * len(order)
    state: dict[str, torch.Tensor] = {}
    kinds: dict[int, set[torch.dtype]] = {}
    for j, group, *_ in laid:
        kinds.setdefault(group, set()).add(held[order[j]].dtype)
    laid = tuple(entry for entry in laid if len(kinds[entry[1]]) == 1)  # (held in two types: left untied, as tie would)
    with torch.no_grad():
        for j, group, offset, shape, stride in laid:
            current = held[order[j]]
            base = bases.setdefault(group, torch.zeros(extent[group], dtype=current.dtype))
            flat[j] = base.as_strided(shape, stride, offset)
            _write_into(base, flat[j], current.detach().reshape(shape))  # (entries read twice: the last read's)
        for j in {entry[0] for entry in laid}:
            state[order[j]] = flat[j].reshape(held[order[j]].shape)
    module.load_state_dict(state, strict=False)
    tie(module, order, flat)


def _write_into(base: torch.Tensor, view: torch.Tensor, values: torch.Tensor) -> None:
    """``view`` (of ``base``'s storage) set to ``values``; an entry several of its positions read (a zero expanded to
    a score tensor's shape, strides 0: ``ncd.trace.inplace._zeros_kept``) takes the last of their values."""
    import torch

    if not torch._debug_has_internal_overlap(view):
        view.copy_(values)
        return
    where = torch.arange(base.numel()).as_strided(view.shape, view.stride(), view.storage_offset()).reshape(-1)
    last = torch.full((base.numel(),), -1).scatter_reduce_(0, where, torch.arange(where.numel()), "amax")
    written = last >= 0
    base[written] = values.reshape(-1)[last[written]]


def _placeholders(block: Block, held: int = 0) -> tuple[tuple[str, torch.Tensor], ...]:
    """Zeros for each unread parameter listed in ``unused`` (checked: a file read back is not trusted), within the
    memory budget with the ``held`` bytes of the module's own tensors (all parameters are within it together)."""
    import torch

    from ncd.limits import limits

    entries = block.get("unused", ())
    made: dict[int, torch.Tensor] = {}
    out: list[tuple[str, torch.Tensor]] = []
    total = held
    for entry in entries if isinstance(entries, tuple) else (entries,):
        ok = isinstance(entry, tuple) and len(entry) == 4 and isinstance(entry[0], str) and isinstance(entry[1], tuple) \
            and all(type(n) is int and 0 <= n for n in entry[1]) and isinstance(entry[2], str) and type(entry[3]) is int
        dtype = getattr(torch, entry[2], None) if ok else None
        if not ok or not isinstance(dtype, torch.dtype) or not all(entry[0].split(".")) or not all(
                part.isidentifier() or part.isascii() and part.isdecimal() for part in entry[0].split(".")):
            # (a part of digits: a layer of an nn.ModuleList or nn.Sequential, ``layers.1.weight``)
            raise SchemaError(f"block {block.name!r}: an unused parameter {entry!r:.80} is not (name, shape, type, index)")
        name, shape, _, index = entry
        if index not in made:
            total += math.prod(shape) * dtype.itemsize
            if total > limits().memory:
                raise SchemaError(f"block {block.name!r}: its unused parameters take more than the memory limit"
                                  f" ({limits().memory} bytes, memory in ncd.limits) with the {held} bytes of its"
                                  " other tensors")
            made[index] = torch.zeros(shape, dtype=dtype, requires_grad=dtype.is_floating_point or dtype.is_complex)
        out.append((name, made[index]))
    return tuple(out)


def typed_init(block: Diagram, program: Program) -> None:
    """The constructor of ``program``'s top class (printed from a traced ``block``: read back, or the traced diagram's
    own as a block) given the floating-point types the traced model holds its tensors in: ``self.to(torch.float64)``
    for a model in one type other than torch's default, and each tensor ``types`` lists in its own (a float16 layer
    in a float32 model): printed without them, the source computed in float32 what the model rounds to float16."""
    if type(block) is not Block or block.get("traced") is None:
        return
    import torch

    lines = []
    dtype = block.get("dtype")
    if dtype is not None:
        kind = getattr(torch, dtype, None) if isinstance(dtype, str) and dtype.isidentifier() else None
        if not isinstance(kind, torch.dtype) or not kind.is_floating_point:
            raise SchemaError(f"block {block.name!r}: meta dtype={dtype!r:.40} is not a floating-point type of torch")
        lines.append(f"self.to(torch.{dtype})  # the traced model's floating-point type")
    if block.get("types", ()):
        from ncd.torch.module import to_torch

        module = to_torch(Block(block.body, block.name, without(block.meta)))
        module.train(block.get("traced") == "training")
        if isinstance(dtype, str):
            module.to(getattr(torch, dtype))
        order = _order(block, module)
        _retype(block, module, order)
        params = dict(module.named_parameters())
        for name, t in module.state_dict().items():
            if order is not None and name in order and t.is_floating_point() and t.dtype != (
                    getattr(torch, dtype) if isinstance(dtype, str) else torch.get_default_dtype()):
                get = "get_parameter" if name in params else "get_buffer"
                kind_text = str(t.dtype).removeprefix("torch.")
                lines.append(f"self.{get}({name!r}).data = self.{get}({name!r}).data.to(torch.{kind_text})"
                             "  # held in the traced model's type")
    program.top.init.extend(lines)
