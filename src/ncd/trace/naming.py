"""Axis names for traced tensors: user-given names flow, unnamed sizes get stable generated names.

A generated name is shared by every axis of the same role and size (all 3072-wide hidden
axes get one name), a name never means two sizes, and two roles never share a name even at
one size (key/value heads are not the batch).  The role's name (``h`` for heads, ``k`` for
head features, ``f`` for a hidden width) is used when it is still free, else its second
name (``g`` for heads of another count: grouped-query attention's key/value heads).  Within
one segment names are unique: a second axis of the same name is primed (``t``, ``tʹ``).

>>> n = Namer()
>>> n.claim("b", 2), n.fresh(4, "h"), n.fresh(2, "h"), n.fresh(8, "k"), n.fresh(8, "k"), n.fresh(2)
('b', 'h', 'g', 'k', 'k', 'n')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import Axis, Segment, parse_segment

__all__ = ["Namer", "PRIME", "unique", "config_roles", "noted", "frozen"]

PRIME = "\u02b9"
#: generic names; a role's letter (groups ``r``, window ``w``, experts ``e``, key/value heads ``g``) comes last
POOL = ("n", "p", "q", "u", "z", "j", "l", "o", "a", "d", "r", "w", "e", "g")
#: Names kept for their usual meaning: width, hidden width, heads, head features, vocabulary, channels.
RESERVED = ("m", "f", "h", "k", "v", "c")
ITEMS = ("t", "y", "x", "i", "j", "l")  # ``s`` and ``w`` only by role: which window, where in it
#: Names a role takes when its own is taken by another size: heads of another count (key/value heads) are ``g``.
FALLBACK: dict[str, tuple[str, ...]] = {"h": ("g",), "k": ("d",), "f": ("e",)}
#: Roles whose axes never share a name with another role's axes of the same size (the others — widths, channels,
#: unnamed axes — share one name per size): the batch, heads, head features, the rows of a position table.
DISTINCT = frozenset({"b", "h", "g", "r", "k", "s", "w", "n"})
#: Letters that, when the config gives them sizes, name those sizes only: heads, key/value heads, head features.
OWN_SIZES = ("h", "g", "k")


#: Config fields (``transformers``' names) whose sizes have a role's letter: the width, the feed-forward width,
#: heads, key/value heads, experts, head features (else the width over the heads), the top-k slots of a router, the
#: positions a learned position table holds (``n``, as the zoo's GPT-2 names its context length).
CONFIG_ROLES: dict[str, str] = {
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "embed_dim", "dim", "hidden_dim"), "m"),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "d_ff", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim",
                     "moe_intermediate_size", "ffn_hidden_size"), "f"),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_heads", "n_heads", "encoder_attention_heads",
                     "decoder_attention_heads"), "h"),
    **dict.fromkeys(("num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num"), "g"),
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"), "e"),
    **dict.fromkeys(("head_dim", "d_kv", "attention_head_size", "kv_channels", "dim_head", "d_head"), "k"),
    # the slots of a top-k routing: the experts each token is sent to
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "num_selected_experts", "top_k", "moe_k"), "s"),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "max_source_positions", "max_target_positions", "n_ctx"),
                    "n"),
}


#: Attributes of a model's modules whose sizes have a role's letter, read when the model has no config: PyTorch's
#: ``nn.MultiheadAttention`` (``num_heads``, ``head_dim``, ``embed_dim``) and hand-written attention alike.
MODULE_ROLES: dict[str, str] = {
    **dict.fromkeys(("num_heads", "n_heads", "n_head", "num_attention_heads"), "h"),
    **dict.fromkeys(("num_key_value_heads", "num_kv_heads", "n_kv_heads"), "g"),
    **dict.fromkeys(("head_dim", "head_size", "d_head"), "k"),
    "embed_dim": "m",
}
#: the modules :func:`module_roles` reads at most
MODULES_READ = 4096


def module_roles(model: object) -> dict[int, set[str]]:
    """Size -> the role letters the attributes of the model's modules give it (:data:`MODULE_ROLES`).

    >>> import torch
    >>> {n: sorted(r) for n, r in module_roles(torch.nn.MultiheadAttention(16, 2)).items()}
    {2: ['h'], 8: ['k'], 16: ['m']}
    """
    out: dict[int, set[str]] = {}
    modules = getattr(model, "modules", None)
    if not callable(modules):
        return out
    for count, module in enumerate(modules()):
        if count >= MODULES_READ:
            break
        attrs = vars(module)
        for key, letter in MODULE_ROLES.items():
            value = attrs.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 1:
                out.setdefault(value, set()).add(letter)
    return out


def config_roles(model: object) -> dict[int, set[str]]:
    """Size -> the role letters the model's config (and its sub-configs: text, vision) gives it; for a model with no
    config, its modules' attributes (:func:`module_roles`).

    >>> from types import SimpleNamespace as NS
    >>> config_roles(NS(config=NS(hidden_size=32, intermediate_size=64, vision_config=NS(hidden_size=16))))
    {32: {'m'}, 64: {'f'}, 16: {'m'}}
    >>> sorted(config_roles(NS(config=NS(hidden_size=32, num_attention_heads=4)))[8])
    ['k']
    """
    if getattr(model, "config", None) is None:
        return module_roles(model)
    out: dict[int, set[str]] = {}
    todo: list[object] = [getattr(model, "config", None)]
    seen: set[int] = set()
    while todo:
        config = todo.pop(0)
        if config is None or id(config) in seen or len(seen) > 8:
            continue
        seen.add(id(config))
        for key, value in vars(config).items():
            values = value if isinstance(value, (list, tuple)) else [value]  # per stage (Swin's heads)
            if key in CONFIG_ROLES and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                for v in values:
                    if v > 1:
                        out.setdefault(v, set()).add(CONFIG_ROLES[key])
            elif key.endswith("_config") and hasattr(value, "__dict__"):
                todo.append(value)
        width = next((v for k, v in vars(config).items() if CONFIG_ROLES.get(k) == "m" and isinstance(v, int)), None)
        heads = next((v for k, v in vars(config).items() if CONFIG_ROLES.get(k) == "h" and isinstance(v, int)), None)
        said = any(CONFIG_ROLES.get(k) == "k" and isinstance(v, int) for k, v in vars(config).items())
        if width and heads and not said and not isinstance(width, bool) and not isinstance(heads, bool) \
                and width % heads == 0:
            out.setdefault(width // heads, set()).add("k")  # head features when the config does not say
    return out


def unique(names: list[str]) -> list[str]:
    """Prime repeated names so that every axis of a segment has its own."""
    seen: set[str] = set()
    out = []
    for n in names:
        while n in seen:
            n += PRIME
        seen.add(n)
        out.append(n)
    return out


def kept_units(names: Sequence[str], reduced: Sequence[int] | set[int]) -> list[str]:
    """The wires of a reduction with ``keepdim``: the kept ones keep their names, and each reduced one is a unit wire
    named ``1`` primed past them (a kept unit wire — a channel of size 1 — keeps its ``1``, so that what reads it
    sees the same wire as a reader of the tensor not reduced).

    >>> kept_units(["b", "t", "1"], [1]), kept_units(["b", "t", "m"], [1, 2])
    (['b', '1ʹ', '1'], ['b', '1', '1ʹ'])
    """
    kept = {n for k, n in enumerate(names) if k not in reduced}
    out = []
    for k, n in enumerate(names):
        if k in reduced:
            n = "1"
            while n in kept:
                n += PRIME
            kept.add(n)
        out.append(n)
    return out


def frozen(value: Any) -> Any:
    """``value`` as a snapshot compared later (lists and tuples as tuples, sets as frozen sets, dicts as their items)."""
    if isinstance(value, (list, tuple)):
        return tuple(frozen(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    if isinstance(value, dict):
        return tuple((k, frozen(v)) for k, v in value.items())
    return value


def noted(namer: Namer, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, a read of state that grows as the walk goes on (the namer's names, the converter's notes): while a
    first layer is walked it is logged in ``namer.reads``, so that :mod:`ncd.trace.reuse` copies that layer's steps to
    a later layer only where the read still answers the same."""
    value = fn(*args)
    if namer.reads is not None:
        namer.reads.append((fn, args, frozen(value)))
    return value


class Namer:
    """Hands out axis names: one size per name, one generated name per (role, size)."""

    def __init__(self, config: dict[int, set[str]] | None = None) -> None:
        self.config = config or {}  # size -> role letters read from the model's config (:func:`config_roles`)
        #: the letters the config gives a role: no other role (a generic name, a role's second name) takes them
        self.declared: frozenset[str] = frozenset().union(*self.config.values()) if self.config else frozenset()
        #: the sizes the config gives heads and head features: those letters name no other size (:data:`OWN_SIZES`)
        self.own = {letter: {n for n, letters in self.config.items() if letter in letters} for letter in OWN_SIZES}
        self.size_of: dict[str, int] = {"1": 1}
        self.generated: dict[tuple[object, ...], str] = {}
        self.roles: dict[str, str] = {}
        #: the axes and segments handed out, one object per value (kept: equal wires are then the very same object,
        #: so the junction checks, weaves and symbolize find them by identity; the ids key ``_segments``)
        self._axes: dict[tuple[str, int, str], Axis] = {}
        self._segments: dict[tuple[Any, ...], Segment] = {}
        #: while a first layer is walked (:mod:`ncd.trace.reuse`), the reads of state its walk does not own, each as
        #: (function, arguments, the answer frozen): a later layer is a copy only where each reads the same
        self.reads: list[tuple[Any, tuple[Any, ...], Any]] | None = None

    def claim(self, name: str, size: int, role: str = "feature") -> str:
        """Use ``name`` for an axis of ``size`` if it is free or already means that size."""
        base = name
        k = 2
        while self.size_of.get(name, size) != size:
            name = f"{base}{k}"
            k += 1
        self.size_of[name] = size
        self.roles.setdefault(name, role)
        return name

    def fresh(self, size: int, hint: str | None = None, role: str = "feature", of: tuple[str, ...] = ()) -> str:
        """The name of axes of ``size`` in the role ``hint`` names: one name per role and size.  The batch, heads and
        head features (:data:`DISTINCT`) are roles of their own — key/value heads are not the batch even when both
        are 2, nor the query heads (they get ``g``); other axes of one size share a name.  ``of`` names the wires a
        merged wire holds (``b t`` flattened): a merge has a name of its own, apart from any other wire of its size.
        A letter the config gives a role (:attr:`declared`: experts ``e``, positions ``n``) is that role's only: no
        generic name and no other role's second name takes it (key/value heads ``g`` stay the heads' second name).

        >>> n = Namer({32: {"m", "n"}, 4: {"e"}})
        >>> n.claim("m", 32), n.fresh(8), n.fresh(32, "n"), n.fresh(64, "f"), n.fresh(128, "f")
        ('m', 'p', 'n', 'f', 'q')
        >>> n = Namer({4: {"h"}, 2: {"g"}, 8: {"k"}})  # key/value heads and a fused q k v per head met first
        >>> n.fresh(2, "h"), n.fresh(4, "h"), n.fresh(24, "k"), n.fresh(8, "k")
        ('g', 'h', 'd', 'k')
        """
        if size == 1:
            return "1"
        key: tuple[object, ...] = (role, size, hint if hint in DISTINCT else None) + ((of,) if of else ())
        if key in self.generated:
            return self.generated[key]
        pool = (ITEMS if role == "item" else POOL)
        hints = ((hint,) + FALLBACK.get(hint, ())) if hint else ()
        for name in hints + pool + (RESERVED if role != "item" else ()):
            if name in self.declared and name != hint and not (hint == "h" and name == "g"):
                continue
            if name in OWN_SIZES and self.own[name] and size not in self.own[name]:
                continue  # not the config's heads (key/value heads are g) nor its head features (a fused q k v: d)
            if name not in self.size_of:
                self.size_of[name] = size
                self.generated[key] = name
                self.roles[name] = role
                return name
        return self.claim(pool[0], size, role)

    def axis(self, name: str, size: int) -> Axis:
        base = name.rstrip(PRIME)
        known = self.roles.get(base)
        if known is None and self.reads is not None:  # a name no role is given yet: a later one may give it one
            self.reads.append((self.roles.get, (base,), None))
        role = "item" if known == "item" else "feature"
        if type(size) is not int:
            return Axis(name, sympy.Integer(size), role)  # type: ignore[arg-type]
        key = (name, size, role)
        found = self._axes.get(key)
        if found is None:
            found = self._axes[key] = Axis(name, sympy.Integer(size), role)  # type: ignore[arg-type]
        return found

    def segment(self, names: list[str], shape: tuple[int, ...], dtype: str = "float", value_range: int | None = None) -> Segment:
        names = unique(names)
        axes = tuple([self.axis(n, s) for n, s in zip(names, shape)])
        if not all(type(s) is int for s in shape) or not (value_range is None or type(value_range) is int):
            return Segment(axes, dtype, None if value_range is None else sympy.Integer(value_range))  # type: ignore[arg-type]
        key = (tuple([id(a) for a in axes]), dtype, value_range)  # the axes are kept in ``_axes``: their ids are theirs
        found = self._segments.get(key)
        if found is None:
            found = self._segments[key] = Segment(axes, dtype,  # type: ignore[arg-type]
                                                  None if value_range is None else sympy.Integer(value_range))
        return found

    def user(self, text: str, shape: tuple[int, ...], what: str) -> list[str]:
        """Names given by the user for an input (``"b t"``; ``~t`` marks an item axis)."""
        if not isinstance(text, str):
            raise ParseError(f"axes for input {what!r} must be text naming its axes, such as 'b t m', not"
                             f" {type(text).__name__} {text!r:.60}")
        seg = parse_segment(text)
        if len(seg.axes) != len(shape):
            raise ParseError(f"axes '{text}' for input {what!r} name {len(seg.axes)} axes, but it has shape {tuple(shape)}")
        names = []
        for a, s in zip(seg.axes, shape):
            role = "item" if a.role == "item" or a.name in ITEMS else "feature"
            names.append(self.claim(a.name, int(s), role))
        return names

    def default(self, shape: tuple[int, ...], integer: bool, layout: str = "") -> list[str]:
        """Names for an unnamed input: ``b t`` for token ids, ``b c y x`` for images, ``b c z y x`` for volumes,
        ``b t m`` for sequences.  Ids of higher rank are ``b … t``, several sequences per sample (a multiple-choice
        head's ``(b, choices, t)``), or, beside ids that named ``t``, have ``t`` where that size is (``b t 4`` boxes).

        ``layout`` is how the module reading a sequence lays it out: ``seq_first`` ``t b m`` (PyTorch's recurrent
        layers and attention built with ``batch_first=False``), ``state`` a recurrent layer's initial state ``n b m``.

        >>> n = Namer()
        >>> n.default((2, 4, 8), True), n.default((2, 8, 4), True), n.default((2, 3, 5, 6, 6), False)
        (['b', 'n', 't'], ['b', 't', 'n'], ['b', 'c', 'z', 'y', 'x'])
        >>> n = Namer()
        >>> n.default((6, 2, 16), False, "seq_first"), n.default((4, 2, 12), False, "state")
        (['t', 'b', 'm'], ['n', 'b', 'p'])
        """
        n = len(shape)
        hints: Sequence[tuple[str | None, str]]
        if layout == "seq_first":
            hints = [("t", "item"), ("b", "feature"), ("m", "feature")]
        elif layout == "state":
            hints = [(None, "feature"), ("b", "feature"), (None, "feature")]
        elif integer and n > 2 and self.size_of.get("t") in shape[1:]:  # (b, t, 4) boxes beside (b, t) ids: t where it is
            at = shape.index(self.size_of["t"], 1)
            hints = [("b", "feature")] + [("t", "item") if k == at else (None, "feature") for k in range(1, n)]
        elif integer and n > 2:  # several sequences per sample ((b, choices, t) ids): the tokens are the last axis
            hints = [("b", "feature")] + [(None, "feature")] * (n - 2) + [("t", "item")]
        elif integer:
            hints = [("b", "feature"), ("t", "item")][-n:]
        elif n == 5:  # a volume or a video: b c z y x
            hints = [("b", "feature"), ("c", "feature"), ("z", "item"), ("y", "item"), ("x", "item")]
        elif n == 4:
            hints = [("b", "feature"), ("c", "feature"), ("y", "item"), ("x", "item")]
        elif n == 3:
            hints = [("b", "feature"), ("t", "item"), ("m", "feature")]
        elif n == 2:
            hints = [("b", "feature"), ("m", "feature")]
        elif n == 1:
            hints = [("m", "feature")]
        else:
            hints = [("b", "feature")] + [(None, "feature")] * (n - 1)
        names = []
        for (hint, role), s in zip(hints, shape):
            if s == 1:
                names.append("1")
            elif hint is None:
                names.append(self.fresh(int(s), None, role))
            elif self.size_of.get(hint, int(s)) == int(s):
                names.append(self.claim(hint, int(s), role))
                self.generated.setdefault((role, int(s), hint if hint in DISTINCT else None), names[-1])
            else:
                names.append(self.fresh(int(s), None, role))
        return names
