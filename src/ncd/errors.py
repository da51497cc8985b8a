"""Every error ``ncd`` raises, and the helpers that word them.

All errors derive from :class:`NCDError`; they name the box, the axes and the sizes,
and, where a box is involved, the user's line that built it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NCDError",
    "ParseError",
    "SizeError",
    "TypeMismatchError",
    "SchemaError",
    "LoweringError",
    "InputError",
    "TraceError",
    "SourceLocation",
    "user_location",
]


class NCDError(Exception):
    """Base class of all errors raised by ``ncd``."""


class ParseError(NCDError, ValueError):
    """A text form (type, size, einsum or linear spec) could not be read."""


class SizeError(NCDError, ValueError):
    """A size is unbound, not a whole number, or contradicts another size."""


class TypeMismatchError(NCDError, TypeError):
    """Two diagrams were composed whose types do not match."""


class SchemaError(NCDError, ValueError):
    """A serialised diagram is malformed or of an unsupported version."""


class LoweringError(NCDError):
    """A diagram cannot be lowered to PyTorch as asked."""


class InputError(NCDError, ValueError):
    """Tensors given to a lowered module do not match the diagram's domain."""


class TraceError(NCDError):
    """A PyTorch model cannot be turned into a diagram (e.g. data-dependent control flow)."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class SourceLocation:
    """Where user code built a box."""

    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"

    def to_list(self) -> list[Any]:
        return [self.file, self.line, self.function]


def user_location() -> SourceLocation | None:
    """The innermost stack frame outside the ``ncd`` package (the user's line)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR + os.sep) or os.sep + "zoo" + os.sep in filename[len(_PACKAGE_DIR):]:
            return SourceLocation(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back  # type: ignore[assignment]
    return None
