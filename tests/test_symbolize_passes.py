"""``symbolize`` keeps a failed pass's work: the next pass rebuilds only what the names it learned reach.

Each case is a corpus model whose first pass fails at a junction (labels with ignored entries, positions read from
the input, argmax/argmin positions over 4 passes, attention over unfolded windows: 2 to 4 passes; nn.MultiheadAttention's
``(t, b*h, k)`` view and a decoder's masks no longer fail, their merges of ``b`` followed from the first pass).
Its result must be the one of passes made from scratch each
time (the walk before it kept anything): the same diagram, the same objects shared in it, the same boxes fixed at
the traced sizes in the same order.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from typing import Any

import pytest

import ncd
from tests.benchmarks import benchmark

corpus = benchmark("import_corpus")
symbolic = importlib.import_module("ncd.trace.symbolic")


def _from_scratch(body: ncd.Diagram, sizes: dict[str, int], merges: Any = None) -> tuple[Any, int]:
    """The passes of ``symbolize`` each made by a new walk, following what the failed ones learned (and the merges
    holding ``b``, ``t`` from the first); and their count."""
    names: dict[Any, Any] = {}
    ranges: dict[Any, Any] = {}
    for count in range(1, symbolic.PASSES + 2):
        walk = symbolic._Walk(body, sizes, True, symbolic._merged_sizes(merges, sizes) if merges else None,
                              at_once=False)
        walk._state[6].update(names)
        walk._state[7].update(ranges)
        try:
            return walk.run(), count
        except ncd.NCDError as error:
            if count > symbolic.PASSES or not walk.learned[0] and not walk.learned[1]:
                return ("error", str(error)), count
            names.update(walk.learned[0])
            ranges.update(walk.learned[1])
        finally:
            walk.close()
    raise AssertionError("unreachable")


def _sharing(root: Any) -> list[int]:
    """The places where an object already met stands again (by first-met index): equal results sharing alike."""
    ids: dict[int, int] = {}
    seq: list[int] = []
    stack = [root]
    while stack:
        v = stack.pop()
        if isinstance(v, (str, int, float, bool, type(None))) or type(v).__module__.startswith("sympy"):
            continue
        if id(v) in ids:
            seq.append(ids[id(v)])
            continue
        ids[id(v)] = len(ids)
        seq.append(-1)
        if isinstance(v, tuple):
            stack.extend(reversed(v))
        elif dataclasses.is_dataclass(v):
            stack.extend(reversed([getattr(v, f.name) for f in dataclasses.fields(v)]))
    return seq


@pytest.mark.parametrize("name", ["torch.ignored_labels", "torch.position_reads", "torch.arg_extrema",
                                  "torch.local_unfold_attention", "torch.gated_conv_lm"])
def test_symbolize_equals_passes_from_scratch(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = next(e for e in corpus.torch_entries() if e.name == name)
    _, built = corpus.build_one(entry)
    seen: list[tuple[Any, dict[str, int], Any]] = []
    kept = symbolic.symbolize

    def spy(body: ncd.Diagram, sizes: dict[str, int], merges: Any = None, found: Any = None, where: Any = None) -> Any:
        seen.append((body, dict(sizes), merges))
        return kept(body, sizes, merges, found, where)

    monkeypatch.setattr(symbolic, "symbolize", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(built.model, **built.inputs)
    (body, sizes, merges), = seen
    want, passes = _from_scratch(body, sizes, merges)
    assert passes > 1  # a pass failed: the next one kept its work
    try:
        got: Any = kept(body, sizes, merges)
    except ncd.NCDError as error:
        got = ("error", str(error))
    assert got[0] == want[0] and got[1] == want[1]
    assert _sharing(got[0]) == _sharing(want[0])
    assert {"b", "t"} & {str(s) for s in traced.free_symbols}  # the trace drew the symbols


@pytest.mark.parametrize("name", ["torch.detr_decoder", "torch.arg_extrema", "torch.position_reads", "torch.gru",
                                  "torch.selective_scan", "torch.python_loop", "torch.cell_loop", "torch.gnn_index_add"])
def test_the_symbols_noted_hold_every_symbol_of_the_result(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``trace`` checks the result's symbols against the defaults by the ones ``symbolize`` notes (``found``) and walks
    the result only when one of those is no default: the noted ones must hold every symbol the result has, as
    :attr:`ncd.Diagram.free_symbols` finds them (ranges, scans' bodies, loops, sizes in fields)."""
    entry = next(e for e in corpus.torch_entries() if e.name == name)
    _, built = corpus.build_one(entry)
    seen: list[tuple[Any, set[Any]]] = []
    kept = symbolic.symbolize

    def spy(body: ncd.Diagram, sizes: dict[str, int], merges: Any = None, found: Any = None, where: Any = None) -> Any:
        noted: set[Any] = set() if found is None else found
        new, fixed = kept(body, sizes, merges, noted, where)
        seen.append((new, noted))
        return new, fixed

    monkeypatch.setattr(symbolic, "symbolize", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ncd.trace(built.model, **built.inputs)
        except ncd.TraceError:
            pass
    for new, noted in seen:
        assert new.free_symbols <= noted, (name, new.free_symbols - noted)


def _from_scratch_falling_back(body: ncd.Diagram, sizes: dict[str, int], merges: Any = None) -> Any:
    """``symbolize`` made of walks from scratch: passes with renames, each a new walk following what the failed ones
    learned; when the last fails after a view renamed a wire, passes without renames from the last pass before the
    first that renamed, following what the passes before it learned."""
    follow = symbolic._merged_sizes(merges, sizes) if merges else None
    names: dict[Any, Any] = {}
    ranges: dict[Any, Any] = {}
    saved: tuple[int, dict[Any, Any], dict[Any, Any]] | None = None
    renamed = False
    for renames in (True, False):
        start = 0
        if not renames:
            assert saved is not None
            start, names, ranges = saved[0], dict(saved[1]), dict(saved[2])
        for n in range(start, symbolic.PASSES + 1):
            if renames and not renamed:
                saved = (n, dict(names), dict(ranges))
            walk = symbolic._Walk(body, sizes, renames, follow, at_once=False)
            walk._state[6].update(names)
            walk._state[7].update(ranges)
            try:
                result = walk.run()
                if n == symbolic.PASSES or not walk.learns_anew():
                    return result
            except ncd.NCDError as error:
                if n == symbolic.PASSES or not walk.learned[0] and not walk.learned[1]:
                    if renames and (renamed or walk.renamed):
                        break
                    return ("error", str(error))
            finally:
                renamed = renamed or walk.renamed
                names.update(walk.learned[0])
                ranges.update(walk.learned[1])
                walk.close()
    raise AssertionError("unreachable")


@pytest.mark.parametrize("name", ["torch.int_bool_inputs", "torch.selective_scan"])
def test_passes_without_renames_keep_what_the_passes_with_renames_rebuilt_alike(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the passes with renames fail (here capped at one follow), the passes without them go on from the state
    before the first view renamed, keeping the values rebuilt since that no rename or later lesson reaches: the
    result must be the one of walks from scratch, with the same objects shared and the same boxes fixed."""
    entry = next(e for e in corpus.torch_entries() if e.name == name)
    _, built = corpus.build_one(entry)
    monkeypatch.setattr(symbolic, "PASSES", 1)
    seen: list[tuple[Any, dict[str, int], Any]] = []
    kept = symbolic.symbolize
    handed: list[int] = []
    hand_over = symbolic._Walk.hand_over

    def spy(body: ncd.Diagram, sizes: dict[str, int], merges: Any = None, found: Any = None, where: Any = None) -> Any:
        seen.append((body, dict(sizes), merges))
        return kept(body, sizes, merges, found, where)

    def counted(self: Any, other: Any, state: Any) -> None:
        handed.append(len(self._state[0]))
        hand_over(self, other, state)

    monkeypatch.setattr(symbolic, "symbolize", spy)
    monkeypatch.setattr(symbolic._Walk, "hand_over", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ncd.trace(built.model, **built.inputs)
    (body, sizes, merges), = seen
    handed.clear()
    got: Any = kept(body, sizes, merges)
    assert handed and handed[0] > 0  # the passes with renames failed and handed their values over
    want = _from_scratch_falling_back(body, sizes, merges)
    assert got[0] == want[0] and got[1] == want[1]
    assert _sharing(got[0]) == _sharing(want[0])
