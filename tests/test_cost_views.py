"""Activation bytes of views: what ``ncd.cost`` counts for slices, transposes and expansions equals what autograd
saves (``ncd.torch.measure``, through ``saved_tensors_hooks``).

Each model is traced, then the diagram is costed and measured on the traced inputs.  Before the gaps a slice
leaves in memory were modelled, a head split of a packed Q, K, V slice was taken for a view SDPA could fold, and a
convolution's input was counted twice when it was not contiguous, though torch keeps it as it receives it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import ncd
from ncd.torch.measure import measure

weight_norm = nn.utils.parametrizations.weight_norm


class _Call(nn.Module):
    def __init__(self, forward: Callable[..., torch.Tensor], **modules: nn.Module) -> None:
        super().__init__()
        self.call = forward
        self.parts = nn.ModuleDict(modules)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.call(self.parts, *args)


CASES: dict[str, tuple[Callable[[], nn.Module], list[tuple[int, ...]]]] = {
    # seq-first attention: Q, K, V slices of one packed product, split into heads (MultiheadAttention's fast path off)
    "self_attention_seq_first": (lambda: _Call(lambda p, x: p["a"](x, x, x, need_weights=False)[0],
                                               a=nn.MultiheadAttention(8, 2)), [(5, 2, 8)]),
    "cross_attention_seq_first": (lambda: _Call(lambda p, x, y: p["a"](x, y, y, need_weights=False)[0],
                                                a=nn.MultiheadAttention(8, 2)), [(5, 2, 8), (7, 2, 8)]),
    "self_attention_batch_first": (lambda: _Call(lambda p, x: p["a"](x, x, x, need_weights=False)[0],
                                                 a=nn.MultiheadAttention(8, 2, batch_first=True)), [(2, 5, 8)]),
    # a computed-weight convolution's einsum output (not contiguous) through tanh into a convolution
    "tanh_into_transposed_convolution": (
        lambda: _Call(lambda p, x: p["second"](torch.tanh(p["first"](x))), first=weight_norm(nn.Conv1d(4, 6, 3)),
                      second=weight_norm(nn.ConvTranspose1d(6, 4, 3, stride=2))), [(2, 4, 9)]),
    "tanh_into_convolution": (
        lambda: _Call(lambda p, x: p["second"](torch.tanh(p["first"](x))), first=weight_norm(nn.Conv1d(4, 6, 3)),
                      second=nn.Conv1d(6, 4, 3)), [(2, 4, 9)]),
    # an expanded view into a learned transposed convolution: torch keeps the view (the unexpanded storage)
    "expand_into_transposed_convolution": (
        lambda: _Call(lambda p, y: p["c"](y[:, :, None, :].expand(-1, -1, 3, -1)), c=nn.ConvTranspose2d(4, 2, 2)),
        [(2, 4, 5)]),
    # a pooling without a channel axis takes (N, C, ...) as it is: torch keeps the transposed view
    "tanh_transposed_into_max_pooling": (lambda: _Call(lambda p, x: nn.functional.max_pool1d(torch.tanh(x).transpose(0, 1), 2)),
                                         [(2, 6, 4)]),
    # slices of the last dim, merged with the dim before them (a copy) and not (a view)
    "slice_then_merge": (lambda: _Call(lambda p, x: p["l"](x[..., :3].flatten(-2)), l=nn.Linear(15, 2)), [(2, 5, 6)]),
    "picked_entry_then_merge": (lambda: _Call(lambda p, x: p["l"](x[:, :, 2].flatten(-2)), l=nn.Linear(20, 2)),
                                [(2, 5, 3, 4)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_activation_bytes_of_views_equal_what_autograd_saves(name: str) -> None:
    build, shapes = CASES[name]
    torch.manual_seed(0)
    model = build().eval()
    inputs = tuple(torch.randn(*s) for s in shapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, *inputs)
    assert traced.opaque_count == 0
    diagram = traced.as_block()
    report, measured = ncd.cost(diagram), measure(diagram, inputs=inputs)
    assert report.activation_bytes == measured.activation_bytes, measured.saved
    assert report.forward_matmul == measured.forward_flops
    assert report.backward_matmul + report.counter_excess == measured.backward_flops
