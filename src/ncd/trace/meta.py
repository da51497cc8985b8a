"""The recorder's meta device: a call run on meta copies of its arguments (shapes only, its compute skipped), the
memo that remakes a repeated call's outputs from the first call's metadata, and the stand-ins that turn meta
tensors back into real ones.  :mod:`ncd.trace.record` decides when a model records on meta (``META_ABOVE``)."""

from __future__ import annotations

from typing import Any

import torch

from ncd.trace.capture import held_tensors
from ncd.trace.shapes import Shapes


def _stand_ins(value: Any, device: torch.device) -> Any:
    """``value`` with every meta tensor replaced by a real one of its shape and dtype (``SHAPE_ONLY`` calls)."""
    if isinstance(value, torch.Tensor):
        return torch.zeros(value.shape, dtype=value.dtype, device=device) if value.device.type == "meta" else value
    if isinstance(value, (tuple, list)):
        return type(value)(_stand_ins(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _stand_ins(v, device) for k, v in value.items()}
    return value


def _on_meta_device(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                    memo: dict[Any, Any] | None = None) -> tuple[Any, Any, Any]:
    """``func`` on copies of its arguments on the meta device: the copies and the result.  Torch's C++ meta kernels
    where it has them (the Python dispatcher off: with it, ``linear`` or ``add`` on meta tensors run Python
    decompositions, ~0.1-0.8 ms a call, more than a small model's real kernels); an operator whose meta kernel only
    the Python dispatcher knows runs there.

    Many meta kernels are Python functions whatever the dispatcher (torch registers its decompositions at the Meta
    key: ``addmm`` under ``linear`` ~0.5 ms, ``scaled_dot_product_attention`` ~2 ms).  With a ``memo``, a functional
    operator called again on arguments of the same metadata (shapes, strides, dtypes, the other arguments: every
    repeated layer) makes outputs of the metadata the kernel gave the first time, without running it; pointwise
    arithmetic on contiguous operands of one dtype makes its output from theirs (:func:`_pointwise`)."""
    with torch._C._DisablePythonDispatcher():
        margs, mkwargs = _to_meta((args, kwargs))
        made = _pointwise(func, args, kwargs) if func in POINTWISE else _SHAPED[func](args, kwargs) \
            if func in _SHAPED else None
        if made is None and func in POINTWISE:
            made = _permuted(margs, mkwargs)
        elif func is _CAT:
            made = _cat(margs, mkwargs)
        elif func is _LINEAR:
            made = _linear(margs, mkwargs)
    if made is not None:
        return margs, mkwargs, made
    key = _meta_key(func, margs, mkwargs) if memo is not None else None
    if key is not None:
        made = memo.get(key)  # type: ignore[union-attr]
        if made is not None:
            with torch._C._DisablePythonDispatcher():
                return margs, mkwargs, _remade(made)
    shapes = Shapes.active  # a meta kernel written in Python reads sizes: plain ints (it refuses int subclasses)
    if shapes is not None:
        shapes.kernels += 1
    try:
        try:
            with torch._C._DisablePythonDispatcher():
                out = func(*margs, **mkwargs)
        except Exception:  # noqa: BLE001 - no C++ meta kernel: the Python one (on fresh copies)
            margs, mkwargs = _to_meta((args, kwargs))
            out = func(*margs, **mkwargs)
    finally:
        if shapes is not None:
            shapes.kernels -= 1
    if key is not None and not _aliases(out, margs, mkwargs):
        made = _fresh(out)
        if made is not None:
            memo[key] = made  # type: ignore[index]
    return margs, mkwargs, out


#: pointwise arithmetic whose result, for contiguous floating-point tensors of one dtype (and numbers), is a new
#: contiguous tensor of that dtype and of their shapes broadcast (:func:`_pointwise`)
POINTWISE = frozenset({torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor, torch.ops.aten.mul.Tensor,
                       torch.ops.aten.div.Tensor, torch.ops.aten.neg.default})
_NUMBERS = (int, float, bool)
_TENSORS = (torch.Tensor, torch.nn.Parameter)  # (a parameter's layout is its data's: a layer's scale)
#: a tensor's sizes as plain ints (``Tensor.shape`` is followed while recording: :class:`~ncd.trace.shapes.Shapes`)
_shape: Any = torch._C.TensorBase.shape.__get__  # type: ignore[attr-defined]


def _pointwise(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The meta result of :data:`POINTWISE` ``func`` when every tensor it is given is a floating-point one of one dtype
    laid out contiguously (each its shape's own strides), beside numbers (``alpha``, ``x * 0.5``): a new contiguous
    tensor of that dtype and of the shapes broadcast, as torch's meta kernels make it (Python references, ~0.2-0.4 ms
    a call; this ~10 us); ``None`` for anything else (another layout, two dtypes: the meta kernel decides).

    >>> a, row = torch.empty(2, 3, device="meta"), torch.empty(3, device="meta")
    >>> _pointwise(torch.ops.aten.add.Tensor, (a, row), {"alpha": 2}).stride()
    (3, 1)
    >>> _pointwise(torch.ops.aten.add.Tensor, (a, a.t().contiguous().t()), {}) is None
    True
    """
    shapes: list[tuple[int, ...]] = []
    dtype = None
    for value in (*args, *kwargs.values()):
        if type(value) in _NUMBERS:
            continue
        if type(value) not in _TENSORS or value.layout != torch.strided or not value.is_floating_point() \
                or value.is_neg() or (dtype is not None and value.dtype != dtype):
            return None
        dtype = value.dtype
        shape = tuple(_shape(value))
        strides, step = [], 1
        for n in reversed(shape):
            strides.append(step)
            step *= max(n, 1)
        strides.reverse()
        if list(value.stride()) != strides:
            return None
        shapes.append(shape)
    if not shapes or any(k != "alpha" for k in kwargs):
        return None
    try:  # (not broadcastable: the kernel raises as it would)
        shape = tuple(torch.broadcast_shapes(*shapes)) if len(shapes) > 1 else shapes[0]  # type: ignore[no-untyped-call]
    except RuntimeError:
        return None
    return torch.empty(shape, dtype=dtype, device="meta")


def _permuted(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The meta result of :data:`POINTWISE` arithmetic on meta float32 or float64 tensors of one dtype laid out any
    strided way (a transposed or sliced operand: rotary halves, heads read across), of one number of axes (a size-1
    axis broadcast), beside numbers, no ``alpha``: what torch's Python meta kernel (``torch._refs``, ~0.15-0.7 ms a
    call) makes, by the rule it applies (``_prim_elementwise_meta``: the operands broadcast, their layout's order of
    axes, a new tensor dense in that order), ~60 us; ``None`` for anything else (the kernel decides).  ``args`` are the
    meta copies the kernel would be given (their strides, not the originals': a copy of an operand that is not dense
    is laid out anew).

    >>> x = torch.empty(2, 4, 14, 8, device="meta").transpose(1, 2)  # (2, 14, 4, 8), heads read across
    >>> _permuted((x, torch.empty(1, 14, 1, 8, device="meta")), {}).stride()
    (448, 8, 112, 1)
    """
    if kwargs:  # (alpha: the reference scales the second operand first, a tensor laid out anew)
        return None
    shapes: list[tuple[int, ...]] = []
    tensors: list[torch.Tensor] = []
    dtype = None
    for value in args:
        if type(value) in _NUMBERS:
            continue
        if type(value) is not torch.Tensor or value.device.type != "meta" or value.layout != torch.strided \
                or value.dtype not in _COMPUTED_AS_HELD or value.is_neg() or value.is_conj() or not value.dim() \
                or (dtype is not None and value.dtype != dtype):
            return None
        dtype = value.dtype
        shapes.append(tuple(_shape(value)))
        tensors.append(value)
    if not tensors:
        return None
    try:  # (not broadcastable: the kernel raises as it would)
        shape = tuple(torch.broadcast_shapes(*shapes))  # type: ignore[no-untyped-call]
    except RuntimeError:
        return None
    if any(len(s) != len(shape) for s in shapes):  # (axes added in front: the reference's own expansion decides)
        return None
    shapes_active = Shapes.active  # (the rule reads sizes: plain ones, as a kernel's)
    if shapes_active is not None:
        shapes_active.kernels += 1
    try:
        expanded = [t if s == shape else t.expand(shape) for t, s in zip(tensors, shapes)]
        order, _ = _physical_order(*expanded)
    finally:
        if shapes_active is not None:
            shapes_active.kernels -= 1
    return torch.empty_permuted(shape, order, dtype=dtype, device="meta")


def _cat(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The meta result of ``cat(tensors, dim)`` on meta float32/float64 tensors of one dtype, of one number of axes
    (at least one), none empty, sizes equal but along ``dim``, one of them laid out as torch suggests contiguously:
    a new contiguous tensor, as torch's Python meta kernel (``torch._refs.cat``: ``prims.cat(...).clone`` in the
    memory format the inputs suggest, contiguous once one suggests it; ~0.25-0.6 ms a call) makes it; ``None`` for
    anything else (the kernel decides).  ``args``: the meta copies the kernel would be given.

    >>> q = torch.empty(2, 4, 14, 8, device="meta").transpose(1, 2)
    >>> _cat(([q[..., :4], q[..., 4:]], -1), {}).stride()
    (448, 32, 8, 1)
    """
    given: dict[str, Any] = dict(zip(("tensors", "dim"), args), **kwargs)
    if len(given) != len(args) + len(kwargs) or set(given) - {"tensors", "dim"} or len(args) > 2:
        return None
    tensors, dim = given.get("tensors"), given.get("dim", 0)
    if type(tensors) not in (list, tuple) or not tensors or type(dim) is not int:
        return None
    first = tensors[0]
    for t in tensors:
        if type(t) is not torch.Tensor or t.device.type != "meta" or t.layout != torch.strided \
                or t.dtype not in _COMPUTED_AS_HELD or t.dtype != first.dtype or t.is_neg() or t.is_conj() \
                or t.dim() != first.dim() or not t.dim() or not t.numel():
            return None
    n = first.dim()
    if not -n <= dim < n:
        return None
    dim %= n
    shape = list(_shape(first))
    shape[dim] = 0
    for t in tensors:
        sizes = list(_shape(t))
        if sizes[:dim] != shape[:dim] or sizes[dim + 1:] != shape[dim + 1:]:
            return None
        shape[dim] += sizes[dim]
    active = Shapes.active  # (the rule reads sizes: plain ones, as a kernel's)
    if active is not None:
        active.kernels += 1
    try:
        if all(_suggested(t) != torch.contiguous_format for t in tensors):  # (channels-last inputs: the kernel)
            return None
    finally:
        if active is not None:
            active.kernels -= 1
    return torch.empty(shape, dtype=first.dtype, device="meta")


def _linear(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The meta result of ``linear(x, w, b)`` on a meta float32/float64 input of 2-5 axes (any strided layout, no
    axis empty), a matrix ``w`` (N, K) and a bias ``b`` (N,) or none, of its dtype: a contiguous (..., N) tensor as
    torch's kernel makes it through ``addmm`` or ``matmul`` (whose meta kernels are Python, ~0.1-0.5 ms a call), and
    as it makes it a view of the (rows, N) product where its kernel does (a contiguous bias with a contiguous input of
    3+ axes); ``None`` for anything else (the kernel decides).  ``args``: the meta copies the kernel would be given.

    >>> x, w = torch.empty(2, 14, 32, device="meta"), torch.empty(64, 32, device="meta")
    >>> made = _linear((x, w, torch.empty(64, device="meta")), {})
    >>> made.shape, made._base.shape
    (torch.Size([2, 14, 64]), torch.Size([28, 64]))
    """
    given: dict[str, Any] = dict(zip(("input", "weight", "bias"), args), **kwargs)
    if len(given) != len(args) + len(kwargs) or set(given) - {"input", "weight", "bias"} or len(args) > 3:
        return None
    x: Any = given.get("input")
    w: Any = given.get("weight")
    b: Any = given.get("bias")
    for t in (x, w) if b is None else (x, w, b):
        if type(t) is not torch.Tensor or t.device.type != "meta" or t.layout != torch.strided \
                or t.dtype not in _COMPUTED_AS_HELD or t.dtype != x.dtype or t.is_neg() or t.is_conj():
            return None
    if not 2 <= x.dim() <= 5 or w.dim() != 2 or not x.numel() or not w.numel():
        return None
    sizes, (n, k) = tuple(_shape(x)), tuple(_shape(w))
    if sizes[-1] != k or (b is not None and tuple(_shape(b)) != (n,)):
        return None
    shape = (*sizes[:-1], n)
    rows = 1
    for size in sizes[:-1]:
        rows *= size
    if b is not None and b.is_contiguous() and x.dim() >= 3 and x.is_contiguous():
        return torch.empty((rows, n), dtype=x.dtype, device="meta").view(shape)
    return torch.empty(shape, dtype=x.dtype, device="meta")


_LINEAR = torch.ops.aten.linear.default
_CAT = torch.ops.aten.cat.default
_suggested: Any = torch._prims_common.suggest_memory_format


#: the floating-point types the reference computes in as they are (it computes half and bfloat16 in float32,
#: through conversions that lay a strided operand out anew)
_COMPUTED_AS_HELD = frozenset({torch.float32, torch.float64})
#: the order of axes in which torch lays out an elementwise result (its Python meta kernels' rule)
_physical_order: Any = torch._prims_common.compute_elementwise_output_logical_to_physical_perm


def _dense(value: Any) -> bool:
    """A plain strided floating-point tensor laid out contiguously (its shape's own strides)."""
    return type(value) in _TENSORS and value.layout == torch.strided and value.is_floating_point() \
        and not value.is_neg() and not value.is_conj() and value.is_contiguous()


def _conv1d(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The meta result of ``conv1d(x, w, b, stride, padding, dilation, groups)`` on a batched contiguous input (N, C,
    L) and weight of its dtype: a new contiguous (N, C_out, L_out) tensor, as torch's meta kernel (Python,
    ``calc_conv_nd_return_shape``, ~0.2 ms a call) makes it; ``None`` for anything else (the kernel decides, and
    raises what it raises).

    >>> x, w = torch.empty(2, 4, 50, device="meta"), torch.empty(6, 2, 5, device="meta")
    >>> _conv1d((x, w, None, [2], [1], [3], 2), {}).shape
    torch.Size([2, 6, 20])
    """
    if kwargs or not 2 <= len(args) <= 7:
        return None
    x, w, bias = args[0], args[1], args[2] if len(args) > 2 else None
    stride, padding, dilation = (list(args[i]) if len(args) > i else [d] for i, d in ((3, 1), (4, 0), (5, 1)))
    groups = args[6] if len(args) > 6 else 1
    if not (_dense(x) and _dense(w) and x.dim() == 3 and w.dim() == 3 and w.dtype == x.dtype) or type(groups) is not int \
            or not all(len(v) == 1 and type(v[0]) is int for v in (stride, padding, dilation)):
        return None
    if bias is not None and not (_dense(bias) and bias.dtype == x.dtype and tuple(_shape(bias)) == (_shape(w)[0],)):
        return None
    (n, c, length), (out, per_group, k) = tuple(_shape(x)), tuple(_shape(w))
    (s,), (p,), (d,) = stride, padding, dilation
    if groups < 1 or s < 1 or d < 1 or p < 0 or c != per_group * groups or out % groups or not n:
        return None
    size = (length + 2 * p - d * (k - 1) - 1) // s + 1
    if size < 1:
        return None
    return torch.empty((n, out, size), dtype=x.dtype, device="meta")


def _pad(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The meta result of ``pad(x, pads)`` in the constant mode on a contiguous input of 1-3 axes, no pad negative: a
    new contiguous tensor of the padded sizes, as torch's meta kernel (``constant_pad_nd``, Python, ~0.14 ms a call)
    makes it; ``None`` for anything else.

    >>> _pad((torch.empty(2, 3, 10, device="meta"), [4, 1]), {}).shape
    torch.Size([2, 3, 15])
    """
    given: dict[str, Any] = dict(zip(("input", "pad", "mode", "value"), args), **kwargs)
    x, pads = given.get("input"), given.get("pad")
    if x is None or pads is None:
        return None
    value = given.get("value")
    if len(given) != len(args) + len(kwargs) or set(given) - {"input", "pad", "mode", "value"} or not _dense(x) \
            or given.get("mode", "constant") != "constant" or not (value is None or type(value) in (int, float)) \
            or type(pads) not in (list, tuple) or len(pads) % 2 or len(pads) > 2 * x.dim() \
            or not all(type(v) is int and v >= 0 for v in pads):  # (a negative one crops first: refused there)
        return None
    shape = list(_shape(x))
    for i in range(len(pads) // 2):
        shape[-1 - i] += pads[2 * i] + pads[2 * i + 1]
    if min(shape) < 1 or x.dim() not in (1, 2, 3):  # (4-d and 5-d: a channels-last input stays channels-last)
        return None
    return torch.empty(shape, dtype=x.dtype, device="meta")


def _attention(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The meta result of ``scaled_dot_product_attention(q, k, v, mask, dropout_p, is_causal, scale=, enable_gqa=)``
    on query (B, H, L, E), key (B, Hk, S, E) and value (B, Hk, S, Ev) of one floating-point dtype, strided (any
    strides), no dropout, key/value heads ``H`` (or dividing ``H`` with ``enable_gqa``), a mask of no more axes that
    broadcasts to (B, H, L, S): a new contiguous (B, H, L, Ev) tensor, as torch's meta kernel makes it (its math
    decomposition in Python, ~1-5 ms a call); ``None`` for anything else (the kernel decides).

    >>> q, kv = torch.empty(2, 4, 5, 8, device="meta"), torch.empty(2, 2, 7, 8, device="meta")
    >>> _attention((q, kv, kv), {"enable_gqa": True}).shape
    torch.Size([2, 4, 5, 8])
    >>> _attention((q, kv, kv), {}) is None
    True
    """
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
    given: dict[str, Any] = dict(zip(names, args), **kwargs)
    if len(args) > len(names) or len(given) != len(args) + len(kwargs) \
            or set(given) - {*names, "scale", "enable_gqa"} or len(args) < 3:
        return None
    q, k, v, mask = given["query"], given["key"], given["value"], given.get("attn_mask")
    dropout, causal, scale, gqa = (given.get("dropout_p", 0.0), given.get("is_causal", False), given.get("scale"),
                                   given.get("enable_gqa", False))
    tensors = (q, k, v) if mask is None else (q, k, v, mask)
    if not all(type(t) in _TENSORS and t.layout == torch.strided and not t.is_neg() and not t.is_conj()
               for t in tensors) or not q.is_floating_point() or k.dtype != q.dtype or v.dtype != q.dtype \
            or q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or type(causal) is not bool or type(gqa) is not bool \
            or not (type(dropout) in (int, float) and dropout == 0) or not (scale is None or type(scale) is float):
        return None
    (b, h, n, e), (bk, hk, s, ek), (bv, hv, sv, ev) = tuple(_shape(q)), tuple(_shape(k)), tuple(_shape(v))
    if min(b, h, n, e, hk, s, ev) < 1 or (bk, ek) != (b, e) or (bv, hv, sv) != (b, hk, s) \
            or not (hk == h or gqa and h % hk == 0):
        return None
    if mask is not None:
        if causal or not (mask.dtype == torch.bool or mask.dtype == q.dtype) or mask.dim() > 4:
            return None
        try:
            if tuple(torch.broadcast_shapes(tuple(_shape(mask)), (b, h, n, s))) != (b, h, n, s):  # type: ignore[no-untyped-call]
                return None
        except RuntimeError:
            return None
    return torch.empty((b, h, n, ev), dtype=q.dtype, device="meta")


#: operators whose meta result :func:`_on_meta_device` makes from their arguments' shapes, where they are plain
_SHAPED = {torch.ops.aten.conv1d.default: _conv1d, torch.ops.aten.pad.default: _pad,
           torch.ops.aten.scaled_dot_product_attention.default: _attention}


#: whether an operator's outputs are new tensors (no in-place write, no alias of an argument), by operator
_FUNCTIONAL: dict[Any, bool] = {}
#: argument types holding no tensor: recorded as they are, and part of a memo key as they are (with their type:
#: ``1``, ``1.0`` and ``True`` differ)
_KEYED = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)
ATOMS = frozenset(_KEYED)  # for a type lookup (``type(value) in ATOMS``)


def _meta_key(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What decides the metadata of ``func``'s outputs on meta tensors ``args``, ``kwargs`` (``None``: not memoised)."""
    functional = _FUNCTIONAL.get(func)
    if functional is None:
        schema = func._schema
        functional = _FUNCTIONAL[func] = not schema.is_mutable and all(r.alias_info is None for r in schema.returns)
    if not functional:
        return None
    parts: list[Any] = [func, torch.get_default_dtype()]
    stack: list[Any] = [args, kwargs]
    while stack:
        value = stack.pop()
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided or value.is_conj() or value.is_neg():
                return None
            parts.append((tuple(value.shape), value.stride(), value.storage_offset(), value.dtype, value.requires_grad))
        elif isinstance(value, (tuple, list)):
            parts.append((type(value), len(value)))
            stack.extend(value)
        elif isinstance(value, dict):
            parts.append(tuple(value))
            stack.extend(value.values())
        elif isinstance(value, _KEYED):
            parts.append((type(value), value))
        else:
            return None
    return tuple(parts)


def _fresh(out: Any) -> Any:
    """The metadata that remakes ``out``: a new meta tensor, a view of a new one that nothing else sees (``linear``'s
    Python kernel returns a view of its matrix product), or a tuple of new ones.  Checked by remaking it: ``None``
    when the remade tensors would differ or ``out`` is anything else."""
    items = out if isinstance(out, (tuple, list)) else (out,)
    made: list[Any] = []
    for t in items:
        if not (isinstance(t, torch.Tensor) and t.device.type == "meta" and _plain(t)):
            return None
        base = t._base
        if base is None and t.storage_offset() == 0:
            made.append((tuple(t.shape), t.stride(), t.dtype))
        elif base is not None and len(items) == 1 and _plain(base) and base.dtype == t.dtype and base.storage_offset() == 0:
            made.append((tuple(base.shape), base.stride(), t.dtype, tuple(t.shape), t.stride(), t.storage_offset()))
        else:
            return None
    meta = (type(out), tuple(made)) if isinstance(out, (tuple, list)) else made[0]
    with torch._C._DisablePythonDispatcher():
        again = _remade(meta)
    for t, r in zip(items, again if isinstance(again, (tuple, list)) else (again,)):
        if _described(r) != _described(t):
            return None
    return meta


def _aliases(out: Any, args: Any, kwargs: Any) -> bool:
    """Whether an output is an argument or a view of one (``dropout`` in eval mode returns its input)."""
    given = {id(t) for t in held_tensors((args, kwargs))}
    given |= {id(t._base) for t in held_tensors((args, kwargs)) if t._base is not None}
    return any(id(t) in given or (t._base is not None and id(t._base) in given) for t in held_tensors(out))


def _plain(t: torch.Tensor) -> bool:
    return t.layout == torch.strided and not t.requires_grad and not t.is_conj() and not t.is_neg()


def _described(t: torch.Tensor) -> Any:
    """What a recording reads of a meta tensor: its shape, strides, offset, dtype, memory and whether it is a view."""
    base = t._base
    return (tuple(t.shape), t.stride(), t.storage_offset(), t.dtype, t.untyped_storage().nbytes(), base is None,
            None if base is None else (tuple(base.shape), base.stride(), base.storage_offset()))


def _remade(made: Any) -> Any:
    if isinstance(made[0], type):
        return made[0](_remade(m) for m in made[1])
    if len(made) == 3:
        return torch.empty_strided(made[0], made[1], dtype=made[2], device="meta")
    base = torch.empty_strided(made[0], made[1], dtype=made[2], device="meta")
    return base.as_strided(made[3], made[4], made[5])


def _meta_devices(value: Any, device: torch.device) -> Any:
    """``value`` with the device ``device`` named as ``meta`` (the inverse of :func:`ncd.trace.tensors._device`): a call
    a recording switched to meta (:mod:`ncd.trace.switch`) runs on meta, where a model that holds real tensors names
    their device (``position_ids.to(ids.device)``, copying out of meta there fails)."""
    if isinstance(value, torch.device):
        return _META if value == device or (value.index is None and value.type == device.type) else value
    if isinstance(value, tuple):
        return tuple(_meta_devices(v, device) for v in value)
    if isinstance(value, list):
        return [_meta_devices(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _meta_devices(v, device) for k, v in value.items()}
    return value


_META = torch.device("meta")


def _to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value if value.device.type == "meta" else value.to("meta")
    if isinstance(value, tuple):
        return tuple(_to_meta(v) for v in value)
    if isinstance(value, list):
        return [_to_meta(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_meta(v) for k, v in value.items()}
    return value
