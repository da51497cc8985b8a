"""Measure what the lowered module really does, to check :func:`ncd.cost` against.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (it counts matrix products,
convolutions and attention, not elementwise work); stored activations from
``torch.autograd.graph.saved_tensors_hooks``, de-duplicated by storage and excluding
parameters and buffers.  ``scaled_dot_product_attention`` runs under the math backend
(``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``): the counter does not see PyTorch's
CPU flash-attention kernel, so with it the counts would fall short.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from ncd.ir.diagram import Diagram

__all__ = ["Measurement", "measure"]


@dataclass(frozen=True)
class Measurement:
    forward_flops: int
    backward_flops: int
    activation_bytes: int
    params: int
    saved: tuple[tuple[tuple[int, ...], int], ...]  # (shape, storage bytes) of each distinct saved storage


def _math_attention() -> Any:
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def measure(diagram: Diagram, /, *, module: Any = None, inputs: tuple[Any, ...] | None = None, seed: int = 0,
            training: bool = True, **sizes: int) -> Measurement:
    """Run the lowered ``diagram`` once forward and once backward and count what happens.

    Every float input requires grad (the convention of :func:`ncd.cost`).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(seed)
    module = module if module is not None else diagram.to_torch(check_inputs=True, **sizes)
    xs = inputs if inputs is not None else diagram.example_inputs(seed=seed, **sizes)
    xs = tuple(x.detach().clone().requires_grad_(True) if x.is_floating_point() else x for x in xs)
    module.train(training)
    params = {p.untyped_storage().data_ptr() for p in list(module.parameters()) + list(module.buffers())}
    saved: dict[int, tuple[tuple[int, ...], int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and storage.nbytes() > 0:
            saved.setdefault(storage.data_ptr(), (tuple(t.shape), storage.nbytes()))
        return t

    with _math_attention():
        with FlopCounterMode(display=False) as forward:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = module(*xs)
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o.requires_grad]
        with FlopCounterMode(display=False) as backward:
            if outs:
                torch.autograd.backward(outs, [torch.randn_like(o) for o in outs])
    return Measurement(
        int(forward.get_total_flops()),
        int(backward.get_total_flops()),
        sum(b for _, b in saved.values()),
        sum(p.numel() for p in module.parameters()),
        tuple(saved.values()),
    )
