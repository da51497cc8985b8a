"""What every zoo entry shares: a top-level block named after the model, carrying its default sizes."""

from __future__ import annotations

from ncd.ir.diagram import Block, Diagram

__all__ = ["model"]


def model(name: str, body: Diagram, **defaults: int) -> Block:
    """Fence ``body`` as the model ``name`` whose ``meta['defaults']`` binds every size by default.

    ``ncd.zoo.<name>().to_torch()`` and ``.example_inputs()`` then work with no arguments,
    and any size can still be overridden at ``to_torch(**sizes)``.
    """
    return body.block(name, defaults=tuple((key, int(value)) for key, value in defaults.items()))
