"""Names that cannot mislead: user text checked on the way in, Python identifiers on the way out.

Box labels, block names and axis names come from users and from files.  On the way in
:func:`check_text` refuses control characters, terminal escapes, lone surrogates and
bidirectional overrides (they corrupt SVG, TikZ and terminals) and over-long text.  On the way
out, every identifier written into generated code goes through :func:`python_name` /
:func:`class_name`, which normalise it exactly as Python's parser will (NFKC), so two names that
differ on the page never become one variable, weight or class once the generated code is
compiled, and keywords, builtins and the generated module's own names are never shadowed.

>>> python_name("ｘ"), python_name("W₁"), python_name("L²"), python_name("ℓ"), python_name("class")
('x', 'w1', 'l2', 'l', 'class_')
>>> python_name("sum"), python_name("3 heads"), class_name("Ａct"), class_name("my block")
('sum_', 'x_3_heads', 'Act', 'MyBlock')
>>> python_name("x̃"), python_name("L̂ᵀ"), class_name("W̅ block")
('x', 'l_t', 'WBlock')
"""

from __future__ import annotations

import builtins
import keyword
import re
import unicodedata

from ncd.errors import ParseError
from ncd.limits import limits

__all__ = ["check_text", "python_name", "class_name", "RESERVED"]

#: Names the generated module itself uses; a variable must not shadow them.
RESERVED = frozenset({"self", "torch", "nn", "F", "store", "super"}) | frozenset(dir(builtins))
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def check_text(text: object, what: str) -> str:
    """``text`` if it is a string fit to be a name, label or title; else :class:`~ncd.errors.ParseError`.

    >>> check_text("L^Q", "a label")
    'L^Q'
    >>> check_text("evil\\x1b[2J", "a block name")
    Traceback (most recent call last):
    ncd.errors.ParseError: a block name must not contain control characters or terminal escapes: 'evil\\u001b[2J'
    """
    if not isinstance(text, str):
        raise ParseError(f"{what} must be a string, not {type(text).__name__}")
    if len(text) > limits().string:
        raise ParseError(f"{what} has {len(text)} characters, more than the limit of {limits().string}"
                         " (string in ncd.limits)")
    if _BAD.search(text):
        shown = _BAD.sub(lambda m: f"\\u{ord(m.group()):04x}", text)[:80]
        raise ParseError(f"{what} must not contain control characters or terminal escapes: '{shown}'")
    return text


def _ascii_word(text: str) -> str:
    """NFKC, then everything that is not a letter, digit or underscore of an identifier becomes ``_``."""
    text = unicodedata.normalize("NFKC", text.replace("₊", "_plus").replace("^", "_"))
    out: list[str] = []
    for char in text:
        if (char.isascii() and (char.isalnum() or char == "_")) or (
            not char.isascii() and char.isalnum() and ("a" + char).isidentifier()
            and unicodedata.normalize("NFKC", char) == char
        ):  # ASCII, or a letter Python keeps as it is (Greek, Cyrillic, ...); not a combining mark (``x̃``, ``L̂``):
            out.append(char)  # an identifier to Python, but no word character to the code's own regular expressions
        elif not out or out[-1] != "\0":
            out.append("\0")  # a run of anything else becomes one underscore
    return "".join(out).replace("\0", "_")


def python_name(text: str, default: str = "x") -> str:
    """A lower-case variable or attribute name for ``text``, already in the form Python reads it in."""
    name = _ascii_word(text).strip("_").lower()
    name = unicodedata.normalize("NFKC", name)  # lower() may leave a non-normal form
    if not name or not name.isidentifier():
        name = default + ("_" + name if name else "")
        if not name.isidentifier():
            name = default
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in RESERVED:
        name += "_"
    return name


def class_name(title: str, default: str = "Block") -> str:
    """A CamelCase class name for a block title, already in the form Python reads it in."""
    parts = [p for p in _ascii_word(title).split("_") if p]
    base = unicodedata.normalize("NFKC", "".join(p[:1].upper() + p[1:] for p in parts)) or default
    if not base.isidentifier():
        base = default + base
        if not base.isidentifier():
            base = default
    if keyword.iskeyword(base) or base in RESERVED:
        base += "_"
    return base
