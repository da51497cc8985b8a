"""A table a submodule computes in its forward from its input's length, which the trace keeps at the traced length:
lowering at another length is refused naming the box, its wires and the module that made it (the corpus's cohere2:
its interleaved rotary tables, ``made in layers.0.self_attn``)."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd


class Table(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        pos = torch.arange(t, dtype=torch.float32)[:, None]
        return x + torch.cat([torch.sin(pos * 0.3), torch.cos(pos * 0.7)], dim=-1).repeat(1, x.shape[-1] // 2)


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table, self.lin = Table(), torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.lin(self.table(x))
        return out


def test_a_table_of_the_traced_length_is_named_by_the_module_that_made_it() -> None:
    torch.manual_seed(0)
    model = Model().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(2, 6, 8))
    x = torch.randn(3, 6, 8)
    torch.testing.assert_close(d.to_torch(b=3)(x), model(x))  # the table holds no batch: other batches lower
    with pytest.raises(ncd.TraceError, match=r"cannot lower Model at \{'t': 9\} \(traced at \{'t': 6\}\): these boxes"
                       r" hold tensors .*constant .*'t̅ .*' \(made in table: Table\).*other sizes lower: b"):
        d.to_torch(t=9)
