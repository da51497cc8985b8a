"""A sparse parameter read dense (``self.w.to_dense()``, a graph's learned adjacency summed or sliced) crashed
``ncd.trace`` with torch's ``NotImplementedError`` (``aten::as_strided`` on SparseCPU): the importer's check whether a
value is the first rows of a learned table sliced the sparse table.  A sparse table has no rows to slice: the check now
says no, and the reads are drawn as any other.  Each model is compared with the lowered module on two inputs."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import ncd


class DenseRead(nn.Module):
    def __init__(self, read: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        a = torch.zeros(5, 5)
        a[0, 1] = a[1, 2] = a[3, 4] = 1.0
        a[2, 2] = 0.5
        self.w = nn.Parameter(a.to_sparse())
        self.lin = nn.Linear(4, 4)
        self.read = read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read(self.w, self.lin(x))


READS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sparse.mm and the dense sum": lambda w, h: torch.sparse.mm(w, h) + w.to_dense().sum(),
    "dense rows": lambda w, h: w.to_dense()[:3] @ h,
    "dense product": lambda w, h: w.to_dense() @ h,
}


@pytest.mark.parametrize("name", sorted(READS))
def test_a_sparse_parameter_read_dense_is_traced_and_lowered_equal_to_the_model(name: str) -> None:
    torch.manual_seed(0)
    model = DenseRead(READS[name]).eval()
    x, fresh = torch.randn(5, 4), torch.randn(5, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
        lowered = d.to_torch()
    with torch.no_grad():
        for given in (x, fresh):
            torch.testing.assert_close(lowered(given), model(given))
