"""Size keywords of ``to_torch`` that name an axis the diagram sizes from others (``Concat``'s ``c:a+b``,
``Unbind``'s ``m:h*k``) are checked against what the others give it, as a number-sized axis already was."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import ncd


@pytest.mark.parametrize(("diagram", "sizes", "axis"), [
    (ncd.Concat("a, b -> c"), {"a": 1, "b": 1, "c": 5}, "c"),  # c is a+b = 2
    (ncd.Unbind("m -> h k"), {"m": 6, "h": 4, "k": 2}, "m"),  # m is h*k = 8
])
def test_a_size_the_others_fix_is_refused_at_another_value(diagram: ncd.Diagram, sizes: dict[str, Any],
                                                            axis: str) -> None:
    """``to_torch(c=5)`` for an axis the diagram sizes as ``a+b`` (or ``h*k``): before, the keyword was taken and
    ignored, and the module ran at a+b = 2 (or said the input should have m=8 after the user gave m=6)."""
    with pytest.raises(ncd.SizeError, match=rf"axis {axis} has size \d+ in the diagram, so {axis}={sizes[axis]}"):
        diagram.to_torch(**sizes)
    consistent = {**sizes, axis: 2 if axis == "c" else 8}
    module = diagram.to_torch(**consistent)  # at the value it has, the keyword is still accepted
    if axis == "c":
        x, y = torch.randn(1), torch.randn(1)
        torch.testing.assert_close(module(x, y), torch.cat([x, y]), rtol=0, atol=0)
    else:
        x = torch.randn(2, 8)
        torch.testing.assert_close(module(x), x.view(2, 4, 2), rtol=0, atol=0)
