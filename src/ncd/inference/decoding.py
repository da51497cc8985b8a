"""``ncd.decode(diagram)``: the prefill and the one-token step of a causal model, and its cache bytes.

>>> import ncd
>>> d = ncd.decode(ncd.zoo.gpt2(v=50, m=16, k=4, h=4, N=2, n=32, t=5))
>>> str(d.prefill.dom), str(d.prefill.cod).count("k h")
('t̅ [v]', 4)
>>> str(d.step.dom).split(", ")[:2]
['t̅:1 [v]', 'x̅:c k h']
>>> [s.key for s in d.sites]
['K', 'V']
>>> d.cache_bytes(dtype="float32")
256
>>> print(d.cache_formula())
2*N*h*k*q
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sympy

from ncd.errors import NCDError
from ncd.inference.causal import require_causal, token_axis, token_names
from ncd.inference.derive import CacheSite, DecodeError, derive
from ncd.inference.dtypes import element_bytes
from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq, check_option_names
from ncd.ir.size import Size, evaluate, symbol
from ncd.prims.structure import DeleteOp, LoadOp, SaveOp

__all__ = ["decode", "Decoding"]

#: the symbol for the number of cached positions in the step
PAST = "c"


@dataclass
class Decoding:
    """A causal diagram derived for token-by-token generation.

    ``prefill``: ``tokens -> outputs, caches`` (every position of a prompt, every cache saved).
    ``step``: ``one token, past caches -> outputs, caches`` (``c`` past positions; the caches grow by one).
    Caches are listed layer by layer, each layer's sites in the order they are met (``K``, ``V``).
    """

    diagram: Diagram
    prefill: Block
    step: Block
    sites: list[CacheSite]
    token: str
    sizes: dict[str, int]
    #: every cache slot ``(key, layer)``, in the order the prefill returns and the step takes them
    slots: list[tuple[str, int | None]]
    #: the token length up to which the traced diagram was checked against its model (``None``: no model at hand);
    #: a :class:`~ncd.inference.run.Decoder` running past it checks again at twice the length
    checked: int | None = None
    #: the size symbol of the token axis (``t``)
    token_size: str = ""

    def cache_formula(self, per: str = "model") -> sympy.Expr:
        """Bytes of cache per token as a formula: ``q`` bytes per element, summed over every site (``per="model"``)
        or over the sites of one layer (``per="layer"``, the repetition variable left free)."""
        q = symbol("q")
        total = sympy.Integer(0)
        for site in self.sites:
            if site.is_state:
                continue  # a recurrence's state does not grow with the tokens (state_formula)
            per_token = q * _numel(site.per_token())
            if per == "layer":
                total += per_token
            else:
                total += sympy.summation(per_token, (symbol(site.var), site.start, site.start + site.count - 1)) \
                    if site.var and symbol(site.var) in per_token.free_symbols else per_token * site.count
        return sympy.factor(total)

    def state_formula(self) -> sympy.Expr:
        """Bytes of recurrent state per sequence (scans over the token axis): ``q`` bytes per element, every layer."""
        q = symbol("q")
        total = sympy.Integer(0)
        for site in self.sites:
            if not site.is_state:
                continue  # a cache that grows with the tokens (cache_formula)
            one = q * _numel(site.per_sequence())
            total += sympy.summation(one, (symbol(site.var), site.start, site.start + site.count - 1)) \
                if site.var and symbol(site.var) in one.free_symbols else one * site.count
        return sympy.factor(total)

    def state_bytes(self, dtype: str = "bfloat16", **sizes: int) -> int | sympy.Expr:
        """Bytes of recurrent state one sequence holds, whatever its length (0 for a model without scans)."""
        return _bind(self.state_formula().subs(symbol("q"), element_bytes(dtype)), {**self.sizes, **sizes})

    def cache_bytes(self, dtype: str = "bfloat16", **sizes: int) -> int | sympy.Expr:
        """Bytes of cache per token for the whole model (a number once every size is bound, else a formula).

        ``dtype`` is the element type the caches are stored in (``bfloat16``, ``float16``, ``float8``,
        ``int8``, ``int4``, ``float32``, ``float64``); sizes override the diagram's defaults.
        """
        formula = self.cache_formula().subs(symbol("q"), element_bytes(dtype))
        return _bind(formula, {**self.sizes, **sizes})

    def cache_bytes_at(self, positions: int, dtype: str = "bfloat16", **sizes: int) -> int | sympy.Expr:
        """Bytes the caches of the whole model hold after ``positions`` tokens (sliding windows bound them; recurrent
        states count once)."""
        q = element_bytes(dtype)
        total = sympy.Integer(0)
        for site in self.sites:
            one = q * (_numel(site.per_sequence()) if site.is_state else
                       _numel(site.per_token()) * site.held(sympy.Integer(positions)))
            total += sympy.summation(one, (symbol(site.var), site.start, site.start + site.count - 1)) \
                if site.var and symbol(site.var) in one.free_symbols else one * site.count
        return _bind(total, {**self.sizes, **sizes})

    def cache_bytes_per_layer(self, dtype: str = "bfloat16", **sizes: int) -> int | sympy.Expr:
        """Bytes of cache per token of one layer (one iteration of the repeated block)."""
        formula = self.cache_formula("layer").subs(symbol("q"), element_bytes(dtype))
        return _bind(formula, {**self.sizes, **sizes})

    def costs(self, dtype: str = "bfloat16", roofline: Any = None, policy: Any = None, **sizes: int) -> Any:
        """:class:`~ncd.inference.costs.DecodeCosts` of a prefill of ``t`` tokens and a step after ``c`` cached ones."""
        from ncd.inference.costs import decode_costs

        return decode_costs(self, dtype, roofline, policy, **sizes)

    def lower(self, weights: Mapping[str, Any] | None = None, dtype: Any = None, policy: Any = None,
              **sizes: int) -> Any:
        """A :class:`ncd.inference.run.Decoder` running the lowered prefill and steps with shared weights.

        ``weights``: a state dict of ``diagram.to_torch()`` (default: freshly initialised); ``dtype`` the torch
        dtype computed in; ``policy`` an :class:`~ncd.inference.policy.Policy` whose element types the weights
        and caches are held in (real casts).
        """
        from ncd.inference.run import Decoder

        return Decoder(self, {**self.sizes, **sizes}, dict(weights) if weights is not None else None, dtype, policy)


def _numel(seg: Segment) -> sympy.Expr:
    total = sympy.Integer(1)
    for a in seg.axes:
        total *= a.size
    return total


def _bind(formula: sympy.Expr, sizes: Mapping[str, int]) -> int | sympy.Expr:
    bound = formula.xreplace({symbol(k): sympy.Integer(v) for k, v in sizes.items()})
    if bound.free_symbols:
        return sympy.factor(bound)
    return evaluate(sympy.simplify(bound))


def _slots(sites: list[CacheSite]) -> list[tuple[str, int | None]]:
    by_var: dict[str | None, list[CacheSite]] = {}
    for s in sites:
        by_var.setdefault(s.var, []).append(s)
    order: list[tuple[str, int | None]] = []
    for group in by_var.values():
        rows = [s.slots() for s in group]
        for layer in zip(*rows):
            order.extend(layer)
    return order


def _site_segment(sites: list[CacheSite], key: str, index: int | None) -> tuple[CacheSite, Segment]:
    for s in sites:
        if s.key == key and (s.var is None) == (index is None):
            seg = s.segment if index is None else s.segment.subs({symbol(s.var): sympy.Integer(index)})
            return s, seg
    raise DecodeError(f"internal: no cache site {key}")


def _index(index: int | None) -> Size | None:
    return None if index is None else sympy.Integer(index)


def _resized(seg: Segment, axis: str, new: Size) -> Segment:
    return seg.with_axes(a if a.name != axis else a.__class__(a.name, new, a.role) for a in seg.axes)


def _bind_repeats(diagram: Diagram, sizes: Mapping[str, int]) -> Diagram:
    needed: set[str] = set()
    for node in diagram.walk():
        if isinstance(node, Repeat):
            needed |= {str(s) for s in (node.start.free_symbols | node.stop.free_symbols)}
    missing = sorted(n for n in needed if n not in sizes)
    if missing:
        raise DecodeError(f"decode: bind the repetition count{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
                          f" (e.g. ncd.decode(d, {missing[0]}=12)); each layer's cache is its own wire")
    return diagram.bind(**{n: sizes[n] for n in needed}) if needed else diagram


def _checked_longer(diagram: Diagram, token: Any, defaults: Mapping[str, Any], name: str) -> int | None:
    """A traced diagram whose model is at hand, lowered at a longer token length than traced (``2t + 1``) and checked
    against the model there (``TracedDiagram.to_torch``'s check), else :class:`DecodeError`: its prefill and steps run
    past the traced length, where a mask read as causal by its values at the traced length need not be (Mistral's
    sliding window of 6 traced on 4 tokens: ◸ without the window, decoded 0.02-0.1 off the model past 6 tokens); one
    read back without its model warns that it is not checked there (``read_back.guard``), and refuses a held length.
    Returns the length checked (``None``: no model to check against); a :class:`~ncd.inference.run.Decoder` checks
    again (:func:`check_at`) each time it runs past it."""
    from ncd.errors import TraceError
    from ncd.trace.traced_diagram import TracedDiagram

    n = defaults.get(str(token.size))
    if not isinstance(n, int):
        return None
    if not isinstance(diagram, TracedDiagram):  # read back without its model: said, as its to_torch at t says
        from ncd.torch.read_back import guard

        try:  # (a comparison of sizes the model made, coming out otherwise there: the decoder refuses that length)
            guard(diagram, {str(token.size): 2 * n + 1}, "decode", branches=False)
        except TraceError as error:
            raise DecodeError(f"decode: {name} holds {token.name} at its traced value {n}: {error}") from None
        return None
    if diagram._model() is None:  # pickled: said, as its to_torch at another length says
        import warnings

        warnings.warn(f"decode: {name} is not checked against the model past {token.name}={n}: the traced model is not"
                      " at hand (the diagram was pickled), so a mask read as causal by its values at the traced length"
                      " may hide a sliding window; lower the traced diagram itself, or trace at the length you run at",
                      RuntimeWarning, stacklevel=3)
        return None
    return 2 * n + 1 if check_at(diagram, str(token.size), 2 * n + 1, name) else None


def check_at(diagram: Diagram, size: str, length: int, name: str, **others: int) -> bool:
    """The traced ``diagram`` lowered at ``size=length`` and checked against its model there, else
    :class:`DecodeError` (a window longer than the lengths checked so far shows only past it). Returns whether it
    compared: where the check could not (the model's parameters replaced since the trace), its warning is said again
    as decode's. ``others``: other sizes to lower at (the batch run)."""
    import warnings

    from ncd.errors import TraceError

    traced = dict(diagram.get("defaults", ())).get(size) if isinstance(diagram, Block) else None
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            diagram.to_torch(**{**others, size: length})  # type: ignore[arg-type]
    except TraceError as error:
        raise DecodeError(f"decode: {name} lowered at {size}={length} (traced at {traced}) is not the model there,"
                          f" so its prefill and steps at that length would not be either: {error}") from None
    unchecked = [str(w.message) for w in said if "unchecked" in str(w.message)]
    for message in unchecked:
        warnings.warn(f"decode: {name} is not checked against the model at {size}={length}: {message}",
                      RuntimeWarning, stacklevel=3)
    return not unchecked


def decode(diagram: Diagram, /, *, tokens: str | None = None, **sizes: int) -> Decoding:
    """Derive the prefill and the one-token step of the causal ``diagram`` (see :mod:`ncd.inference.derive`).

    ``tokens`` names the token axis (default: the item axis of the first input, ``~t``);
    ``sizes`` bind sizes (repetition counts must be bound; a top block's defaults count).
    """
    if not isinstance(diagram, Diagram):
        raise DecodeError(f"decode expects a diagram, not {type(diagram).__name__}")
    defaults = dict(diagram.get("defaults", ())) if isinstance(diagram, Block) else {}
    check_option_names(diagram, "decode", {"tokens": tokens} if tokens is not None else {}, defaults)
    all_sizes = {**defaults, **sizes}
    try:
        names = token_names(diagram, token_axis(diagram, tokens).name)
    except DecodeError:
        names = frozenset()  # no token axis: the causality check names what is missing first
    require_causal(diagram, names)
    bound = _bind_repeats(diagram, all_sizes)
    token = token_axis(bound, tokens)
    name = diagram.name if isinstance(diagram, Block) else "Model"
    fixed = [box for held, box in getattr(diagram, "fixed", ()) if set(held) & (names | {token.name})]
    if fixed:  # a traced diagram's table of the traced length (OPT's positions): no prefill or step at another
        raise DecodeError(f"decode: {name} holds tensors recorded at the traced length of {token.name} (a table the"
                          " model computed from its input's shape, stored as its values), so its prefill and step at"
                          f" other lengths cannot be derived: {'; '.join(fixed[:4])}")
    checked = _checked_longer(diagram, token, defaults, name)
    if isinstance(bound, Block):  # the derived blocks take the model's place: the same submodule names
        bound = bound.body

    pre = derive(bound, "prefill", token)
    outputs = Type(tuple(pre.body.cod))
    loads = []
    for key, index in _slots(pre.sites):
        _, seg = _site_segment(pre.sites, key, index)
        site, _ = _site_segment(pre.sites, key, index)
        held = seg if site.is_state else _resized(seg, site.axis, site.held(seg.axis(site.axis).size))
        loads.append(Box(LoadOp(Type((held,)), key, _index(index))))
    prefill_body = Seq.of(pre.body, Par.of(Identity(outputs), *loads))
    prefill = Block(prefill_body, f"{name}Prefill", _meta(diagram, all_sizes, step=False))

    step_source = bound
    t = symbol(token.name)
    if token.size == t:
        try:
            step_source = bound.subs({t: sympy.Integer(1)})
        except NCDError as error:  # a box reading a fixed position of the tokens (an unrolled loop over them)
            raise DecodeError(f"decode: at one token ({token.name}=1) the diagram does not hold: {error}; a box reads a"
                              " fixed token position (e.g. a loop over positions left unrolled), so no step can be"
                              " derived") from error
    st = derive(step_source, "step", token)
    c = symbol(PAST)
    saves, ends = [], []
    for key, index in _slots(st.sites):
        site, seg = _site_segment(st.sites, key, index)
        new = sympy.Integer(0) if site.is_state else seg.axis(site.axis).size
        past = _resized(seg, site.axis, site.held(c))
        saves.append(Seq.of(Box(SaveOp(Type((past,)), key, _index(index))), Box(DeleteOp(Type((past,))))))
        ends.append(Box(LoadOp(Type((_resized(seg, site.axis, site.held(c + new)),)), key, _index(index))))
    step_body = Seq.of(
        Par.of(Identity(Type(tuple(st.body.dom))), *saves),
        st.body,
        Par.of(Identity(Type(tuple(st.body.cod))), *ends),
    )
    step = Block(step_body, f"{name}Step", _meta(diagram, all_sizes, step=True, token=token.name))
    # the formulas keep the repetition counts symbolic: take them from the diagram as given
    counts = {node.var: node for node in diagram.walk() if isinstance(node, Repeat)}
    sites = [dataclasses.replace(s, count=counts[s.var].stop - counts[s.var].start, start=counts[s.var].start)
             if s.var in counts else s for s in pre.sites]
    batch = tuple(a.name for seg in bound.dom if token.name in seg.names for a in seg.axes if a.name != token.name)
    sites = [dataclasses.replace(s, batch=batch) for s in sites]
    if not token.size.free_symbols:  # traced at a fixed length: that length is the prefill's default
        all_sizes.setdefault(token.name, int(token.size))
    return Decoding(diagram, prefill, step, sites, token.name, all_sizes, _slots(pre.sites), checked, str(token.size))


def _meta(diagram: Diagram, sizes: dict[str, int], *, step: bool, token: str = "t") -> tuple[tuple[str, Any], ...]:
    from ncd.torch.read_back import KEYS

    # (not a traced model's read-back meta: a decoding diagram is lowered at the lengths it runs at, by design)
    meta = {k: v for k, v in diagram.meta if k not in KEYS} if isinstance(diagram, Block) else {}
    defaults = dict(meta.get("defaults", ()))
    if step:
        past = defaults.pop(token, None)
        defaults[PAST] = int(past) if past is not None else 8
    if defaults:
        meta["defaults"] = tuple(defaults.items())
    return tuple(sorted(meta.items()))
