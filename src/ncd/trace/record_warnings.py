"""What a recording says of the model after its run (:func:`ncd.trace.record.record`): the warnings of what the
diagram holds or computes otherwise than the model's run did — random draws, custom autograd.Functions, detached
values, autocast, values kept in the model's attributes for later calls, writes into its state or inputs, writes into
memory the same call reads —, each shown at the user's line calling ``ncd.trace``.  The export path says the random
draws and the overlapping writes of its capture with the same functions.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ncd.errors import user_stacklevel
from ncd.trace.detaching import warn_detached
from ncd.trace.recording import _Recording
from ncd.trace.walk import ClassNames, _Walk

__all__ = ["warn_recorded", "warn_random", "random_of", "warn_overlapping", "kept_live"]


def warn_recorded(model: torch.nn.Module, rec: _Recording) -> None:
    """The warnings of a recording that stands for the model: what its diagram holds or computes otherwise than the
    model's run did (random draws, custom autograd.Functions, detached values, autocast, writes into the model's
    state or inputs), each shown at the user's line calling ``ncd.trace`` (:func:`ncd.errors.user_stacklevel`)."""
    warn_random(model, rec.random, rec.drawing)
    if rec.masked:  # x[m]: as many entries as m holds True, a count the diagram fixes
        warnings.warn(f"ncd.trace({type(model).__name__}): the model selects with a boolean mask computed from its"
                      f" inputs (x[mask] at {', '.join(sorted(rec.masked))}): the selection has as many entries as the"
                      " mask holds True, and the diagram draws that count as traced, so on inputs selecting another"
                      " count the lowered module raises (its run checks the count: x[mask].mean() would divide by the"
                      " traced one)", RuntimeWarning, stacklevel=user_stacklevel())
    warn_overlapping(model, rec.overlapping)
    if rec.functions:
        where = ", ".join(f"{cls} at {line}" for line, cls in sorted(rec.functions.items()))
        warnings.warn(f"ncd.trace({type(model).__name__}): custom autograd.Functions ({where}) are opaque boxes"
                      " calling the Function itself, so the lowered module's backward is theirs (not drawn: a backward"
                      " of its own need not be its forward's gradient)", RuntimeWarning, stacklevel=user_stacklevel())
    warn_detached(model, {line: what for line, what in rec.detached.items() if what not in ("detach", "detach_")})
    # (drawn: sg; ``h.detach_()`` is recorded as its functional ``detach``, whose readers after it take no gradient)
    # the modules and state the run left, read once for the attributes below and the bindings (:func:`record`)
    after = rec.walk.after = _Walk(model)
    kept = kept_live(model, rec, after)
    private = any(name.rsplit(".", 1)[-1][0] == "_" for name in kept)  # (ncd.trace.undo puts back public ones)
    if kept:  # a memory across calls (``self.hidden = h.detach()``): as for a number attribute the model changes
        warnings.warn(f"ncd.trace({type(model).__name__}): the model keeps values computed from its inputs in its"
                      f" attributes ({', '.join(kept[:4])}{', ...' if len(kept) > 4 else ''}) for later calls; the"
                      " diagram computes the traced call, with the values they held before it (tracing put back"
                      f" {'the public ones: the private ones hold the traced call' if private else 'them'}), and the"
                      " lowered module keeps nothing, so the model's later calls may differ from it",
                      RuntimeWarning, stacklevel=user_stacklevel())
    if rec.autocast:  # autocast casts below the level recorded: the diagram computes in the tensors' own types
        warnings.warn(f"ncd.trace({type(model).__name__}): the model runs under torch.autocast (at"
                      f" {', '.join(sorted(rec.autocast))}); the diagram computes in its tensors' own types, so the"
                      " lowered module's results differ from the model's by the rounding autocast does (cast the"
                      " model instead, or trace it without autocast)", RuntimeWarning, stacklevel=user_stacklevel())
    if rec.buffers_written or rec.params_written:  # a running statistic, a step counter, a cache, a renormed table
        state = {**rec.params_written, **rec.buffers_written}
        what = " and ".join(k for k, v in (("parameters", rec.params_written), ("buffers", rec.buffers_written)) if v)
        where = ", ".join(f"{name} at {line}" for name, line in state.items())
        warnings.warn(f"ncd.trace({type(model).__name__}): the model writes into its {what} in place ({where}); the"
                      " diagram computes the traced call from their values before it and the lowered module does not"
                      " update them, so later calls of the model differ from it (and tracing ran the model once: its"
                      f" {what} were updated as by one call)", RuntimeWarning, stacklevel=user_stacklevel())
    aliased = [(a, b) for a, b in rec.shared.items() if {a, b} & rec.inputs_written]
    if aliased:
        pairs = "; ".join(f"{b} and {a}" for a, b in aliased)
        written = sorted({n for pair in aliased for n in pair} & rec.inputs_written)
        warnings.warn(f"ncd.trace({type(model).__name__}): inputs that share memory ({pairs}: one tensor passed twice,"
                      f" or views of one tensor) and the model writes into {', '.join(written)} in place;"
                      " the diagram takes its inputs as separate tensors (the model called with copies of them), so"
                      " on this call's aliased inputs its result may differ from the model's", RuntimeWarning,
                      stacklevel=user_stacklevel())
    elif rec.shared and rec.addressed:  # (one tensor passed twice: the model compares the addresses of two copies)
        pairs = "; ".join(f"{b} and {a}" for a, b in rec.shared.items())
        lines = ", ".join(dict.fromkeys(rec.addressed[:8]))
        warnings.warn(f"ncd.trace({type(model).__name__}): inputs that share memory ({pairs}: one tensor passed twice,"
                      f" or views of one tensor) and the model reads the address of a value of its inputs"
                      f" (Tensor.data_ptr() at {lines}); it ran on a separate copy of each input, so a comparison of"
                      " their addresses was traced as for separate tensors: on this call's aliased inputs the"
                      " diagram's result may differ from the model's", RuntimeWarning, stacklevel=user_stacklevel())
    if rec.identity:
        where = ", ".join(f"{names} at {line}" for line, names in rec.identity.items())
        warnings.warn(f"ncd.trace({type(model).__name__}): one tensor passed as several inputs, which the model tests"
                      f" with `is` ({where}); the diagram takes them as separate inputs (the model ran on a copy of"
                      " each), so it holds the branch for different tensors: called with one tensor twice, the model"
                      " takes the other branch and computes otherwise than the lowered module (trace it with the"
                      " tensor passed once, or with different tensors)", RuntimeWarning, stacklevel=user_stacklevel())
    if rec.inputs_written and not aliased:
        warnings.warn(f"ncd.trace({type(model).__name__}): the model writes into its input(s)"
                      f" {', '.join(sorted(rec.inputs_written))} in place; the diagram computes its outputs from the"
                      " inputs as given, and the lowered module leaves its inputs as they were (the model changes the"
                      " caller's tensors)", RuntimeWarning, stacklevel=user_stacklevel())


#: the attributes every ``torch.nn.Module`` holds of its own (its parameters, buffers, submodules, hooks): not what the
#: model keeps
_MODULE_OWN = frozenset(vars(torch.nn.Module()))

#: how :func:`kept_live` reads a value of a type: a tensor, a mapping or a sequence of values (read inside), else not
_TENSOR, _MAPPING, _SEQUENCE, _OTHER = range(4)


def kept_live(model: torch.nn.Module, rec: _Recording, walk: _Walk | None = None) -> list[str]:
    """The attributes of the model's modules (public or private, but torch's own of every module: :data:`_MODULE_OWN`),
    or the entries of the lists, tuples and dicts they hold (nested up to three deep, as ``self.state["h"][0]``), bound,
    when the recorded call ends, to a tensor computed from the inputs (a recorded value that depends on them); ``walk``:
    the modules read since the call ended."""
    by_id = rec.by_id
    kinds: dict[type, int] = {}  # (a type's test once: isinstance on torch.Tensor costs ~0.2 us a value)

    def kind_of(v: Any) -> int:
        kind = kinds.get(type(v))
        if kind is None:
            kind = kinds[type(v)] = _TENSOR if isinstance(v, torch.Tensor) else _MAPPING if isinstance(v, dict) \
                else _SEQUENCE if isinstance(v, (list, tuple)) else _OTHER
        return kind

    def live(v: Any, kind: int, depth: int) -> bool:
        if kind == _TENSOR:
            return bool(getattr(by_id.get(id(v)), "live", False))
        for t in v.values() if kind == _MAPPING else v:  # (a loop, not any() of a generator: ~1,200 tuples of sizes)
            k = kinds.get(type(t))
            if k is None:
                k = kind_of(t)
            if (k == _TENSOR or depth > 1 and k != _OTHER) and live(t, k, depth - 1):
                return True
        return False

    kept = []
    # the names of a class's modules, and those of them not torch's own, picked once while a module's are the same
    theirs = ClassNames(lambda k: k not in _MODULE_OWN)
    for path, module in walk.distinct() if walk is not None and walk.faithful else model.named_modules():
        values = vars(module)
        for name in theirs.picked(module, list(values)):
            v = values[name]
            kind = kinds.get(type(v))  # (inline: ~40 attributes a module, most of them neither)
            if kind is None:
                kind = kind_of(v)
            if kind == _OTHER or not live(v, kind, 3):
                continue
            kept.append(f"{path}.{name}" if path else name)
    return kept


def warn_random(model: torch.nn.Module, random: dict[str, str], drawing: dict[str, str]) -> None:
    """The warnings of random draws (``random``: the model's line -> an operator of
    :data:`~ncd.trace.operators.RANDOM`; ``drawing``: of :data:`~ncd.trace.operators.DRAWING`, drawing for its
    arguments), for a recording (:func:`warn_recorded`) or a capture by ``torch.export`` (:func:`random_of`)."""
    if random:
        where = ", ".join(f"{op} at {line}" for line, op in sorted(random.items()))
        warnings.warn(f"ncd.trace({type(model).__name__}): the model draws random numbers ({where}); the diagram holds"
                      " the numbers drawn while tracing (pass them in as an input, where the model takes one, to draw"
                      " them as a wire)", RuntimeWarning, stacklevel=user_stacklevel())
    if drawing:  # opaque boxes calling the operator: they draw anew at every call, as the model does
        where = ", ".join(f"{op} at {line}" for line, op in sorted(drawing.items()))
        warnings.warn(f"ncd.trace({type(model).__name__}): the model draws random numbers inside {where} (dropout or"
                      " rrelu in training, attention with dropout_p > 0, a recurrent stack's dropout in training, a sample drawn"
                      " for values of the inputs);"
                      " they are opaque boxes drawing anew at every call, as the model does, so the lowered module's"
                      " results are not the model's call by call (trace the model in eval mode, or with dropout 0,"
                      " for a diagram computing its results)", RuntimeWarning, stacklevel=user_stacklevel())


def random_of(nodes: list[Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The random draws among captured calls (``torch.export``'s: the recorder notes its own as it records), as
    :func:`warn_random` takes them."""
    from ncd.trace.operators import DRAWING, RANDOM, _draws

    random: dict[str, str] = {}
    drawing: dict[str, str] = {}
    for n in nodes:
        packet = getattr(getattr(n.target, "overloadpacket", None), "__name__", None) if n.kind == "call" else None
        if packet in RANDOM or packet in DRAWING and _draws(n.target, tuple(n.args), dict(n.kwargs)):
            # (a constant: the diagram holds it; else an opaque box drawing anew: ``randn_like(x)``)
            (drawing if n.live else random).setdefault(n.line or "?", packet)
    return random, drawing


def warn_overlapping(model: torch.nn.Module, overlapping: dict[str, str]) -> None:
    """The warning for the model's lines writing memory the same call reads (``line -> operator``; none: nothing), where
    the model's result differs from the diagram's reading (:mod:`ncd.trace.overlaps`); the recording's and, for a call
    it left to ``torch.export`` (an ``out=`` write), the export path's."""
    if overlapping:  # y /= y[:, :1]: torch's kernel reads entries the call wrote already
        warnings.warn(f"ncd.trace({type(model).__name__}): the model writes into memory the same call reads (at"
                      f" {', '.join(f'{line} ({op})' for line, op in sorted(overlapping.items()))}: an operand is"
                      " a view of the tensor written, such as y /= y[:, :1], y[:, 1:] = y[:, :-1] or"
                      " torch.add(y[:, :-1], 1, out=y[:, 1:])); torch then computes entry by entry, reading entries the"
                      " call already wrote, in the order its kernel visits them, and the diagram reads the operands"
                      " before the write, so on the traced inputs the lowered module computes otherwise than the model"
                      " (clone() the operand first)", RuntimeWarning, stacklevel=user_stacklevel())
