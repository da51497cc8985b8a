"""The refusals of the ``torch.export`` path (:mod:`ncd.trace.export`) and the tracebacks they read: whether a failure
is data-dependent control flow, the model's own failure on its inputs (:func:`_own_failure`), a higher-order operator
(``torch.cond``, ``torch.while_loop``) it calls, and the model's line a traceback or an FX ``stack_trace`` names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ncd.errors import TraceError
from ncd.trace.capture import _first_line, _internal

DATA_DEPENDENT = ("data-dependent", "data dependent", "GuardOnDataDependentSymNode", "DataDependentOutputException",
                  "Could not guard on data-dependent", "DynamicOutputShapeException", "Dynamic control flow")


def _is_data_dependent(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}"
    return any(k.lower() in text.lower() for k in DATA_DEPENDENT)


def _raise_own_failure(model: torch.nn.Module, flat: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse ``model`` if it raises itself when called on these inputs eagerly (asked only once the captures failed,
    whose messages would blame control flow or torch.export): that error and the model's line."""
    own = _own_failure(flat, args, kwargs)
    if own is not None:
        raise TraceError(f"cannot trace {type(model).__name__}: the model itself raises on these inputs under"
                         f" torch.no_grad, as ncd.trace runs it ({own}); ncd.trace needs inputs the model runs on"
                         " without gradients") from None


def _own_failure(flat: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The error the model raises when called on ``args`` and ``kwargs`` eagerly, with the innermost line of the
    model's code it came from (``RuntimeError: The size of tensor a (3) must match ... at modeling_qwen3.py:61``), or
    None when it runs.  It runs on a copy of the model and of the inputs: a refused trace leaves both as they were
    (a model counting its calls, or writing into its buffers or inputs); a model that cannot be copied is not asked."""
    import copy

    try:
        twin = copy.deepcopy(flat)
        twin_args, twin_kwargs = torch.utils._pytree.tree_map(
            lambda v: v.clone() if isinstance(v, torch.Tensor) else v, (tuple(args), dict(kwargs)))
    except Exception:  # noqa: BLE001 - not copyable: the captures' own messages stand
        return None
    try:
        with torch.no_grad():  # (as the captures run it)
            twin(*twin_args, **twin_kwargs)
    except Exception as error:  # noqa: BLE001 - whatever the model raises is the answer
        line, _ = _user_line(error.__traceback__)
        return f"{type(error).__name__}: {_first_line(error)}{f' at {line}' if line else ''}"
    return None


def _user_line(tb: Any, stop: Callable[[str], bool] | None = None) -> tuple[str, str | None]:
    """The innermost frame of the traceback ``tb`` outside torch and ncd (``file.py:N``; "" when none); with ``stop``,
    of the frames before the first whose file name ``stop`` accepts, and that file name (None: no frame stopped)."""
    import os

    line = ""
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if stop is not None and stop(name):
            return line, name
        if not _internal(name):
            line = f"{os.path.basename(name)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return line, None


def _data_dependent_message(model: torch.nn.Module, error: BaseException, reads: Exception | None = None) -> str:
    """The refusal of a model whose control flow reads input values: where it reads one (the eager recording saw the
    model's line; torch.export's own message names a symbol), and what to do about it."""
    where = f"{reads}; torch.export: {_first_line(error)}" if reads is not None else _first_line(error)
    return (
        f"cannot trace {type(model).__name__}: its control flow depends on the values of the inputs"
        f" ({where}); a neural circuit diagram draws one fixed computation. Rewrite the branch with"
        " torch.where / torch.cond, or trace the branch you want as its own module."
    )


def _branching(model: str, what: str, line: str) -> TraceError:
    """The refusal of a model calling a higher-order operator (``torch.cond``, ``torch.while_loop``) at ``line``."""
    return TraceError(f"cannot trace {model}: it calls torch.{what}{f' at {line}' if line else ''}, whose branches or"
                      " body are graphs of their own, run as the values of the inputs decide; a neural circuit diagram"
                      " draws one fixed computation (compute both branches and pick with torch.where, or loop a fixed"
                      " number of times)")


def _higher_order_called(error: BaseException) -> tuple[str, str] | None:
    """``(operator, user line)`` when ``error`` was raised inside torch's ``cond`` / ``while_loop`` (torch compiles
    their branches itself, and that compilation can fail before any graph is made): the operator's module name and
    the innermost frame outside torch and ncd before it; else None.

    >>> _higher_order_called(ValueError("no traceback")) is None
    True
    """
    import os

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        line, at = _user_line(error.__traceback__, _higher_order)
        if at is not None:
            return os.path.splitext(os.path.basename(at))[0], line
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return None


def _higher_order(filename: str) -> bool:
    """Whether ``filename`` is torch's ``cond`` or ``while_loop`` (``torch/_higher_order_ops/cond.py``)."""
    import os

    return "_higher_order_ops" in filename and os.path.splitext(os.path.basename(filename))[0] in ("cond", "while_loop")


def _line_of_trace(text: Any) -> str:
    """The innermost user frame of an FX ``stack_trace`` (``File "...", line N, in f``)."""
    import os
    import re

    found = ""
    for m in re.finditer(r'File "([^"]+)", line (\d+)', text or ""):
        if not _internal(m.group(1)):
            found = f"{os.path.basename(m.group(1))}:{m.group(2)}"
    return found
