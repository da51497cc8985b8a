"""Inference from the diagram: the prefill and one-token step of a causal model, its caches and their bytes.

``ncd.decode(diagram)`` derives, from a causal diagram, a **prefill** diagram and a **step**
diagram whose caches are explicit saved/loaded wires (see :mod:`ncd.inference.derive`);
``cache_bytes`` counts the bytes one token adds to them.
"""

from __future__ import annotations

from ncd.inference.decoding import Decoding, decode
from ncd.inference.derive import CacheSite, DecodeError

__all__ = ["decode", "Decoding", "CacheSite", "DecodeError"]
