"""Lowered ncd modules against hand-written PyTorch and torch.nn, side by side in one process.

Prints a table of median times (forward, and forward+backward) and ratios against the faster
baseline.  Target: ratio <= 1.02.  Run: ``.venv/bin/python benchmarks/bench_lowering.py``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import benchmark

import ncd

torch.set_num_threads(max(1, torch.get_num_threads()))


# -- the diagrams ---------------------------------------------------------------------------
def mha_diagram(heads_first: bool = False) -> ncd.Diagram:
    """Self-attention: L^Q, L^K, L^V : m -> k h (the gallery's wiring; ``heads_first``: m -> h k), scores,
    softmax over keys, values, L^O."""
    heads = "h k" if heads_first else "k h"
    q = ncd.Identity.of("t m") >> ncd.Linear(f"m -> {heads}", bias=True, name="Q")
    k = ncd.Identity.of("t m") >> ncd.Rename("t -> x") >> ncd.Linear(f"m -> {heads}", bias=True, name="K")
    v = ncd.Identity.of("t m") >> ncd.Rename("t -> x") >> ncd.Linear(f"m -> {heads}", bias=True, name="V")
    scores = ncd.Einsum(f"t {heads}, x {heads} -> h t x") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
    attend = (scores @ ncd.Identity.of(f"x {heads}")) >> ncd.Einsum(f"h t x, x {heads} -> t {heads}")
    out = ncd.Linear(f"{heads} -> m", bias=True, name="O")
    return (ncd.Copy("t m", 3) >> (q @ k @ v) >> attend >> out).block("MultiHeadAttention")


class HandMHA(nn.Module):
    """What an engineer would write by hand: separate projections and SDPA."""

    def __init__(self, m: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.q, self.k, self.v, self.o = (nn.Linear(m, m) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, m = x.shape
        split = lambda y: y.view(b, t, self.h, m // self.h).transpose(1, 2)
        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.o(y.transpose(1, 2).reshape(b, t, m))


class TorchMHA(nn.Module):
    def __init__(self, m: int, h: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(m, h, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def gallery_mha_diagram() -> ncd.Diagram:
    """The gallery's own multi-head attention (``ncd.zoo.heads_attention``): the projections in a ``Linear`` block,
    the attention in a ``ScaledDotProductAttention`` block, ``L^O`` after them."""
    from ncd.zoo.heads import heads_attention

    return heads_attention(self_attention=True, tokens="t").block("MultiHeadAttention")


def gallery_encoder_layer_diagram() -> ncd.Diagram:
    """The transformer's encoder layer as ``ncd.zoo.transformer`` builds it (post-norm sublayers, no dropout)."""
    from ncd.zoo.heads import heads_attention
    from ncd.zoo.transformers import add_norm, feed_forward

    return (add_norm(heads_attention(self_attention=True, tokens="t"), "t", 0.0)
            >> add_norm(feed_forward(ncd.ReLU()), "t", 0.0)).block("EncoderLayer")


def encoder_layer_diagram() -> ncd.Diagram | None:
    if not hasattr(ncd, "LayerNorm"):
        return None
    attn = mha_diagram()
    ff = ncd.Linear("m -> f", bias=True, name="1") >> ncd.ReLU() >> ncd.Linear("f -> m", bias=True, name="2")
    first = (ncd.residual(attn) >> ncd.LayerNorm("m")).block("AttentionSublayer")
    second = (ncd.residual(ff) >> ncd.LayerNorm("m")).block("FeedForwardSublayer")
    return (first >> second).block("EncoderLayer")


class HandEncoderLayer(nn.Module):
    def __init__(self, m: int, h: int, f: int) -> None:
        super().__init__()
        self.attn = HandMHA(m, h)
        self.n1, self.n2 = nn.LayerNorm(m), nn.LayerNorm(m)
        self.l1, self.l2 = nn.Linear(m, f), nn.Linear(f, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.n1(x + self.attn(x))
        return self.n2(x + self.l2(torch.relu(self.l1(x))))


class TorchEncoderLayer(nn.Module):
    def __init__(self, m: int, h: int, f: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(m, h, f, dropout=0.0, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def conv_block_diagram() -> ncd.Diagram | None:
    if not hasattr(ncd, "Conv"):
        return None
    conv = ncd.Conv("c x y -> d x y", kernel=3, padding=1, bias=True)
    return (conv >> ncd.ReLU() >> ncd.Conv("d x y -> d x y", kernel=3, padding=1, bias=True) >> ncd.ReLU()).block("ConvBlock")


class HandConvBlock(nn.Module):
    def __init__(self, c: int, d: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, d, 3, padding=1), nn.Conv2d(d, d, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.c2(torch.relu(self.c1(x))))


class TorchConvBlock(nn.Sequential):
    def __init__(self, c: int, d: int) -> None:
        super().__init__(nn.Conv2d(c, d, 3, padding=1), nn.ReLU(), nn.Conv2d(d, d, 3, padding=1), nn.ReLU())


# -- timing ----------------------------------------------------------------------------------
def median(fn: Callable[[], object], min_run_time: float) -> float:
    # the timer's own thread count (1 by default) would change torch's global state between calls, which makes
    # dynamo recompile a compiled module every time and fall back to eager after its recompile limit
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def forward_backward(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def step() -> None:
        module(x).sum().backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (smoke test)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case")
    parser.add_argument("--compile", action="store_true", help="also time every contender under torch.compile")
    parser.add_argument("--cases", default="", help="comma-separated substrings of the case names to run")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default); 1 is steadier on a machine shared by other jobs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    b, t, m, h, f = (2, 16, 32, 4, 64) if args.quick else (8, 128, 256, 8, 1024)
    c, d, px = (3, 8, 16) if args.quick else (32, 64, 56)
    run_time = 0.05 if args.quick else 0.5
    cases = []
    mha = [("hand-written", HandMHA(m, h)), ("nn.MultiheadAttention", TorchMHA(m, h))]
    cases.append(("multi-head attention (k h)", mha_diagram(), dict(t=t, m=m, h=h, k=m // h), torch.randn(b, t, m), mha))
    cases.append(("multi-head attention (h k)", mha_diagram(heads_first=True), dict(t=t, m=m, h=h, k=m // h),
                  torch.randn(b, t, m), mha))
    cases.append(("gallery multi-head attention", gallery_mha_diagram(), dict(t=t, m=m, h=h, k=m // h),
                  torch.randn(b, t, m), mha))
    encoders = [("hand-written", HandEncoderLayer(m, h, f)), ("nn.TransformerEncoderLayer", TorchEncoderLayer(m, h, f))]
    enc = encoder_layer_diagram()
    if enc is not None:
        cases.append(("transformer encoder layer", enc, dict(t=t, m=m, h=h, k=m // h, f=f), torch.randn(b, t, m),
                      encoders))
    cases.append(("gallery encoder layer", gallery_encoder_layer_diagram(), dict(t=t, m=m, h=h, k=m // h, f=f),
                  torch.randn(b, t, m), encoders))
    conv = conv_block_diagram()
    if conv is not None:
        cases.append(("convolution block", conv, dict(c=c, d=d, x=px, y=px), torch.randn(b, c, px, px),
                      [("hand-written", HandConvBlock(c, d)), ("nn.Sequential", TorchConvBlock(c, d))]))
    if args.cases:
        cases = [case for case in cases if any(key in case[0] for key in args.cases.split(","))]
    print(f"threads={torch.get_num_threads()}  torch={torch.__version__}  rounds={args.rounds}")
    print("ncd = layouts chosen (maps feeding SDPA store rows in its order, other operands packed); before = inherited")
    header = f"{'model':30} {'pass':26} {'ncd ms':>9} {'before':>9} {'faster baseline':>38} {'ratio':>7} {'before':>7}"
    print(header)
    print("-" * len(header))
    from ncd.torch.fusion import inherited_layouts

    for name, diagram, sizes, x, baselines in cases:
        module = diagram.to_torch(check_inputs=False, **sizes)
        with inherited_layouts():
            before = diagram.to_torch(check_inputs=False, **sizes)
        before.load_state_dict(module.state_dict())
        variants = [("eager", lambda mod: mod)] + ([("compiled", torch.compile)] if args.compile else [])
        for how, wrap in variants:
            for mode in ("forward", "forward+backward"):
                if how == "compiled":
                    torch._dynamo.reset()  # drop the previous pass's graphs (kept, they crashed inductor here once)
                modules = [(label, wrap(mod)) for label, mod in [("ncd", module), ("before", before)] + baselines]
                samples: dict[str, list[float]] = {label: [] for label, _ in modules}
                for round_ in range(args.rounds):  # interleave contenders, alternating the order, to cancel drift
                    for label, mod in modules if round_ % 2 == 0 else list(reversed(modules)):
                        mod.train(mode != "forward")
                        if mode == "forward":
                            with torch.no_grad():
                                mod(x)
                                samples[label].append(median(lambda mod=mod: mod(x), run_time))
                        else:
                            step = forward_backward(mod, x)
                            step()  # warm up (compiles on the first call)
                            samples[label].append(median(step, run_time))
                times = {label: statistics.median(values) for label, values in samples.items()}
                best_label = min((lbl for lbl, _ in baselines), key=lambda lbl: times[lbl])
                base = f"{best_label} {times[best_label] * 1e3:8.3f}"
                # each round's ratio against the faster baseline of that same round (drift on a loaded
                # machine cancels within a round), then the median over rounds
                best = [min(samples[lbl][r] for lbl, _ in baselines) for r in range(args.rounds)]
                ratio = statistics.median(a / c for a, c in zip(samples["ncd"], best))
                ratio_before = statistics.median(a / c for a, c in zip(samples["before"], best))
                others = "  ".join(f"{lbl} {times[lbl] * 1e3:.3f}" for lbl, _ in baselines if lbl != best_label)
                print(f"{name:30} {mode + ' ' + how:26} {times['ncd'] * 1e3:9.3f} {times['before'] * 1e3:9.3f} {base:>38}"
                      f" {ratio:7.3f} {ratio_before:7.3f}   ({others})")
    print("ratio = median over rounds of (time / the faster baseline in that round), each time a blocked_autorange"
          " median; target <= 1.02")


if __name__ == "__main__":
    main()
