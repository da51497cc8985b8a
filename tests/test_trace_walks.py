"""The module walks read from the recording's :class:`ncd.trace.walk._Walk` equal torch's own (``parameters()``,
``named_parameters``, ``modules()``), on models sharing modules and parameters and on classes overriding the walks."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ncd.trace.other_sizes import _state
from ncd.trace.params import unread
from ncd.trace.undo import Undo
from ncd.trace.walk import _Walk


class Shared(torch.nn.Module):
    """A block used twice, a weight tied across two layers, a buffer, a module held under two names."""

    def __init__(self) -> None:
        super().__init__()
        block = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
        self.first, self.again = block, block
        self.head = torch.nn.Linear(4, 4)
        self.tail = torch.nn.Linear(4, 4)
        self.tail.weight = self.head.weight
        self.nested = torch.nn.ModuleList([self.head, torch.nn.Linear(4, 2)])
        self.register_buffer("scale", torch.ones(4))


class OnlySome(Shared):
    """Its class hides a parameter from ``parameters()``: read through torch's methods, not the walk."""

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        return (p for p in super().parameters(recurse) if p.dim() == 2)


class Tells(torch.nn.Linear):
    """Modules equal by their shape (a hash of its own): ``modules()`` keeps one of each."""

    def __hash__(self) -> int:
        return hash((self.in_features, self.out_features))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tells) and (self.in_features, self.out_features) == (other.in_features, other.out_features)


def _models() -> list[torch.nn.Module]:
    told = torch.nn.Sequential(Tells(3, 3), Tells(3, 3), torch.nn.Linear(3, 3))
    return [Shared(), OnlySome(), told, torch.nn.Linear(2, 2)]


def test_state_from_the_walk_is_parameters_then_buffers_as_torch_gives_them() -> None:
    for model in _models():
        want = tuple(id(t) for t in (*model.parameters(), *model.buffers()))
        assert _state(model, _Walk(model)) == want
        assert _state(model) == want


def test_unread_from_the_walk_names_what_named_parameters_names() -> None:
    for model in _models():
        named = list(model.named_parameters(remove_duplicate=False))
        got = unread(model, ((named[0][1],),), _Walk(model))
        assert [(n, id(p)) for n, p in got] == [(n, id(p)) for n, p in named if p is not named[0][1]]


def test_undo_keeps_the_modules_modules_gives() -> None:
    for model in _models():
        want = list(model.modules())
        got = [m for m, *_ in Undo(model, _Walk(model)).tables]
        assert len(got) == len(want) and all(a is b for a, b in zip(got, want))
