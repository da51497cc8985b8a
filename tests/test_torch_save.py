"""A lowered module pickles: ``torch.save`` / ``torch.load`` round trips give the same outputs, in a process that
never lowered the diagram too (its generated classes are compiled again from their source)."""

from __future__ import annotations

import copy
import io
import sys
import warnings

import pytest
import torch
import transformers as T  # noqa: E402  (a test dependency: its absence must fail, not skip)

import ncd
from ncd.torch import pickling


def _round_trip(module: torch.nn.Module) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded: torch.nn.Module = torch.load(buffer, weights_only=False)
    return loaded


def _forget(module: torch.nn.Module) -> None:
    """As in a fresh process: the generated source's module is no longer loaded, nor compiled again yet."""
    sys.modules.pop(type(module).__module__)
    pickling._COMPILED.clear()


def test_a_lowered_gpt2_saves_and_loads_with_equal_outputs() -> None:
    """Nested blocks (submodules of generated classes), a tied embedding, the input check: all kept."""
    diagram = ncd.zoo.gpt2(v=50, m=16, k=4, h=4, N=2, n=16, t=8)
    module = diagram.to_torch().eval()
    ids = torch.randint(0, 50, (2, 8))
    same, deep = _round_trip(module), copy.deepcopy(module)
    assert type(same) is type(module) and type(deep) is type(module)  # the defining module is loaded: its own class
    _forget(module)
    loaded = _round_trip(module).eval()
    assert type(loaded) is not type(module) and type(loaded).__name__ == type(module).__name__  # compiled again
    with torch.no_grad():
        assert torch.equal(loaded(ids), module(ids))
        assert torch.equal(same(ids), module(ids)) and torch.equal(deep(ids), module(ids))
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in module.parameters())
    assert loaded.state_dict().keys() == module.state_dict().keys()
    assert loaded.ncd_source == module.ncd_source and loaded.ncd_diagram == module.ncd_diagram
    with pytest.raises(ncd.InputError, match=r"axes 'b t' of sizes \(b=.*t=8\)|axes .*t=8"):
        loaded(torch.randint(0, 50, (2, 7)))
    state = {k: v + 1 for k, v in module.state_dict().items()}  # the state_dict hooks (declared axis order) work
    loaded.load_state_dict(state)
    module.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), module.state_dict().values()))
    with torch.no_grad():
        assert torch.equal(loaded(ids), module(ids))


def test_a_run_error_of_a_loaded_module_names_its_generated_line() -> None:
    """The loaded top class still reports torch's errors as ``ncd.RunError`` (the wrapper class is rebuilt)."""
    module = ncd.Linear("m -> k").to_torch(m=4, k=3, check_inputs=False)
    _forget(module)
    loaded = _round_trip(module)
    with pytest.raises(ncd.RunError, match="at generated line"):
        loaded(torch.randn(2, 5))


def test_a_traced_model_saves_and_loads_with_equal_outputs_and_tied_parameters() -> None:
    model = T.GPT2LMHeadModel(T.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16,
                                           use_cache=False, bos_token_id=0, eos_token_id=0)).eval()
    ids = torch.randint(0, 50, (2, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = ncd.trace(model, ids).to_torch()
    _forget(module)
    loaded = _round_trip(module)
    with torch.no_grad():
        assert torch.equal(loaded(ids), module(ids))
        torch.testing.assert_close(loaded(ids), model(ids).logits, atol=1e-4, rtol=1e-4)
    original = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in loaded.parameters()) == original  # the embeddings stay tied
