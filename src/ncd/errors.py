"""Every error ``ncd`` raises, and the helpers that word them.

All errors derive from :class:`NCDError`; they name the box, the axes and the sizes,
and, where a box is involved, the user's line that built it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NCDError",
    "ParseError",
    "SizeError",
    "derived_size",
    "worded_later",
    "TypeMismatchError",
    "SchemaError",
    "LoweringError",
    "InputError",
    "TraceError",
    "LimitError",
    "RunError",
    "SourceLocation",
    "user_location",
    "printable",
    "display_path",
]

#: C0 and C1 control characters (tab and newline kept), DEL, lone surrogates and the Unicode bidirectional
#: overrides, which can make printed text lie about what it says; ANSI escape sequences are removed whole.
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|.?)")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: escape sequences and control characters removed.

    >>> printable("box \x1b[31mred\x1b[0m\x07 and \x1b]0;title\x07 done")
    'box red and  done'
    """
    return _CONTROL.sub("", _ESCAPE.sub("", text))


class NCDError(Exception):
    """Base class of all errors raised by ``ncd``.

    Its message is made safe to print: names read from files cannot smuggle terminal escapes.

    >>> str(NCDError("bad name 'x\x1b[2J'"))
    "bad name 'x'"
    """

    def __str__(self) -> str:
        return printable(super().__str__())


class ParseError(NCDError, ValueError):
    """A text form (type, size, einsum or linear spec) could not be read."""


class SizeError(NCDError, ValueError):
    """A size is unbound, not a whole number, or contradicts another size."""

    #: what a box refusing a size it holds derives from its inputs instead: ``(axis name, held, derived)``, the name
    #: None for an index range (a convolution's output axis ``t:11`` from an input ``t`` padded by 3: ``t + 3``);
    #: :func:`ncd.trace.symbolic.symbolize` follows such a name or range as the derived expression on its next pass
    derived: tuple[tuple[str | None, Any, Any], ...] = ()


class _Later:
    """An error's message, worded when first read (:func:`worded_later`); it reads, prints, copies and pickles as its
    text."""

    __slots__ = ("_word", "_text")

    def __init__(self, word: Callable[[], str]) -> None:
        self._word: Callable[[], str] | None = word
        self._text = ""

    def __str__(self) -> str:
        if self._word is not None:
            self._text, self._word = self._word(), None
        return self._text

    def __repr__(self) -> str:
        return repr(str(self))

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return str, (str(self),)


def worded_later(word: Callable[[], str]) -> Any:
    """An error's message that ``word()`` words when the message is first read: a box refusing sizes builds its text
    with sympy's printer (~0.5-1 ms a first print of a new expression), and the symbolic pass of a trace, which
    catches the refusal to learn from :attr:`SizeError.derived`, mostly never reads it.  ``word`` must read only
    values that do not change (the text is the one an eager message would have had).

    >>> error = SizeError(worded_later(lambda: "axis t of size " + str(3 + 4)))
    >>> str(error), repr(error)
    ('axis t of size 7', "SizeError('axis t of size 7')")
    """
    return _Later(word)


def derived_size(error: SizeError, *derived: tuple[str | None, Any, Any]) -> SizeError:
    """``error`` saying what the box derives (:attr:`SizeError.derived`) where it holds a number."""
    error.derived = tuple(derived)
    return error


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


class RunError(NCDError, RuntimeError):
    """A lowered module failed while running (torch's error is its ``__cause__``; the message names the line)."""


class LimitError(NCDError, ValueError):
    """A diagram exceeds a resource limit of :mod:`ncd.limits` (a size, a count, a depth, a memory budget)."""


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


def display_path(filename: str) -> str:
    """A source file as recorded in diagrams: relative to the working directory when inside it, else its base name.

    Diagrams are shared (JSON, HTML, SVG), so they never embed an absolute path of the building machine.

    >>> display_path(os.path.join(os.getcwd(), "models", "net.py")) == os.path.join("models", "net.py")
    True
    >>> display_path("/home/someone/secret/net.py")
    'net.py'
    >>> display_path(os.path.join(_PACKAGE_DIR, "zoo", "gallery.py")) == os.path.join("ncd", "zoo", "gallery.py")
    True
    """
    if filename.startswith("<") or not os.path.isabs(filename):
        return filename if ".." not in filename.split(os.sep) else os.path.basename(filename)
    if filename.startswith(_PACKAGE_DIR + os.sep):  # the gallery's own lines: ncd/zoo/...
        return os.path.relpath(filename, os.path.dirname(_PACKAGE_DIR))
    relative = os.path.relpath(filename, os.getcwd()) if os.path.isabs(os.getcwd()) else filename
    if relative.startswith(".." + os.sep) or relative == ".." or os.path.isabs(relative):
        return os.path.basename(filename)
    return relative


#: per code file and working directory: the file as recorded (:func:`display_path`), ``None`` for ncd's own files
_SHOWN: dict[tuple[str, str], str | None] = {}
#: the locations made so far (boxes built on one line share one immutable record)
_LOCATIONS: dict[tuple[str, int, str], SourceLocation] = {}


def _shown(filename: str) -> str | None:
    """``filename`` as recorded (:func:`display_path`), or ``None`` for a file of the ``ncd`` package (not the zoo)."""
    absolute = os.path.abspath(filename)
    if not absolute.startswith(_PACKAGE_DIR + os.sep) or os.sep + "zoo" + os.sep in absolute[len(_PACKAGE_DIR):]:
        return display_path(filename)
    return None


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` by this function's caller show the innermost frame outside the
    ``ncd`` package (the user's line calling ``ncd``), contextlib's frames passed over (a warning given as a context
    manager exits); for warnings given while only ``ncd`` runs between the user's call and the warning.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("shown here", stacklevel=user_stacklevel())
    >>> caught[0].filename == __file__ or caught[0].filename.startswith("<doctest")
    True
    """
    import contextlib

    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and (os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep)
                                        or frame.f_code.co_filename == contextlib.__file__):
        frame = frame.f_back
        level += 1
    return level


def user_location() -> SourceLocation | None:
    """The innermost stack frame outside the ``ncd`` package (the user's line).

    A box is built on every ``>>`` of a loop: each code file is placed once per working directory, and one
    record is kept per line.
    """
    frame = sys._getframe(1)
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed: place every file afresh
        cwd = ""
    while frame is not None:
        code = frame.f_code
        key = (code.co_filename, cwd)
        if key in _SHOWN:
            shown = _SHOWN[key]
        else:
            shown = _shown(code.co_filename)
            if cwd:
                if len(_SHOWN) >= 1 << 16:
                    _SHOWN.clear()
                _SHOWN[key] = shown
        if shown is not None:
            where = (shown, frame.f_lineno, code.co_name)
            found = _LOCATIONS.get(where)
            if found is None:
                if len(_LOCATIONS) >= 1 << 16:  # many notebook cells: start again
                    _LOCATIONS.clear()
                found = _LOCATIONS[where] = SourceLocation(*where)
            return found
        frame = frame.f_back  # type: ignore[assignment]
    return None
