"""Pattern fusion during lowering (softmax-then-contract attention -> SDPA)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ncd.ir.diagram import Diagram

if TYPE_CHECKING:
    from ncd.torch.codegen import ClassEmitter, Codegen
    from ncd.torch.rules import Value

Emit = Callable[["Codegen", "ClassEmitter", "list[Value]"], "list[Value]"]


def match_attention(parts: list[Diagram], k: int) -> tuple[int, Emit] | None:
    """If ``parts[k:]`` starts with an attention pattern, its length and emitter."""
    return None
