"""Whether a custom ``torch.autograd.Function``'s ``backward`` is its ``forward``'s gradient, proven on the traced values
(:func:`proven`): its vector-Jacobian products equal autograd's through its forward's operations, for random
cotangents, at the traced arguments (and again where a first proof could be luck).  A Function proven so is recorded as
its forward's operations; any other is one opaque box calling the Function (:mod:`ncd.trace.functions`)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

#: the tolerance of the tracer's other value proofs (``atol`` scaled by the largest magnitude, below 1 too)
ATOL, RTOL = 1e-5, 1e-4
SEED = 0


class _Context:
    """What a Function's ``forward(ctx, ...)`` may call on its ``ctx`` when run outside ``apply`` (autograd through
    its operations)."""

    def __init__(self, needs: tuple[bool, ...]) -> None:
        self.needs_input_grad = needs
        self.saved_tensors: tuple[Any, ...] = ()
        self.materialize_grads = True

    def save_for_backward(self, *tensors: Any) -> None:
        self.saved_tensors = tensors

    def save_for_forward(self, *tensors: Any) -> None:
        pass

    def mark_dirty(self, *tensors: Any) -> None:
        pass

    def mark_non_differentiable(self, *tensors: Any) -> None:
        pass

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = value


def _close(got: torch.Tensor | None, want: torch.Tensor | None, scale: float = 0.0, largest: float | None = None) -> bool:
    """Whether two gradients agree: ``allclose`` at ``RTOL`` and ``ATOL`` times the larger one's largest magnitude
    (``largest``: that magnitude, found by the caller already: :func:`_largest` of the two).
    ``None`` (no gradient) agrees with a gradient whose entries are at most ``ATOL`` times ``scale`` (the largest
    magnitude of the proof's other gradients): a rounding residue beside them, not a gradient of its own."""
    if got is None or want is None:  # no gradient on one side (a parameter the Function does not use: on neither)
        other = want if got is None else got
        return other is None or bool((other.detach().abs() <= ATOL * scale).all())
    g, w = got, want
    if g.shape != w.shape:
        return False
    g, w = g.detach().double(), w.detach().double()
    if largest is None or got.is_complex() or want.is_complex():  # (a real tensor's largest magnitude is its
        largest = _largest(g, w)  # double's; a complex one's double keeps its real part only)
    # the absolute tolerance follows the values, below 1 too: of a Function whose gradients are 1e-6, a fixed 1e-5
    # passed a backward twice autograd's (the lowered module's gradients were half the model's)
    return bool(torch.allclose(g, w, atol=ATOL * largest, rtol=RTOL))


def _largest(*grads: torch.Tensor | None) -> float:
    """The largest finite magnitude among ``grads``' entries (0 without any)."""
    found = [float(t.detach().abs().nan_to_num(0.0, 0.0, 0.0).max()) for t in grads if t is not None and t.numel()]
    return max(found, default=0.0)


def proven(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], params: list[torch.Tensor]) -> bool:
    """Whether ``cls.apply(*args, **kwargs)``'s backward is the autograd gradient of its forward, told on the traced
    values and on those values moved by fixed-seed noise as large as their largest magnitude (a straight-through
    clamp whose traced values all lie inside its range agrees there, not beyond): :func:`_proven_at` both."""
    held = [(p, p.grad) for p in params]  # a backward may accumulate into parameters' .grad itself (Reformer's)
    copies = [(p, g.clone()) for p, g in held if g is not None]
    try:
        return _proven_twice(cls, args, kwargs, params)
    finally:
        for p, g in held:
            p.grad = g
        with torch.no_grad():
            for p, g in copies:
                if p.grad is not None:
                    p.grad.copy_(g)


def _proven_twice(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], params: list[torch.Tensor]) -> bool:
    """Both proofs hold; the moved values are tried first: a Function whose backward is not its forward's gradient
    almost always shows it there (a clamped gradient, a forward undefined off the traced range: recurrent_gemma's
    ``SqrtBoundDerivative`` gives NaN at once), and the traced values' proof is then not made (recurrent_gemma's
    proofs: 6.1 -> 3.3 ms)."""
    leaves, spec = tree_flatten((args, kwargs))
    if not _told(leaves):  # (before moving them: a meta value has no magnitude)
        return False
    gen = torch.Generator().manual_seed(SEED)
    moved = []
    for v in leaves:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            size = max(1.0, float(v.detach().abs().max())) if v.numel() else 1.0
            noise = torch.randn(v.shape, generator=gen, dtype=torch.float64).to(device=v.device, dtype=v.dtype)
            v = v.detach() + size * noise
        moved.append(v)
    a, kw = tree_unflatten(moved, spec)
    return _proven_at(cls, a, kw, params) and _proven_at(cls, args, kwargs, params)


def _told(leaves: list[Any]) -> bool:
    """Whether a proof can be told on these values: every tensor a plain one (or a parameter) holding values."""
    return not any(isinstance(t, torch.Tensor) and (type(t) not in (torch.Tensor, torch.nn.Parameter) or t.is_meta)
                   for t in leaves)


def _proven_at(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], params: list[torch.Tensor]) -> bool:
    """Whether ``cls.apply(*args, **kwargs)``'s backward is, on these values, the autograd gradient of its forward:
    both run with autograd on copies of the floating-point tensor arguments (and ``params``, which the forward may
    use), and the vector-Jacobian products with one fixed-seed random cotangent per output are compared, for every
    such argument and parameter, with the tolerance of the tracer's other value proofs.  False when it cannot be told
    (meta or non-float values, no floating-point output, an error)."""
    from torch.autograd.function import _SingleLevelFunction

    leaves, spec = tree_flatten((args, kwargs))
    if not _told(leaves):
        return False
    floats = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor) and v.is_floating_point()]
    weights = [p for p in params if p.requires_grad and p.is_floating_point() and not p.is_meta]
    if not floats and not weights:
        return False

    def run(through: bool) -> tuple[list[torch.Tensor], list[Any]] | None:
        copies = list(leaves)
        for i in floats:
            copies[i] = leaves[i].detach().clone().requires_grad_(True)
        a, kw = tree_unflatten(copies, spec)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(SEED)  # (the CPU's only: torch.manual_seed queues every device's)
            if not through:
                out = cls.apply(*a, **kw)  # type: ignore[attr-defined]
            elif cls.setup_context is not _SingleLevelFunction.setup_context:  # type: ignore[attr-defined]
                out = cls.forward(*a, **kw)  # type: ignore[attr-defined]
            else:
                needs = tuple(isinstance(v, torch.Tensor) and v.requires_grad for v in a)
                out = cls.forward(_Context(needs), *a, **kw)  # type: ignore[attr-defined]
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if not all(isinstance(o, torch.Tensor) for o in outs):
            return None
        return outs, [copies[i] for i in floats]

    mutable = getattr(torch.autograd.graph, "allow_mutation_on_saved_tensors", None)
    try:  # autograd through the forward keeps a copy of each tensor it saves (SEW-D's XSoftmax writes into softmax's
        grads = _vjps(run, weights, _saved_copied)  # result in place): the values it saved, as torch's mode would
    except RuntimeError as error:  # the Function's own backward read a tensor written after it was saved: again,
        if "inplace operation" not in str(error):  # saved tensors cloned before a write on both sides
            return False
        if mutable is None:
            return False
        try:  # (only then: torch's mode for it imports torch._dynamo on first use, ~0.8 s)
            grads = _vjps(run, weights, mutable, everywhere=True)
        except Exception:  # noqa: BLE001 - a Function that cannot be run twice or differentiated here: not proven
            return False
    except Exception:  # noqa: BLE001 - a Function that cannot be run twice or differentiated here: not proven
        return False
    if grads is None:
        return False
    # each gradient's largest magnitude once: the proof's scale is the largest of them, a pair's tolerance the larger
    # of its two (SEW-D's XSoftmax proofs found each twice: for the scale, and again for its pair)
    mine, theirs = ([_largest(g) for g in side] for side in grads)
    scale = max(mine + theirs, default=0.0)
    return all(_close(g, w, scale, max(a, b)) for g, w, a, b in zip(grads[0], grads[1], mine, theirs))


def _vjps(run: Any, weights: list[torch.Tensor], saving: Any, everywhere: bool = False) -> list[list[torch.Tensor | None]] | None:
    """The Function's vector-Jacobian products (``run(False)``) and autograd's through its forward (``run(True)``)
    with one fixed-seed random cotangent per floating-point output, wrt the arguments and ``weights``; None when the
    outputs differ.  A write into a saved tensor raises (autograd's version check) unless ``saving`` (a context) keeps
    what was saved: around autograd's side, where the forward's own operations save tensors (``apply`` runs the forward
    without autograd), or around both (``everywhere``)."""
    with torch.enable_grad():
        with saving() if everywhere else contextlib.nullcontext():
            ran = run(False)
            with saving() if not everywhere else contextlib.nullcontext():
                through = run(True)
                if ran is None or through is None or len(ran[0]) != len(through[0]):
                    return None
                pairs = [(o, t) for o, t in zip(ran[0], through[0]) if o.is_floating_point()]
                if not pairs or any(o.shape != t.shape or not _close(t, o) for o, t in pairs):
                    return None
                gen = torch.Generator().manual_seed(SEED)
                cot = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o, _ in pairs]
                # the weights either side's graph reaches (one it reaches on neither has no gradient on either side)
                reached = _reached([x for pair in pairs for x in pair])
                weights = [w for w in weights if id(w) in reached]
                theirs = _vjp([(t, c) for (_, t), c in zip(pairs, cot)], through[1] + weights)  # autograd's
            mine = _vjp([(o, c) for (o, _), c in zip(pairs, cot)], ran[1] + weights)  # the Function's backward
    return [mine, theirs]


def _reached(outs: list[torch.Tensor]) -> set[int]:
    """The ids of the leaf tensors whose gradients the autograd graphs of ``outs`` give (the variables of the gradient
    accumulators they reach, and the outputs that are such leaves themselves): every other tensor's is ``None``, so
    :func:`_vjps` differentiates by the model's parameters it reaches only (SEW-D: 60 per proof, most unread)."""
    found = {id(o) for o in outs if o.grad_fn is None and o.requires_grad}
    met: list[Any] = []  # the graph's nodes met (kept alive, so their wrappers' ids stay theirs)
    ids: set[int] = set()
    todo = [o.grad_fn for o in outs if o.grad_fn is not None]
    while todo:
        fn = todo.pop()
        if id(fn) in ids:
            continue
        ids.add(id(fn))
        met.append(fn)
        variable = getattr(fn, "variable", None)
        if isinstance(variable, torch.Tensor):
            found.add(id(variable))
        todo.extend(f for f, _ in fn.next_functions if f is not None)
    return found


def _saved_copied() -> Any:
    """Autograd saves a copy of each tensor (what a later write into it in place cannot change): the values saved, as
    ``allow_mutation_on_saved_tensors`` keeps them, without its dispatch mode's Python call per operator.  A parameter
    (the model's weights: large, copied on every proof) is saved as it is, and a write into it after it was saved
    raises as autograd's own version check does (the mode's retry).  Any other tensor is copied, leaves too: a tensor
    needing no gradient made in the forward (a gate, a mask) can be written through ``.data``, which bumps no version
    (its gradient would be read from the values written)."""
    return torch.autograd.graph.saved_tensors_hooks(_packed, _unpacked)


def _packed(tensor: torch.Tensor) -> tuple[torch.Tensor, int | None]:
    if isinstance(tensor, torch.nn.Parameter):
        return tensor, tensor._version
    return tensor.clone(), None


def _unpacked(saved: tuple[torch.Tensor, int | None]) -> torch.Tensor:
    tensor, version = saved
    if version is not None and tensor._version != version:
        raise RuntimeError("one of the variables needed for gradient computation has been modified by an inplace"
                           " operation (a leaf saved by a Function's proof)")
    return tensor


def _vjp(outs: list[tuple[torch.Tensor, torch.Tensor]], wrt: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """The vector-Jacobian products of the outputs that require grad, each with its cotangent, wrt ``wrt``."""
    live = [(o, c) for o, c in outs if o.requires_grad]
    if not live:
        return [None] * len(wrt)
    return list(torch.autograd.grad([o for o, _ in live], wrt, [c for _, c in live], allow_unused=True))
