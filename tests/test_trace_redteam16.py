"""redteam16: models users bring that the corpus does not try.

A sparse buffer (a graph's adjacency, read by ``torch.sparse.mm`` or ``@``) or a sparse parameter crashed
``ncd.trace`` (``NotImplementedError: Cannot access storage of SparseTensorImpl``, raised from the importer's
parameter bookkeeping), and a sparse ``@`` was drawn as an einsum whose lowered module failed on the sparse operand.
Now a sparse tensor of the model is held dense (a ``θ`` or constant box) and made sparse again by an opaque
``to_sparse``; any operator reading a sparse tensor is the operator itself.  Each check compares against the model.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.render import to_svg


def _adjacency() -> torch.Tensor:
    a = torch.zeros(6, 6)
    a[0, 1] = a[1, 2] = a[3, 4] = a[5, 0] = 1.0
    a[2, 2] = 0.5
    return a


class SparseMM(nn.Module):
    """A graph convolution: the adjacency a sparse COO buffer, ``torch.sparse.mm`` of it and a projection."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("adj", _adjacency().to_sparse())
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self.adj, self.lin(x)).relu()


class SparseMatmul(nn.Module):
    """``@`` of a sparse buffer (COO or CSR) and its dense copy, both."""

    def __init__(self, layout: torch.layout) -> None:
        super().__init__()
        self.register_buffer("adj", _adjacency().to_sparse(layout=layout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adj @ x + self.adj.to_dense() @ x


class SparseParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(_adjacency().to_sparse())
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self.w, self.lin(x))


@pytest.mark.parametrize("make", [SparseMM, lambda: SparseMatmul(torch.sparse_coo), lambda: SparseMatmul(torch.sparse_csr),
                                  SparseParameter], ids=["sparse_mm", "matmul_coo", "matmul_csr", "parameter"])
def test_a_sparse_tensor_of_the_model_is_traced_drawn_and_lowered_equal(make: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x, fresh = torch.randn(6, 4), torch.randn(6, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = ncd.trace(model, x)
    assert any("to_sparse" in str(w.message) for w in caught)  # the opaque boxes are named
    assert traced.opaque_count >= 1
    assert "<svg" in to_svg(traced)
    lowered = traced.to_torch()
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x))
        torch.testing.assert_close(lowered(fresh), model(fresh))
    printed: dict[str, object] = {}
    exec(compile(traced.to_source(), "<ncd source>", "exec"), printed)  # noqa: S102 - the generated source
    module = printed[traced.name]()  # type: ignore[operator]
    assert isinstance(module, nn.Module)
    module.load_state_dict(traced.state_dict(module))
    with torch.no_grad():
        torch.testing.assert_close(module(fresh), model(fresh))


class VmapOverWeights(nn.Module):
    """An ensemble by ``torch.vmap`` over stacked weights, the input captured unbatched (``in_dims=(0, None)``): once a
    constant of its traced value with a warning, 18 off the model on a fresh input."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.vmap(lambda w, xx: xx @ w, in_dims=(0, None))(self.w, x).sum(0)


class VmapOfParameters(nn.Module):
    """``torch.vmap`` over parameters alone (outer products of rows), its result read by the input: crashed
    (``Cannot access storage of BatchedTensorImpl``)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ torch.vmap(torch.outer)(self.w, self.w).sum(0)


def test_vmap_over_weights_applied_to_the_input_is_refused_naming_the_line() -> None:
    with pytest.raises(ncd.TraceError, match=r"test_trace_redteam16.py:\d+\) runs inside a torch.func transform"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ncd.trace(VmapOverWeights().eval(), torch.randn(3, 8))


def test_vmap_of_parameters_alone_is_traced_and_lowered_equal() -> None:
    torch.manual_seed(0)
    model = VmapOfParameters().eval()
    x, fresh = torch.randn(3, 8), torch.randn(3, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = ncd.trace(model, x)
    assert any("_add_batch_dim" in str(w.message) for w in caught)  # the transform's calls are named
    lowered = traced.to_torch()
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x))
        torch.testing.assert_close(lowered(fresh), model(fresh))


class ReducedInAnotherType(nn.Module):
    """Sums and means given ``dtype=``: torch casts the input to it, then reduces (each was an opaque box)."""

    def forward(self, x: torch.Tensor, h: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x.sum(-1, dtype=torch.float64), x.mean((0,), dtype=torch.float64), h.sum(1, dtype=torch.float32),
                torch.mean(h, -1, keepdim=True, dtype=torch.float32), ids.sum(-1, dtype=torch.float32))


def test_a_reduction_given_a_dtype_is_a_cast_and_the_reduction_in_that_type() -> None:
    model = ReducedInAnotherType().eval()

    def inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(3, 5, generator=gen), (torch.randn(3, 4, 6, generator=gen) * 100).half(),
                torch.randint(0, 1000, (3, 7), generator=gen))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = ncd.trace(model, *inputs(0))
    assert traced.opaque_count == 0, [str(w.message) for w in caught]
    lowered = traced.to_torch()
    for seed in (0, 1):
        got, want = lowered(*inputs(seed)), model(*inputs(seed))
        assert [g.dtype for g in got] == [w.dtype for w in want]
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def test_a_transformer_given_its_causal_mask_lowers_when_its_width_is_the_masks_size() -> None:
    """``nn.Transformer`` checks that the ``tgt_mask`` given is the causal one (a guard against a constant of it);
    lowering runs the module once to learn its read order, and where its initial values fail that run it runs again
    holding the traced tensors, each placed in a held tensor of its size: the 4 x 4 mask went into a norm's weight of
    16 (the width), the guard failed again and ``to_torch`` raised."""
    torch.manual_seed(0)
    model = nn.Transformer(16, 2, 1, 1, 32).eval()
    pad = torch.tensor([[0.0] * 6, [0.0] * 4 + [float("-inf")] * 2])
    causal = nn.Transformer.generate_square_subsequent_mask(4)

    def inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(6, 2, 16, generator=gen), torch.randn(4, 2, 16, generator=gen)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, *inputs(0), tgt_mask=causal, src_key_padding_mask=pad)
        lowered = traced.to_torch()
        for seed in (0, 1):
            want = model(*inputs(seed), tgt_mask=causal, src_key_padding_mask=pad)
            torch.testing.assert_close(lowered(*inputs(seed), tgt_mask=causal, src_key_padding_mask=pad), want)
