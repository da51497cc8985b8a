"""Generated source computes nothing it does not read (``ncd.torch.unread``): an unread pure op is dropped, an impure
one (a random draw, a module call) stays as a statement, and no local is assigned and never read.

Checked against the models themselves (the lowered module equals the model), against torch's random stream (a draw
nothing reads is still drawn) and by reading the generated source with :mod:`ast`.
"""

from __future__ import annotations

import ast
import importlib.util
import linecache
import pathlib
import sys
import warnings

import pytest
import torch

import ncd

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "import_corpus.py"
if "import_corpus" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("import_corpus", _PATH)
    assert _spec is not None and _spec.loader is not None
    sys.modules["import_corpus"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["import_corpus"])
corpus = sys.modules["import_corpus"]

#: corpus models whose diagrams compute values nothing reads: the states an LSTM, GRU or RNN returns beside its outputs,
#: a maximum's positions (``x.max(dim).values``, ``amax``), a sort's values beside its positions, sums a loss computes
#: twice, a reshape the model makes and drops, a block output nobody reads; and a mixture of experts (top-k read whole)
SUBSET = ["torch.lstm", "torch.gru", "torch.birnn_relu", "torch.embeddings", "torch.sort_topk", "torch.gnn_index_add",
          "torch.losses", "torch.elementwise", "torch.arg_extrema", "torch.rank_pooling", "torch.clip_loss",
          "torch.hand_norms", "torch.namedtuple_outputs", "mixtral"]


def unread_locals(source: str) -> list[tuple[str, str]]:
    """``(class, name)`` of every local a generated ``forward`` assigns and never reads (``_`` aside)."""
    found = []
    for cls in ast.parse(source).body:
        for fn in cls.body if isinstance(cls, ast.ClassDef) else ():
            if isinstance(fn, ast.FunctionDef) and fn.name == "forward":
                names = [n for n in ast.walk(fn) if isinstance(n, ast.Name)]
                read = {n.id for n in names if isinstance(n.ctx, ast.Load)}
                found += [(cls.name, n.id) for n in names if isinstance(n.ctx, ast.Store) and n.id not in read | {"_"}]
    return found


def runs_its_source(module: torch.nn.Module) -> bool:
    """Whether the module's forward was compiled from the text ``ncd_source`` holds."""
    filename = type(module).forward.__code__.co_filename
    return "".join(linecache.getlines(filename)) == module.ncd_source


@pytest.fixture(scope="module")
def entries() -> dict[str, object]:
    return {e.name: e for e in corpus.all_entries() if e.name in SUBSET}


@pytest.mark.parametrize("name", SUBSET)
def test_no_generated_local_is_assigned_and_never_read(name: str, entries: dict[str, object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, built = corpus.build_one(entries[name])
        assert built is not None, result.reason
        module = ncd.trace(built.model, **built.inputs).to_torch()
    assert unread_locals(module.ncd_source) == []
    assert runs_its_source(module)
    with torch.no_grad():
        got = module(*corpus._leaves(list(built.inputs.values())))
    diff, equal = corpus._max_diff(got, built.want)
    assert equal, diff


class Maximum(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.amax(-1), x.max(-2).values


def test_a_maximum_lowers_without_its_unread_positions() -> None:
    x = torch.randn(2, 5, 7)
    module = ncd.trace(Maximum(), x).to_torch()
    source = module.ncd_source
    assert "torch.amax(" in source and "torch.argmax(" not in source and ".indices" not in source
    for got, want in zip(module(x), Maximum()(x)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_unread_positions_of_a_top_k_are_not_read_and_read_ones_are_kept() -> None:
    values = ncd.Identity.of("b t") >> ncd.TopK("t", 2, "k") >> (ncd.ReLU() @ ncd.Delete("k:2 [t]"))
    positions = ncd.Identity.of("b t") >> ncd.TopK("t", 2, "k") >> (ncd.Delete("k:2") @ ncd.Identity.of("k:2 [t]"))
    x = torch.randn(3, 5)
    top = torch.topk(x, 2, dim=-1)
    module = values.to_torch(b=3, t=5)
    assert ".indices" not in module.ncd_source and unread_locals(module.ncd_source) == []
    torch.testing.assert_close(module(x), torch.relu(top.values), rtol=0, atol=0)
    module = positions.to_torch(b=3, t=5)
    assert ".values" not in module.ncd_source and unread_locals(module.ncd_source) == []
    assert torch.equal(module(x), top.indices)


def test_a_random_draw_nothing_reads_is_still_drawn() -> None:
    dropped = ncd.Identity.of("b m") >> ncd.Dropout(0.5) >> ncd.Delete("b m")
    d = ncd.Identity.of("b m") >> ncd.Copy("b m") >> (dropped @ ncd.ReLU())
    module = d.to_torch(b=4, m=6).train()
    assert "dropout" in module.ncd_source and unread_locals(module.ncd_source) == []
    x = torch.randn(4, 6)
    torch.manual_seed(3)
    out = module(x)
    after = torch.rand(8)
    torch.manual_seed(3)
    torch.nn.functional.dropout(x, 0.5, training=True)  # the draw the model makes, then the same next numbers
    torch.testing.assert_close(out, torch.relu(x))
    assert torch.equal(after, torch.rand(8))


@pytest.mark.parametrize("label", ["é", "ﬁ", "Δx", "µ", "名前"])
def test_a_box_named_with_letters_beyond_ascii_keeps_its_value(label: str) -> None:
    """A local named after a box with a non-ASCII label (``é = self.l_é(x)``) is a read where it is used: before, the
    reads were found with an ASCII-only pattern, so ``é`` looked unread, its assignment was dropped and the module
    raised NameError. Checked against the same linear maps written in torch."""
    diagram = ncd.Linear("m -> n", name=label) >> ncd.ReLU() >> ncd.Linear("n -> m", name=label + "2")
    module = diagram.to_torch(m=3, n=4)
    first, second = (m for m in module.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(2, 3)
    torch.testing.assert_close(module(x), second(torch.relu(first(x))), rtol=0, atol=0)
    namespace: dict[str, object] = {}
    exec(compile(diagram.to_source(m=3, n=4), "<ncd source>", "exec"), namespace)  # the printed source runs too
    printed = namespace["Diagram"]()
    assert isinstance(printed, torch.nn.Module)
    printed.load_state_dict(module.state_dict())
    torch.testing.assert_close(printed(x), module(x), rtol=0, atol=0)
