"""Red team, stop 50: random draws the trace held silently, and an opaque draw whose overload is a Python keyword.

* ``torch.zeros(n).normal_()`` (and ``nn.init.normal_`` / ``kaiming_normal_`` / ``orthogonal_`` on a tensor made in
  the forward) is captured by ``torch.export`` as ``normal_functional``, which the list of random operators did not
  name: the diagram held the numbers drawn while tracing with no warning, where ``uniform_`` was warned about.
* ``x.clone().random_(0, 5)`` is an opaque ``aten.random.from`` box: its lowered source ``torch.ops.aten.random.from(...)``
  was a SyntaxError at ``to_torch``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import ncd


class Draws(nn.Module):
    def __init__(self, draw: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.draw = draw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.draw(torch.zeros(4, 3))


@pytest.mark.parametrize("name,draw", [
    ("normal_", lambda t: t.normal_()),
    ("normal_(0, 2)", lambda t: t.normal_(0, 2)),
    ("init.normal_", lambda t: nn.init.normal_(t)),
    ("init.kaiming_normal_", lambda t: nn.init.kaiming_normal_(t)),
    ("uniform_", lambda t: t.uniform_()),
])
def test_a_draw_into_a_tensor_made_in_the_forward_is_warned_about(name: str, draw: Callable[..., torch.Tensor]) -> None:
    x = torch.randn(4, 3)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        d = ncd.trace(Draws(draw), x)
    assert any("the model draws random numbers" in str(w.message) for w in said), [str(w.message) for w in said]
    lowered = d.to_torch()
    torch.testing.assert_close(lowered(x), lowered(x))  # held, as the warning says


class DrawsFrom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x.clone().random_(0, 5)


def test_an_opaque_draw_whose_overload_is_a_python_keyword_lowers_and_draws_anew() -> None:
    x = torch.zeros(64, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(DrawsFrom(), x)
        lowered = d.to_torch()  # SyntaxError: torch.ops.aten.random.from(...)
        first, second = lowered(x), lowered(x)
    assert d.opaque_count == 1
    assert not torch.equal(first, second)  # an opaque box drawing anew at every call, as the model does
    for y in (first, second):
        assert y.min() >= 0 and y.max() <= 4 and torch.equal(y, y.round())
        assert set(y.unique().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    namespace: dict[str, object] = {}
    exec(compile(d.to_source(), "<source>", "exec"), namespace)  # the source names the overload by getattr too


class SamplesDirichlet(nn.Module):
    def __init__(self, live: bool) -> None:
        super().__init__()
        self.live = live

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        concentration = x.exp() if self.live else torch.ones(4, 3)
        return torch.distributions.Dirichlet(concentration).sample() + x  # a custom autograd.Function drawing


class Doubles(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx: object, g: torch.Tensor) -> torch.Tensor:
        return g  # not the forward's gradient: boxed


class CallsDoubles(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Doubles.apply(torch.ones(4, 3)) + Doubles.apply(x)


@pytest.mark.parametrize("live", [False, True])
def test_a_custom_function_that_draws_random_numbers_is_warned_about(live: bool) -> None:
    # its forward runs unrecorded: on constants the diagram held its sample with no word of a draw
    x = torch.randn(4, 3)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        d = ncd.trace(SamplesDirichlet(live), x)
    drew = [str(w.message) for w in said if "the model draws random numbers" in str(w.message)]
    assert len(drew) == 1 and "_Dirichlet" in drew[0], [str(w.message) for w in said]
    assert ("inside _Dirichlet" in drew[0]) == live  # a box drawing anew, or the numbers held
    lowered = d.to_torch()
    assert torch.equal(lowered(x), lowered(x)) != live
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        ncd.trace(CallsDoubles(), x)  # a Function drawing nothing: no such warning
    assert not any("random" in str(w.message) for w in said), [str(w.message) for w in said]


class DropsConstant(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.nn.functional.dropout(torch.ones(4, 3), 0.5, training=True)


def test_a_dropout_of_a_constant_is_said_to_be_held_not_drawn_anew() -> None:
    # the warning said "opaque boxes drawing anew at every call" of a dropout whose result the diagram holds
    x = torch.randn(4, 3)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        d = ncd.trace(DropsConstant(), x)
    drew = [str(w.message) for w in said if "the model draws random numbers" in str(w.message)]
    assert len(drew) == 1 and "the diagram holds the numbers drawn while tracing" in drew[0], drew
    lowered = d.to_torch()
    assert d.opaque_count == 0 and torch.equal(lowered(x), lowered(x))
