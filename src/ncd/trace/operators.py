"""What the recording (:mod:`ncd.trace.recording`) knows of ATen operators, read once per operator: which give an
output of data-dependent shape or read a truth value into Python, which draw random numbers (always, or for some
arguments: :func:`_draws`), which keep their input's shape or read only shapes, which write into an argument and
which write without reading what they write, and what calling an operator calls (:func:`_operator`)."""

from __future__ import annotations

from typing import Any

import torch

from ncd.trace.capture import Node
from ncd.trace.undo import NO_DEFAULT, arguments_of, writes

#: operators whose output shape depends on the values of their inputs (``torch.where(cond)``, one argument: below)
DYNAMIC = {"nonzero", "nonzero_numpy", "argwhere", "masked_select", "unique", "_unique", "_unique2", "unique_consecutive",
           "unique_dim", "nonzero_static"}


#: operators that read one truth value of a tensor into Python (``if mask.any():``, ``bool(t)``, ``t.item()`` of a bool)
BRANCHES = frozenset({"is_nonzero", "_local_scalar_dense", "item"})


#: operators that draw random numbers: recorded, their draw is a constant of the diagram
RANDOM = frozenset({"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "bernoulli",
                    "bernoulli_", "multinomial", "normal", "normal_", "uniform_", "exponential_", "poisson",
                    "random_", "cauchy_", "log_normal_", "geometric_",
                    # their functional forms, as torch.export captures the writes above (``torch.zeros(n).normal_()``
                    # was held as a constant with no warning)
                    "normal_functional", "uniform", "random", "cauchy", "log_normal", "geometric", "exponential"})

#: operators that draw random numbers inside themselves for some arguments (:func:`_draws`): a dropout or ``rrelu`` in
#: training, attention with ``dropout_p > 0``, a recurrent stack with dropout in training; they stay opaque boxes that
#: draw anew at every call
DRAWING = frozenset({"dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout", "alpha_dropout_",
                     "feature_alpha_dropout", "feature_alpha_dropout_", "native_dropout", "rrelu", "rrelu_",
                     "rrelu_with_noise", "rrelu_with_noise_", "scaled_dot_product_attention",
                     "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention_for_cpu",
                     "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                     "_scaled_dot_product_cudnn_attention", "gru", "lstm", "rnn_tanh", "rnn_relu",
                     "_standard_gamma", "binomial", "_sample_dirichlet"})  # (the last: torch.distributions' samples)


#: operators whose one result has the shape, dtype and layout of their first argument (norms, activations)
SHAPE_OF_INPUT = frozenset({"batch_norm", "layer_norm", "rms_norm", "group_norm", "instance_norm", "relu", "gelu", "silu",
                            "sigmoid", "tanh", "hardtanh", "leaky_relu", "elu", "mish", "hardswish", "hardsigmoid"})


#: operators whose result depends on the shapes of their tensor arguments only, never on their values
SHAPE_ONLY = frozenset({"ones_like", "zeros_like", "full_like", "empty_like", "new_ones", "new_zeros", "new_full",
                        "new_empty"})


#: writes that read nothing of what they write (compared in :meth:`~ncd.trace.recording._Recording.write`); a view
#: operation reading memory
_COPIES = frozenset({torch.ops.aten.copy_.default, torch.ops.aten.fill_.Scalar, torch.ops.aten.fill_.Tensor,
                     torch.ops.aten.zero_.default})
_STRIDED = frozenset({torch.ops.aten.as_strided.default})
#: ``x.detach_()``: no value changes (:meth:`ncd.trace.recording._Recording._constant_detached`)
_DETACH_IN_PLACE = torch.ops.aten.detach_.default
#: in-place dropouts, which out of training (``train=False``) return their input untouched: no write
_DROPOUTS_IN_PLACE = frozenset({torch.ops.aten.dropout_.default, torch.ops.aten.feature_dropout_.default,
                                torch.ops.aten.alpha_dropout_.default, torch.ops.aten.feature_alpha_dropout_.default})

#: an operator's id -> the operator, its packet's name, whether its schema is mutable, whether it writes into an
#: argument (:func:`ncd.trace.undo.writes`), whether it is one of :data:`_DROPOUTS_IN_PLACE`, what calling it calls and
#: whether it is :data:`plain <_UNPLAIN>`: read once per operator (each is ~1 µs through torch's Python, at every
#: recorded call); the entry holds the operator, so its id is not reused, and is checked to be it
_OPERATORS: dict[int, tuple[Any, str, bool, bool, bool, Any, bool]] = {}

#: the operators :meth:`~ncd.trace.recording._Recording.call` decides something of by name (random draws, detaches, a
#: storage set, aliases, values of data-dependent shape, masks, strided reads, constants of a shape): an operator of
#: none of these that neither writes nor mutates is *plain*, recorded by its fast path while nothing else is under way
_UNPLAIN = frozenset({*RANDOM, *DRAWING, *SHAPE_ONLY, *DYNAMIC, "detach", "detach_", "set_", "alias", "where", "index",
                      "as_strided"})


def _operator(func: Any) -> tuple[Any, str, bool, bool, bool, Any, bool]:
    """The facts above, what calling the operator calls (``OpOverload.__call__`` is ``self._op(...)``: one Python
    frame less per recorded call), and whether it is plain (:data:`_UNPLAIN`)."""
    found = _OPERATORS.get(id(func))
    if found is None or found[0] is not func:
        packet, mutable, writing = func.overloadpacket.__name__, bool(func._schema.is_mutable), bool(writes(func))
        dropout = func in _DROPOUTS_IN_PLACE
        plain = not (mutable or writing or dropout or packet in _UNPLAIN or func is _DETACH_IN_PLACE
                     or func in _COPIES or func in _STRIDED)
        found = _OPERATORS[id(func)] = (func, packet, mutable, writing, dropout, _kernel_of(func), plain)
    return found


def _draws(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a call of an operator of :data:`DRAWING` draws random numbers, read from its arguments by name: a
    positive ``dropout_p``; ``p`` with ``train`` (``None``: training) or ``training``; ``rrelu``'s ``training``; a
    recurrent stack's ``dropout`` between its ``num_layers > 1`` layers in ``train``."""
    given: dict[str, Any] = {}
    for i, (name, kwarg_only, default) in enumerate(arguments_of(func)):
        if i < len(args) and not kwarg_only:
            given[name] = args[i]
        elif name in kwargs:
            given[name] = kwargs[name]
        elif default is not NO_DEFAULT:
            given[name] = default
    if "dropout_p" in given:
        return bool(given["dropout_p"])
    if "num_layers" in given:
        return bool(given.get("dropout")) and bool(given.get("train")) and given["num_layers"] > 1
    training = given.get("train", given.get("training"))
    return ("p" not in given or bool(given["p"])) and (training is None or bool(training))


def _live_mask(arg_refs: tuple[Any, ...]) -> bool:
    """Whether ``x[m]`` (``index``) selects with a boolean mask that depends on the inputs: its result has as many
    entries as the mask has ``True`` ones, a count of the values, drawn at the traced count (warned: ``x[m].mean()``
    divides by it on every input).  Refusing it (:data:`DYNAMIC`) would refuse glm5_next and higgs_audio_v2."""
    return len(arg_refs) > 1 and any(isinstance(i, Node) and i.live and isinstance(i.value, torch.Tensor)
                                     and i.value.dtype in (torch.bool, torch.uint8) for i in arg_refs[1] or ())


def _kernel_of(func: Any) -> Any:
    """``func._op`` where calling ``func`` calls it (torch's ``OpOverload``), else ``func``."""
    kernel = getattr(func, "_op", None)
    return kernel if kernel is not None and _OVERLOAD_CALL is not None and type(func).__call__ is _OVERLOAD_CALL else func


_OVERLOAD_CALL = torch._ops.OpOverload.__dict__.get("__call__")
