"""Torch's errors from a lowered module's run, said in the diagram's terms where the cause is known.

A float input of another type than the module's parameters (``expected m1 and m2 to have the same dtype``) becomes an
:class:`~ncd.errors.InputError` naming the input, the box and both types; an index out of its table's range
(``index out of range in self``) names the box and its vocabulary size.  Anything else stays a
:class:`~ncd.errors.RunError` naming the generated line (:func:`ncd.torch.module.reporting_class`).  Read only when
a run has failed: a run that succeeds pays nothing.
"""

from __future__ import annotations

import linecache
from typing import Any

import torch

from ncd.errors import InputError, NCDError, RunError
from ncd.ir.diagram import Box
from ncd.ir.size import size_text

__all__ = ["explain"]

#: torch's messages for operands of different types (matmul, linear, conv, addmm, ...)
_DTYPE_WORDS = ("same dtype", "scalar type", "Input type", "should be the same", "dtype of")


def _generated_frame(error: BaseException) -> tuple[int, str]:
    """The innermost frame of generated source in the traceback: its line number and code (``0, ""``: none)."""
    found = (0, "")
    tb = error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith("<ncd-generated"):
            found = (tb.tb_lineno, linecache.getline(filename, tb.tb_lineno).strip())
        tb = tb.tb_next
    return found


def _box_at(module: torch.nn.Module, code: str) -> Box | None:
    """The box whose op printed the generated line ``code`` (``None``: glue, or no program kept)."""
    program = vars(module).get("ncd_program")
    if program is None or not code:
        return None
    for _, op in program.ops():
        if op.box is not None and any(line.strip() == code for line in op.lines()):
            box: Box = op.box
            return box
    return None


def _box_text(box: Box | None) -> str:
    return f" box {box.text()}" if box is not None else ""


def explain(module: torch.nn.Module, args: tuple[Any, ...], error: BaseException, what: str) -> NCDError:
    """The ncd error to raise for ``error``, raised by running ``module`` (a lowered diagram, class ``what``) on
    ``args``."""
    lineno, code = _generated_frame(error)
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    where = f" at generated line {lineno} `{code[:120]}`" if lineno else ""
    plain = RunError(f"running {what}{where}: {type(error).__name__}: {message}")
    if not isinstance(error, (RuntimeError, IndexError)):
        return plain
    diagram = vars(module).get("ncd_diagram")
    dom = diagram.dom if diagram is not None else None
    box = _box_at(module, code)
    if any(word in message for word in _DTYPE_WORDS) and dom is not None:
        return _dtype_error(module, args, dom, box, where, message) or plain
    if "index out of range" in message and box is not None:
        ranges = [seg.range for seg in box.dom if seg.dtype == "index" and seg.range is not None]
        if ranges:
            names = ", ".join(size_text(r) for r in ranges)
            return RunError(f"running {what}:{_box_text(box)} reads an index out of its range: indices must be"
                            f" whole numbers from 0 to below {names} (its vocabulary or table size){where}"
                            f" ({type(error).__name__}: {message})")
    return plain


def _dtype_error(module: torch.nn.Module, args: tuple[Any, ...], dom: Any, box: Box | None, where: str,
                 message: str) -> InputError | None:
    """An input whose type differs from the module's (one) floating type of parameters, if there is one."""
    kinds = {p.dtype for p in module.parameters() if p.dtype.is_floating_point or p.dtype.is_complex}
    if len(kinds) != 1:
        return None
    (expected,) = kinds
    for j, (x, seg) in enumerate(zip(args, dom)):
        if isinstance(x, torch.Tensor) and seg.dtype == "float" and x.dtype != expected:
            names = " ".join(a.name for a in seg)
            fix = f"x.to({expected})" + (f" or the module: module.to({x.dtype})"
                                          if x.dtype.is_floating_point or x.dtype.is_complex else "")
            return InputError(f"input {j} ('{names}') is {x.dtype}, but{_box_text(box) or ' the module'} computes in"
                              f" {expected}, the type of the module's parameters: convert the input, {fix}{where}"
                              f" ({message})")
    return None
