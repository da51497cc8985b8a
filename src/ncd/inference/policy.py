"""Element-type policies: which element type weights, blocks and caches are stored in.

A :class:`Policy` names a default element type, optionally one for the caches (all of them or
per cache key, ``K``/``V``) and one per block (the weights of the boxes inside a block of that
name; the innermost named block wins).  Costs follow: the bytes a step reads and the cache
bytes per token.  Lowering (:meth:`Policy.apply_weights`, :meth:`Policy.store` / :meth:`Policy.load`,
used by :class:`~ncd.inference.run.Decoder`) inserts real casts:

* ``float64``, ``float32``, ``bfloat16``, ``float16``: the tensors are held in that torch dtype;
* ``float8`` (e4m3): held as ``torch.float8_e4m3fn`` and widened to the compute type where used
  (torch has no float8 arithmetic on CPU);
* ``int8``: symmetric quantisation, values held as ``torch.int8`` with one float16 scale per
  position of a cache (counted: 2 bytes per token per cache) and per output row of a weight
  (not counted in the weight bytes: a row of a weight is thousands of elements);
* ``int4``: the same with values in ``[-8, 7]``, packed **two per byte** (a ``torch.uint8`` tensor, the
  first value in the low nibble, along the last axis; torch has no 4-bit tensor type, so the packing is
  ours) and unpacked where used: caches held as int4 take half a byte per element, as the costs say.
  Weights are rounded through int4 (the lowered module computes in its compute type).

>>> from ncd.inference.examples import gqa_decoder
>>> import ncd
>>> d = ncd.decode(gqa_decoder(v=128256, m=4096, k=128, g=8, r=4, f=14336, N=32))
>>> Policy("bfloat16", cache="float8").cache_bytes(d)
65536
>>> Policy("bfloat16", caches={"K": "int8", "V": "int4"}).cache_bytes(d)  # 32 layers x (1024 + 2 + 512 + 2)
49280
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sympy

from ncd.inference.dtypes import canonical, element_bytes, torch_dtype
from ncd.ir.diagram import Block, Box, Diagram, Identity, Seq, Weave
from ncd.ir.interpreter import Fold, Rebuild
from ncd.ir.size import evaluate, symbol
from ncd.prims.precision import PrecisionOp
from ncd.prims.structure import SaveOp

if TYPE_CHECKING:
    import torch

    from ncd.inference.decoding import Decoding

__all__ = ["Policy"]

_QMAX = {"int8": 127, "int4": 7}
#: an int8/int4 cache holds one float16 scale per position (per sequence) beside its values
SCALE_BYTES = 2


@dataclass(frozen=True)
class Policy:
    """Element types: ``default`` for weights and activations, ``cache`` for every cache, ``caches`` per cache
    key, ``blocks`` per block name (the weights inside it)."""

    default: str = "bfloat16"
    cache: str | None = None
    caches: Mapping[str, str] = field(default_factory=dict)
    blocks: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", canonical(self.default))
        object.__setattr__(self, "cache", canonical(self.cache) if self.cache else None)
        object.__setattr__(self, "caches", {k: canonical(v) for k, v in dict(self.caches).items()})
        object.__setattr__(self, "blocks", {k: canonical(v) for k, v in dict(self.blocks).items()})

    # -- what each tensor is held in -------------------------------------------------------
    def cache_type(self, key: str) -> str:
        """The element type of the cache ``key`` (``K``, ``V``, ...)."""
        base = key.rstrip("0123456789")
        return self.caches.get(key) or self.caches.get(base) or self.cache or self.default

    def block_type(self, blocks: tuple[str, ...]) -> str:
        """The element type of weights inside the nested ``blocks`` (innermost named block wins)."""
        for name in reversed(blocks):
            if name in self.blocks:
                return self.blocks[name]
        return self.default

    def describe(self) -> str:
        parts = [f"weights {self.default}"]
        parts += [f"{k} {v}" for k, v in self.blocks.items()]
        if self.caches:
            parts += [f"cache {k} {v}" for k, v in self.caches.items()]
        parts.append(f"caches {self.cache or self.default}")
        return ", ".join(parts)

    # -- costs -------------------------------------------------------------------------------
    def cache_bytes(self, decoding: Decoding, **sizes: int) -> int | sympy.Expr:
        """Bytes of cache per token for the whole model, each cache in its own element type."""
        return self._cache(decoding, "model", sizes)

    def cache_bytes_per_layer(self, decoding: Decoding, **sizes: int) -> int | sympy.Expr:
        return self._cache(decoding, "layer", sizes)

    def cache_bytes_at(self, decoding: Decoding, positions: int, **sizes: int) -> int | sympy.Expr:
        """Bytes the caches hold after ``positions`` tokens (sliding windows bound them)."""
        return self._cache(decoding, "model", sizes, positions)

    def _cache(self, decoding: Decoding, per: str, sizes: Mapping[str, int], positions: int | None = None) -> int | sympy.Expr:
        from ncd.inference.decoding import _bind, _numel

        total = sympy.Integer(0)
        for site in decoding.sites:
            kind = self.cache_type(site.key)
            if site.is_state and positions is None:
                continue  # a recurrence's state does not grow per token
            one = element_bytes(kind) * _numel(site.per_sequence() if site.is_state else site.per_token()) + \
                (SCALE_BYTES if kind in _QMAX else 0)
            if positions is not None and not site.is_state:
                one = one * site.held(sympy.Integer(positions))
            if per == "layer" or site.var is None:
                total += one * (1 if per == "layer" else site.count)
            else:
                total += sympy.summation(one, (symbol(site.var), site.start, site.start + site.count - 1))
        return _bind(total, {**decoding.sizes, **sizes})

    def weight_bytes(self, step: Diagram, sizes: Mapping[str, int], elements: int) -> int | float:
        """Bytes of the weights a step reads (``elements`` of them), each in its block's element type."""
        counted = sympy.Integer(0)
        extra = sympy.Integer(0)
        for box, blocks in _learned(step, ()):
            n = sympy.Integer(0)
            for shape in box.prim.params().values():
                n += sympy.Mul(*shape)
            q = element_bytes(self.block_type(blocks))
            counted += n
            extra += n * (q - element_bytes(self.default))
        values = {symbol(k): v for k, v in sizes.items()}
        extra_n = evaluate(sympy.nsimplify(extra.xreplace(values)) * 2, what="weight bytes") / 2
        result = elements * element_bytes(self.default) + sympy.Rational(extra_n)
        return int(result) if result.is_integer else float(result)

    # -- the diagrams --------------------------------------------------------------------------
    def typed(self, decoding: Decoding) -> tuple[Block, Block]:
        """The prefill and the step of ``decoding`` with a :func:`~ncd.prims.precision.Precision` box (``fp8``,
        ``int4``, ...) on every cache wire whose element type is not the default, just before it is saved: where the
        policy changes the element type, drawn, costed and lowered (a real cast) like any box."""
        import dataclasses

        sites = {s.key: s for s in decoding.sites}

        def box(node: Box) -> Diagram:
            prim = node.prim
            if not isinstance(prim, SaveOp) or prim.key not in sites or len(prim.type) != 1:
                return node
            kind = self.cache_type(prim.key)
            if kind == self.default:
                return node
            return Seq.of(Box(PrecisionOp(prim.type.segments[0], kind, sites[prim.key].axis or None)), node)

        prefill = decoding.prefill
        step = decoding.step
        typed_prefill = Block(_map_boxes(prefill.body, box), prefill.name, prefill.meta)
        body = step.body
        if isinstance(body, Seq):  # the step's first part saves the given caches (already held): left as it is
            body = Seq.of(body.parts[0], *(_map_boxes(p, box) for p in body.parts[1:]))
        typed_step = dataclasses.replace(step, body=body)
        return typed_prefill, typed_step

    # -- lowering ------------------------------------------------------------------------------
    def apply_weights(self, module: torch.nn.Module, compute: torch.dtype) -> None:
        """Round every parameter through its element type: a real cast to it (or int quantisation) and back to
        ``compute``, in which the lowered module runs; blocks match the lowered classes named after them."""
        import torch

        with torch.no_grad():
            for name, sub in module.named_modules():
                dtype = self._module_type(module, name)
                for p in sub.parameters(recurse=False):
                    p.copy_(self.round(p.detach(), dtype, rows=0).to(compute))

    def _module_type(self, root: torch.nn.Module, path: str) -> str:
        chain = []
        node = root
        for part in path.split(".") if path else []:
            node = getattr(node, part) if not part.isdigit() else node[int(part)]  # type: ignore[index]
            chain.append(type(node).__name__.rstrip("0123456789"))
        for cls in reversed(chain):
            for block, dtype in self.blocks.items():
                if cls == _class_name(block):
                    return dtype
        return self.default

    def round(self, x: torch.Tensor, dtype: str, rows: int) -> torch.Tensor:
        """``x`` stored in ``dtype`` and read back (``rows``: the axis that gets one int scale per index)."""
        stored = self.store(x, dtype, rows)
        return self.load(stored, x.dtype)

    @staticmethod
    def store(x: torch.Tensor, dtype: str, rows: int) -> Any:
        """``x`` held in ``dtype``: a tensor of that torch type, or ``(int8 values, scales)`` for int8/int4."""
        import torch

        dtype = canonical(dtype)
        if dtype in _QMAX:
            qmax = _QMAX[dtype]
            row = rows % max(x.dim(), 1)
            dims = [d for d in range(row + 1, x.dim())]
            absmax = x.detach().abs().amax(dim=dims, keepdim=True) if dims else x.detach().abs()
            scale = (absmax / qmax).to(torch.float16).clamp_min(torch.finfo(torch.float16).tiny)
            values = torch.clamp(torch.round(x / scale.to(x.dtype)), -qmax - 1, qmax).to(torch.int8)
            if dtype == "int4":
                return pack_int4(values), scale, int(x.shape[-1]) if x.dim() else 1
            return values, scale
        return x.to(getattr(torch, torch_dtype(dtype)))  # type: ignore[arg-type]

    @staticmethod
    def load(stored: Any, compute: torch.dtype) -> torch.Tensor:
        if isinstance(stored, tuple):
            values, scale = stored[:2]
            if len(stored) == 3:
                values = unpack_int4(values, stored[2])
            return values.to(compute) * scale.to(compute)  # type: ignore[no-any-return]
        return stored.to(compute)  # type: ignore[no-any-return]


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """int8 values in ``[-8, 7]`` packed two per byte along the last axis (``uint8``; an odd last axis padded).

    >>> import torch
    >>> v = torch.tensor([[-8, 7, 0], [1, -1, 3]], dtype=torch.int8)
    >>> p = pack_int4(v)
    >>> p.dtype, tuple(p.shape), torch.equal(unpack_int4(p, 3), v)
    (torch.uint8, (2, 2), True)
    """
    import torch

    u = (values.to(torch.int16) + 8).to(torch.uint8)
    if values.dim() == 0:
        u = u.reshape(1)
    if u.shape[-1] % 2:
        u = torch.nn.functional.pad(u, (0, 1))
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor, last: int) -> torch.Tensor:
    """The int8 values :func:`pack_int4` packed (``last``: the length of the last axis before packing)."""
    import torch

    low, high = (packed & 0x0F).to(torch.int8) - 8, (packed >> 4).to(torch.int8) - 8
    return torch.stack((low, high), dim=-1).flatten(-2)[..., :last]


def _class_name(title: str) -> str:
    import re

    return "".join(part[:1].upper() + part[1:] for part in re.split(r"\W+|_", title) if part) or "Block"


def _map_boxes(node: Diagram, f: Callable[[Box], Diagram]) -> Diagram:
    """``node`` with every box ``b`` replaced by ``f(b)`` (a diagram of the same type)."""
    return _MapBoxes(f).fold(node)


class _MapBoxes(Rebuild):
    def __init__(self, f: Callable[[Box], Diagram]) -> None:
        self.f = f

    def box(self, box: Box) -> Diagram:
        return self.f(box)


def _learned(node: Diagram, blocks: tuple[str, ...]) -> list[tuple[Box, tuple[str, ...]]]:
    """Every box with weights, repetitions unrolled, with the names of the blocks around it (outermost first)."""
    learned = _Learned(blocks)
    learned.fold(node)
    return learned.found


class _Learned(Fold[None]):
    def __init__(self, blocks: tuple[str, ...]) -> None:
        self.blocks = blocks
        self.found: list[tuple[Box, tuple[str, ...]]] = []

    def identity(self, node: Identity) -> None:
        return None

    def box(self, box: Box) -> None:
        if box.prim.params():
            self.found.append((box, self.blocks))

    def then(self, first: None, second: None) -> None:
        return None

    beside = then

    def weave(self, node: Weave) -> None:
        self.fold(node.inner)

    def block(self, node: Block) -> None:
        outer = self.blocks
        self.blocks = outer + (node.name,)
        try:
            self.fold(node.body)
        finally:
            self.blocks = outer
