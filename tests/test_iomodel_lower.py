"""Streamed lowering (ncd.iomodel.lower): chunked loop nests against plain PyTorch, and their peak memory.

References: attention and matmul written directly in torch (float64), ncd's own unfused
lowering, and the IO model's M (live elements at the bottom level) for the measured peak.
"""

from __future__ import annotations

import random

import pytest
import torch

import ncd
from ncd.iomodel.lower import peak_bytes, streamed
from ncd.torch.verify import declared_order
from ncd.zoo.heads import scaled_dot_product

TWO = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")


def _divisor(rng: random.Random, n: int) -> int:
    return rng.choice([d for d in range(1, n + 1) if n % d == 0])


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q kᵀ / √d) v in float64, heads (if any) last as in the gallery's wiring."""
    scores = torch.einsum("yk...,xk...->yx...", q, k) / q.shape[1] ** 0.5
    if causal:
        y, x = scores.shape[:2]
        mask = torch.ones(y, x, dtype=torch.bool).triu(1).reshape(y, x, *([1] * (scores.dim() - 2)))
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.einsum("yx...,xk...->yk...", scores.softmax(1), v)


@pytest.mark.parametrize("seed", range(4))
def test_check6_chunked_online_softmax_equals_exact_attention_random_chunkings(seed: int) -> None:
    rng = random.Random(seed)
    heads = "h" if seed % 2 else ""
    causal = seed >= 2
    y = x = 24 if causal else None
    y = y or rng.choice([12, 18, 24])
    x = x or rng.choice([10, 16, 20])
    sizes = {"y": y, "x": x, "k": 4, **({"h": 3} if heads else {})}
    plain = scaled_dot_product(heads, "causal" if causal else None)
    online = ncd.online_softmax(plain)
    gen = torch.Generator().manual_seed(seed)
    shape = lambda n: (n, 4, 3) if heads else (n, 4)  # noqa: E731
    q, k, v = (torch.randn(*shape(n), generator=gen, dtype=torch.float64) * 3 for n in (y, x, x))
    expected = reference(q, k, v, causal)
    # the rewrite computes the same function when lowered the ordinary way
    torch.testing.assert_close(online.to_torch(**sizes).double()(q, k, v), expected)
    torch.testing.assert_close(plain.to_torch(**sizes).double()(q, k, v), expected)
    for _ in range(4):
        by, bx = _divisor(rng, y), _divisor(rng, x)
        fa2 = dict(group={"smem": {"y": by}}, stream={"smem": {"x": bx}})
        fa1 = dict(stream={"smem": {"x": bx, "y": by}})
        for schedule in (fa2, fa1):
            run = streamed(online, TWO, **schedule, **sizes)
            torch.testing.assert_close(run(q, k, v), expected, rtol=1e-12, atol=1e-12)


def test_streamed_matmul_random_chunkings() -> None:
    rng = random.Random(0)
    mm = ncd.Einsum("a b, b c -> a c") >> ncd.ReLU()
    a, b, c = 12, 18, 10
    gen = torch.Generator().manual_seed(1)
    A, B = torch.randn(a, b, generator=gen, dtype=torch.float64), torch.randn(b, c, generator=gen, dtype=torch.float64)
    for _ in range(6):
        ga, gc, sb = _divisor(rng, a), _divisor(rng, c), _divisor(rng, b)
        order = rng.choice([{"b": sb, "a": ga}, {"a": ga, "b": sb}])
        run = streamed(mm, TWO, group={"smem": {"c": gc}}, stream={"smem": order}, a=a, b=b, c=c)
        torch.testing.assert_close(run(A, B), torch.relu(A @ B), rtol=1e-12, atol=1e-12)


def test_streamed_lowering_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ncd.LoweringError, match="without weights"):
        streamed(ncd.Linear("m -> n"), TWO, stream={"smem": {"m": 2}}, m=4, n=4)
    run = streamed(ncd.Einsum("a b, b c -> a c"), TWO, stream={"smem": {"b": 2}}, a=2, b=4, c=2)
    with pytest.raises(ncd.InputError, match="shape"):
        run(torch.zeros(2, 3), torch.zeros(4, 2))


@pytest.mark.parametrize(("n", "k", "g"), [(512, 32, 64), (512, 16, 128)])
def test_measured_peak_memory_follows_the_model(n: int, k: int, g: int) -> None:
    """Peak bytes allocated while the FA2 loop nest runs, less its output, within 10 % of M·q."""
    att = ncd.online_softmax(ncd.zoo.attention(y=n, x=n, k=k))
    schedule = dict(group={"smem": {"y": g}}, stream={"smem": {"x": g}})
    run = streamed(att, TWO, **schedule)
    q, kk, v = (t.double() for t in att.example_inputs())
    peak, out = peak_bytes(lambda: run(q, kk, v))
    model = ncd.io(att, TWO, **schedule, dtype="float64").memory["smem"] * 8
    working = peak - out.numel() * out.element_size()
    assert abs(working - model) <= 0.10 * model, (working, model)
    unfused = att.to_torch().double()
    peak_unfused, ref = peak_bytes(lambda: unfused(q, kk, v))
    torch.testing.assert_close(out, ref)
    assert peak_unfused - ref.numel() * 8 > 10 * working  # S and P (n² each) vs tiles


def test_traced_attention_streams_after_the_rewrite() -> None:
    """A diagram imported from PyTorch: rewritten, relabelled, costed and run chunk by chunk."""

    class Attention(torch.nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return torch.softmax(q @ k.transpose(-1, -2) / 8.0, -1) @ v

    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(n, 8, generator=gen, dtype=torch.float64) for n in (16, 12, 12))
    traced = ncd.trace(Attention(), q.float(), k.float(), v.float())
    key = traced.dom[1].axes[0].name
    query = traced.dom[0].axes[0].name
    with pytest.raises(ncd.NCDError, match=r"ncd\.online_softmax"):
        ncd.io(traced, TWO, stream={"smem": {key: 4}})
    online = ncd.online_softmax(traced)
    schedule = dict(group={"smem": {query: 4}}, stream={"smem": {key: 4}})
    r = ncd.io(online, TWO, **schedule)
    assert r.transfers["smem"] == 2 * 16 * 8 + 2 * 16 * 12 * 8 // 4  # 2ȳk + 2ȳx̄k/g_y
    run = streamed(online, TWO, **schedule)
    torch.testing.assert_close(run(q, k, v), Attention()(q, k, v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gpt2", "vit", "multi_head_attention"])
def test_online_rewrite_of_gallery_models_lowers_equal(name: str) -> None:
    model = getattr(ncd.zoo, name)()
    online = ncd.online_softmax(model)
    assert ncd.iomodel.online.online_blocks(online)
    inputs = model.example_inputs()
    expected = model.to_torch().double().eval()
    got = online.to_torch().double().eval()
    mine, theirs = list(got.parameters()), list(expected.parameters())
    assert [p.shape for p in mine] == [p.shape for p in theirs]
    # in the declared order: the fused module stores the maps feeding SDPA in the order it reads
    weights = declared_order(expected, theirs)
    got.load_state_dict({name: w for (name, _), w in zip(got.named_parameters(), weights)}, strict=False)
    args = [t.double() if t.is_floating_point() else t for t in inputs]
    torch.testing.assert_close(got(*args), expected(*args))


@pytest.mark.parametrize("window", [3, 8])
def test_sliding_window_mask_streams_equal_and_skips_masked_chunks(window: int) -> None:
    """A windowed causal mask: chunked online softmax equals the reference; wholly masked chunks move nothing."""
    from ncd.iomodel.program import flatten
    from ncd.iomodel.schedule import Schedule
    from ncd.iomodel.simulate import simulate

    n, k = 24, 4
    scores = ncd.Einsum("~y k, ~x k -> ~y ~x") >> ncd.Scale("k**-0.5") >> ncd.CausalMask("y", "x", window=window)
    plain = ((scores >> ncd.Softmax("~x")) @ ncd.Identity.of("~x k")) >> ncd.Einsum("~y ~x, ~x k -> ~y k")
    online = ncd.online_softmax(plain)
    gen = torch.Generator().manual_seed(window)
    q, kk, v = (torch.randn(n, k, generator=gen, dtype=torch.float64) for _ in range(3))
    s = (q @ kk.T) / k**0.5
    qi, ki = torch.arange(n)[:, None], torch.arange(n)[None, :]
    expected = s.masked_fill((ki > qi) | (qi - ki >= window), float("-inf")).softmax(1) @ v
    sizes = {"y": n, "x": n, "k": k}
    torch.testing.assert_close(online.to_torch(**sizes).double()(q, kk, v), expected)
    for by, bx in ((4, 4), (6, 2), (8, 12)):
        schedule = dict(group={"smem": {"y": by}}, stream={"smem": {"x": bx}})
        run = streamed(online, TWO, **schedule, **sizes)
        torch.testing.assert_close(run(q, kk, v), expected, rtol=1e-12, atol=1e-12)
        r = ncd.io(online, TWO, **schedule, **sizes)
        p = flatten(online, sizes)
        assert simulate(p, Schedule.make(TWO, p, schedule["group"], schedule["stream"]), "smem") == r.transfers["smem"]
    # FLOPs: only the unmasked pairs of each score matrix
    kept = int(((ki <= qi) & (qi - ki < window)).sum())
    r = ncd.io(online, TWO, **sizes)
    assert r.matmul_flops == 2 * 2 * kept * k


def test_lower_right_causal_mask_streams_equal() -> None:
    """A decoding step's causal mask (its diagonal ending at the last query and key, ``tril(x - y)``): the chunked
    online softmax equals torch's masked reference for chunkings that cut the queries and keys apart."""
    ny, nx, k = 6, 20, 4
    scores = ncd.Einsum("~y k, ~x k -> ~y ~x") >> ncd.Scale("k**-0.5") >> ncd.CausalMask("y", "x", lower_right=True)
    plain = ((scores >> ncd.Softmax("~x")) @ ncd.Identity.of("~x k")) >> ncd.Einsum("~y ~x, ~x k -> ~y k")
    online = ncd.online_softmax(plain)
    gen = torch.Generator().manual_seed(0)
    q, kk, v = (torch.randn(n, k, generator=gen, dtype=torch.float64) for n in (ny, nx, nx))
    blocked = ~torch.ones(ny, nx, dtype=torch.bool).tril(nx - ny)
    expected = ((q @ kk.T) / k**0.5).masked_fill(blocked, float("-inf")).softmax(1) @ v
    sizes = {"y": ny, "x": nx, "k": k}
    torch.testing.assert_close(online.to_torch(**sizes).double()(q, kk, v), expected)
    for by, bx in ((2, 4), (3, 10), (6, 5)):
        run = streamed(online, TWO, group={"smem": {"y": by}}, stream={"smem": {"x": bx}}, **sizes)
        torch.testing.assert_close(run(q, kk, v), expected, rtol=1e-12, atol=1e-12)
