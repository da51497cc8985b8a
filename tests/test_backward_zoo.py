"""Every gallery model: the backward diagram's gradients equal torch.autograd's (evaluation and training mode)."""

from __future__ import annotations

import pytest
import torch

import ncd
import ncd.zoo
from ncd.torch.verify import compare_gradients
from tests.test_cost_zoo import SMALL


@pytest.mark.parametrize("name", sorted(ncd.zoo.MODELS), ids=str)
def test_gallery_backward_diagram_equals_autograd(name: str) -> None:
    pairs = compare_gradients(ncd.zoo.MODELS[name](), **SMALL[name])
    assert pairs
    for what, got, want in pairs:
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3, msg=lambda m, what=what: f"{what}: {m}")


def test_resnet_backward_in_training_mode_uses_batch_statistics() -> None:
    pairs = compare_gradients(ncd.zoo.MODELS["resnet"](), train=True, **SMALL["resnet"])
    for what, got, want in pairs:
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3, msg=lambda m, what=what: f"{what}: {m}")
