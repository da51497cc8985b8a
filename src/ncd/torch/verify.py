"""Check a backward diagram against ``torch.autograd`` on the lowered forward module.

:func:`compare_gradients` lowers the diagram, runs it forward and backward with autograd,
then runs the forward-with-residuals and backward diagrams of :func:`ncd.analysis.plan`
as modules (with the same weights) and returns both sets of gradients, input by input and
parameter by parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ncd.analysis.backward import plan
from ncd.ir.diagram import Diagram

__all__ = ["compare_gradients", "declared_order"]


def compare_gradients(diagram: Diagram, /, *, inputs: tuple[Any, ...] | None = None, train: bool = False, seed: int = 0,
                      **sizes: int) -> list[tuple[str, Any, Any]]:
    """``[(what, from the backward diagram, from torch.autograd), ...]`` for every float input and parameter."""
    import torch

    from ncd.ir.diagram import bind_all, defaults_of

    torch.manual_seed(seed)
    traced = diagram
    repeats = {str(s) for s in diagram.free_symbols}  # bind everything: repetitions unroll only when counted
    diagram = bind_all(diagram, {k: v for k, v in {**defaults_of(diagram), **sizes}.items() if k in repeats})
    module = diagram.to_torch()
    _traced_values(traced, module)
    module.train(train)
    p = plan(diagram, training=train)
    forward = p.forward.to_torch()
    back = p.backward.to_torch()
    forward.train(train)
    params: list[torch.Tensor] = list(module.parameters())
    mine = list(forward.parameters())
    if len(mine) != len(params):
        raise AssertionError(f"the residual forward has {len(mine)} parameters, the module {len(params)}")
    declared = declared_order(module, params)  # as the diagram declares them (the backward diagram's weights)
    for q, w in zip(mine, declared):  # (a half-precision model's weights: the residual forward's types too)
        q.data = q.data.to(w.dtype)
    forward.load_state_dict({name: w for (name, _), w in zip(forward.named_parameters(), declared)}, strict=False)
    for mine_buffer, buffer in zip(forward.buffers(), module.buffers()):
        mine_buffer.data = buffer.data.detach().clone()
    xs = inputs if inputs is not None else diagram.example_inputs(seed=seed)
    xs = tuple(x.detach().clone().requires_grad_(True) if x.is_floating_point() else x for x in xs)
    torch.manual_seed(seed + 1)
    out = module(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    cotangents = [torch.randn_like(o) for o in outs if o.is_floating_point()]
    floats = [x for x in xs if x.is_floating_point()]
    differentiable = [o for o in outs if o.is_floating_point()]
    want: tuple[torch.Tensor | None, ...]
    if any(o.requires_grad for o in differentiable):  # (an output no input or parameter reaches: a constant)
        reached = [(o, c) for o, c in zip(differentiable, cotangents) if o.requires_grad]
        want = torch.autograd.grad([o for o, _ in reached], floats + params, [c for _, c in reached], allow_unused=True)
    else:  # no output reached from a float input or parameter (integer outputs, a detached result): all zero
        want = (None,) * (len(floats) + len(params))
    torch.manual_seed(seed + 1)
    result = forward(*xs)
    result = result if isinstance(result, tuple) else (result,)
    n = len(diagram.cod)
    stored = result[n:]
    bound = p.backward
    args = []
    for role, seg in zip(p.stored, bound.dom):
        index = role[1]
        assert isinstance(index, int)
        tensor = stored[index] if role[0] == "value" else declared[index]
        shape = tuple(int(a.size) for a in seg)
        batch = tuple(tensor.shape[: tensor.dim() - len(shape)]) if role[0] == "value" else ()
        args.append(tensor.detach().reshape(batch + shape))
    got = back(*args, *cotangents)
    got = got if isinstance(got, tuple) else (got,)
    if len(got) != len(want):
        raise AssertionError(f"the backward diagram gives {len(got)} gradients, autograd {len(want)}")
    names = [name for name, _ in module.named_parameters()]
    pairs = []
    for j in range(len(floats)):
        given = want[j]
        w = torch.zeros_like(floats[j]) if given is None else given
        pairs.append((f"input {j}", got[j].reshape(w.shape), w))
    grads = declared_order(module, [torch.zeros_like(q) if g is None else g for q, g in zip(params, want[len(floats):])])
    for k, p_index in enumerate(p.grads):
        w = grads[p_index]
        pairs.append((names[p_index], got[len(floats) + k].reshape(w.shape), w))
    return pairs


def _traced_values(diagram: Diagram, module: Any) -> None:
    """A traced diagram's own values (its weights, in their types: a half-precision model's too) loaded into
    ``module``, lowered from the diagram's plain block (without the traced values it would hold placeholder weights in
    torch's default type, and a float16 model's inputs would meet float32 weights)."""
    from ncd.trace import TracedDiagram
    from ncd.trace.loading import _typed_as

    if not isinstance(diagram, TracedDiagram) or not diagram.tensors:
        return
    dtype = diagram._float_dtype()
    if dtype is not None:
        module.to(dtype)
    state = diagram.state_dict(module)
    _typed_as(module, state)
    module.load_state_dict(state, strict=False)


def declared_order(module: Any, values: Sequence[Any]) -> list[Any]:
    """``values`` (one per parameter of ``module``, in ``parameters()`` order) in the axis order the diagram declares.

    A lowered module may store a learned map's rows or columns in the order a fused kernel reads
    (:func:`ncd.prims.patterns.chosen_rows`, :func:`~ncd.prims.patterns.chosen_columns`); its ``state_dict`` shows
    every weight in the declared order, and so does this function for parameters, their gradients or any
    tensors shaped like them.
    """
    import torch

    names = [name for name, _ in module.named_parameters()]
    with torch.no_grad():
        kept = [q.detach().clone() for q in module.parameters()]
        try:
            for q, v in zip(module.parameters(), values):
                q.copy_(v)
            state = module.state_dict()
            return [state[name].clone() for name in names]
        finally:
            for q, v in zip(module.parameters(), kept):
                q.copy_(v)
