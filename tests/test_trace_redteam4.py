"""Red team, fourth pass: each test fails on the main it was written against and compares with the model itself."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import ncd


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.norm, self.b = torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.gelu(self.norm(self.a(x)))).softmax(-1)


def test_lowered_inside_autocast_computes_with_its_loaded_parameters() -> None:
    """``to_torch()`` called inside an autocast region: the lowered module ran once before its parameters were loaded
    in place, autocast cached bfloat16 casts of the values they held then, and every later call in the region computed
    with those (on main 0.22 off the model in the same region, with no word)."""
    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(2, 5, 4)
    d = ncd.trace(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lowered = d.to_torch()
        torch.testing.assert_close(lowered(x), model(x))


def test_tracing_under_the_callers_autocast_is_warned() -> None:
    """``ncd.trace`` called inside ``torch.autocast``: its casts happen below the level recorded, as for the model's
    own autocast, so the lowered module called outside it differs from the model by autocast's rounding; on main no
    word said so (the model's own ``with torch.autocast`` was warned)."""
    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(2, 5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, x)
        want = model(x)
    said = [str(w.message) for w in caught]
    assert any("torch.autocast (at the call of ncd.trace)" in m for m in said), said
    assert want.dtype == torch.bfloat16 and d.to_torch()(x).dtype == torch.float32  # what the warning is about
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ncd.trace(model, x)
    assert not any("autocast" in str(w.message) for w in caught)


def test_decode_refuses_a_table_of_the_traced_length() -> None:
    """OPT's positions are a cumulative sum of an all-ones mask the model makes from its input's shape: the trace
    holds them as a ``(b, t)`` table of the traced length (``to_torch(t=9)`` refuses it).  ``ncd.decode`` derived a
    prefill and step anyway, and every run of them raised torch's own ``RuntimeError`` (a state-dict size mismatch);
    now ``decode`` refuses, naming the table.  The model itself still lowers at the traced length."""
    import pytest
    import transformers as T  # noqa: N812

    from ncd.inference.errors import DecodeError

    torch.manual_seed(0)
    config = T.OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                         max_position_embeddings=32, word_embed_proj_dim=16, use_cache=False)
    model = T.OPTForCausalLM(config).eval()
    tokens = torch.randint(3, 50, (2, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, tokens, axes={"input_ids": "b ~t"})
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(tokens), model(tokens).logits)
    with pytest.raises(DecodeError, match="traced length of t"):
        ncd.decode(d)


def test_rotary_tables_of_a_length_dependent_rope_are_not_drawn_as_any_length() -> None:
    """transformers' dynamic-NTK rope recomputes its frequencies past ``max_position_embeddings``: traced at 6 tokens
    its tables equal a fixed base's, and main drew one ``ρ`` box of that base, which ``ncd.decode`` then ran at every
    position (its steps past 8 differed from the model's own forward at that length, with no word).  Its tables are
    now constants of the traced length: the diagram lowers there, and decoding (like ``to_torch(t=14)``) is refused."""
    import transformers as T  # noqa: N812

    from ncd.inference.errors import DecodeError

    torch.manual_seed(0)
    config = T.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8, use_cache=False,
                           rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0})
    model = T.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    tokens, longer = torch.randint(0, 50, (2, 6)), torch.randint(0, 50, (2, 14))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, tokens, axes={"input_ids": "b ~t"})
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(tokens), model(tokens).logits)
        want = model(longer).logits
        try:
            run = ncd.decode(d).lower()
        except DecodeError:
            return
        logits, caches = run.prefill(longer[:, :5])
        for p in range(5, 14):
            logits, caches = run.step(longer[:, p:p + 1], caches, past=p)
            torch.testing.assert_close(logits, want[:, p:p + 1])


class _Memory(torch.nn.Module):
    """Keeps its last hidden values in a plain attribute and adds them at its next call (truncated-BPTT style)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.memory: torch.Tensor | None = None
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "w2" not in self.cache:  # a cache computed from parameters only: the same at every call
            self.cache["w2"] = self.lin.weight * 2
        h = self.lin(x) @ self.cache["w2"]
        out = h if self.memory is None else h + self.memory
        self.memory = h.detach()
        return out


def test_values_of_the_inputs_kept_in_attributes_are_warned() -> None:
    """A model that keeps a value of its inputs in a plain attribute for its next call: the diagram is the traced
    call and the lowered module keeps nothing, so the model's next call differs from it (here by 1.3).  Number
    attributes the model changes were warned (``self.step += 1``); tensors were not.  A cache of parameters is not
    warned."""
    torch.manual_seed(0)
    model, x, y = _Memory().eval(), torch.randn(2, 4), torch.randn(2, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, x)
    said = [str(w.message) for w in caught if "keeps values computed from its inputs" in str(w.message)]
    assert len(said) == 1 and "(memory)" in said[0], [str(w.message) for w in caught]
    lowered = d.to_torch()
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x))  # the traced call (tracing put the memory back)
        assert not torch.allclose(lowered(y), model(y))  # what the warning is about: the model's next call



class _PrivateMemory(torch.nn.Module):
    """Keeps its last hidden values where the warning of 85e68d7 did not look: a private attribute, and a list inside a
    dict of a public one."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self._memory: torch.Tensor | None = None
        self.state: dict[str, list[torch.Tensor | None]] = {"h": [None]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        out = h if self._memory is None else h + self._memory
        self._memory = h.detach()
        self.state["h"][0] = 2 * h.detach()
        return out


def test_values_of_the_inputs_kept_in_private_attributes_and_nested_entries_are_warned() -> None:
    """The same memory across calls under a private name (``self._memory``) or inside nested containers
    (``self.state["h"][0]``) is warned too, naming both (main said nothing: the lowered module's next call was off the
    model's, with no word); the private one is said to hold the traced call (tracing puts back public attributes only)."""
    torch.manual_seed(0)
    model, x, y = _PrivateMemory().eval(), torch.randn(2, 4), torch.randn(2, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, x)
    said = [str(w.message) for w in caught if "keeps values computed from its inputs" in str(w.message)]
    assert len(said) == 1 and "(_memory, state)" in said[0] and "the private ones hold" in said[0], \
        [str(w.message) for w in caught]
    lowered = d.to_torch()
    with torch.no_grad():
        assert not torch.allclose(lowered(y), model(y))  # what the warning is about: the model's next call differs


def test_torch_cond_is_refused_naming_it_and_the_line() -> None:
    """``torch.cond`` on a value of the inputs: its branches are graphs of their own; main refused it as "cannot
    import graph node 'true_graph_0' of kind 'get_attr'", naming neither the operator nor the model's line."""
    import pytest

    class Cond(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cond(x.sum() > 0, lambda t: self.lin(t), lambda t: -self.lin(t), (x,))

    with pytest.raises(ncd.TraceError, match=r"Cond: it calls torch\.cond at test_trace_redteam4\.py:\d+"):
        ncd.trace(Cond().eval(), torch.randn(2, 4))


def test_torch_cond_whose_branches_fail_to_compile_is_refused_naming_it_and_the_line() -> None:
    """torch compiles ``torch.cond``'s branches itself; when that fails (a branch that cannot be traced, or torch's
    compiler in a state left by earlier compilations in the process: a fresh CI run saw "'_ModuleStackTracer' object
    has no attribute '__closure__'") no graph is made, and the refusal said only "torch.export failed (...) and so
    did a dispatch trace (...)".  It now names torch.cond and the model's line from the failure's traceback."""
    class Boom(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def broken(self, t: torch.Tensor) -> torch.Tensor:
            raise ValueError("a branch that cannot be traced")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cond(x.sum() > 0, self.broken, lambda t: -self.lin(t), (x,))

    with pytest.raises(ncd.TraceError, match=r"Boom: it calls torch\.cond at test_trace_redteam4\.py:\d+"):
        ncd.trace(Boom().eval(), torch.randn(2, 4))


class _DecoratedAutocast(_Net):
    @torch.autocast("cpu", dtype=torch.bfloat16)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


class _AutocastOff(_Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):  # (no autocast around it: changes nothing)
            return super().forward(x)


def test_an_autocast_decorated_forward_is_warned_and_autocast_off_is_not() -> None:
    """``@torch.autocast(...)`` on the model's forward: torch's wrapper enters it, in a torch file, so main said
    nothing (the lowered module gives float32 where the model gives bfloat16); ``with torch.autocast(enabled=False)``
    outside any autocast changes nothing, and main warned of it."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4)
    for model, warned in ((_DecoratedAutocast().eval(), True), (_AutocastOff().eval(), False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d = ncd.trace(model, x)
        said = [str(w.message) for w in caught if "runs under torch.autocast" in str(w.message)]
        assert bool(said) == warned, (type(model).__name__, said)
        assert (d.to_torch()(x).dtype != model(x).dtype) == warned  # what the warning is about


def test_lazy_modules_not_yet_called_are_refused_naming_them() -> None:
    """``nn.LazyLinear`` before its first call holds no parameters: main refused the model with torch.export's own
    "Attempted to use an uninitialized parameter in <method '_is_view' ...>"; now the refusal names the lazy modules
    and what to do, and the model called once traces equal."""
    import pytest

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.LazyLinear(8), torch.nn.ReLU(), torch.nn.LazyLinear(3)).eval()
    x = torch.randn(2, 5)
    with pytest.raises(ncd.TraceError, match=r"lazy modules \(0: LazyLinear, 2: LazyLinear\).*call the model once"):
        ncd.trace(model, x)
    model(x)
    torch.testing.assert_close(ncd.trace(model, x).to_torch()(x), model(x))


class _ScaledDecoder(torch.nn.Module):
    """A causal decoder holding a buffer named ``scale``: the lowered step's explicit attention has a value of that
    name too."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.qkv, self.out = torch.nn.Embedding(20, 8), torch.nn.Linear(8, 24), torch.nn.Linear(8, 20)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        q, k, v = self.qkv(h).chunk(3, -1)
        return self.out(h + F.scaled_dot_product_attention(q, k, v, is_causal=True) * self.scale)


def test_decoding_a_model_whose_buffer_shares_a_name_with_a_value_of_the_step() -> None:
    """The lowered step named the model's buffer ``scale_1`` (its attention's ``scale`` came first), the weights held
    it as ``scale``: every step raised torch's "Missing key(s) in state_dict: scale_1".  Now the step decodes equal to
    the model's own forward at every position."""
    torch.manual_seed(0)
    model = _ScaledDecoder().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randint(0, 20, (2, 4)), axes={"ids": "b ~t"})
    run = ncd.decode(d).lower()
    x = torch.randint(0, 20, (2, 9))
    with torch.no_grad():
        full = model(x)
        logits, caches = run.prefill(x[:, :4])
        torch.testing.assert_close(logits, full[:, :4])
        for p in range(4, 9):
            logits, caches = run.step(x[:, p:p + 1], caches, past=p)
            torch.testing.assert_close(logits, full[:, p:p + 1])


def test_weights_renamed_apart_are_never_paired_by_a_guess() -> None:
    """The step's weights are taken under the full module's names: names both sides hold map to themselves whatever
    their order (pairing them in order gave ``l_2.w`` the values of ``l_1.w`` when the two modules first read them in
    other orders), one renamed tensor pairs with its own (``scale`` -> ``scale_1``), and two tensors of one shape
    renamed apart are a DecodeError, not a guess."""
    from ncd.inference.derive import DecodeError
    from ncd.inference.run import _named_as

    weights = {"scale": torch.full((2,), 7.0), "l_1.w": torch.zeros(3), "l_2.w": torch.ones(3)}
    own = {"l_2.w": torch.empty(3), "scale_1": torch.empty(2), "l_1.w": torch.empty(3)}
    named = _named_as(own, weights, None)
    assert named["l_1.w"] is weights["l_1.w"] and named["l_2.w"] is weights["l_2.w"]
    assert named["scale_1"] is weights["scale"]
    with pytest.raises(DecodeError, match="renamed apart"):
        _named_as({"s_1": torch.empty(2), "s_2": torch.empty(2)}, {"s": torch.ones(2), "s_3": torch.zeros(2)}, None)


class _FlatLookups(torch.nn.Module):
    """Ids flattened (or transposed) before a lookup and a mask viewed to the scores' shape: views and crossings of
    indices and flags."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.lin = torch.nn.Embedding(20, 6), torch.nn.Linear(6, 6)

    def forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.lin(self.emb(ids.reshape(-1)).view(*ids.shape, 6) + self.emb(ids.t()).transpose(0, 1))
        return h * keep.view(*keep.shape, 1)


def test_the_backward_diagram_of_views_of_indices_and_flags() -> None:
    """A view or crossing of an integer or boolean wire carries no cotangent; main's backward rules of ``view`` and
    ``transpose`` took one, and ``ncd.backward`` of any traced model viewing ids or masks raised "backward rule of
    view takes 'n [20]', expected ''".  Its gradients now equal autograd's."""
    from ncd.torch.verify import compare_gradients

    torch.manual_seed(0)
    ids, keep = torch.randint(0, 20, (2, 5)), torch.rand(2, 5) > 0.3
    d = ncd.trace(_FlatLookups().eval(), ids, keep)
    pairs = compare_gradients(d, inputs=(ids, keep))
    assert len(pairs) >= 3  # the table (once per lookup), the Linear's weight and bias
    for name, got, want in pairs:
        torch.testing.assert_close(got, want, msg=lambda m, name=name: f"{name}: {m}")


class _PaddedConvs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.circular = torch.nn.Conv1d(3, 4, 3, padding=1, padding_mode="circular")
        self.reflect = torch.nn.Conv1d(4, 4, 3, padding=2, dilation=2, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reflect(torch.tanh(self.circular(x)))


def test_the_backward_diagram_of_reflected_and_circular_padding() -> None:
    """A convolution's reflected or circular padding is traced as a pad whose output wire is named apart; its
    backward (the pad's transpose) took the padded wire under the input's name, and ``ncd.backward`` raised
    "backward rule of pad takes 'm:13', expected 'm2:13'".  Its gradients now equal autograd's."""
    from ncd.torch.verify import compare_gradients

    torch.manual_seed(0)
    x = torch.randn(2, 3, 9)
    d = ncd.trace(_PaddedConvs().eval(), x)
    pairs = compare_gradients(d, inputs=(x,))
    assert len(pairs) == 5  # the input, two weights, two biases
    for name, got, want in pairs:
        torch.testing.assert_close(got, want, msg=lambda m, name=name: f"{name}: {m}")


class _NegativeReads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, 6)

    def forward(self, x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x)[:, at] * 2)  # positions counted from the end where negative, as indexing does


def test_the_backward_diagram_of_a_gather_at_negative_positions() -> None:
    """A gather that wraps (``x[:, i]`` with negative ``i``) lowered its forward with the positions wrapped, but its
    transpose scattered the cotangent at the raw positions: the backward diagram raised "index -2 is out of bounds".
    Its gradients now equal autograd's."""
    from ncd.torch.verify import compare_gradients

    torch.manual_seed(0)
    x, at = torch.randn(2, 6), torch.tensor([1, -2, 0, -2])
    d = ncd.trace(_NegativeReads().eval(), x, at)
    pairs = compare_gradients(d, inputs=(x, at))
    assert len(pairs) == 3
    for name, got, want in pairs:
        torch.testing.assert_close(got, want, msg=lambda m, name=name: f"{name}: {m}")


class _PaddedAttention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(8, 24)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, 2, 4)).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :].bool())


def test_tracing_and_lowering_leave_torchs_random_state_as_the_models_run_does() -> None:
    """The padding mask's check (random 0/1 masks), the lowered module's layers (their initial weights) and the
    recorder's once-per-process self-check drew from torch's global generator: after ``ncd.trace`` or ``to_torch()``
    the user's next ``torch.rand`` differed from what it gives without them (a seeded run was no longer reproduced).
    A model drawing nothing leaves the state as it was."""
    import subprocess
    import sys

    torch.manual_seed(1)
    model, x = _PaddedAttention().eval(), torch.randn(2, 5, 8)
    keep = torch.ones(2, 5, dtype=torch.long)
    keep[1, 3:] = 0
    torch.manual_seed(0)
    want = torch.rand(4)
    torch.manual_seed(0)
    d = ncd.trace(model, x, keep)
    torch.testing.assert_close(torch.rand(4), want)
    torch.manual_seed(0)
    d.to_torch()
    torch.testing.assert_close(torch.rand(4), want)
    first = ("import torch, ncd; m = torch.nn.Linear(2, 2); torch.manual_seed(0); want = torch.rand(4);"
             " torch.manual_seed(0); ncd.trace(m, torch.ones(1, 2)); assert torch.equal(torch.rand(4), want)")
    subprocess.run([sys.executable, "-c", first], check=True, capture_output=True)  # the process's first trace
