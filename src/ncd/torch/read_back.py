"""A traced diagram away from its model: read back from JSON (``ncd.load_json(d.to_json())``) or taken as a plain block
(``d.as_block()``).

:class:`ncd.trace.TracedDiagram` lowers at other sizes only after checking the module against the model run at those
sizes (:mod:`ncd.trace.other_sizes`: a size the model computes in Python, ``x[:, : x.shape[1] // 2]``, is a number in
the diagram), lowers in the mode the model was traced in and keeps the parameters its forward never read. Its block's
``meta`` carries what a diagram without the model needs for the same (:func:`traced_meta`): ``traced`` (the mode),
``dtype`` (the floating-point type it computes in, when not torch's default), ``held`` (sizes boxes hold at their
traced values: refused at others) and ``unused`` (each unread parameter's name, shape, type and which tensor it is:
tied names share one). Lowered from such a block (:func:`guard`, :func:`restore`), the module is put in the traced
mode, holds the unread parameters (zeros: a read-back diagram holds no values) under ``unused``, and other sizes are
refused where a box holds the traced ones, warned about everywhere else (there is no model left to check against).

>>> import torch, ncd
>>> class Half(torch.nn.Module):
...     def forward(self, x: torch.Tensor) -> torch.Tensor:
...         return x[:, : x.shape[1] // 2] * 2  # a size computed in Python: 4 at the traced 9
>>> loaded = ncd.load_json(ncd.trace(Half(), torch.randn(2, 9, 3), axes="b t m").to_json())
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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ncd.errors import SchemaError, TraceError, user_stacklevel
from ncd.ir.diagram import Block, Diagram

if TYPE_CHECKING:
    import torch

__all__ = ["KEYS", "traced_meta", "without", "guard", "restore"]

#: the meta keys of a traced diagram's block that only a diagram read back without its model reads
KEYS = ("traced", "dtype", "held", "unused")


def traced_meta(training: bool, held: tuple[str, ...], unused: tuple[tuple[str, torch.Tensor], ...],
                dtype: torch.dtype | None = None) -> tuple[tuple[str, Any], ...]:
    """The ``meta`` entries of a traced diagram's block (:data:`KEYS`); ``held``: the sizes refused at other values;
    ``dtype``: the floating-point type the lowered module computes in (a model in float64 throughout), if not torch's
    default."""
    meta: list[tuple[str, Any]] = [("traced", "training" if training else "eval")]
    if dtype is not None:
        meta.append(("dtype", str(dtype).removeprefix("torch.")))
    if held:
        meta.append(("held", tuple(sorted(set(held)))))
    if unused:
        which: dict[int, int] = {}
        meta.append(("unused", tuple((name, tuple(int(n) for n in p.shape), str(p.dtype).removeprefix("torch."),
                                      which.setdefault(id(p), len(which))) for name, p in unused)))
    return tuple(meta)


def without(meta: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    """``meta`` less :data:`KEYS` (what the traced diagram itself lowers: it has its model)."""
    return tuple((k, v) for k, v in meta if k not in KEYS)


def _read_back(diagram: Diagram) -> Block | None:
    """``diagram`` when it is a traced model's block without the model (a plain :class:`Block`, not the
    ``TracedDiagram``, holding ``traced``)."""
    return diagram if type(diagram) is Block and diagram.get("traced") is not None else None


def guard(diagram: Diagram, sizes: Mapping[str, int], what: str) -> None:
    """Before lowering ``diagram`` at ``sizes``: a traced block read back refuses sizes its boxes hold at their traced
    values (``held``) and warns at any other size than traced (``what``: ``to_torch``, ``to_source``)."""
    block = _read_back(diagram)
    if block is None:
        return
    defaults = dict(block.get("defaults", ()))
    other = {**_bound(block, defaults), **{k: v for k, v in sizes.items() if k in defaults and defaults[k] != v}}
    if not other:
        return
    held = sorted(set(block.get("held", ())) & set(other))
    if held:
        raise TraceError(f"cannot lower {block.name} at {', '.join(f'{k}={other[k]}' for k in held)} (traced at"
                         f" {', '.join(f'{k}={defaults[k]}' for k in held)}): a box of the traced diagram holds values or"
                         " calls recorded at the traced sizes; trace the model at the sizes you run at")
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
    module.register_forward_pre_hook(TracedMode(block.name, mode == "training"))
    try:
        hold(module, _placeholders(block))
    except (KeyError, TypeError) as error:  # a name torch's modules refuse (``training``): the file is not a trace's
        raise SchemaError(f"block {block.name!r}: an unused parameter cannot be kept: {error}") from None


def _placeholders(block: Block) -> tuple[tuple[str, torch.Tensor], ...]:
    """Zeros for each unread parameter listed in ``unused`` (checked: a file read back is not trusted)."""
    import torch

    from ncd.limits import limits

    entries = block.get("unused", ())
    made: dict[int, torch.Tensor] = {}
    out: list[tuple[str, torch.Tensor]] = []
    total = 0
    for entry in entries if isinstance(entries, tuple) else (entries,):
        ok = isinstance(entry, tuple) and len(entry) == 4 and isinstance(entry[0], str) and isinstance(entry[1], tuple) \
            and all(type(n) is int and 0 <= n for n in entry[1]) and isinstance(entry[2], str) and type(entry[3]) is int
        dtype = getattr(torch, entry[2], None) if ok else None
        if not ok or not isinstance(dtype, torch.dtype) or not all(entry[0].split(".")) or \
                not all(part.isidentifier() for part in entry[0].split(".")):
            raise SchemaError(f"block {block.name!r}: an unused parameter {entry!r:.80} is not (name, shape, type, index)")
        name, shape, _, index = entry
        if index not in made:
            total += math.prod(shape) * dtype.itemsize
            if total > limits().memory:
                raise SchemaError(f"block {block.name!r}: its unused parameters take more than the memory limit"
                                  f" ({limits().memory} bytes, memory in ncd.limits)")
            made[index] = torch.zeros(shape, dtype=dtype, requires_grad=dtype.is_floating_point or dtype.is_complex)
        out.append((name, made[index]))
    return tuple(out)
