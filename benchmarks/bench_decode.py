"""Decoding from the diagram: cache bytes and step costs of real model shapes, and the lowered decoder's speed.

Prints (1) cache bytes per token and step costs on an H100 preset for GPT-2 small and a
Llama-3.1-8B-shaped grouped-query decoder, and (2) the time of greedy decoding with the lowered
prefill + steps against recomputing the full forward for every new token (both lowered by ncd,
one process, same weights), on a small GPT-2.

    .venv/bin/python benchmarks/bench_decode.py
"""

from __future__ import annotations

import time

import torch

import ncd
from ncd.inference.costs import roofline_for
from ncd.inference.examples import llama_8b_shape


def shapes() -> None:
    print(f"{'model':<16} {'cache B/token':>14} {'step FLOPs':>16} {'weights read':>14} {'cache read':>12}"
          f" {'FLOP/B':>7} {'H100 verdict':>13} {'ms/step':>8}")
    h100 = roofline_for("h100", dtype="bfloat16")
    for name, model, c in (("gpt2-small", ncd.zoo.gpt2(), 1000), ("llama-3.1-8b", llama_8b_shape(), 8192)):
        d = ncd.decode(model)
        costs = d.costs(c=c, t=128, roofline=h100)
        print(f"{name:<16} {d.cache_bytes():>14,} {costs.step_flops:>16,} {costs.weight_bytes:>14,}"
              f" {costs.cache_read_bytes:>12,} {costs.intensity:>7.2f} {costs.bound:>13} {costs.step_seconds * 1e3:>8.3f}")


def speed(new: int = 32) -> None:
    torch.set_num_threads(1)
    model = ncd.zoo.gpt2(v=1000, m=128, k=32, h=4, N=4, n=256, t=16)
    run = ncd.decode(model).lower()
    prompt = torch.randint(0, 1000, (16,), generator=torch.Generator().manual_seed(0))
    run.generate(prompt, new)  # lower every step module once (they are cached by length)
    full = {}
    for length in range(16, 16 + new):
        module = model.to_torch(t=length)
        module.load_state_dict(run.weights)
        full[length] = module.eval()
    with torch.no_grad():
        start = time.perf_counter()
        ours = run.generate(prompt, new)
        cached = time.perf_counter() - start
        start = time.perf_counter()
        tokens = prompt
        for length in range(16, 16 + new):
            tokens = torch.cat([tokens, full[length](tokens)[-1].argmax()[None]])
        recompute = time.perf_counter() - start
    assert ours.tolist() == tokens.tolist()
    print(f"\ngreedy decoding, {new} tokens after 16 (GPT-2 m=128, 4 layers, 1 thread): with caches"
          f" {cached * 1e3:.1f} ms, recomputing the prefix {recompute * 1e3:.1f} ms, ratio {recompute / cached:.2f}x")


if __name__ == "__main__":
    shapes()
    speed()
