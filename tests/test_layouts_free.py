"""A generated forward deletes each intermediate after its last read (``ncd.torch.layouts_free``), as nested calls in
hand-written code free it: checked by when the tensors die, not by the text alone."""

from __future__ import annotations

import weakref

import torch

import ncd


def test_an_activation_dies_once_the_next_op_has_read_it() -> None:
    block = (ncd.Conv("c x y -> d x y", kernel=3, padding=1) >> ncd.ReLU()
             >> ncd.Conv("d x y -> d x y", kernel=3, padding=1) >> ncd.ReLU()).block("ConvBlock")
    module = block.to_torch(c=2, d=4, x=6, y=6).eval()
    first, second = (m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    alive: list[weakref.ref[torch.Tensor]] = []
    seen: list[bool] = []
    first.register_forward_hook(lambda m, args, out: alive.append(weakref.ref(out)))
    second.register_forward_hook(lambda m, args, out: seen.append(alive[-1]() is not None))
    x = torch.randn(3, 2, 6, 6)
    with torch.no_grad():
        out = module(x)
    assert seen == [False]  # the first convolution's output was freed before the second convolution ran
    reference = torch.relu(second(torch.relu(first(x))))
    torch.testing.assert_close(out, reference.detach())
    source = module.ncd_source
    assert source.index("del conv_1") > source.index("torch.relu(conv_1)")  # after its last read, not before


def test_inputs_outputs_and_values_read_later_are_kept() -> None:
    d = ncd.residual(ncd.Linear("m -> m", name="A") >> ncd.ReLU()) >> ncd.Linear("m -> n", name="B")
    module = d.to_torch(m=4, n=3)
    deleted = [name.strip() for line in module.ncd_source.splitlines() if line.strip().startswith("del ")
               for name in line.strip().removeprefix("del ").split(",")]
    assert "x" not in deleted and len(deleted) >= 2  # the input stays (read again by the sum), the rest goes
    x = torch.randn(2, 4)
    a, b = (m for m in module.modules() if isinstance(m, torch.nn.Linear))
    torch.testing.assert_close(module(x), b(torch.relu(a(x)) + x))
