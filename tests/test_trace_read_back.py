"""A traced diagram read back from JSON (or taken as a plain block) lowers as the traced diagram does where it can, and
says so where it cannot (:mod:`ncd.torch.read_back`): the unread parameters kept, the traced mode, other sizes refused
or warned about.  Each test failed before (redteam10)."""

from __future__ import annotations

import pickle
import re
import warnings

import pytest
import torch
from torch import nn

import ncd


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _Unread(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)  # another task's head: never read on this call
        self.other = self.head  # the same module under a second name: one parameter
        self.flag = nn.Parameter(torch.zeros(5, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).relu()


def test_unread_parameters_survive_the_json_round_trip() -> None:
    torch.manual_seed(0)
    model = _Unread().eval()
    x = torch.randn(2, 4)
    d = ncd.trace(model, x)
    loaded = ncd.load_json(d.to_json()).to_torch()
    assert _count(loaded) == _count(d.to_torch()) == _count(model)  # was 20 of 40: the unread ones dropped
    names = sorted(n for n, _ in loaded.named_parameters())
    assert names == sorted(n for n, _ in d.to_torch().named_parameters())
    loaded.load_state_dict(d.state_dict(loaded))  # the traced values load into it, strict
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert torch.equal(dict(loaded.named_parameters())["unused.head.weight"], model.head.weight)
    assert dict(loaded.named_parameters())["unused.flag"].dtype == torch.float64



class _UnreadLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[0](x)  # layers.1.0, layers.1.1: never read on this call


def test_unread_parameters_of_numbered_layers_survive_the_json_round_trip() -> None:
    """An unread parameter of a layer in an nn.ModuleList or nn.Sequential (``layers.1.0.weight``): the read-back
    lowered module keeps it under its name (was a SchemaError: a name part of digits is no identifier)."""
    torch.manual_seed(0)
    model = _UnreadLayer().eval()
    x = torch.randn(2, 4)
    d = ncd.trace(model, x)
    loaded = ncd.load_json(d.to_json()).to_torch()
    assert sorted(n for n, _ in loaded.named_parameters()) == sorted(n for n, _ in d.to_torch().named_parameters())
    loaded.load_state_dict(d.state_dict(loaded))
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert torch.equal(dict(loaded.named_parameters())["unused.layers.1.1.weight"], model.layers[1][1].weight)
    for bad in ("layers.1e3.weight", "layers.-1.weight", "layers.\u0661.weight"):  # (digits: ASCII, whole)
        with pytest.raises(ncd.SchemaError, match="is not"):
            ncd.load_json(d.to_json().replace("layers.1.1.weight", bad)).to_torch()

def test_a_model_traced_in_eval_mode_reads_back_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.3), nn.ReLU()).eval()
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    d = ncd.trace(model, x)
    loaded = ncd.load_json(d.to_json()).to_torch()
    assert not loaded.training  # was in training mode: batch statistics, running stats overwritten by its first call
    loaded.load_state_dict(d.state_dict(loaded))
    for _ in range(2):
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    loaded.train()
    with pytest.warns(RuntimeWarning, match="runs in training mode"):
        loaded(x)


class _Half(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        return torch.roll(self.lin(x), t // 3, 1)[:, : t // 2]  # sizes computed in Python: kept as numbers


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * (0.5 * x.shape[1])  # a float written first: Python's float reads the size (not followed)


def test_a_slice_bound_computed_from_a_size_is_refused_when_read_back() -> None:
    # a pickle or JSON read-back lowered at t=7 gave (2, 4, 4) where the model gives (2, 3, 4), with only the warning
    torch.manual_seed(0)
    d = ncd.trace(_Half().eval(), torch.randn(2, 9, 4), axes="b t m")
    for name, plain in {"traced": d, "pickle": pickle.loads(pickle.dumps(d)), "json": ncd.load_json(d.to_json()),
                        "block": d.as_block()}.items():
        for lower in (plain.to_torch, plain.to_source, lambda **s: plain.bind(**s).to_torch()):
            with pytest.raises(ncd.TraceError) as refused, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lower(t=7)
            if name == "pickle" and lower == plain.to_torch:  # (names the line and the bound; JSON keeps the sizes)
                assert re.search(r"test_trace_read_back\.py:\d+.*floor\(t/2\)", str(refused.value)), refused.value
        plain.to_torch(t=9)  # at the traced sizes: lowered


def test_other_sizes_of_a_diagram_read_back_are_warned_about() -> None:
    torch.manual_seed(0)
    model = _Scaled().eval()
    d = ncd.trace(model, torch.randn(2, 9, 4), axes="b t m")
    with pytest.raises(ncd.TraceError, match="differs from the model"):
        d.to_torch(t=7)
    with pytest.raises(ncd.TraceError, match="differs from the model"):
        d.to_source(t=7)  # was the source at t=7 computing something else, silently
    for plain in (ncd.load_json(d.to_json()), d.as_block()):
        for lower in (plain.to_torch, plain.to_source):
            with pytest.warns(RuntimeWarning, match="not checked against the model"):
                lower(t=7)  # was silent: (2, 4, 4) where the model gives (2, 3, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plain.to_torch(t=9)  # at the traced sizes: nothing to say
            plain.to_torch()


def test_a_size_held_by_the_trace_is_refused_when_read_back() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=100, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    d = ncd.trace(transformers.GPT2Model(config).eval(), torch.randint(0, 100, (2, 8)))
    assert dict(d.meta)["held"] == ("k",)  # the attention scale k**-0.5 holds the head dimension
    with pytest.raises(ncd.TraceError, match="parameters and scales"):
        d.to_torch(k=4)
    with pytest.raises(ncd.TraceError, match="recorded at the traced sizes"):
        ncd.load_json(d.to_json()).to_torch(k=4)  # was lowered, unchecked


def test_a_malformed_unused_entry_is_refused() -> None:
    d = ncd.trace(_Unread().eval(), torch.randn(2, 4))
    text = d.to_json().replace('"unused.flag"', '"unused.flag"').replace('{"tuple": [5]}', '{"tuple": [1000000000000]}')
    assert text != d.to_json()
    with pytest.raises(ncd.NCDError, match="memory"):
        ncd.load_json(text).to_torch()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_in_another_float_type_reads_back_in_it(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 4)).to(dtype).eval()
    x = torch.randn(3, 8, dtype=dtype)
    d = ncd.trace(model, x)
    loaded = ncd.load_json(d.to_json()).to_torch()  # was float32: it raised on the model's inputs
    loaded.load_state_dict(d.state_dict(loaded))  # (into float32 parameters, the values were rounded)
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_an_unused_name_a_module_refuses_is_a_schema_error() -> None:
    d = ncd.trace(_Unread().eval(), torch.randn(2, 4))
    text = d.to_json().replace('"flag"', '"training"')
    with pytest.raises(ncd.SchemaError, match="cannot be kept"):
        ncd.load_json(text).to_torch()


def test_a_size_bound_on_the_diagram_is_warned_about_as_one_given_to_to_torch() -> None:
    torch.manual_seed(0)
    d = ncd.trace(_Scaled().eval(), torch.randn(2, 9, 4), axes="b t m")
    for plain in (d, ncd.load_json(d.to_json())):
        with pytest.warns(RuntimeWarning, match=r"to_torch\(t=7\).*not checked against the model"):
            plain.bind(t=7).to_torch()  # was silent: scaled by 4.5 where the model scales by 3.5
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plain.bind(t=9).to_torch()


def test_decoding_a_traced_model_is_not_a_read_back() -> None:
    """ncd.decode's prefill and step diagrams run at the lengths they are given, by design: no read-back meta."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=64, vocab_size=100)
    d = ncd.trace(transformers.LlamaForCausalLM(config).eval(), torch.randint(0, 100, (2, 6)))
    decoding = ncd.decode(d)
    for part in (decoding.prefill, decoding.step):
        assert not {"traced", "held", "unused"} & set(dict(part.meta))


def test_the_other_mode_warning_says_a_batch_norm_follows_the_mode_it_runs_in() -> None:
    """Traced in eval, run in training mode: the lowered nn.BatchNorm uses the batch's statistics (neither the model in
    training mode with its dropout, nor the traced call); the warning said "computes the model as traced"."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2)).eval()
    model[1].running_mean.normal_()
    x = torch.randn(5, 4)
    lowered = ncd.trace(model, x).to_torch().train()
    with pytest.warns(RuntimeWarning, match="a batch norm traced in eval mode is an nn.BatchNorm"):
        got = lowered(x)
    assert not torch.allclose(got, model(x))  # not the traced call
    torch.testing.assert_close(got, model.train()(x))  # this model has no dropout: batch statistics, as in training


def test_the_traced_values_load_into_a_module_read_back_at_other_sizes() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=100, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2Model(config).eval()
    d = ncd.trace(model, torch.randint(0, 100, (2, 8)))
    with pytest.warns(RuntimeWarning, match="not checked against the model"):
        module = ncd.load_json(d.to_json()).to_torch(b=3, t=5)
    module.load_state_dict(d.state_dict(module))  # was an InputError: the order was read on the traced inputs
    ids = torch.randint(0, 100, (3, 5))
    torch.testing.assert_close(module(ids), model(ids).last_hidden_state)


def _tied_gpt2() -> tuple[nn.Module, torch.Tensor]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=100, n_positions=32,
                                     bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    return transformers.GPT2LMHeadModel(config).eval(), torch.randint(0, 100, (2, 8))


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.proj(x).tanh())  # one layer called twice: one weight


def _shared(module: nn.Module) -> list[tuple[str, str]]:
    """Pairs of names of one Parameter object."""
    first: dict[int, str] = {}
    return [(first.setdefault(id(p), n), n) for n, p in module.named_parameters(remove_duplicate=False)
            if first.setdefault(id(p), n) != n]


@pytest.mark.parametrize("which", ["gpt2", "twice"])
def test_tied_parameters_stay_tied_after_the_json_round_trip(which: str) -> None:
    model, x = _tied_gpt2() if which == "gpt2" else (_Twice().eval(), torch.randn(3, 6))
    d = ncd.trace(model, x)
    for sizes in ({}, {"b": 3}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # other sizes: not checked against the model
            loaded = ncd.load_json(d.to_json()).to_torch(**sizes)
        assert _count(loaded) == _count(d.to_torch()) == _count(model)  # was 3,200 more on GPT-2 (the head untied)
        assert len(_shared(loaded)) == len(_shared(d.to_torch())) >= 1  # one Parameter object under both names
        loaded.load_state_dict(d.state_dict(loaded))
        y = torch.randint(0, 100, (sizes.get("b", 2), 8)) if which == "gpt2" else torch.randn(sizes.get("b", 3), 6)
        want = model(y).logits if which == "gpt2" else model(y)
        torch.testing.assert_close(loaded(y), want)
    own = d.to_torch()  # the traced diagram's own module, tied, loads its values too (was a TraceError: 28 of 29)
    own.load_state_dict(d.state_dict(own))
    torch.testing.assert_close(own(x), model(x).logits if which == "gpt2" else model(x))


@pytest.mark.parametrize("tie", [(0, 99, (6, 6)), (0, 2, (5, 5)), (1, 0, (6,)), ("0", 2, (6, 6))])
def test_a_tie_naming_a_missing_or_mis_shaped_tensor_is_refused(tie: tuple[object, ...]) -> None:
    d = ncd.trace(_Twice().eval(), torch.randn(3, 6))
    block = ncd.load_json(d.to_json())
    assert dict(block.meta)["tied"] == ((0, 2, (6, 6)), (1, 3, (6,)))  # weight and bias read again
    hostile = ncd.Block(block.body, block.name, tuple((k, (tie,) if k == "tied" else v) for k, v in block.meta))
    with pytest.raises(ncd.SchemaError, match="tie"):
        ncd.load_json(hostile.to_json()).to_torch()


def test_a_traced_diagram_with_ties_shards() -> None:
    d = ncd.trace(_Twice().eval(), torch.randn(4, 6), axes="b m")
    sharded = ncd.shard(d, ncd.Mesh(dp=2), {"b": "dp"})
    module = sharded.to_torch()
    assert _count(module) == _count(_Twice())


class _ReadTransposed(nn.Module):
    """One weight read by a linear map and again transposed (``h @ w`` after ``F.linear(x, w)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.w).tanh() @ self.w


class _LookedUpAndMultiplied(nn.Module):
    """One table read by a lookup and by a product (``onehot @ table`` after ``table[ids]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(7, 4))

    def forward(self, ids: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return self.table[ids] * (onehot @ self.table)


def _view_tied(which: str) -> tuple[nn.Module, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    if which == "transposed":
        return _ReadTransposed().eval(), (torch.randn(3, 6),), (torch.randn(3, 6),)
    return _LookedUpAndMultiplied().eval(), (torch.randint(0, 7, (3,)), torch.randn(3, 7)), \
        (torch.randint(0, 7, (3,)), torch.randn(3, 7))


@pytest.mark.parametrize("which", ["transposed", "lookup"])
def test_a_parameter_read_through_another_view_stays_one_after_the_json_round_trip(which: str) -> None:
    # before, the traced diagram's own module was tied (one parameter) but the one read back from JSON held two: 60
    # parameters for the model's 30 (ties10: only ties of the same layout were written); and d.state_dict of the own
    # (parametrized) module missed its '...parametrizations.weight.original' name
    model, x, fresh = _view_tied(which)
    d = ncd.trace(model, *x)
    block = ncd.load_json(d.to_json())
    assert block.get("views")  # the layouts are written
    for lowered in (d.to_torch(), block.to_torch()):
        assert _count(lowered) == _count(model)
        lowered.load_state_dict(d.state_dict(lowered))  # strict: every name has its value
        (shared,) = list(lowered.parameters())
        for v in (x, fresh):
            torch.testing.assert_close(lowered(*v), model(*v))
        model.zero_grad()
        model(*fresh).square().sum().backward()
        lowered(*fresh).square().sum().backward()  # one tensor takes the gradient of both reads, as the model's
        want = next(model.parameters()).grad
        assert want is not None and shared.grad is not None
        torch.testing.assert_close(shared.grad.reshape(want.shape), want)


@pytest.mark.parametrize("view", [(0, 0, 0, (5, 6), (6,)), (9, 0, 0, (5, 6), (6, 1)), (0, 0, 0, (4, 6), (6, 1)),
                                  ("0", 0, 0, (5, 6), (6, 1))])
def test_a_malformed_view_is_refused(view: tuple[object, ...]) -> None:
    model, x, _ = _view_tied("transposed")
    block = ncd.load_json(ncd.trace(model, *x).to_json())
    hostile = ncd.Block(block.body, block.name, tuple((k, (view,) if k == "views" else v) for k, v in block.meta))
    with pytest.raises(ncd.SchemaError, match="view"):
        ncd.load_json(hostile.to_json()).to_torch()


@pytest.mark.parametrize("which", ["gpt2", "twice", "transposed", "lookup"])
def test_the_cost_counts_a_tied_parameter_once_as_the_module_holds_it(which: str) -> None:
    # before, ncd.cost counted a tied weight once per box reading it: GPT-2's LM head 3,200 more, the toys twice
    if which in ("gpt2", "twice"):
        model, x = _tied_gpt2() if which == "gpt2" else (_Twice().eval(), torch.randn(3, 6))
        args: tuple[torch.Tensor, ...] = (x,)
    else:
        model, args, _ = _view_tied(which)
    d = ncd.trace(model, *args)
    loaded = ncd.load_json(d.to_json())
    assert ncd.cost(d).params == ncd.cost(loaded).params == _count(d.to_torch()) == _count(model)
    defaults = dict(d.get("defaults", ()))
    if defaults:  # a bound diagram lowers untied (ncd.backward's plan reads no ties): counted per box, as it holds them
        bound = d.bind(**defaults)
        assert ncd.cost(bound).params == _count(bound.to_torch()) > _count(model)


class _ZerosWrittenInto(nn.Module):
    """Longformer's score tensors: a large ``new_zeros`` written into, read through two layouts (kept by the trace as a
    zero expanded to their shapes, strides 0: ``ncd.trace.inplace._zeros_kept``)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = x.new_zeros(2, 512, 513)
        w = z.view(2, 513, 512)
        z[:, :4, :4] = x
        return z.sum(1), w.transpose(1, 2)[:, :4]


def test_a_zero_expanded_to_two_layouts_reads_back() -> None:
    # before, to_torch of the JSON read-back raised torch's RuntimeError ("more than one element of the written-to
    # tensor refers to a single memory location") from read_back._retie_views: LongformerModel with its default
    # window of 512 and LEDForConditionalGeneration could not be read back at all
    model, x, fresh = _ZerosWrittenInto(), torch.randn(2, 4, 4), torch.randn(2, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    block = ncd.load_json(d.to_json())
    assert block.get("views")
    lowered = block.to_torch()
    lowered.load_state_dict(d.state_dict(lowered))
    for v in (x, fresh):
        for got, want in zip(lowered(v), model(v), strict=True):
            torch.testing.assert_close(got, want)
