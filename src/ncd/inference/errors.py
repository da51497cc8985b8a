"""The error of :mod:`ncd.inference`."""

from __future__ import annotations

from ncd.errors import NCDError

__all__ = ["DecodeError"]


class DecodeError(NCDError):
    """A diagram cannot be decoded token by token as asked (not causal, or an unsupported mixing)."""
