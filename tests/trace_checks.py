"""Checks the importer's tests share: a lowered module against the model it was traced from."""

from __future__ import annotations

import torch


def agrees_with_gradients(lowered: torch.nn.Module, model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    """``lowered`` and ``model`` give the same output on a fresh input of ``shape`` and the same gradient of the
    input under ``out.square().sum()``; the parameters' gradients, left on both, are the caller's to compare."""
    x = torch.randn(*shape, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    got, want = lowered(x), model(x2)
    torch.testing.assert_close(got, want)
    got.square().sum().backward()
    want.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
