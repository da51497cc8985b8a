"""Mixtures of experts: whatever kernel runs the experts, the diagram is a gate and a weighted sum over an expert axis,
recognised only when the recorded kernel equals that sum on random tokens, experts and weights (checked against the
original model on fresh inputs)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import transformers as T  # noqa: N812  (a test dependency: its absence must fail, not skip)

import ncd

TINY = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, vocab_size=100,
            num_hidden_layers=1, num_experts_per_tok=2, use_cache=False)
MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "mixtral": lambda: T.MixtralModel(T.MixtralConfig(**TINY, num_local_experts=4)),
    "qwen2_moe": lambda: T.Qwen2MoeModel(T.Qwen2MoeConfig(**TINY, num_experts=4, moe_intermediate_size=48,
                                                          shared_expert_intermediate_size=64)),
    "olmoe": lambda: T.OlmoeModel(T.OlmoeConfig(**TINY, num_experts=4)),
    # experts stored as a grouped GEMM consumes them (W1: e m 2f, W2: e f m)
    "aria_text": lambda: T.AriaTextModel(T.AriaTextConfig(**TINY, moe_num_experts=4, moe_topk=2, moe_num_shared_experts=1)),
    # experts without a gate, x ↦ relu(x)², behind a router of top-k over groups (unsorted top-k, gather, scatter)
    "nemotron_h": lambda: T.NemotronHModel(T.NemotronHConfig(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=100, use_cache=False,
        layers_block_type=["moe"], n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=48,
        moe_shared_expert_intermediate_size=48, n_group=2, topk_group=1)),
}
KERNEL = {"aten.sort.default", "aten.histc.default", "aten._grouped_mm.default", "aten.index_put.default",
          "aten.cumsum.default", "aten.index.Tensor"}


def _trace(model: torch.nn.Module, *args: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *args)


def _perturbed_trace(model: torch.nn.Module) -> tuple[torch.Tensor, ncd.TracedDiagram]:
    """Move every parameter off its initial value (so no expert or bias is trivially zero or equal), then trace on
    random token ids: the ids and the traced diagram."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ids = torch.randint(0, 100, (2, 8))
    return ids, _trace(model, ids)


def _equal_on_fresh_input(model: torch.nn.Module, d: ncd.TracedDiagram, ids: torch.Tensor) -> None:
    """The lowered module has the original's parameters and equals it on the traced and on fresh token ids."""
    module = d.to_torch()
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in model.parameters())
    fresh = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for i in (ids, fresh):
            got = module(i)
            got = got[0] if isinstance(got, tuple) else got
            torch.testing.assert_close(got, model(i).last_hidden_state, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_transformers_experts_are_a_weighted_sum_over_an_expert_axis(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    ids, d = _perturbed_trace(model)
    assert not KERNEL & set(dict(d.opaque)), d.opaque  # the grouped GEMM's plumbing is gone
    experts = [b for b in d.boxes() if b.prim.op == "parameter" and b.cod[0].axes[0].name == "e"]
    assert len(experts) == 2 and all(int(b.cod[0].axes[0].size) == 4 for b in experts)
    _equal_on_fresh_input(model, d, ids)


class DenseExperts(torch.nn.Module):
    """Experts run as a batched GEMM over every expert, then the chosen ones gathered: another kernel, the same sum."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.router = torch.nn.Linear(8, 4, bias=False)
        self.gate = torch.nn.Parameter(torch.randn(4, 12, 8) / 3)
        self.up = torch.nn.Parameter(torch.randn(4, 12, 8) / 3)
        self.down = torch.nn.Parameter(torch.randn(4, 8, 12) / 3)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.router(x).softmax(-1)
        weights, chosen = probs.topk(2, dim=-1)
        return self.experts(x, chosen, weights)

    def experts(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.silu(torch.einsum("tm,efm->tef", x, self.gate)) * torch.einsum("tm,efm->tef", x, self.up)
        every = torch.einsum("tef,emf->tem", h, self.down) * self.scale
        picked = every.gather(1, chosen[:, :, None].expand(-1, -1, every.shape[-1]))
        return (picked * weights[:, :, None]).sum(1)


class Wrapped(torch.nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.moe = DenseExperts(scale)
        self.moe_experts = ExpertsOnly(self.moe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.moe.router(x).softmax(-1)
        weights, chosen = probs.topk(2, dim=-1)
        return self.moe_experts(x, chosen, weights)


class ExpertsOnly(torch.nn.Module):
    """The experts as their own module (their weights directly on it), as libraries write them."""

    def __init__(self, source: DenseExperts) -> None:
        super().__init__()
        self.gate, self.up, self.down, self.scale = source.gate, source.up, source.down, source.scale

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return DenseExperts.experts(self, x, chosen, weights)  # type: ignore[arg-type]


def test_a_batched_gemm_kernel_is_recognised_and_a_different_sum_is_not() -> None:
    torch.manual_seed(0)
    x, fresh = torch.randn(6, 8), torch.randn(6, 8)
    same = Wrapped(1.0).eval()
    d = _trace(same, x)
    assert "aten.gather.default" not in dict(d.opaque) and any(
        b.prim.op == "parameter" and b.cod[0].axes[0].name == "e" for b in d.boxes())
    torch.testing.assert_close(d.to_torch()(fresh), same(fresh), rtol=1e-4, atol=1e-6)
    other = Wrapped(2.0).eval()  # every expert's output doubled: not the sum the gate and experts draw
    d = _trace(other, x)
    assert not any(b.prim.op == "parameter" and b.cod[0].axes[0].name == "e" for b in d.boxes())
    torch.testing.assert_close(d.to_torch()(fresh), other(fresh), rtol=1e-4, atol=1e-6)


# -- experts read densely (ncd.trace.moe_dense): every expert on every token, weighted by the routing ------------------

DENSE: dict[str, Callable[[], torch.nn.Module]] = {
    # biases, interleaved gate|up halves, a clamped gate (x·σ(1.702x), (up + 1)); a sort and grouped GEMM kernel
    "gpt_oss": lambda: T.GptOssModel(T.GptOssConfig(**TINY, num_local_experts=4, head_dim=8)),
    # the same experts run by a per-expert loop over `nonzero` (refused before: shapes set by the routing)
    "openai_privacy_filter": lambda: T.OpenAIPrivacyFilterModel(T.OpenAIPrivacyFilterConfig(
        **TINY, num_local_experts=4, head_dim=8, pad_token_id=0)),
}


@pytest.mark.parametrize("name", list(DENSE))
def test_experts_with_their_own_gate_are_read_densely_and_equal_the_original(name: str) -> None:
    torch.manual_seed(0)
    model = DENSE[name]().eval()
    ids, d = _perturbed_trace(model)
    assert d.opaque == (), d.opaque  # neither the kernel's plumbing nor the loop: the whole model is drawn
    stacked = [b for b in d.boxes() if b.prim.op == "parameter" and b.cod[0].axes[0].name == "e"]
    assert len(stacked) == 4 and all(int(b.cod[0].axes[0].size) == 4 for b in stacked)  # W_gate_up, W_down, biases
    assert any(b.prim.op == "einsum" and any(a.name == "e" for s in b.dom for a in s.axes)
               and all(a.name != "e" for a in b.cod[0].axes) for b in d.boxes())  # the weighted sum over e
    _equal_on_fresh_input(model, d, ids)


class LoopExperts(torch.nn.ModuleList):
    """A list of experts run by a loop over the tokens each one was routed to (``nonzero``: shapes set by values);
    ``skip`` drops one expert's contribution, so the loop is not the dense weighted sum."""

    def __init__(self, skip: int | None = None) -> None:
        super().__init__([torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.GELU(), torch.nn.Linear(12, 8))
                          for _ in range(4)])
        self.skip = skip

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for e, expert in enumerate(self):
            rows, slots = (chosen == e).nonzero().unbind(-1)
            if e != self.skip:
                out = out.index_add(0, rows, expert(x[rows]) * weights[rows, slots, None])
        return out


class LoopMoE(torch.nn.Module):
    def __init__(self, skip: int | None = None) -> None:
        super().__init__()
        self.router = torch.nn.Linear(8, 4)
        self.experts = LoopExperts(skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = self.router(x).softmax(-1).topk(2, dim=-1)
        return x + self.experts(x, chosen, weights)


class MaskedExperts(torch.nn.ModuleDict):
    """Switch Transformers' form: the router hands over a one-hot mask ``t 1 e`` (tokens over an expert's capacity
    dropped: all zero) and the chosen expert's probability ``t 1``."""

    def __init__(self) -> None:
        super().__init__({f"expert_{e}": torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.ReLU(), torch.nn.Linear(12, 8))
                          for e in range(4)})

    def forward(self, x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for e in mask.permute(2, 1, 0).sum(dim=(-1, -2)).nonzero():
            rows = mask[:, 0, e[0]].nonzero()[:, 0]
            out = out.index_add(0, rows, self[f"expert_{e[0]}"](x[rows]) * weights[rows])
        return out


class MaskedMoE(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.router = torch.nn.Linear(8, 4)
        self.experts = MaskedExperts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.router(x).softmax(-1)
        mask = torch.nn.functional.one_hot(probs.argmax(-1), 4)
        mask = mask * (mask.cumsum(0) <= 2)  # each expert takes at most 2 tokens
        return self.experts(x, mask[:, None, :], probs.max(-1).values[:, None])


def test_a_loop_over_experts_given_a_one_hot_mask_is_read_densely() -> None:
    torch.manual_seed(0)
    x, fresh = torch.randn(6, 8), torch.randn(6, 8)
    model = MaskedMoE().eval()
    d = _trace(model, x)
    assert not {"aten.nonzero.default", "aten.index_add.default"} & set(dict(d.opaque))
    assert sum(b.prim.op == "linear" for b in d.boxes()) == 1 + 4 * 2
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh), rtol=1e-4, atol=1e-6)


def test_a_loop_over_experts_is_read_densely_only_when_it_is_the_weighted_sum() -> None:
    torch.manual_seed(0)
    x, fresh = torch.randn(6, 8), torch.randn(6, 8)
    model = LoopMoE().eval()
    d = _trace(model, x)
    assert d.opaque == ()
    assert sum(b.prim.op == "linear" for b in d.boxes()) == 1 + 4 * 2  # the router, every expert's two linears
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh), rtol=1e-4, atol=1e-6)
    with pytest.raises(ncd.TraceError, match="depend on the values"):  # not the weighted sum: refused as before
        _trace(LoopMoE(skip=2).eval(), x)


class CappedExperts(LoopExperts):
    """The loop, each expert taking at most ``capacity`` of the tokens routed to it (the first ones): the weighted
    sum while no expert is over its capacity, not once one is."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for e, expert in enumerate(self):
            rows, slots = (chosen == e).nonzero().unbind(-1)
            rows, slots = rows[:self.capacity], slots[:self.capacity]
            out = out.index_add(0, rows, expert(x[rows]) * weights[rows, slots, None])
        return out


def test_the_cases_checked_in_one_call_decide_as_the_cases_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dense reading is checked on the traced call and random ones in one call of each side (the tokens one
    after another).  Where that does not hold, the cases are checked one at a time, as before: 2 tokens never fill an
    expert of capacity 2, the 8 tokens of four random cases in one call do; the experts are read densely all the same
    (as the cases one at a time decide), and equal the model on fresh input of the traced size."""
    from ncd.trace import moe_proof

    answers: list[bool] = []
    at_once = moe_proof._agree_at_once
    monkeypatch.setattr(moe_proof, "_agree_at_once", lambda *a: answers.append(at_once(*a)) or answers[-1])
    torch.manual_seed(0)
    x, fresh = torch.randn(2, 8), torch.randn(2, 8)
    model = LoopMoE().eval()
    model.experts = CappedExperts(capacity=2)
    d = _trace(model, x)
    assert answers == [False, True]  # over capacity in one call: one case at a time (then random parameters' one case)
    assert d.opaque == () and sum(b.prim.op == "linear" for b in d.boxes()) == 1 + 4 * 2
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh), rtol=1e-4, atol=1e-6)
    answers.clear()
    _trace(LoopMoE().eval(), torch.randn(6, 8))  # a loop routing every token alone: decided in one call
    assert answers == [True, True]


def test_experts_that_route_their_own_tokens_with_tolist_are_read_densely() -> None:
    """JetMoE's mixtures of experts and of attention experts read their group sizes into Python (``tolist``; refused
    before): read densely — the router's top-k and softmax, the experts over ``e`` — equal on fresh input."""
    torch.manual_seed(0)
    model = T.JetMoeModel(T.JetMoeConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, kv_channels=8,
                                         intermediate_size=48, vocab_size=100, num_hidden_layers=1, num_local_experts=4,
                                         num_experts_per_tok=2, use_cache=False)).eval()
    ids, d = _perturbed_trace(model)
    assert not {"aten.split_with_sizes.default", "aten.index_add.default"} & set(dict(d.opaque)), d.opaque
    stacked = [b for b in d.boxes() if b.prim.op == "parameter" and b.cod[0].axes[0].name == "e"]
    assert len(stacked) == 4  # the experts' input and output weights, of the feed-forward and of the attention
    _equal_on_fresh_input(model, d, ids)


def test_the_watched_call_gives_its_output_only_when_the_class_method_ran_it() -> None:
    """The dense check reuses what the module's own forward gave on the traced arguments: only when the watched method
    is the class's own (an instance's wrapper could compute something else), and equal to a fresh call of it."""
    from ncd.trace.moe_dense import Reading

    torch.manual_seed(0)
    experts = LoopExperts().eval()
    x, chosen, weights = torch.randn(5, 8), torch.tensor([[0, 1], [2, 3], [1, 3], [0, 2], [3, 0]]), torch.rand(5, 2)
    calls: dict[str, tuple[object, ...]] = {}
    gave: dict[str, object] = {}
    undo = Reading(experts, {}, "forward", lambda call, out: True).watch("e", calls, gave)
    with torch.no_grad():
        got = experts(x, chosen, weights)
    undo()
    assert torch.equal(gave["e"], got)  # type: ignore[arg-type]
    with torch.no_grad():
        assert torch.equal(type(experts).forward(experts, *calls["e"]), gave["e"])  # type: ignore[arg-type]
    wrapped = LoopExperts().eval()
    vars(wrapped)["forward"] = lambda *a: 2 * LoopExperts.forward(wrapped, *a)  # not the class's forward
    calls, gave = {}, {}
    undo = Reading(wrapped, {}, "forward", lambda call, out: True).watch("e", calls, gave)
    with torch.no_grad():
        wrapped(x, chosen, weights)
    undo()
    assert "e" in calls and gave == {}



class LastDoubled(LoopExperts):
    """Sixteen experts run by the loop, the last one's output doubled: the weighted sum only while no token chooses it."""

    def __init__(self) -> None:
        super().__init__()
        self.extend(torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.GELU(), torch.nn.Linear(12, 8))
                    for _ in range(12))

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = super().forward(x, chosen, weights)
        rows, slots = (chosen == 15).nonzero().unbind(-1)
        return out.index_add(0, rows, self[15](x[rows]) * weights[rows, slots, None])


class RarelyChosen(torch.nn.Module):
    """One of sixteen experts chosen per token by a router that never chooses the last one on the traced tokens."""

    def __init__(self, experts: torch.nn.Module) -> None:
        super().__init__()
        self.router = torch.nn.Linear(8, 16)
        with torch.no_grad():
            self.router.bias[-1] = -1e4
        self.experts = experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = self.router(x).softmax(-1).topk(1, dim=-1)
        return x + self.experts(x, chosen, weights)


def _sixteen() -> LoopExperts:
    experts = LoopExperts()
    experts.extend(torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.GELU(), torch.nn.Linear(12, 8))
                   for _ in range(12))
    return experts


def test_experts_the_traced_tokens_never_choose_are_checked_all_the_same() -> None:
    """The random cases choose every expert (16 experts, 1 per token, 2 traced tokens: more random tokens than three
    cases of two would have): experts that differ from the weighted sum only where the traced routing never goes are
    refused as the loop they are, never drawn as the sum; right ones are read densely and equal the model."""
    torch.manual_seed(0)
    x, fresh = torch.randn(2, 8), torch.randn(2, 8)
    right = RarelyChosen(_sixteen()).eval()
    d = _trace(right, x)
    assert d.opaque == () and sum(b.prim.op == "linear" for b in d.boxes()) == 1 + 16 * 2
    torch.testing.assert_close(d.to_torch()(fresh), right(fresh), rtol=1e-4, atol=1e-6)
    for seed in range(4):
        torch.manual_seed(seed)
        wrong = RarelyChosen(LastDoubled()).eval()
        x = torch.randn(2, 8)
        assert 15 not in wrong.router(x).argmax(-1).tolist()
        with pytest.raises(ncd.TraceError, match="depend on the values"):  # not the weighted sum: refused
            _trace(wrong, x)


def test_experts_whose_instance_runs_another_forward_are_checked_on_that_forward() -> None:
    """An experts module whose instance carries a forward of its own (a wrapper computing something else than its
    class's forward): the dense reading is checked against what the model runs, so it is refused, never drawn as
    the class's weighted sum (was: checked against the class's forward, and wrong wherever the wrapper differs)."""
    torch.manual_seed(0)
    model = LoopMoE().eval()
    x = torch.randn(6, 8)
    experts = model.experts
    vars(experts)["forward"] = lambda x, chosen, weights: 2 * LoopExperts.forward(experts, x, chosen, weights)
    with pytest.raises(ncd.TraceError, match="depend on the values"):
        _trace(model, x)


class LastScaled(ExpertsOnly):
    """The batched GEMM, the last expert's output doubled: the weighted sum only while no token chooses it."""

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        every = torch.einsum("tef,emf->tem", torch.nn.functional.silu(torch.einsum("tm,efm->tef", x, self.gate))
                             * torch.einsum("tm,efm->tef", x, self.up), self.down)
        every = torch.cat([every[:, :3], 2 * every[:, 3:]], dim=1)
        picked = every.gather(1, chosen[:, :, None].expand(-1, -1, every.shape[-1]))
        return (picked * weights[:, :, None]).sum(1)


class NeverLast(torch.nn.Module):
    def __init__(self, experts: type[ExpertsOnly]) -> None:
        super().__init__()
        self.router = torch.nn.Linear(8, 4)
        with torch.no_grad():
            self.router.bias[3] = -1e4  # the traced tokens never choose the last expert
        self.experts = experts(DenseExperts())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = self.router(x).softmax(-1).topk(2, dim=-1)
        return self.experts(x, chosen, weights)


def test_a_recorded_kernel_is_checked_on_experts_the_traced_tokens_never_choose() -> None:
    """The recorded kernel is re-run on random routings too: one that is the weighted sum on the traced routing
    but doubles an expert no traced token chooses is drawn as recorded (equal to the model once that expert is
    chosen), the right one as the sum over e."""
    torch.manual_seed(0)
    x = torch.randn(6, 8)
    for experts, summed in ((ExpertsOnly, True), (LastScaled, False)):
        model = NeverLast(experts).eval()
        d = _trace(model, x)
        assert any(b.prim.op == "parameter" and b.cod[0].axes[0].name == "e" for b in d.boxes()) == summed
        lowered = d.to_torch()
        with torch.no_grad():
            model.router.bias[3] = 1e4  # now every token chooses it
            for n, p in lowered.named_parameters():
                if n.endswith("router.bias"):
                    p.copy_(model.router.bias)
        torch.testing.assert_close(lowered(x), model(x), rtol=1e-4, atol=1e-6)


class _ManyExperts(torch.nn.Module):
    """32 experts as a batched GEMM, the last one's output doubled or not."""

    def __init__(self, doubled: bool, experts: int = 32) -> None:
        super().__init__()
        self.gate = torch.nn.Parameter(torch.randn(experts, 12, 8) / 3)
        self.up = torch.nn.Parameter(torch.randn(experts, 12, 8) / 3)
        self.down = torch.nn.Parameter(torch.randn(experts, 8, 12) / 3)
        self.doubled = doubled

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.silu(torch.einsum("tm,efm->tef", x, self.gate)) * torch.einsum("tm,efm->tef", x, self.up)
        every = torch.einsum("tef,emf->tem", h, self.down)
        if self.doubled:
            every = torch.cat([every[:, :-1], 2 * every[:, -1:]], dim=1)
        picked = every.gather(1, chosen[:, :, None].expand(-1, -1, every.shape[-1]))
        return (picked * weights[:, :, None]).sum(1)


class _ManyRouted(torch.nn.Module):
    """One of 32 experts chosen per token by a router that never chooses the last on the traced tokens."""

    def __init__(self, doubled: bool) -> None:
        super().__init__()
        self.router = torch.nn.Linear(8, 32)
        with torch.no_grad():
            self.router.bias[-1] = -1e4
        self.experts = _ManyExperts(doubled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = self.router(x).softmax(-1).topk(1, dim=-1)
        out: torch.Tensor = x + self.experts(x, chosen, weights)
        return out


@pytest.mark.parametrize("seed", range(3))
def test_a_recorded_kernel_is_checked_on_every_expert_however_few_the_tokens(seed: int) -> None:
    """Two traced tokens, one of 32 experts each: three random cases of two tokens choose 6 experts at most, so a
    kernel doubling an expert none of them chose was read as the weighted sum, wrong once that expert is chosen.
    More cases route every expert: it is drawn as recorded (equal to the model then), the right one as the sum."""
    for doubled in (False, True):
        torch.manual_seed(seed)
        model, x = _ManyRouted(doubled).eval(), torch.randn(2, 8)
        d = _trace(model, x)
        assert any(b.prim.op == "parameter" and b.cod[0].axes[0].name == "e" for b in d.boxes()) == (not doubled)
        lowered = d.to_torch()
        with torch.no_grad():
            model.router.bias[-1] = 1e4  # now every token chooses the last expert
            for n, p in lowered.named_parameters():
                if n.endswith("router.bias"):
                    p.copy_(model.router.bias)
            torch.testing.assert_close(lowered(x), model(x), rtol=1e-4, atol=1e-6)


def test_a_single_expert_is_a_weighted_sum_over_an_expert_axis_of_one() -> None:
    # HunYuan's tiny corpus config has one local expert: its grouped GEMM (histc, cumsum, _grouped_mm, index_put)
    # was drawn opaque, the reading taken only for two experts or more
    torch.manual_seed(0)
    model = T.MixtralModel(T.MixtralConfig(**(TINY | {"num_experts_per_tok": 1}), num_local_experts=1)).eval()
    ids, d = _perturbed_trace(model)
    assert not KERNEL & set(dict(d.opaque)), d.opaque
    experts = [b for b in d.boxes() if b.prim.op == "parameter" and b.cod[0].axes[0].name == "e"]
    assert len(experts) == 2 and all(int(b.cod[0].axes[0].size) == 1 for b in experts)
    _equal_on_fresh_input(model, d, ids)
