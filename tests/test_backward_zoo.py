"""Gallery models: the backward diagram's gradients equal torch.autograd's, or the missing rule is named."""

from __future__ import annotations

import pytest
import torch

import ncd
import ncd.zoo
from ncd.analysis.tables import AnalysisError
from ncd.analysis.verify import compare_gradients
from tests.test_cost_zoo import SMALL

#: gallery models whose backward needs a rule ncd.backward does not have yet, and which
UNSUPPORTED = {"gpt2": "a tied unembedding", "resnet": "primitive 'adaptive_avgpool' is not supported",
               "unet": "primitive 'conv_transpose' is not supported"}


@pytest.mark.parametrize("name", sorted(set(ncd.zoo.MODELS) - set(UNSUPPORTED)), ids=str)
def test_gallery_backward_diagram_equals_autograd(name: str) -> None:
    pairs = compare_gradients(ncd.zoo.MODELS[name](), **SMALL[name])
    assert pairs
    for what, got, want in pairs:
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3, msg=lambda m, what=what: f"{what}: {m}")


@pytest.mark.parametrize("name", sorted(UNSUPPORTED), ids=str)
def test_gallery_backward_names_the_missing_rule(name: str) -> None:
    d = ncd.zoo.MODELS[name]().bind(**SMALL[name])
    with pytest.raises(AnalysisError, match=UNSUPPORTED[name]):
        ncd.backward(d)
