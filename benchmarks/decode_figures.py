"""The figures of ``ncd.decode`` (issue "Inference from the diagram"), measured against independent counts.

For each model: cache bytes per token (formula and number), step and prefill FLOPs of the matrix products against
``torch.utils.flop_counter`` on the lowered modules (math attention backend), bytes a step reads, arithmetic
intensity and the roofline verdict on the ``h100`` hierarchy preset; for traced ``transformers`` models the bytes
their cache objects hold.  Run: ``python benchmarks/decode_figures.py`` (about a minute).
"""

from __future__ import annotations

import warnings

import sympy
import torch
import transformers as T  # noqa: N812
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import ncd
from ncd.inference.costs import roofline_for
from ncd.inference.examples import gqa_decoder

warnings.filterwarnings("ignore")

SMALL = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
             vocab_size=50, max_position_embeddings=64, use_cache=False)


def counted(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def held(cache: object) -> int:
    total = 0
    for layer in cache.layers:  # type: ignore[attr-defined]
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
        for name in ("conv_states", "recurrent_states"):
            for t in (getattr(layer, name, None) or {}).values():
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
    return total


def report(name: str, d: ncd.inference.Decoding, tokens: torch.Tensor, c: int, **batch: int) -> None:
    t = int(tokens.shape[-1])
    costs = d.costs(dtype="float32", t=t, c=c, roofline=roofline_for("h100", dtype="bfloat16"), **batch)
    run = d.lower()
    logits, caches = run.prefill(tokens)
    pre = counted(run.prefill_module(t, **run._batch(tokens)), tokens)
    grown = [torch.cat([x] * (c // t + 1), dim=-len(s.segment) + s.segment.index(s.axis))
             .narrow(-len(s.segment) + s.segment.index(s.axis), 0, int(s.held(sympy.Integer(c)))) if not s.is_state else x
             for x, s in zip(caches, run._keys())]
    nxt = tokens[..., :1]
    step = counted(run.step_module(c, **run._batch(nxt)), nxt, *grown)
    print(f"{name}: cache/token {d.cache_formula()} = {d.cache_bytes(dtype='bfloat16', **batch)} B bf16;"
          f" state {d.state_formula()}; prefill({t}) matmul FLOPs {costs.prefill_matmul:,} (flop_counter {pre:,});"
          f" step(c={c}) {costs.step_matmul:,} (flop_counter {step:,}), other {costs.step_other:,};"
          f" reads {costs.weight_bytes:,} + {costs.cache_read_bytes:,} B; intensity {costs.intensity:.3f};"
          f" {costs.bound}-bound on {costs.roofline.name if costs.roofline else '-'};"
          f" one lowered step: {run.one_step(**run._batch(nxt))}")


def main() -> None:
    torch.manual_seed(0)
    print("Llama-3.1-8B shape:", ncd.decode(gqa_decoder(v=128256, m=4096, k=128, g=8, r=4, f=14336, N=32))
          .cache_bytes(dtype="bfloat16"), "B/token")
    report("gallery GPT-2 (N=2)", ncd.decode(ncd.zoo.gpt2(v=50, m=16, k=4, h=4, N=2, n=64, t=6)), torch.arange(6) % 50, 9)
    report("DSL grouped-query decoder", ncd.decode(gqa_decoder(N=3)), torch.arange(6) % 40, 9)
    for label, model in (("traced Llama", T.LlamaForCausalLM(T.LlamaConfig(**SMALL))),
                         ("traced Qwen2", T.Qwen2ForCausalLM(T.Qwen2Config(**SMALL))),
                         ("traced Mistral (window 4)", T.MistralForCausalLM(T.MistralConfig(**dict(SMALL, sliding_window=4)))),
                         ("traced Mamba", T.MambaForCausalLM(T.MambaConfig(vocab_size=50, hidden_size=16, state_size=4,
                                                                           num_hidden_layers=2, expand=2, conv_kernel=4,
                                                                           time_step_rank=2, use_cache=False)))):
        model = model.eval()
        ids = torch.randint(0, 50, (3, 6))
        d = ncd.decode(ncd.trace(model, ids, axes={"input_ids": "b ~t"}))
        report(label, d, ids, 9, b=3)
        with torch.no_grad():
            cache = model(ids[:, :5], use_cache=True)
        cache = getattr(cache, "cache_params", None) or cache.past_key_values
        ours = d.cache_bytes_at(5, dtype="float32", b=3)
        print(f"  after 5 tokens x 3 sequences: transformers' cache holds {held(cache):,} B; ncd says {3 * ours:,} B per"
              f" {'3 sequences (the library keeps one more conv position per layer)' if 'Mamba' in label else '3 sequences'}")


if __name__ == "__main__":
    main()
