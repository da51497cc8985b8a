"""Measured CPU peak memory of the streamed (FlashAttention-2) lowering against the IO model's M.

For each sequence length: the chunked loop nest (queries grouped by ``g``, keys streamed by
``g``) and ncd's ordinary lowering of the same diagram (scores and probabilities materialised)
run one after the other in this process; the peak bytes each allocates (PyTorch profiler
memory events, see ``ncd.iomodel.lower.peak_bytes``) less its output is printed beside the
model's ``M·q`` for the bottom level.  Run: ``.venv/bin/python benchmarks/bench_io_memory.py``
(``--tokens 16384`` is the IO_MODEL check; the unfused run there allocates about 2 GiB).
"""

from __future__ import annotations

import argparse
import time

import torch

import ncd
from ncd.iomodel.lower import peak_bytes, streamed


def measure(n: int, k: int, g: int, dtype: torch.dtype, unfused: bool) -> None:
    hier = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
    att = ncd.online_softmax(ncd.zoo.attention(y=n, x=n, k=k))
    schedule = dict(group={"smem": {"y": g}}, stream={"smem": {"x": g}})
    q, kk, v = (t.to(dtype) for t in att.example_inputs())
    size = torch.tensor([], dtype=dtype).element_size()
    model = ncd.io(att, hier, **schedule).memory["smem"] * size
    run = streamed(att, hier, **schedule)
    t0 = time.perf_counter()
    peak, out = peak_bytes(lambda: run(q, kk, v))
    t1 = time.perf_counter()
    working = peak - out.numel() * size
    line = (f"n={n:>6} k={k:>4} g={g:>4}  streamed working set {working / 2**20:9.3f} MiB"
            f"  model M·q {model / 2**20:9.3f} MiB  ratio {working / model:6.3f}  ({t1 - t0:.1f} s)")
    if unfused:
        module = att.to_torch().to(dtype)
        peak_u, ref = peak_bytes(lambda: module(q, kk, v))
        err = (ref - out).abs().max().item()
        unfused_working = peak_u - ref.numel() * size
        line += (f"  unfused {unfused_working / 2**20:10.1f} MiB  streamed/unfused {working / unfused_working:.5f}"
                 f"  max|diff| {err:.1e}")
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, nargs="*", default=[1024, 4096, 16384])
    parser.add_argument("-k", type=int, default=128)
    parser.add_argument("-g", type=int, default=128)
    parser.add_argument("--no-unfused", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for n in args.tokens:
        measure(n, args.k, args.g, torch.float32, not args.no_unfused)


if __name__ == "__main__":
    main()
