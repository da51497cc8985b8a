"""Every gallery model: ``ncd.cost`` equals measurement on the lowered module (small sizes)."""

from __future__ import annotations

import pytest

import ncd
import ncd.zoo
from ncd.torch.measure import measure

#: small sizes per gallery model (the defaults are the papers' and too large for a test)
SMALL = {
    "mlp": dict(x=4, y=4, n=8, k=3),
    "attention": dict(y=3, x=4, k=5),
    "multi_head_attention": dict(m=8, k=2, h=2, x=3, y=3),
    "transformer": dict(v=11, m=8, k=2, h=2, f=16, N=2, x=3, y=3),
    "gpt2": dict(v=11, m=8, k=2, h=2, N=2, n=8, t=3),
    "convolution": dict(c=2, d=3, x=6, y=6),
    "resnet": dict(N=2, c=3, x=32, k=3, n1=4, n2=8, n3=8, n4=8),
    "unet": dict(c0=1, c=4, x=16, y=2),
    "vit": dict(c=3, x=32, m=8, k=2, h=2, N=1, f=16, n=5),
    "visual_attention": dict(c=4, k=2, h=2, w=4),
}


def test_every_gallery_model_has_small_sizes() -> None:
    assert set(SMALL) == set(ncd.zoo.MODELS)


@pytest.mark.parametrize("name", sorted(ncd.zoo.MODELS), ids=str)
def test_gallery_model_cost_matches_flop_counter_and_autograd(name: str) -> None:
    """Matrix-product/convolution/attention FLOPs forward and backward, saved bytes and parameters.

    Attention runs under SDPA's math backend (``measure`` sets it): the counter does not see the
    CPU flash kernel.  For grouped convolutions the counter over-counts the weight gradient by
    ``groups − 1`` forward passes (``counter_excess``).
    """
    d = ncd.zoo.MODELS[name]()
    sizes = SMALL[name]
    report = ncd.cost(d, **sizes)
    m = measure(d, **sizes)
    assert report.forward_matmul == m.forward_flops
    assert report.backward_matmul + report.counter_excess == m.backward_flops
    assert report.activation_bytes == m.activation_bytes, m.saved
    assert report.params == m.params
    assert report.forward_flops >= report.forward_matmul  # plus the elementwise work the counter ignores


def test_gallery_costs_are_formulas_before_binding() -> None:
    report = ncd.cost(ncd.zoo.multi_head_attention().body)
    assert report.formulas.forward_flops.free_symbols  # symbolic without sizes
    assert ncd.cost(ncd.zoo.multi_head_attention()).bound  # the zoo's defaults bind every size
