"""Element types for inference: bytes per element, and which ones torch can hold.

>>> element_bytes("bfloat16"), element_bytes("int4"), element_bytes("fp8")
(2, 1/2, 1)
"""

from __future__ import annotations

import sympy

from ncd.errors import NCDError

__all__ = ["ELEMENT_TYPES", "element_bytes", "canonical", "torch_dtype"]

#: bytes per element of every element type a policy may name
ELEMENT_TYPES: dict[str, sympy.Rational] = {
    "float64": sympy.Integer(8),
    "float32": sympy.Integer(4),
    "bfloat16": sympy.Integer(2),
    "float16": sympy.Integer(2),
    "float8": sympy.Integer(1),
    "int8": sympy.Integer(1),
    "int4": sympy.Rational(1, 2),
}

_ALIASES = {
    "fp64": "float64", "double": "float64", "fp32": "float32", "float": "float32", "bf16": "bfloat16",
    "fp16": "float16", "half": "float16", "fp8": "float8", "float8_e4m3fn": "float8", "e4m3": "float8",
}

#: torch's name for each element type it can hold (int4 has none: it is packed two to a byte)
_TORCH = {
    "float64": "float64", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16",
    "float8": "float8_e4m3fn", "int8": "int8",
}


def canonical(dtype: str) -> str:
    """The canonical name of an element type (``bf16`` -> ``bfloat16``); an error names the known ones."""
    if not isinstance(dtype, str):
        raise NCDError(f"element type must be a name such as 'bfloat16', not {dtype!r}")
    name = _ALIASES.get(dtype.lower(), dtype.lower())
    if name not in ELEMENT_TYPES:
        raise NCDError(f"unknown element type {dtype!r}; known: {', '.join(ELEMENT_TYPES)} (and {', '.join(_ALIASES)})")
    return name


def element_bytes(dtype: str) -> sympy.Rational:
    """Bytes per element (``int4``: one half)."""
    return ELEMENT_TYPES[canonical(dtype)]


def torch_dtype(dtype: str) -> str | None:
    """torch's dtype name for ``dtype`` (``None`` when torch has no such tensor type, as for int4)."""
    return _TORCH.get(canonical(dtype))
