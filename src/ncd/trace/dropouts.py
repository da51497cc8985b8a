"""``nn.Dropout`` modules in eval mode recorded as the identity they compute: no call at all.

An ``nn.Dropout`` in eval mode returns its input (``F.dropout(x, p, training=False)`` is ``x``): torch's own forward
computes the identity, by construction.  Recorded, each call is a module block holding one ``aten.dropout`` the
converter draws as nothing — a Transformer layer has three, a ``transformers`` layer two to four.  While the recorder
runs, a call of an ``nn.Dropout`` whose forward is torch's own (not a subclass's, ``F.dropout`` not replaced), in eval
mode, with a probability torch accepts (``0 <= p <= 1``; torch raises on another, and so does the call then) and a
tensor input, returns that input unrecorded.  In training mode the module is recorded as it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["eval_dropouts"]

_DROPOUT = torch.nn.functional.dropout


@contextlib.contextmanager
def eval_dropouts() -> Iterator[None]:
    """While recording: ``nn.Dropout`` calls in eval mode are the identity (see the module doc)."""
    cls = torch.nn.Dropout
    original = cls.forward

    def forward(self: torch.nn.Dropout, input: Any) -> Any:
        if (type(self).forward is cls.forward and not self.training and isinstance(input, torch.Tensor)
                and isinstance(self.p, (int, float)) and 0.0 <= self.p <= 1.0
                and torch.nn.functional.dropout is _DROPOUT):
            return input
        return original(self, input)

    cls.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.forward = original  # type: ignore[method-assign]
