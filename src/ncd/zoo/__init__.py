"""The paper's architectures as diagrams: ``ncd.zoo.<name>(**sizes) -> Diagram``.

Every entry is a top-level block named after the model whose ``meta['defaults']`` holds the
paper's (or the original publication's) sizes, so that ``ncd.zoo.<name>().to_torch()`` and
``.example_inputs()`` need no arguments.  Sizes are keyword arguments named after the
paper's symbols; the diagram itself stays symbolic (it draws with symbols) and is bound at
lowering, where any size can be overridden: ``ncd.zoo.gpt2().to_torch(N=2, m=64)``.

Everything here is built with the public DSL (``import ncd``) only.

>>> import ncd.zoo
>>> sorted(ncd.zoo.MODELS)[:3]
['attention', 'convolution', 'gpt2']
>>> ncd.zoo.mlp().name
'MLP'
"""

from __future__ import annotations

from collections.abc import Callable

from ncd.ir.diagram import Block
from ncd.zoo.convolutions import convolution
from ncd.zoo.heads import attention, multi_head_attention
from ncd.zoo.recogniser import mlp
from ncd.zoo.resnets import resnet
from ncd.zoo.transformers import gpt2, transformer
from ncd.zoo.unets import unet
from ncd.zoo.vision import visual_attention, vit

__all__ = [
    "MODELS", "mlp", "attention", "multi_head_attention", "transformer", "gpt2", "convolution", "resnet", "unet",
    "vit", "visual_attention",
]

#: Every zoo entry by name, in gallery order.
MODELS: dict[str, Callable[..., Block]] = {
    "mlp": mlp,
    "attention": attention,
    "multi_head_attention": multi_head_attention,
    "transformer": transformer,
    "gpt2": gpt2,
    "convolution": convolution,
    "resnet": resnet,
    "unet": unet,
    "vit": vit,
    "visual_attention": visual_attention,
}
