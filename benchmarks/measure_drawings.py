"""Measure the drawings issue #12 asks about: aspect ratio, smallest label, layout problems.

For every gallery model (default and ``depth=1``) and small traced GPT-2, Llama and ViT models:
width:height, the smallest text in points once the drawing is scaled to a 6.5-inch column
(468 pt; a narrower drawing is printed at its own size), and the count of problems
``ncd.render.check`` finds.

    .venv/bin/python benchmarks/measure_drawings.py [--wide]
"""

from __future__ import annotations

import sys
import warnings

import ncd
from ncd.render.check import problems
from ncd.render.measure import drawing_figures

warnings.filterwarnings("ignore")


def traced() -> dict[str, ncd.Diagram]:
    import torch
    import transformers as T

    torch.manual_seed(0)
    out = {}
    gpt2 = T.GPT2Model(T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=16, use_cache=False))
    out["traced gpt2"] = ncd.trace(gpt2.eval(), torch.randint(0, 50, (2, 6)))
    llama = T.LlamaModel(T.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                       intermediate_size=64, vocab_size=50, max_position_embeddings=16, use_cache=False))
    out["traced llama"] = ncd.trace(llama.eval(), torch.randint(0, 50, (2, 6)))
    vit = T.ViTModel(T.ViTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                 image_size=16, patch_size=4, num_channels=3))
    out["traced vit"] = ncd.trace(vit.eval(), torch.randn(2, 3, 16, 16))
    return out


def main() -> None:
    extra = {"wide": True} if "--wide" in sys.argv else {}
    cases: list[tuple[str, ncd.Diagram, dict]] = []
    for name, factory in ncd.zoo.MODELS.items():
        d = factory()
        cases.append((name, d, {}))
        cases.append((f"{name} depth=1", d, {"depth": 1}))
    for name, d in traced().items():
        cases.append((name, d, {}))
    print(f"{'drawing':32} {'w×h pt':>14} {'aspect':>7} {'min pt':>7} {'problems':>8}")
    worst_aspect, worst_pt, total = 0.0, 99.0, 0
    for name, d, opts in cases:
        drawing = ncd.render.layout(d, **opts, **extra)
        fig = drawing_figures(drawing)
        n = len(problems(drawing))
        total += n
        worst_aspect, worst_pt = max(worst_aspect, fig.aspect), min(worst_pt, fig.min_label_pt)
        print(f"{name:32} {drawing.width:6.0f}×{drawing.height:<7.0f} {fig.aspect:7.2f} {fig.min_label_pt:7.2f} {n:8d}")
    wide = sum(1 for name, d, o in cases if drawing_figures(ncd.render.layout(d, **o, **extra)).aspect > 3)
    print(f"\n{len(cases)} drawings: worst aspect {worst_aspect:.2f}, {wide} wider than 3:1, "
          f"smallest label {worst_pt:.2f} pt, {total} problems")


if __name__ == "__main__":
    main()
