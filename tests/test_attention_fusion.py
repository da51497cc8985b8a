"""Softmax-then-contract attention lowers to ``F.scaled_dot_product_attention`` exactly where it means the same.

Every fused module is compared with the box-by-box lowering (``fusion.disabled()``) and with a
hand-written einsum reference, values and gradients; multi-head attention built from
``ncd.Linear`` boxes is compared with ``nn.MultiheadAttention`` with copied weights.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.torch import fusion

SDPA = "scaled_dot_product_attention"


def attend(scores: ncd.Diagram, value: str, contract: str) -> ncd.Diagram:
    return (scores @ ncd.Identity.of(value)) >> ncd.Einsum(contract)


def lowered(d: ncd.Diagram, sizes: dict[str, int]) -> tuple[nn.Module, nn.Module]:
    fused = d.to_torch(**sizes)
    with fusion.disabled():
        plain = d.to_torch(**sizes)
    plain.load_state_dict(fused.state_dict())
    return fused.eval(), plain.eval()


def inputs(d: ncd.Diagram, batch: tuple[int, ...], sizes: dict[str, int], keep_first: bool = True) -> list[torch.Tensor]:
    xs = list(d.example_inputs(*batch, seed=3, **sizes))
    for j, x in enumerate(xs):
        if x.dtype == torch.bool and keep_first:
            x[..., 0] = True  # every query keeps at least one key (SDPA gives 0 where softmax gives NaN)
        elif x.is_floating_point():
            xs[j] = x.requires_grad_(True)
    return xs


def values_and_grads(module: nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    out = module(*xs)
    weight = torch.linspace(-1, 1, out.numel()).view(out.shape)
    leaves = [x for x in xs if x.requires_grad] + list(module.parameters())
    return [out.detach()] + list(torch.autograd.grad((out * weight).sum(), leaves))


def check(d: ncd.Diagram, sizes: dict[str, int], reference, batch: tuple[int, ...] = (2,), fused: bool = True) -> str:
    module, plain = lowered(d, sizes)
    assert (SDPA in module.ncd_source) == fused, module.ncd_source
    assert SDPA not in plain.ncd_source
    xs = inputs(d, batch, sizes)
    got, unfused = values_and_grads(module, xs), values_and_grads(plain, xs)
    with torch.no_grad():
        want = reference(*xs)
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-4)
    for a, b in zip(got, unfused):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    return module.ncd_source


def softmax_masked(scores: torch.Tensor, keep: torch.Tensor | None, dim: int) -> torch.Tensor:
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=dim)


# -- layouts ------------------------------------------------------------------------------------
def test_paper_layout_heads_last() -> None:
    scores = ncd.Einsum("y k h, x k h -> y x h") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
    d = attend(scores, "x k h", "y x h, x k h -> y k h")
    sizes = {"y": 3, "x": 5, "k": 4, "h": 2}

    def reference(q, k, v):
        p = torch.softmax(torch.einsum("...ykh,...xkh->...yxh", q, k) * 0.5, dim=-2)
        return torch.einsum("...yxh,...xkh->...ykh", p, v)

    check(d, sizes, reference)
    check(d, sizes, reference, batch=())
    check(d, sizes, reference, batch=(2, 3))


def test_heads_first_other_names_and_woven_batch() -> None:
    scores = ncd.Einsum("h q d, h t d -> h q t") >> ncd.Scale(0.3) >> ncd.Softmax("t")
    d = ncd.Identity.of("b h q d, b h t d, b h t e") >> attend(scores, "h t e", "h q t, h t e -> h q e")
    sizes = {"b": 2, "h": 3, "q": 4, "t": 6, "d": 5, "e": 7}

    def reference(q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2) * 0.3, dim=-1) @ v

    source = check(d, sizes, reference, batch=())
    assert "torch.movedim" not in source  # already in SDPA's layout: no permutes


def test_several_contracted_and_value_axes() -> None:
    scores = ncd.Einsum("y c d, x c d -> y x") >> ncd.Softmax("x")
    d = attend(scores, "x e f", "y x, x e f -> e y f")
    sizes = {"y": 3, "x": 4, "c": 2, "d": 3, "e": 2, "f": 3}

    def reference(q, k, v):
        p = torch.softmax(torch.einsum("...ycd,...xcd->...yx", q, k), dim=-1)
        return torch.einsum("...yx,...xef->...eyf", p, v)

    check(d, sizes, reference)


def test_multi_query_keys_shared_by_heads() -> None:
    scores = ncd.Einsum("y k h, x k -> y x h") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
    d = attend(scores, "x k", "y x h, x k -> y k h")
    sizes = {"y": 3, "x": 5, "k": 4, "h": 2}

    def reference(q, k, v):
        p = torch.softmax(torch.einsum("...ykh,...xk->...yxh", q, k) * 0.5, dim=-2)
        return torch.einsum("...yxh,...xk->...ykh", p, v)

    check(d, sizes, reference)


def test_inner_broadcast_keys_and_values_shared_over_a_woven_axis() -> None:
    scores = ncd.Einsum("y k h, x k h -> y x h") >> ncd.Scale("k**-0.5") >> ncd.CausalMask("y", "x") >> ncd.Softmax("x")
    d = attend(scores, "x k h", "y x h, x k h -> y k h").weave("b", shared=[1, 2])
    sizes = {"b": 3, "y": 4, "x": 4, "k": 4, "h": 2}

    def reference(q, k, v):
        keep = torch.ones(4, 4, dtype=torch.bool).tril()[:, :, None]
        s = torch.einsum("...bykh,...xkh->...byxh", q, k) * 0.5
        return torch.einsum("...byxh,...xkh->...bykh", softmax_masked(s, keep, -2), v)

    check(d, sizes, reference)
    check(d, sizes, reference, batch=())


# -- masks and dropout ---------------------------------------------------------------------------
@pytest.mark.parametrize("y,x", [(4, 4), (3, 6)])
def test_causal_mask(y: int, x: int) -> None:
    scores = ncd.Einsum("y k h, x k h -> y x h") >> ncd.Scale("k**-0.5") >> ncd.CausalMask("y", "x") >> ncd.Softmax("x")
    d = attend(scores, "x k h", "y x h, x k h -> y k h")
    sizes = {"y": y, "x": x, "k": 4, "h": 2}

    def reference(q, k, v):
        keep = torch.ones(y, x, dtype=torch.bool).tril()[:, :, None]
        p = softmax_masked(torch.einsum("...ykh,...xkh->...yxh", q, k) * 0.5, keep, -2)
        return torch.einsum("...yxh,...xkh->...ykh", p, v)

    assert "is_causal=True" in check(d, sizes, reference)


@pytest.mark.parametrize("causal", [False, True])
def test_padding_mask_shared_by_heads_and_queries(causal: bool) -> None:
    chain = ncd.Einsum("h y k, h x k -> h y x") >> ncd.Scale("k**-0.5")
    scores = (chain @ ncd.Identity.of("x [bool]")) >> ncd.PaddingMask("x")
    scores = (scores >> ncd.CausalMask("y", "x") if causal else scores) >> ncd.Softmax("x")
    d = attend(scores, "h x k", "h y x, h x k -> h y k")
    sizes = {"h": 2, "y": 5, "x": 5, "k": 4}

    def reference(q, k, keep, v):
        keep = keep[..., None, None, :]
        if causal:
            keep = keep & torch.ones(5, 5, dtype=torch.bool).tril()
        return softmax_masked(q @ k.transpose(-1, -2) * 0.5, keep, -1) @ v

    assert "attn_mask=" in check(d, sizes, reference)


def test_padding_mask_with_named_batch_and_several_query_axes() -> None:
    scores = ncd.Einsum("b y z k, b x k -> b y z x") >> ncd.Scale(0.5)
    scores = (scores @ ncd.Identity.of("b x [bool]")) >> ncd.PaddingMask("x") >> ncd.Softmax("x")
    d = attend(scores, "b x k", "b y z x, b x k -> b k y z")
    sizes = {"b": 2, "y": 3, "z": 2, "x": 5, "k": 4}

    def reference(q, k, keep, v):
        s = torch.einsum("...byzk,...bxk->...byzx", q, k) * 0.5
        p = softmax_masked(s, keep[..., :, None, None, :], -1)
        return torch.einsum("...byzx,...bxk->...bkyz", p, v)

    check(d, sizes, reference, batch=())


def test_dropout_is_identity_in_eval_and_sdpa_dropout_in_training() -> None:
    scores = ncd.Einsum("y k, x k -> y x") >> ncd.Softmax("x") >> ncd.Dropout(0.25)
    d = attend(scores, "x k", "y x, x k -> y k")
    sizes = {"y": 3, "x": 4, "k": 5}

    def reference(q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v

    source = check(d, sizes, reference)
    assert "dropout_p=0.25 if self.training else 0.0" in source
    module = d.to_torch(**sizes).train()
    q, k, v = d.example_inputs(2, **sizes)
    torch.manual_seed(7)
    got = module(q, k, v)
    torch.manual_seed(7)
    want = F.scaled_dot_product_attention(q, k, v, dropout_p=0.25, scale=1.0)
    torch.testing.assert_close(got, want)


# -- what must not fuse ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "scores,contract,reference",
    [
        (  # softmax over the query axis: not attention over keys
            ncd.Einsum("y k, x k -> y x") >> ncd.Softmax("y"), "y x, x k -> y k",
            lambda q, k, v: torch.softmax(q @ k.transpose(-1, -2), dim=-2) @ v,
        ),
        (  # log-softmax
            ncd.Einsum("y k, x k -> y x") >> ncd.Softmax("x", log=True), "y x, x k -> y k",
            lambda q, k, v: torch.log_softmax(q @ k.transpose(-1, -2), dim=-1) @ v,
        ),
        (  # an extra nonlinearity between the score einsum and the softmax
            ncd.Einsum("y k, x k -> y x") >> ncd.Tanh() >> ncd.Softmax("x"), "y x, x k -> y k",
            lambda q, k, v: torch.softmax(torch.tanh(q @ k.transpose(-1, -2)), dim=-1) @ v,
        ),
        (  # the second einsum keeps the key axis instead of contracting it
            ncd.Einsum("y k, x k -> y x") >> ncd.Softmax("x"), "y x, x k -> y x k",
            lambda q, k, v: torch.softmax(q @ k.transpose(-1, -2), dim=-1)[..., None] * v[..., None, :, :],
        ),
    ],
    ids=["softmax-over-queries", "log-softmax", "tanh", "keys-kept"],
)
def test_other_patterns_are_lowered_box_by_box(scores, contract, reference) -> None:
    d = attend(scores, "x k", contract)
    check(d, {"y": 3, "x": 4, "k": 5}, reference, fused=False)


def test_negative_scale_after_mask_is_not_fused() -> None:
    scores = ncd.Einsum("y k, x k -> y x") >> ncd.CausalMask("y", "x") >> ncd.Scale(-1) >> ncd.Softmax("x")
    d = attend(scores, "x k", "y x, x k -> y k")

    def reference(q, k, v):
        s = (q @ k.transpose(-1, -2)).masked_fill(torch.ones(4, 4, dtype=torch.bool).triu(1), float("-inf"))
        return torch.softmax(-s, dim=-1) @ v

    module = d.to_torch(y=4, x=4, k=3)
    assert SDPA not in module.ncd_source
    q, k, v = d.example_inputs(2, y=4, x=4, k=3)
    torch.testing.assert_close(module(q, k, v), reference(q, k, v), equal_nan=True)


# -- multi-head attention against torch.nn ---------------------------------------------------------
def multi_head(causal: bool = False) -> ncd.Diagram:
    project = (
        (ncd.Identity.of("y m") >> ncd.Linear("m -> k h", bias=True, name="Q"))
        @ (ncd.Identity.of("x m") >> ncd.Linear("m -> k h", bias=True, name="K"))
        @ (ncd.Identity.of("x m") >> ncd.Linear("m -> k h", bias=True, name="V"))
    )
    scores = ncd.Einsum("y k h, x k h -> y x h") >> ncd.Scale("k**-0.5")
    if causal:
        scores = scores >> ncd.CausalMask("y", "x")
    scores = scores >> ncd.Softmax("x")
    return project >> attend(scores, "x k h", "y x h, x k h -> y k h") >> ncd.Linear("k h -> m", bias=True, name="O")


def copy_weights(module: nn.Module, torch_mha: nn.MultiheadAttention, k: int, h: int) -> None:
    """Torch orders projected features (head, k); the diagram's ``m -> k h`` orders them (k, head)."""
    m = torch_mha.embed_dim
    state = {}
    for name, w, b in zip("QKV", torch_mha.in_proj_weight.chunk(3), torch_mha.in_proj_bias.chunk(3)):
        state[f"L_plus_{name}"] = (w.view(h, k, m).transpose(0, 1).reshape(k * h, m), b.view(h, k).t().reshape(k * h))
    out = torch_mha.out_proj
    state["L_plus_O"] = (out.weight.view(m, h, k).transpose(1, 2).reshape(m, k * h), out.bias)
    linears = [n for n, mod in module.named_modules() if isinstance(mod, nn.Linear)]
    assert len(linears) == 4, linears
    # through the state_dict: it holds the declared order whatever order the weights are stored in
    loaded = {}
    for key, (w, b) in state.items():
        (name,) = [n for n in linears if n.lower().endswith(key.lower())]
        loaded[f"{name}.weight"], loaded[f"{name}.bias"] = w, b
    module.load_state_dict(loaded)


def _mapped_weight_grads(grads: dict[str, torch.Tensor], k: int, h: int) -> dict[str, torch.Tensor]:
    """The diagram's weight gradients in torch's (head, k) feature order: Q, K and V feed SDPA, so their
    weights store their rows (head, k) already (``ncd.prims.patterns.chosen_rows``); O reads SDPA's output, so its
    weight stores its columns (head, k) (``chosen_columns``)."""
    by_box = {name.split(".")[-2].split("_")[-1].upper(): g for name, g in grads.items() if name.endswith("weight")}
    rows = [by_box[c] for c in "QKV"]
    return {"in_proj_weight": torch.cat(rows), "out_proj.weight": by_box["O"]}


@pytest.mark.parametrize("cross,causal", [(False, False), (True, False), (False, True)], ids=["self", "cross", "causal"])
def test_multi_head_attention_equals_torch(cross: bool, causal: bool) -> None:
    m, h, k = 8, 2, 4
    t, s = 5, (7 if cross else 5)
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(m, h, bias=True, batch_first=True)
    d = multi_head(causal)
    module = d.to_torch(y=t, x=s, m=m, k=k, h=h)
    assert SDPA in module.ncd_source
    copy_weights(module, reference, k, h)
    query = torch.randn(3, t, m, requires_grad=True)
    memory = torch.randn(3, s, m, requires_grad=True) if cross else query
    mask = nn.Transformer.generate_square_subsequent_mask(t) if causal else None
    want, _ = reference(query, memory, memory, attn_mask=mask, need_weights=False)
    got = module(query, memory, memory)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    weight = torch.randn_like(got)
    inputs = [query] + ([memory] if cross else [])
    ours = dict(module.named_parameters())
    g_got = torch.autograd.grad((got * weight).sum(), inputs + list(ours.values()))
    g_want = torch.autograd.grad((want * weight).sum(), inputs + [reference.in_proj_weight, reference.out_proj.weight])
    for a, b in zip(g_got[: len(inputs)], g_want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    grads = dict(zip(ours, g_got[len(inputs):]))
    mapped = _mapped_weight_grads(grads, k, h)
    torch.testing.assert_close(mapped["in_proj_weight"], g_want[-2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mapped["out_proj.weight"], g_want[-1], atol=1e-5, rtol=1e-4)
    with fusion.disabled():
        plain = d.to_torch(y=t, x=s, m=m, k=k, h=h)
    plain.load_state_dict(module.state_dict())
    torch.testing.assert_close(plain(query, memory, memory), got, atol=1e-5, rtol=1e-4)


def test_maps_feeding_sdpa_store_rows_in_its_order_and_checkpoints_keep_the_declared_one() -> None:
    # m -> k h feeding SDPA: the weight's rows are stored (h k), the order SDPA reads, so no copy is made;
    # k h -> m reading SDPA's output: its columns are stored (h k), the order SDPA writes, so it reads a view;
    # the state_dict still holds the declared (k h) order, round trips, and loads into a module that keeps it
    m, h, k, t = 8, 2, 4, 5
    d = multi_head()
    module = d.to_torch(y=t, x=t, m=m, k=k, h=h)
    assert ".contiguous()" not in module.ncd_source and module.ncd_source.count(".transpose(-1, -2)") == 4
    state = module.state_dict()
    params = dict(module.named_parameters())
    for name in ("l_plus_q", "l_plus_k", "l_plus_v"):
        w, b = params[f"{name}.weight"], params[f"{name}.bias"]
        torch.testing.assert_close(state[f"{name}.weight"], w.view(h, k, m).transpose(0, 1).reshape(k * h, m), rtol=0, atol=0)
        torch.testing.assert_close(state[f"{name}.bias"], b.view(h, k).t().reshape(k * h), rtol=0, atol=0)
    torch.testing.assert_close(state["l_plus_o.weight"], params["l_plus_o.weight"].view(m, h, k).transpose(1, 2).reshape(m, k * h),
                               rtol=0, atol=0)
    torch.testing.assert_close(state["l_plus_o.bias"], params["l_plus_o.bias"], rtol=0, atol=0)
    again = d.to_torch(y=t, x=t, m=m, k=k, h=h)
    again.load_state_dict(state)
    assert all(torch.equal(state[n], v) for n, v in again.state_dict().items()) and state.keys() == again.state_dict().keys()
    with fusion.disabled():  # box by box: every weight in its declared order
        plain = d.to_torch(y=t, x=t, m=m, k=k, h=h)
    assert ".transpose" not in plain.ncd_source
    plain.load_state_dict(state)
    assert all(torch.equal(plain.state_dict()[n], v) for n, v in state.items())
    x = torch.randn(3, t, m)
    torch.testing.assert_close(module(x, x, x), plain(x, x, x), atol=1e-5, rtol=1e-4)
    module.load_state_dict(plain.state_dict())  # and back
    torch.testing.assert_close(module(x, x, x), plain(x, x, x), atol=1e-5, rtol=1e-4)


def test_lowered_modules_run_under_torch_compile() -> None:
    # dynamo imports the module of the generated code it inlines: the generated namespace is a registered module
    m, h, k, t = 8, 2, 4, 5
    module = multi_head().to_torch(check_inputs=False, y=t, x=t, m=m, k=k, h=h)
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    x = torch.randn(3, t, m)
    torch.testing.assert_close(compiled(x, x, x), module(x, x, x))
    # the gallery's blocks: an operand given by the caller is packed by a test of its stride, no graph break
    from ncd.zoo.heads import heads_attention

    gallery = heads_attention(self_attention=True, tokens="t").block("MHA").to_torch(check_inputs=False, t=t, m=m, h=h, k=k)
    torch.testing.assert_close(torch.compile(gallery, backend="eager", fullgraph=True)(x), gallery(x))


def _hand_mha(m: int, h: int) -> nn.Module:
    """Self-attention as an engineer writes it (the baseline of ``benchmarks/bench_lowering.py``)."""
    from tests.benchmarks import benchmark

    return benchmark("bench_lowering").HandMHA(m, h)  # type: ignore[no-any-return]


def _aten_ops(module: nn.Module, x: torch.Tensor, backward: bool) -> dict[str, int]:
    """How often each kernel that computes or copies runs (ATen ops, as the profiler records them)."""
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    kernels = ("aten::addmm", "aten::mm", "aten::bmm", "aten::clone", "aten::copy_", "aten::contiguous",
               "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_softmax")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        if backward:
            module(x).sum().backward()
        else:
            with torch.no_grad():
                module(x)
    return dict(Counter(e.name for e in prof.events() if e.name in kernels))


@pytest.mark.parametrize("wiring", ["gallery", "one sequence"])
def test_multi_head_attention_runs_the_kernels_of_hand_written_code(wiring: str) -> None:
    # the gallery's wiring puts the projections and the attention in blocks of their own: the projections still
    # store their rows (h k) (the attention opens the next block), the attention block packs an operand only if
    # its caller gives a strided last dimension, and L^O stores its columns (h k), reading SDPA's output as a view
    from ncd.zoo.heads import heads_attention

    m, h, t = 16, 4, 6
    if wiring == "gallery":
        d = heads_attention(self_attention=True, tokens="t").block("MultiHeadAttention")
    else:
        q = ncd.Linear("m -> k h", bias=True, name="Q")
        kv = ncd.Identity.of("t m") >> ncd.Rename("t -> x")
        scores = ncd.Einsum("t k h, x k h -> h t x") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
        attend = (scores @ ncd.Identity.of("x k h")) >> ncd.Einsum("h t x, x k h -> t k h")
        d = (ncd.Copy("t m", 3) >> (q @ (kv >> ncd.Linear("m -> k h", bias=True, name="K"))
                                    @ (kv >> ncd.Linear("m -> k h", bias=True, name="V")))
             >> attend >> ncd.Linear("k h -> m", bias=True, name="O"))
    module = d.to_torch(t=t, m=m, h=h, k=m // h)
    packing = module.ncd_source.count(".stride(-1) == 1 else")  # an operand given by the caller: packed if strided
    assert packing == (3 if wiring == "gallery" else 0) and module.ncd_source.count(".contiguous()") == packing
    x = torch.randn(2, t, m)
    hand = _hand_mha(m, h)
    for backward in (False, True):
        assert _aten_ops(module, x, backward) == _aten_ops(hand, x, backward)
    with fusion.disabled():
        plain = d.to_torch(t=t, m=m, h=h, k=m // h)
    plain.load_state_dict(module.state_dict())
    torch.testing.assert_close(module(x), plain(x), atol=1e-5, rtol=1e-4)


def test_three_head_axes_store_rows_and_columns_permuted_and_checkpoints_keep_the_declared_order() -> None:
    # m -> k h g feeding SDPA (heads h g): rows stored (h g k); k h g -> m reading its output: columns (h g k)
    q = ncd.Linear("m -> k h g", bias=True, name="Q")
    kv = ncd.Identity.of("t m") >> ncd.Rename("t -> x")
    scores = ncd.Einsum("t k h g, x k h g -> h g t x") >> ncd.Softmax("x")
    attend = (scores @ ncd.Identity.of("x k h g")) >> ncd.Einsum("h g t x, x k h g -> t k h g")
    d = (ncd.Copy("t m", 3) >> (q @ (kv >> ncd.Linear("m -> k h g", bias=True, name="K"))
                                @ (kv >> ncd.Linear("m -> k h g", bias=True, name="V")))
         >> attend >> ncd.Linear("k h g -> m", bias=True, name="O"))
    sizes = dict(t=5, m=24, k=2, h=3, g=4)
    module = d.to_torch(**sizes)
    assert "# columns of l_plus_o stored (h g k)" in module.ncd_source and "# rows of l_plus_q stored (h g k)" in module.ncd_source
    with fusion.disabled():
        plain = d.to_torch(**sizes)
    plain.load_state_dict(module.state_dict())
    x = torch.randn(2, 5, 24)
    torch.testing.assert_close(module(x), plain(x), atol=1e-5, rtol=1e-4)
    again = d.to_torch(**sizes)
    again.load_state_dict(plain.state_dict())
    torch.testing.assert_close(again(x), plain(x), atol=1e-5, rtol=1e-4)
