"""Samples for embeddings and the (tied) output head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ncd
from ncd.errors import LoweringError, ParseError, TypeMismatchError
from tests.opdb import error, sample


def weights(params: dict) -> list:
    return [v for k, v in params.items() if k.endswith("weight")]


sample("embedding", "tokens", lambda: ncd.Identity.of("b t [v]") >> ncd.Embedding("v", "m", name="E"),
       {"b": 2, "t": 3, "v": 10, "m": 4}, lambda p, x: F.embedding(x[0], weights(p)[0]), dom="b t [v]", cod="b t m")
sample("embedding", "multi-axis", lambda: ncd.Embedding("v:7", "k h"), {"k": 2, "h": 3},
       lambda p, x: F.embedding(x[0], weights(p)[0]).unflatten(-1, (2, 3)), dom="[7]", cod="k h")
sample("embedding", "padding", lambda: ncd.Identity.of("t [v]") >> ncd.Embedding("v", "m", padding_idx=1),
       {"t": 3, "v": 10, "m": 4}, lambda p, x: F.embedding(x[0], weights(p)[0], padding_idx=1),
       inputs=lambda s: (torch.tensor([[1, 0, 1], [4, 1, 9]]),), dom="t [v]", cod="t m")
error("embedding", "padding-row", lambda: ncd.Embedding("v:7", "m", padding_idx=7), r"padding_idx 7 is not a row", ParseError)
error("embedding", "float-input", lambda: ncd.Identity.of("b t") >> ncd.Embedding("v", "m"),
      r"segment 0 holds float values but index values are expected", TypeMismatchError)

sample("unembed", "untied", lambda: ncd.Identity.of("t m") >> ncd.Unembed("v", "m", bias=True), {"t": 3, "v": 10, "m": 4},
       lambda p, x: F.linear(x[0], weights(p)[0], [v for k, v in p.items() if k.endswith("bias")][0]), cod="t v")


def _tied_reference(p: dict, x: tuple) -> object:
    (table,) = weights(p)  # one shared parameter
    return F.linear(F.embedding(x[0], table), table)


sample("unembed", "tied", lambda: ncd.Identity.of("t [v]") >> ncd.Embedding("v", "m", name="E")
       >> ncd.Unembed("v", "m", tied_to="E"), {"t": 3, "v": 10, "m": 4}, _tied_reference, cod="t v")
error("unembed", "no-table", lambda: (ncd.Identity.of("t m") >> ncd.Unembed("v", "m", tied_to="E")).to_torch(t=2, v=5, m=3),
      r"tied to the embedding labelled 'E', but no embedding box with that label", LoweringError)
error("unembed", "shape", lambda: (ncd.Embedding("v", "m", name="E") >> ncd.Unembed("w", "m", tied_to="E")).to_torch(
      v=5, w=6, m=3), r"table is 5 x 3, but it maps m \(3\) to w=6", LoweringError)
