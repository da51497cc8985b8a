"""A primitive's size symbols are every symbol its fields hold, however deeply nested in tuples."""

from __future__ import annotations

import dataclasses

import sympy

import ncd
from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.primitive import map_values
from ncd.zoo import attention, gpt2, mlp, unet


def _symbols_read_field_by_field(prim: object) -> set[sympy.Symbol]:
    """Each field's leaves read through ``map_values`` and printed sizes parsed back (no shared code path)."""
    found: set[sympy.Symbol] = set()

    def leaf(v: object) -> object:
        if isinstance(v, Type):
            segments = list(v)
        elif isinstance(v, Segment):
            segments = [v]
        else:
            segments = []
        for seg in segments:
            for a in seg:
                found.update(a.size.free_symbols)
            if seg.range is not None:
                found.update(seg.range.free_symbols)
        if isinstance(v, Axis):
            found.update(v.size.free_symbols)
        elif isinstance(v, sympy.Basic):
            found.update(v.free_symbols)
        return v

    for f in dataclasses.fields(prim):  # type: ignore[arg-type]
        map_values(getattr(prim, f.name), leaf)
    return found


def test_free_symbols_of_every_primitive_in_zoo_diagrams_are_its_fields_symbols() -> None:
    diagrams = [gpt2(), attention(), mlp(), unet(), ncd.Linear("~x m -> ~x n") >> ncd.Softmax("n")]
    seen = 0
    for d in diagrams:
        for box in d.boxes():
            assert box.prim.free_symbols() == _symbols_read_field_by_field(box.prim), box.prim
            seen += 1
    assert seen > 20
    assert any(box.prim.free_symbols() for d in diagrams for box in d.boxes())  # symbolic sizes were met


def _symbols_walked(d: ncd.Diagram) -> set[sympy.Symbol]:
    """Every node's own symbols as ``Diagram.walk`` reaches them (a repeat's body without its variable)."""
    found: set[sympy.Symbol] = set()
    for node in d.walk():
        found |= node._own_symbols()
    return found


def _mha_traced() -> ncd.Diagram:
    import warnings

    import torch

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(torch.nn.MultiheadAttention(16, 4).eval(), *([torch.randn(5, 2, 16)] * 3))


def test_free_symbols_reads_shared_nodes_once_and_equals_the_walk() -> None:
    from ncd.zoo import MODELS

    diagrams = [make() for make in MODELS.values()]
    traced = _mha_traced()
    diagrams += [traced, traced.body, ncd.Linear("~x m -> ~x n") >> ncd.Softmax("n")]
    # a repeat inside a repeat, whose range holds the outer variable
    diagrams.append(ncd.repeat(lambda i: ncd.repeat(ncd.Linear("m -> m"), "j", i, "N") >> ncd.Linear("m -> m"), "i", 0, "L"))
    assert any(d.free_symbols for d in diagrams) and {"b", "t"} <= {str(s) for s in traced.free_symbols}
    for d in diagrams:
        assert d.free_symbols == _symbols_walked(d), d
    # parts asked first: the whole reads their kept symbols, and gets what the walk gets
    parts = gpt2()
    for node in list(parts.walk())[::3]:
        if type(node).walk is ncd.Diagram.walk:
            assert node.free_symbols == _symbols_walked(node)
    assert parts.free_symbols == _symbols_walked(parts)


def test_a_repeats_walk_shadows_exactly_the_nodes_reading_its_variable() -> None:
    from ncd.ir.repetition import _Shadow
    from ncd.ir.size import symbol

    linear = ncd.Linear("m -> m")
    repeats = [
        ncd.repeat(linear, "i", 0, "N"),  # the body reads no variable: its nodes as they are
        ncd.repeat(lambda i: ncd.repeat(linear, "j", i, "N") >> linear, "i", 0, "L"),  # the inner range reads i
        ncd.repeat(lambda i: ncd.Linear("m -> h:2*i+2") >> ncd.Linear("h:2*i+2 -> m"), "i", 0, "N"),  # its boxes do
        ncd.repeat(ncd.repeat(linear, "i", 0, "N"), "i", 0, "L"),  # the inner repeat binds the same variable
        _mha_traced().body,
    ]
    for r in repeats:
        for d in [node for node in r.walk() if isinstance(node, ncd.Repeat)]:
            i = symbol(d.var)
            walked = list(d.walk())[1:]
            inner = list(d.body.walk())
            assert len(walked) == len(inner)
            for got, node in zip(walked, inner):
                if isinstance(got, _Shadow):  # a node of the body that reads the variable, seen from outside
                    assert got.node is node and i in node._own_symbols() and i not in got._own_symbols()
                else:
                    assert got is node and (isinstance(node, ncd.Repeat) or i not in node._own_symbols())
    assert any(isinstance(node, _Shadow) for node in repeats[2].walk())
    assert not any(isinstance(node, _Shadow) for node in repeats[0].walk())
