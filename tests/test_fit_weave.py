"""Fitting a box to the wires it reads (``ncd.ir.compose.fit``) builds its weaves without repeating the checks of
``Weave``'s construction that hold by how the positions are computed: the weaves must be those that the checked
constructor builds (equal, the same types, the same nesting), and every error must be the one it raises."""

from __future__ import annotations

from typing import Any

import pytest

import ncd
from ncd.ir.compose import fit
from ncd.ir.diagram import Diagram, Weave
from ncd.limits import override


def _checked(diagram: Diagram) -> Diagram:
    """``diagram`` with every weave rebuilt through ``Weave(...)`` (all checks run), inside out."""
    if isinstance(diagram, Weave):
        return Weave(_checked(diagram.inner), diagram.axis, diagram.dom_pos, diagram.cod_pos)
    return diagram


def _weaves(diagram: Diagram) -> list[Weave]:
    found = []
    while isinstance(diagram, Weave):
        found.append(diagram)
        diagram = diagram.inner
    return found


CASES: list[tuple[Any, str, str]] = [  # the box, the wires it reads, its outputs woven (woven axes keep their side)
    (lambda: ncd.LayerNorm("m"), "b t m", "b t m"),  # the usual fit: axes in front of the box's own
    (lambda: ncd.Linear("m -> n"), "b m", "b n"),
    (lambda: ncd.Softmax("k"), "b h q k", "b h q k"),
    (lambda: ncd.Linear("m -> n"), "m b", "n b"),  # after the box's own axes
    (lambda: ncd.Linear("m -> n"), "b m t", "b n t"),  # on both sides
    (lambda: ncd.Einsum("q k, k v -> q v"), "b h q k, b h k v", "b h q v"),
    (lambda: ncd.Einsum("q k, k v -> q v"), "b h q k, k v", "b h q v"),  # inner broadcasting: the second is shared
    (lambda: ncd.Einsum("q k, k v -> q v"), "h q k, b k v", "h b q v"),  # each input carries an axis of its own
    (lambda: ncd.LayerNorm("m") @ ncd.Softmax("k"), "b t m, b k", "b t m, b k"),  # in parallel, part by part
    (lambda: ncd.Linear("m -> m") >> ncd.LayerNorm("m"), "b t m", "b t m"),
    (lambda: ncd.Einsum("b b -> b"), "t b b", "t b"),  # a box whose input repeats an axis
    (lambda: ncd.Linear("m -> n") @ ncd.Linear("k -> v"), "b m, t k", "b n, t v"),
]


@pytest.mark.parametrize("build, target, out", CASES)
def test_a_fit_weaves_as_the_checked_constructor_does(build: Any, target: str, out: str) -> None:
    box = build()
    fitted, mapping = fit(box, ncd.parse_type(target))
    assert mapping == {}
    assert fitted.dom.same(ncd.parse_type(target)) and str(fitted.cod) == out
    again = _checked(fitted)
    assert again == fitted and again.dom == fitted.dom and again.cod == fitted.cod
    assert again.nesting() == fitted.nesting()
    for mine, theirs in zip(_weaves(fitted), _weaves(again)):
        assert list(vars(mine)) == list(vars(theirs))  # the same fields, set in the same order
        assert mine.dom is theirs.dom and mine.cod is theirs.cod  # shared types (their hashes made once)
    # the woven box computes what the box computes on each slice (the lowered module against the plain box)
    import torch

    sizes = {"b": 2, "t": 3, "h": 2, "q": 3, "k": 4, "v": 5, "m": 4, "n": 3}
    own = box.dom[0].axes if len(box.dom) == 1 else ()
    k = len(fitted.dom[0]) - len(box.dom[0])
    if len(box.dom) != 1 or len(box.cod) != 1 or fitted.dom[0].axes[k:] != own or fitted.cod[0].axes[k:] != box.cod[0].axes:
        return  # (the woven axes lead the input and the output: compared slice by slice below)
    bound: dict[str, Any] = {str(s): sizes[str(s)] for s in fitted.free_symbols}
    module = fitted.to_torch(**bound)
    plain = box.to_torch(**{name: n for name, n in bound.items() if name in {str(s) for s in box.free_symbols}})
    plain.load_state_dict(module.state_dict())
    x = torch.randn(*[sizes[a.name] for a in fitted.dom[0].axes])
    rows = x.reshape(-1, *x.shape[k:])
    want = torch.stack([plain(rows[i]) for i in range(rows.shape[0])])
    torch.testing.assert_close(module(x), want.reshape(*x.shape[:k], *want.shape[1:]))


@pytest.mark.parametrize("build, target, message", [
    # an output axis named like a woven one: the weave refuses, naming it
    (lambda: ncd.Linear("m -> n"), "n m", r"weave over n: segment 'n' of L.* already has an axis n"),
    (lambda: ncd.LayerNorm("b"), "b b", r"weave over b: segment 'b' of LN .* already has an axis b"),
    (lambda: ncd.Linear("m -> n"), "b k", r"axis m of the second is not in segment 0"),
    (lambda: ncd.Linear("m -> n"), "m b m", r"weave over m: segment 'm' of L.* already has an axis m"),
])
def test_a_fit_that_cannot_weave_raises_the_checked_error(build: Any, target: str, message: str) -> None:
    with pytest.raises(ncd.TypeMismatchError, match=message):
        fit(build(), ncd.parse_type(target))


def test_a_fit_past_the_nesting_limit_raises_as_the_checked_constructor() -> None:
    deep: Diagram = ncd.LayerNorm("m")
    for _ in range(3):
        deep = deep.block("B")
    target = ncd.parse_type("b t m")
    t, b = ncd.parse_type("t b").segments[0].axes
    with override(nesting=deep.nesting() + 1):  # one weave fits, the second is one too deep
        with pytest.raises(ncd.LimitError) as raised:
            fit(deep, target)
        with pytest.raises(ncd.LimitError) as checked:
            Weave(Weave(deep, t, (0,), (0,)), b, (0,), (0,))
    assert str(raised.value) == str(checked.value)
