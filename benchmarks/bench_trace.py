"""Benchmark: ``ncd.trace`` (+ layout and SVG) against ``torchview.draw_graph`` to SVG, on the same models.

Prints one table: model, layers, ncd trace time, ncd layout+SVG time, torchview time (its
Graphviz layout runs in a subprocess with a time limit), opaque boxes.  Models are built
from configs with random weights (no downloads): GPT-2 small, BERT-base, ViT-B/16, a plain
ResNet-50, and GPT-2 small with 12, 24 and 48 layers.

    .venv/bin/python benchmarks/bench_trace.py            # everything (minutes)
    .venv/bin/python benchmarks/bench_trace.py --quick    # small widths, a smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

warnings.filterwarnings("ignore")


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet50(nn.Module):
    """A plain ResNet-50 (torchvision's layout, written out here)."""

    def __init__(self, classes: int = 1000, base: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, base, 7, 2, 3, bias=False), nn.BatchNorm2d(base), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], base
        for k, (blocks, stride) in enumerate([(3, 1), (4, 2), (6, 2), (3, 2)]):
            width = base * 2 ** k
            stage = []
            for j in range(blocks):
                stage.append(Bottleneck(cin, width, stride if j == 0 else 1))
                cin = width * 4
            layers.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)).mean((2, 3)))


def models(quick: bool) -> list[tuple[str, int, Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]]]:
    import transformers as T

    m, heads, ff = (64, 4, 256) if quick else (768, 12, 3072)
    tokens, image = (16, 32) if quick else (128, 224)

    def gpt2(n: int) -> Callable[[], Any]:
        return lambda: (T.GPT2Model(T.GPT2Config(n_layer=n, n_embd=m, n_head=heads, use_cache=False)),
                        (torch.randint(0, 1000, (1, tokens)),))

    def bert() -> Any:
        return T.BertModel(T.BertConfig(hidden_size=m, num_attention_heads=heads, intermediate_size=ff)), \
            (torch.randint(0, 1000, (1, tokens)),)

    def vit() -> Any:
        return T.ViTModel(T.ViTConfig(hidden_size=m, num_attention_heads=heads, intermediate_size=ff, image_size=image,
                                      patch_size=16)), (torch.randn(1, 3, image, image),)

    def resnet() -> Any:
        return ResNet50(base=16 if quick else 64), (torch.randn(1, 3, image, image),)

    return [("GPT-2 small", 12, gpt2(12)), ("BERT-base", 12, bert), ("ViT-B/16", 12, vit), ("ResNet-50", 50, resnet),
            ("GPT-2", 24, gpt2(24)), ("GPT-2", 48, gpt2(48))]


def _torchview(build: Callable[[], Any], out: Any) -> None:
    import torchview

    model, args = build()
    start = time.perf_counter()
    graph = torchview.draw_graph(model.eval(), input_data=list(args), save_graph=False)
    graph.visual_graph.pipe(format="svg")
    out.put(time.perf_counter() - start)


def time_torchview(build: Callable[[], Any], limit: float) -> str:
    queue: Any = multiprocessing.Queue()
    process = multiprocessing.Process(target=_torchview, args=(build, queue))
    process.start()
    process.join(limit)
    if process.is_alive():
        process.terminate()
        process.join()
        return f"> {limit:.0f} s"
    return f"{queue.get():.2f} s" if not queue.empty() else "failed"


def main() -> None:
    import ncd
    from ncd.render import to_svg

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small widths (a smoke run)")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds allowed to torchview per model")
    parser.add_argument("--no-torchview", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| model | layers | ncd trace | ncd layout+SVG | ncd total | torchview (SVG) | opaque boxes |")
    print("|---|---|---|---|---|---|---|")
    for name, layers, build in models(args.quick):
        model, inputs = build()
        start = time.perf_counter()
        diagram = ncd.trace(model.eval(), *inputs)
        traced = time.perf_counter() - start
        start = time.perf_counter()
        to_svg(diagram)
        drawn = time.perf_counter() - start
        other = "skipped" if args.no_torchview else time_torchview(build, args.limit)
        print(f"| {name} | {layers} | {traced:.2f} s | {drawn:.2f} s | {traced + drawn:.2f} s | {other} | {diagram.opaque_count} |",
              flush=True)


if __name__ == "__main__":
    main()
