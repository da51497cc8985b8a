"""A comparison of sizes a model makes in Python (``if x.shape[1] < 6``, transformers' ``kv_length >=
sliding_window``) is a guard (ncd.trace.size_guards): lowered where it comes out otherwise than traced, the model takes
another branch; the traced diagram checks it against its model, a pickle, a JSON read-back and a decoding without the
model refuse it, naming the line.  Before, a pickle and a read-back lowered the traced branch there (off the model,
the pickle's decoding with no word at all)."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import transformers as T  # noqa: N812  (a test dependency: its absence must fail, not skip)

import ncd
from ncd.inference.derive import DecodeError

SMALL: dict[str, Any] = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=64, vocab_size=50, max_position_embeddings=64, use_cache=False)


class Windowed(torch.nn.Module):
    """A running sum over at most 6 positions, written as a branch on the length."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] < 6:
            return x.cumsum(1)
        return x.cumsum(1) - torch.nn.functional.pad(x, (0, 0, 6, 0))[:, : x.shape[1]].cumsum(1)


class Clipped(torch.nn.Module):
    """``max(t, 5)``: the number chosen is the constant up to t = 5, the length past it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / max(x.shape[1], 5)


def _quiet(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f(*args, **kwargs)


@pytest.mark.parametrize("model", [Windowed(), Clipped()], ids=["branch", "max"])
def test_a_branch_on_a_size_lowers_where_it_holds_and_is_refused_where_it_flips(model: torch.nn.Module) -> None:
    d = _quiet(ncd.trace, model, torch.randn(2, 4, 3), axes="b t m")
    assert d.get("guards"), d.meta
    for back in (pickle.loads(pickle.dumps(d)), ncd.load_json(d.to_json())):
        for t in (2, 3):  # the traced branch: equal to the model
            x = torch.randn(3, t, 3)
            torch.testing.assert_close(_quiet(back.to_torch, b=3, t=t)(x), model(x))
        for t in (7, 9):  # another branch: refused, naming the line (the traced branch is off the model there)
            with pytest.raises(ncd.TraceError, match=r"test_trace_size_guards.py:\d+ the model compared t"):
                _quiet(back.to_torch, t=t)
        with pytest.raises(ncd.TraceError, match="the model compared t"):
            _quiet(back.to_source, t=7)
    for t in (2, 7, 9):  # the traced diagram with its model: checked by running it
        x = torch.randn(2, t, 3)
        try:
            torch.testing.assert_close(_quiet(d.to_torch, t=t)(x), model(x))
        except ncd.TraceError as error:
            assert "compared t" in str(error), error


def test_a_pickled_traced_mistral_refuses_to_decode_past_its_window() -> None:
    """Mistral's sliding window of 12 traced on 4 tokens: the pickle decoded past 12 tokens attending to every key,
    0.045 off the model, with no warning (the read-back with one warning at t=9); now both refuse at the first length
    where ``kv_length >= sliding_window`` comes out True, and equal the model before it."""
    torch.manual_seed(0)
    model = T.MistralForCausalLM(T.MistralConfig(**dict(SMALL, sliding_window=12))).eval()
    short = _quiet(ncd.trace, model, torch.randint(0, 50, (2, 4)), axes={"input_ids": "b ~t"})
    weights = short.state_dict(short.to_torch())
    tokens = torch.randint(0, 50, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        library = model(tokens).logits.double()
    for back in (pickle.loads(pickle.dumps(short)), ncd.load_json(short.to_json())):
        with pytest.warns(RuntimeWarning, match="not checked against the model"):
            d = ncd.decode(back)
        run = d.lower(weights, dtype=torch.float64)
        with torch.no_grad():
            logits, caches = _quiet(run.prefill, tokens[:, :3])
            with pytest.raises(DecodeError, match=r"t=12 \(traced at 4\): at masking_utils.py:\d+ the model compared"
                                                  r" t >= 12"):
                for p in range(3, 20):
                    logits, caches = _quiet(run.step, tokens[:, p:p + 1], caches, past=p)
                    torch.testing.assert_close(logits, library[:, p:p + 1], rtol=1e-4, atol=1e-4)
        assert p == 11
        with pytest.raises(ncd.TraceError, match="compared t >= 12"):
            _quiet(back.to_torch, t=13)
        _quiet(back.to_torch, b=1, t=1)  # q_length == 1, batch_size != 1: another way to the same result, lowered


def test_comparisons_that_cannot_change_are_not_guards() -> None:
    """``kv_length == q_length`` (both t) and sizes of the weights (no symbol) hold at every size: no guard."""

    class Same(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x @ self.w
            if x.shape[1] == y.shape[1] and x.shape[-1] == self.w.shape[0]:
                return y
            return x

    d = _quiet(ncd.trace, Same(), torch.randn(2, 4, 3), axes="b t m")
    assert d.get("guards") is None
    x = torch.randn(3, 7, 3)
    lowered = _quiet(ncd.load_json(d.to_json()).to_torch, b=3, t=7)
    lowered.load_state_dict(d.state_dict(lowered))
    torch.testing.assert_close(lowered(x), d.origin.model(x))


def test_a_guard_flipped_by_another_size_than_the_one_made_1_is_refused() -> None:
    """A guard changing only because a size is 1 is let through (q_length == 1); one that a size of 1 leaves as traced
    but another size flips is refused: ``b*t < 12`` traced at b=2, t=4, read back at b=1, t=20 lowered the traced
    branch (twice the model's output) with only the generic warning, where b=2, t=20 was refused."""

    class Product(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.shape[0] * x.shape[1] < 12 else x + 1

    model = Product()
    d = _quiet(ncd.trace, model, torch.randn(2, 4, 3), axes="b t m")
    for back in (pickle.loads(pickle.dumps(d)), ncd.load_json(d.to_json())):
        for b, t in ((1, 20), (1, 12), (2, 20)):
            with pytest.raises(ncd.TraceError, match=r"the model compared b\*t < 12"):
                _quiet(back.to_torch, b=b, t=t)
        for b, t in ((1, 11), (1, 4), (2, 5)):  # the traced branch: equal to the model
            x = torch.randn(b, t, 3)
            torch.testing.assert_close(_quiet(back.to_torch, b=b, t=t)(x), model(x))


def test_the_same_comparison_made_block_after_block_is_one_guard() -> None:
    """A model comparing the same sizes in every block (xlstm: 321 comparisons, 30 apart) has the guards and ``fixed``
    entries of the same model with one block, each once; read back, it is refused at another length and equals the
    model at the traced one (the comparisons read alike are skipped without their expressions made)."""

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.w(x)  # a new tensor each block: its sizes are other atoms of the same expressions
            flat = y.flatten(0, 1)  # a wire merging b and t: compared, it is a fixed entry, not a guard
            if y.shape[1] > 3 and y.shape[0] == x.shape[0] and flat.shape[0] > 2 and 4 == y.shape[-1] + 1:
                return y.cumsum(1)
            return y + 1

    class Blocks(torch.nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(Block() for _ in range(n))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = block(x)
            return x

    x = torch.randn(2, 5, 3)
    torch.manual_seed(0)
    model = Blocks(6)
    one, many = (_quiet(ncd.trace, m, x, axes="b t m") for m in (Blocks(1), model))
    assert many.get("guards") == one.get("guards") and one.get("guards"), (many.meta, one.meta)
    assert [g[:3] for g in one.get("guards")] == [("t", ">", "3")]
    assert many.fixed == one.fixed and len(one.fixed) == 1, (many.fixed, one.fixed)
    back = ncd.load_json(many.to_json())
    with pytest.raises(ncd.TraceError, match="t=3"):  # (the fixed entry holds b and t: any other size is refused)
        _quiet(back.to_torch, b=2, t=3)
    lowered = _quiet(back.to_torch, b=2, t=5)
    lowered.load_state_dict(many.state_dict(lowered))
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(lowered(x), model(x))
