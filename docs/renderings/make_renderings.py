"""Regenerate the committed renderings in this folder from the model zoo.

    .venv/bin/python docs/renderings/make_renderings.py

Each entry is written as SVG (the source of truth) and PNG (for quick viewing); look at every
PNG before committing it.
"""

from __future__ import annotations

from pathlib import Path

import ncd
import ncd.zoo
from ncd.zoo.resnets import identity_block

HERE = Path(__file__).parent

ENTRIES = {
    # the paper's figures, side by side in docs/rendering.md
    "scaled_attention": (lambda: ncd.zoo.attention(), {}),
    "multi_head_attention": (lambda: ncd.zoo.multi_head_attention(), {}),
    "digit_mlp": (lambda: ncd.zoo.mlp(), {}),
    "identity_resnet_block": (lambda: identity_block("n1", "n2", 2, "x").block("Identity ResNet block"),
                              {"legend": {"n_b": "n_2/4"}}),
    "unet": (lambda: ncd.zoo.unet(), {"depth": 1}),
    "unet_down_block": (lambda: _first_block(ncd.zoo.unet(), "DownScaleBlock"), {}),
    "unet_up_block": (lambda: _first_block(ncd.zoo.unet(), "UpScaleBlock"), {}),
    # readable at any size
    "resnet_overview": (lambda: ncd.zoo.resnet(), {"depth": 1}),
    "gpt2_overview": (lambda: ncd.zoo.gpt2(), {"depth": 2}),
    "gpt2": (lambda: ncd.zoo.gpt2(), {}),
}


def _first_block(diagram: ncd.Diagram, name: str) -> ncd.Diagram:
    for node in diagram.walk():
        if isinstance(node, ncd.Block) and node.name == name:
            return node
    raise KeyError(name)


def main() -> None:
    for name, (build, options) in ENTRIES.items():
        diagram = build()
        ncd.draw(diagram, HERE / f"{name}.svg", **options)
        ncd.draw(diagram, HERE / f"{name}.png", scale=1.5, **options)
        print(name)


if __name__ == "__main__":
    main()
