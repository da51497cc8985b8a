"""Running a decoding: the lowered prefill, then lowered steps, all with one set of weights.

>>> import ncd, torch
>>> g = ncd.zoo.gpt2(v=50, m=16, k=4, h=4, N=2, n=32, t=5)
>>> run = ncd.decode(g).lower()
>>> tokens = torch.tensor([3, 1, 4, 1, 5])
>>> logits, caches = run.prefill(tokens)
>>> [tuple(c.shape) for c in caches][:2]
[(5, 4, 4), (5, 4, 4)]
>>> logits, caches = run.step(torch.tensor([9]), caches)
>>> tuple(logits.shape), tuple(caches[0].shape)
((1, 50), (6, 4, 4))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ncd.errors import NCDError
from ncd.inference.derive import DecodeError

if TYPE_CHECKING:
    import torch

    from ncd.inference.decoding import Decoding
    from ncd.inference.policy import Policy

__all__ = ["Decoder"]


class Decoder:
    """The lowered prefill and step of a :class:`~ncd.inference.decoding.Decoding`, sharing one set of weights.

    ``weights`` is a state dict of the model's own lowered module (``diagram.to_torch()``); by default
    a freshly initialised one.  A step is lowered once for every cache length when the length only sizes
    the caches (:meth:`one_step`), else once per length (rotary offsets, learned position rows).
    """

    def __init__(self, decoding: Decoding, sizes: dict[str, int], weights: dict[str, Any] | None = None,
                 dtype: torch.dtype | None = None, policy: Policy | None = None) -> None:
        import torch

        self.decoding = decoding
        self.policy = policy
        self.sizes = {k: v for k, v in sizes.items() if k not in (decoding.token, "c")}
        self.dtype = dtype or torch.float32
        if weights is None:  # the weights do not depend on the token length: lowered at the one given, else at 1
            free = {str(x) for x in decoding.diagram.free_symbols}  # (a diagram with no default length raised
            length = {decoding.token: sizes.get(decoding.token, 1)} if decoding.token in free else {}  # 'pass t')
            weights = decoding.diagram.to_torch(**self.sizes, **length).state_dict()  # type: ignore[arg-type]
        self.weights = weights
        #: the diagrams lowered: with a policy, a box on every cache wire it holds in another element type
        self.diagrams = policy.typed(decoding) if policy is not None else (decoding.prefill, decoding.step)
        self._prefill: dict[tuple[object, ...], torch.nn.Module] = {}
        self._steps: dict[tuple[object, ...], torch.nn.Module] = {}
        self._one_step: bool | None = None
        #: the token length up to which the traced diagram is checked against its model (None: no model at hand)
        self._checked = decoding.checked
        #: the (length, batch) at which the model's comparisons of sizes were asked (ncd.trace.size_guards)
        self._branches: set[tuple[object, ...]] = set()

    def _module(self, diagram: Any, sizes: dict[str, int], check_inputs: bool = True) -> torch.nn.Module:
        module = diagram.to_torch(check_inputs=check_inputs, **{**self.sizes, **sizes})
        module.load_state_dict(_named_as(module.state_dict(), self.weights, diagram))
        module = module.to(self.dtype).eval()
        if self.policy is not None:
            self.policy.apply_weights(module, self.dtype)
        return module  # type: ignore[no-any-return]

    def prefill_module(self, length: int, **batch: int) -> torch.nn.Module:
        """The lowered prefill of ``length`` tokens (batch sizes such as ``b=2`` where the inputs have them)."""
        key = (length, *sorted(batch.items()))
        if key not in self._prefill:
            self._prefill[key] = self._module(self.diagrams[0], {self.decoding.token: length, **batch})
        return self._prefill[key]

    def step_module(self, past: int, **batch: int) -> torch.nn.Module:
        """The lowered step after ``past`` cached positions: one module for every cache length when the cache length
        only sizes the caches (see :meth:`one_step`), else one per length."""
        grows = "c" in {str(s) for s in self.decoding.step.free_symbols}  # only recurrent states: one step for all
        if grows and self.one_step(**batch):
            key: tuple[object, ...] = ("any", *sorted(batch.items()))
            if key not in self._steps:  # lowered at one length; its input check would pin that length
                self._steps[key] = self._module(self.diagrams[1], {"c": max(past, 1), **batch}, check_inputs=False)
            return self._steps[key]
        key = (past if grows else 0, *sorted(batch.items()))
        if key not in self._steps:
            self._steps[key] = self._module(self.diagrams[1], {**({"c": past} if grows else {}), **batch})
        return self._steps[key]

    def one_step(self, **batch: int) -> bool:
        """Whether the lowered step is one program for every cache length ``c``: no sliding window (its cache holds
        ``min(c, window-1)``) and the generated source at two lengths differs only in its shape comments (``c`` sizes
        the caches; rotary offsets, learned position rows and sinusoidal tables at ``c`` make it differ)."""
        if self._one_step is None:
            if any(s.window is not None for s in self.decoding.sites):
                self._one_step = False
            else:
                try:
                    a, b = (_code(self.diagrams[1].to_source(**{**self.sizes, "c": c, **batch})) for c in (100_003, 100_019))
                    self._one_step = a == b
                except NCDError:  # a length the step cannot take (a learned position table ends before it)
                    self._one_step = False
        return self._one_step

    def _batch(self, tokens: torch.Tensor) -> dict[str, int]:
        """Sizes of the token input's other axes (a traced model's batch ``b``), read off the tensor."""
        seg = next(s for s in self.decoding.prefill.dom if self.decoding.token in s.names)
        found = {}
        for k, axis in enumerate(seg.axes):
            if axis.name != self.decoding.token and str(axis.size) == axis.name and tokens.dim() >= len(seg) - k:
                found[axis.name] = int(tokens.shape[k - len(seg)])
        return found

    def prefill(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The outputs at every prompt position and every cache (in ``decoding.slots`` order)."""
        self._reach(int(tokens.shape[-1]), self._batch(tokens))
        out = self.prefill_module(int(tokens.shape[-1]), **self._batch(tokens))(tokens)
        return out[0], self._store(out[1:])

    def step(self, token: torch.Tensor, caches: list[torch.Tensor],
             past: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The outputs at one new position and the caches grown by it.

        ``past``: how many tokens came before (needed under a sliding window, where the caches keep fewer).
        """
        if len(caches) != len(self.decoding.slots):
            raise DecodeError(f"step: {len(caches)} caches given, the model has {len(self.decoding.slots)}"
                              f" ({', '.join(_slot(s) for s in self.decoding.slots)})")
        caches = self._load(caches)
        if past is None:
            if any(s.window is not None for s in self.decoding.sites):
                raise DecodeError("step: under a sliding window the caches keep only the last positions;"
                                  " say how many tokens came before (past=...)")
            keyed = [k for k, s in enumerate(self._keys()) if not s.is_state]
            past = int(caches[keyed[0]].shape[_row(self._keys()[keyed[0]])]) if keyed else 0  # states: no length
        self._reach(past + 1, self._batch(token))
        out = self.step_module(past, **self._batch(token))(token, *caches)
        return out[0], self._store(out[1:])

    def _reach(self, length: int, batch: dict[str, int]) -> None:
        """Past the length the traced diagram was checked at, check it against its model again at twice that (or at
        ``length``): a mask read as causal by its values at the traced length may hide a sliding window longer than
        any length checked so far (DecodeError where the model differs; a check that cannot compare warns once and
        stops). Doubling keeps the checks' cost within a few forwards of the longest length run.  Where a comparison
        of sizes the model made (``kv_length >= sliding_window``: :mod:`ncd.trace.size_guards`) comes out otherwise at
        ``length`` than traced, the model takes another branch: checked against the model at that very length, or
        refused without it."""
        from ncd.inference.decoding import check_at

        name = getattr(self.decoding.diagram, "name", "Model")
        key = (length, *sorted(batch.items()))
        if key not in self._branches:
            self._branches.add(key)
            self._branch(length, batch, name)
        if self._checked is None or length <= self._checked:
            return
        target = max(length, 2 * self._checked)
        if target > length and self._flips(target, batch):  # a branch taken further on: checked when reached
            target = length
        self._checked = target if check_at(self.decoding.diagram, self.decoding.token_size, target, name) else None

    def _flips(self, length: int, batch: dict[str, int]) -> list[str]:
        """The model's comparisons of sizes that come out otherwise at ``length`` tokens and ``batch`` than traced."""
        from ncd.ir.diagram import Block
        from ncd.trace.size_guards import GUARDS, flipped

        diagram = self.decoding.diagram
        if not isinstance(diagram, Block) or not diagram.get(GUARDS):
            return []
        return flipped(diagram.get(GUARDS), dict(diagram.get("defaults", ())),
                       {**self.sizes, **batch, self.decoding.token_size: length})

    def _branch(self, length: int, batch: dict[str, int], name: str) -> None:
        """:meth:`_reach`'s check of the model's comparisons of sizes at ``length`` tokens and ``batch``."""
        from ncd.inference.decoding import check_at

        diagram = self.decoding.diagram
        flips = self._flips(length, batch)
        if not flips:
            return
        defaults = dict(diagram.get("defaults", ()))  # type: ignore[attr-defined]
        if getattr(diagram, "_model", lambda: None)() is not None:  # the model at hand: run at this length
            sizes = {k: v for k, v in batch.items() if k in defaults}
            check_at(diagram, self.decoding.token_size, length, name, **sizes)
            return
        raise DecodeError(f"decode: {name} at {self.decoding.token_size}={length} (traced at"
                          f" {defaults.get(self.decoding.token_size)}): {'; '.join(flips[:4])}: the model takes another"
                          " branch there than the traced one, and there is no model at hand to check it (a diagram"
                          " read back or pickled); trace the model at a length past it")

    # -- caches held in the policy's element types -------------------------------------------
    def _keys(self) -> list[Any]:
        by_key = {s.key: s for s in self.decoding.sites}
        return [by_key[key] for key, _ in self.decoding.slots]

    def _store(self, caches: Any) -> list[Any]:
        if self.policy is None:
            return list(caches)
        return [self.policy.store(c, self.policy.cache_type(s.key), _row(s)) for c, s in zip(caches, self._keys())]

    def _load(self, caches: list[Any]) -> list[torch.Tensor]:
        if self.policy is None:
            return list(caches)
        return [self.policy.load(c, self.dtype) for c in caches]

    def held_bytes(self, caches: list[Any]) -> int:
        """Bytes the caches occupy as held (int8/int4 values and their scales; int4 two values per byte)."""
        total = 0
        for c in caches:
            for t in c if isinstance(c, tuple) else (c,):
                if hasattr(t, "element_size"):  # an int4 cache also carries its unpacked length
                    total += t.numel() * t.element_size()
        return total

    def generate(self, prompt: torch.Tensor, new: int) -> torch.Tensor:
        """Greedy decoding: ``new`` tokens after ``prompt``, each the argmax of the last output's last axis."""
        import torch

        logits, caches = self.prefill(prompt)
        tokens = [prompt]
        for k in range(new):
            nxt = logits[..., -1:, :].argmax(-1)
            tokens.append(nxt)
            logits, caches = self.step(nxt, caches, past=int(prompt.shape[-1]) + k)
        return torch.cat(tokens, dim=-1)


def _code(source: str) -> str:
    """Generated source without its comments and docstrings (where the sizes of the wires are written)."""
    lines = []
    for line in source.splitlines():
        code = line.split("#", 1)[0].rstrip()
        if code and not code.lstrip().startswith('"""'):
            lines.append(code)
    return "\n".join(lines)


def _row(site: Any) -> int:
    """Where the key axis sits in a cache tensor, counted from the end (leading batch axes allowed)."""
    return int(site.segment.index(site.axis) - len(site.segment))


def _slot(slot: tuple[str, int | None]) -> str:
    key, index = slot
    return key if index is None else f"{key}_{index}"


def _named_as(own: dict[str, Any], weights: dict[str, Any], diagram: Any) -> dict[str, Any]:
    """``weights`` under the names ``own`` gives them.  A lowered prefill or step names its tensors as the model's
    module does, in the order its forward first reads them, but one of its own values may take a name first (the
    step's explicit attention has a ``scale``, so a model's buffer ``scale`` becomes ``scale_1``): names equal but
    for such ``_k`` suffixes are paired in that order, as the suffixes were given; names the two sides share map to
    themselves, and tensors of one shape renamed apart are refused rather than paired by a guess.

    >>> import torch
    >>> w = {"scale": torch.ones(2), "l_1.w": torch.zeros(3), "l_2.w": torch.ones(3)}
    >>> own = {"l_2.w": torch.empty(3), "scale_1": torch.empty(2), "l_1.w": torch.empty(3)}
    >>> {k: v.sum().item() for k, v in _named_as(own, w, None).items()}
    {'l_2.w': 3.0, 'l_1.w': 0.0, 'scale_1': 2.0}
    """
    import re

    if own.keys() == weights.keys():
        return weights

    def base(key: str) -> str:
        return ".".join(re.sub(r"_\d+$", "", part) for part in key.split("."))

    mine: dict[str, list[str]] = {}
    for key in own:
        mine.setdefault(base(key), []).append(key)
    theirs: dict[str, list[str]] = {}
    for key in weights:
        theirs.setdefault(base(key), []).append(key)
    named: dict[str, Any] = {}
    who = getattr(diagram, "name", "the decoding")
    for b, keys in mine.items():
        given = theirs.get(b, [])
        if sorted(given) == sorted(keys):  # the same names on both sides: each its own, whatever their order
            given = keys
        elif len(keys) > 1 and len({tuple(own[k].shape) for k in keys}) < len(keys):
            raise DecodeError(f"{who}: the lowered module holds {', '.join(keys)} and the weights {', '.join(given)}:"
                              " tensors of one shape renamed apart, so which is which cannot be told from their names")
        if len(given) != len(keys) or any(tuple(own[k].shape) != tuple(weights[w].shape) for k, w in zip(keys, given)):
            raise DecodeError(f"{who}: the lowered module holds {', '.join(keys)},"
                              f" the weights {', '.join(given) or 'nothing'} of that name (or other shapes)")
        named.update(zip(keys, (weights[w] for w in given)))
    return named
