"""The paper's basic image recogniser for digits (its Figure 2): flatten, three **L₊**, softmax.

>>> import ncd.zoo
>>> d = ncd.zoo.mlp()
>>> str(d.dom), str(d.cod)
('x y', 'k')
>>> sum(p.numel() for p in d.to_torch().parameters())
669706
"""

from __future__ import annotations

import ncd
from ncd.zoo._model import model

__all__ = ["mlp"]


def mlp(x: int = 28, y: int = 28, n: int = 512, k: int = 10) -> ncd.Block:
    """Digit recogniser: an ``x × y`` image is flattened, passed through ``L₊ ➤R➤ L₊ ➤R➤ L₊`` and a softmax over ``k`` classes.

    ``n`` is the hidden width (512 in the paper).
    """
    stack = (
        ncd.Linear("(x y) -> n", bias=True) >> ncd.ReLU()
        >> ncd.Linear("n -> n", bias=True) >> ncd.ReLU()
        >> ncd.Linear("n -> k", bias=True)
    )
    body = flatten("x y -> (x y)") >> stack.block("Linear") >> ncd.Softmax("k").block("SoftMax")
    return model("MLP", body, x=x, y=y, n=n, k=k)


def flatten(spec: str) -> ncd.Diagram:
    """The thick bar joining wires (``28, 28 -> 28²``)."""
    return ncd.Bind(spec)
