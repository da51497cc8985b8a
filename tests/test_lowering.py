"""Lowering: repetitions with their own parameters, blocks as submodules, the source that runs, batch axes, tracebacks."""

from __future__ import annotations

import re
import traceback

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ncd
from ncd.torch.module import compile_source


def _layer(i: object) -> ncd.Diagram:
    return ncd.residual(ncd.Linear("m -> m", bias=True) >> ncd.ReLU()).block("Layer")


# -- repetition --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_repeat_has_exactly_n_layers_with_distinct_parameters(n: int) -> None:
    module = ncd.repeat(_layer, "i", 0, "N", name="Encoder").to_torch(m=4, N=n)
    weights = [p for name, p in module.named_parameters() if name.endswith("weight")]
    assert len(weights) == n, "the repetition count must be the picture's count, not N-1 or N+1"
    assert len(list(module.parameters())) == 2 * n
    assert len({p.data_ptr() for p in module.parameters()}) == 2 * n, "no parameter is shared across iterations"
    for a in range(n):
        for b in range(a + 1, n):
            assert not torch.equal(weights[a], weights[b]), "iterations must be initialised independently"


@pytest.mark.parametrize("start, stop, count", [(0, "N", 4), (1, "N", 3), (0, "N-1", 3), (1, "N+1", 4), (2, 3, 1)])
def test_repeat_bounds_give_stop_minus_start_iterations(start: object, stop: object, count: int) -> None:
    r = ncd.repeat(_layer, "i", start, stop)
    assert r.count(N=4) == count
    module = r.to_torch(m=3, **({"N": 4} if "N" in {str(s) for s in r.free_symbols} else {}))
    assert sum(1 for name, _ in module.named_parameters() if name.endswith("weight")) == count


def test_repeat_runs_its_layers_in_order_like_a_hand_written_loop() -> None:
    module = ncd.repeat(_layer, "i", 0, "N").to_torch(m=4, N=3)
    x = torch.randn(2, 4)
    want = x
    for layer in module.layers:  # the independent reference: the same weights, applied by hand
        want = torch.relu(F.linear(want, layer.l_plus.weight, layer.l_plus.bias)) + want
    torch.testing.assert_close(module(x), want)


def test_iteration_dependent_sizes_lower_to_per_iteration_shapes() -> None:
    down = ncd.repeat(lambda i: ncd.Linear(f"c:64*2**(-{i}) -> c:64*2**(-{i}-1)", bias=True).block("Down"), "i", 0, "N")
    assert str(down.dom) == "c:64" and str(down.cod) == "c:2**(6-N)"
    module = down.to_torch(N=3)
    shapes = [tuple(p.shape) for name, p in module.named_parameters() if name.endswith("weight")]
    assert shapes == [(32, 64), (16, 32), (8, 16)]
    x = torch.randn(5, 64)
    want = x
    for layer in module.downs:
        (linear,) = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        want = F.linear(want, linear.weight, linear.bias)
    torch.testing.assert_close(module(x), want)


def test_save_and_load_carry_skip_tensors_across_repetitions() -> None:
    """The U-Net's C_λ: save in the way down, load in the way up, in reverse order."""
    down = ncd.repeat(lambda i: ncd.Save("c", "C", i) >> ncd.Linear("c -> c", bias=True), "i", 0, "N")
    up = ncd.repeat(
        lambda i: ncd.Linear("c -> c", bias=True) >> (ncd.Identity.of("c") @ ncd.Load("c", "C", f"N-1-{i}")) >> ncd.Add(),
        "i", 0, "N",
    )
    module = (down >> up).to_torch(c=3, N=2)
    x = torch.randn(3)
    lin = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    saved = [x]
    h = F.linear(x, lin[0].weight, lin[0].bias)
    saved.append(h)
    h = F.linear(h, lin[1].weight, lin[1].bias)
    h = F.linear(h, lin[2].weight, lin[2].bias) + saved[1]
    h = F.linear(h, lin[3].weight, lin[3].bias) + saved[0]
    torch.testing.assert_close(module(x), h)


# -- blocks -----------------------------------------------------------------------------------------------
def test_every_block_is_one_submodule_named_after_it() -> None:
    mlp = (ncd.Linear("m -> n", bias=True) >> ncd.GELU() >> ncd.Linear("n -> m", bias=True)).block("MLP")
    attention = (ncd.Linear("m -> m") >> ncd.Softmax("m")).block("Self Attention")
    module = (attention >> mlp >> mlp).block("Transformer Layer").to_torch(m=4, n=8)
    assert type(module).__name__ == "TransformerLayer"
    children = dict(module.named_children())
    assert list(children) == ["self_attention", "mlp", "mlp_2"]
    assert [type(c).__name__ for c in children.values()] == ["SelfAttention", "MLP", "MLP"]
    # the same block used twice is two modules of one class, each with its own parameters
    assert children["mlp"] is not children["mlp_2"]
    assert not any(p1 is p2 for p1 in children["mlp"].parameters() for p2 in children["mlp_2"].parameters())
    assert module.ncd_source.count("class MLP(nn.Module)") == 1


def test_nested_blocks_are_nested_submodules() -> None:
    inner = ncd.Linear("m -> m").block("Inner")
    outer = (inner >> ncd.ReLU()).block("Outer")
    module = (outer >> outer).to_torch(m=3)
    names = [name for name, m in module.named_modules() if name and not isinstance(m, torch.nn.Linear)]
    assert names == ["outer", "outer.inner", "outer_2", "outer_2.inner"]


# -- the source that runs ---------------------------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.booleans())
def test_to_source_is_exactly_what_to_torch_runs(m: int, n: int, bias: bool) -> None:
    d = (ncd.Identity.of("b t m") >> ncd.Linear("m -> n", bias=bias) >> ncd.Softmax("t")).block("Head")
    module = d.to_torch(b=2, t=3, m=m, n=n)
    source = d.to_source(b=2, t=3, m=m, n=n)
    assert module.ncd_source == source
    fresh = compile_source(source)["Head"]()
    fresh.load_state_dict(module.state_dict())
    x = torch.randn(2, 3, m)
    torch.testing.assert_close(module(x), fresh(x), rtol=0, atol=0)
    assert type(module).forward.__code__.co_filename.startswith("<ncd-generated")


def test_generated_source_appears_in_tracebacks() -> None:
    module = ncd.Linear("m -> k", name="Q").to_torch(m=3, k=2, check_inputs=False)
    with pytest.raises(RuntimeError) as info:
        module(torch.randn(4))
    text = "".join(traceback.format_exception(info.value))
    assert re.search(r'File "<ncd-generated diagram #\d+>", line \d+, in forward', text), text
    assert "q = self.l_q(x)  # k (2)" in text, "the generated line itself is shown"


def test_source_names_locals_after_boxes_and_comments_their_axes() -> None:
    source = (ncd.Identity.of("b m") >> ncd.Linear("m -> k h", name="Q") >> ncd.Softmax("k")).to_source(b=2, m=6, k=2, h=3)
    assert "self.l_q = nn.Linear(6, 6, bias=False)" in source
    assert re.search(r"q = self\.l_q\(x\)\.unflatten\(-1, \(2, 3\)\)  # b k h \(2, 2, 3\)", source), source


# -- extra leading batch axes -------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
@pytest.mark.parametrize(
    "name",
    ["linear", "einsum-inner-weave", "softmax-middle", "residual", "transpose", "repeat", "save-load"],
)
def test_extra_leading_batch_axes_are_accepted(batch: tuple[int, ...], name: str) -> None:
    sizes = {"m": 4, "k": 3, "h": 2, "y": 2, "x": 3, "c": 2, "N": 2}
    d = {
        "linear": lambda: ncd.Linear("m -> k h", bias=True),
        "einsum-inner-weave": lambda: ncd.Einsum("y k h, x k h -> y x h").weave("c", shared=[1]),
        "softmax-middle": lambda: ncd.Identity.of("y x h") >> ncd.Softmax("x"),
        "residual": lambda: ncd.residual(ncd.Linear("m -> m") >> ncd.Tanh()),
        "transpose": lambda: ncd.Identity.of("y x h") >> ncd.Transpose("y x -> x y"),
        "repeat": lambda: ncd.repeat(_layer, "i", 0, "N"),
        "save-load": lambda: ncd.Save("m", "C") >> (ncd.Identity.of("m") @ ncd.Load("m", "C")) >> ncd.Multiply(),
    }[name]()
    sizes = {k: v for k, v in sizes.items() if k in {str(s) for s in d.free_symbols}}  # others would be refused
    module = d.to_torch(**sizes)
    unbatched = d.example_inputs(**sizes)
    # the independent reference: the module on each batch element separately
    flat = [x.expand(*batch, *x.shape) + torch.randn(*batch, *x.shape) for x in unbatched]
    out = module(*flat)
    out = out if isinstance(out, tuple) else (out,)
    for o, seg in zip(out, d.bind(**sizes).cod):
        assert o.dim() == len(batch) + len(seg)
    for index in torch.cartesian_prod(*[torch.arange(b) for b in batch]).reshape(-1, len(batch)) if batch else [()]:
        idx = tuple(int(i) for i in index)
        single = module(*[x[idx] for x in flat])
        single = single if isinstance(single, tuple) else (single,)
        for o, s in zip(out, single):
            torch.testing.assert_close(o[idx], s)
