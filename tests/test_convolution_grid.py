"""The convolution family against torch.nn over grids of stride, padding, dilation and groups.

Each lowered module gets its weights copied from a freshly initialised ``torch.nn`` module
(so weights load from PyTorch models), runs on inputs with a leading batch axis ``b``, and
must match the module's values and gradients.  The paper's decompositions are checked
too: ``★`` then **L₊** over (channels, kernel) is ``nn.Conv2d``; **L₊** then ``★ᵀ`` is
``nn.ConvTranspose2d``; ``★`` then a mean/max over the kernel axes is pooling.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.errors import SizeError

CONV = {1: nn.Conv1d, 2: nn.Conv2d}
CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}
SPATIAL = {1: "x", 2: "x y"}
SIZES = {1: {"x": 8}, 2: {"x": 8, "y": 6}}


def only_submodule(module: nn.Module, kind: type[nn.Module]) -> nn.Module:
    found = [m for m in module.modules() if isinstance(m, kind)]
    assert len(found) == 1, found
    return found[0]


def assert_same_values_and_gradients(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    got, want = ours(a), theirs(b)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    weight = torch.randn_like(want)
    (got * weight).sum().backward()
    (want * weight).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)
    for (name, p), q in zip(sorted(ours.named_parameters()), [p for _, p in sorted(theirs.named_parameters())]):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4, msg=name)


CONV_GRID = list(itertools.product((1, 2), (1, 2), (0, 1), (1, 2), (1, 2)))


@pytest.mark.parametrize("dims,stride,padding,dilation,groups", CONV_GRID)
def test_conv_matches_nn_conv(dims: int, stride: int, padding: int, dilation: int, groups: int) -> None:
    torch.manual_seed(0)
    spatial = SPATIAL[dims]
    box = ncd.Conv(f"c {spatial} -> d {spatial}", kernel=3, stride=stride, padding=padding, dilation=dilation, groups=groups)
    diagram = ncd.Identity.of(f"b c {spatial}") >> box
    sizes = {"b": 2, "c": 4, "d": 6, **SIZES[dims]}
    ours = diagram.to_torch(**sizes)
    theirs = CONV[dims](4, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups)
    only_submodule(ours, CONV[dims]).load_state_dict(theirs.state_dict())
    (x,) = diagram.example_inputs(**sizes)
    assert_same_values_and_gradients(ours, theirs, x)


CONV_T_GRID = [g for g in itertools.product((1, 2), (0, 1), (0, 1), (1, 2), (1, 2)) if g[2] < max(g[0], g[3])]


@pytest.mark.parametrize("stride,padding,output_padding,dilation,groups", CONV_T_GRID)
def test_conv_transpose_matches_nn_conv_transpose2d(stride: int, padding: int, output_padding: int, dilation: int,
                                                    groups: int) -> None:
    torch.manual_seed(0)
    box = ncd.ConvTranspose("c x y -> d x y", kernel=3, stride=stride, padding=padding, output_padding=output_padding,
                            dilation=dilation, groups=groups)
    diagram = ncd.Identity.of("b c x y") >> box
    sizes = {"b": 2, "c": 4, "d": 6, "x": 4, "y": 3}
    ours = diagram.to_torch(**sizes)
    theirs = nn.ConvTranspose2d(4, 6, 3, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
                                groups=groups)
    only_submodule(ours, nn.ConvTranspose2d).load_state_dict(theirs.state_dict())
    (x,) = diagram.example_inputs(**sizes)
    assert_same_values_and_gradients(ours, theirs, x)


def test_conv_1d_transpose_and_depthwise() -> None:
    torch.manual_seed(0)
    diagram = ncd.Identity.of("b c x") >> ncd.Conv("c x -> c x", 5, padding="same", groups="c") >> ncd.ConvTranspose(
        "c x -> d x", 2, stride=2, bias=False)
    sizes = {"b": 3, "c": 4, "d": 2, "x": 7}
    ours = diagram.to_torch(**sizes)
    theirs = nn.Sequential(nn.Conv1d(4, 4, 5, padding=2, groups=4), nn.ConvTranspose1d(4, 2, 2, stride=2, bias=False))
    only_submodule(ours, nn.Conv1d).load_state_dict(theirs[0].state_dict())
    only_submodule(ours, nn.ConvTranspose1d).load_state_dict(theirs[1].state_dict())
    (x,) = diagram.example_inputs(**sizes)
    assert_same_values_and_gradients(ours, theirs, x)


# -- the paper's decompositions ------------------------------------------------------------------
@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2), (2, 0, 2)])
def test_convolution_tensor_then_linear_is_conv2d(stride: int, padding: int, dilation: int) -> None:
    """★ followed by L₊ over (kernel, channels) equals nn.Conv2d (symbolic sizes, channel-last wiring)."""
    torch.manual_seed(0)
    star = ncd.ConvolutionTensor("x y", 3, stride=stride, padding=padding, dilation=dilation)
    diagram = ncd.Identity.of("x y c") >> star >> ncd.Linear("kx ky c -> d", bias=True)
    assert str(diagram.cod) == f"{star.cod[0].axes[0]} {star.cod[0].axes[1]} d"
    sizes = {"c": 3, "d": 5, "x": 8, "y": 6}
    ours = diagram.to_torch(**sizes)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding, dilation=dilation)
    linear = only_submodule(ours, nn.Linear)
    with torch.no_grad():  # Linear's weight is (d, kx·ky·c); Conv2d's is (d, c, kx, ky)
        linear.weight.copy_(conv.weight.permute(0, 2, 3, 1).flatten(1))
        linear.bias.copy_(conv.bias)
    x = torch.randn(2, 8, 6, 3)
    got = ours(x)
    torch.testing.assert_close(got, conv(x.movedim(-1, 1)).movedim(1, -1), atol=1e-5, rtol=1e-4)


def test_convolution_tensor_then_linear_channel_first() -> None:
    """The channel-first wiring: ★ woven over c, a crossing, L₊ over (c, kx, ky), a crossing back."""
    torch.manual_seed(0)
    diagram = (ncd.Identity.of("c:3 x:8 y:8") >> ncd.ConvolutionTensor("x y", 3, stride=2, padding=1)
               >> ncd.Transpose("c x y kx ky -> x y c kx ky") >> ncd.Linear("c kx ky -> d", bias=True)
               >> ncd.Transpose("x y d -> d x y"))
    assert str(diagram.cod) == "d x:4 y:4"
    ours = diagram.to_torch(d=4)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    only_submodule(ours, nn.Linear).load_state_dict({"weight": conv.weight.flatten(1), "bias": conv.bias})
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(ours(x), conv(x), atol=1e-5, rtol=1e-4)


def test_linear_then_transposed_convolution_tensor_is_conv_transpose2d() -> None:
    """L₊ (c -> d kx ky) followed by ★ᵀ equals nn.ConvTranspose2d."""
    torch.manual_seed(0)
    diagram = (ncd.Identity.of("c:3 x:4 y:5") >> ncd.Linear("c -> d kx ky", bias=False)
               >> ncd.Transpose("d kx ky x y -> d x y kx ky")
               >> ncd.ConvolutionTensorT("x:8 y:10", 3, stride=2, padding=1))
    ours = diagram.to_torch(d=2, kx=3, ky=3)
    convt = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, bias=False)
    only_submodule(ours, nn.Linear).load_state_dict({"weight": convt.weight.permute(1, 2, 3, 0).flatten(0, 2)})
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(ours(x), convt(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dims,kernel,stride,padding,dilation",
                         [(1, 3, 1, 0, 1), (1, 3, 2, 1, 2), (2, (3, 2), (2, 1), (1, 0), 1), (2, 2, 3, 1, (1, 2))])
def test_transposed_convolution_tensor_is_the_adjoint(dims, kernel, stride, padding, dilation) -> None:
    """⟨★a, b⟩ = ⟨a, ★ᵀb⟩: the transpose really is the transpose."""
    axes = "x:9" if dims == 1 else "x:9 y:7"
    star = ncd.ConvolutionTensor(axes, kernel, stride, padding, dilation).to_torch()
    star_t = ncd.ConvolutionTensorT(axes, kernel, stride, padding, dilation).to_torch()
    a = torch.randn(3, *(9, 7)[:dims], dtype=torch.float64)
    windows = star(a)
    b = torch.randn_like(windows)
    torch.testing.assert_close((windows * b).sum(), (a * star_t(b)).sum())
    # and it equals autograd's vector-Jacobian product of ★
    a.requires_grad_(True)
    (vjp,) = torch.autograd.grad(star(a), a, b)
    torch.testing.assert_close(star_t(b), vjp)


# -- pooling --------------------------------------------------------------------------------------
POOL_GRID = [g for g in itertools.product(("max", "avg"), (1, 2), (2, 3), (None, 1, 2), (0, 1)) if 2 * g[4] <= g[2]]


@pytest.mark.parametrize("kind,dims,kernel,stride,padding", POOL_GRID)
def test_pooling_matches_functional(kind: str, dims: int, kernel: int, stride: int | None, padding: int) -> None:
    axes = "x:9" if dims == 1 else "x:9 y:6"  # odd, concrete sizes: PyTorch's floor rule
    box = (ncd.MaxPool if kind == "max" else ncd.AvgPool)(axes, kernel, stride=stride, padding=padding)
    diagram = ncd.Identity.of(f"b c {axes}") >> box
    fn = getattr(F, f"{kind}_pool{dims}d")
    ours = diagram.to_torch(b=2, c=3)
    x = torch.randn(2, 3, *(9, 6)[:dims])

    def theirs(t: torch.Tensor) -> torch.Tensor:
        return fn(t, kernel, stride, padding)

    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    got, want = ours(a), theirs(b)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad(got, a, g)[0], torch.autograd.grad(want, b, g)[0])


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_pooling_is_convolution_tensor_then_reduction(kernel: int, stride: int, padding: int) -> None:
    """Average pooling = ★ then 𝔼 over the kernel axes; max pooling (no padding) = ★ then Max."""
    x = torch.randn(2, 3, 8, 6)
    star = ncd.Identity.of("c x:8 y:6") >> ncd.ConvolutionTensor("x y", kernel, stride, padding)
    mean = star >> ncd.Einsum("x y kx ky -> x y") >> ncd.Scale(f"1/{kernel * kernel}")
    avg = ncd.Identity.of("c x:8 y:6") >> ncd.AvgPool("x y", kernel, stride, padding)
    assert mean.cod.same(avg.cod)
    torch.testing.assert_close(mean.to_torch(c=3)(x), avg.to_torch(c=3)(x))
    if padding == 0:
        windows = star.to_torch(c=3)(x)
        torch.testing.assert_close(windows.amax((-2, -1)), ncd.MaxPool("x:8 y:6", kernel, stride).to_torch()(x))


@pytest.mark.parametrize("output", [1, 2, 3, (4, 1)])
def test_adaptive_avg_pool(output) -> None:
    for dims in (1, 2):
        if dims == 1 and isinstance(output, tuple):
            continue
        axes = "x:7" if dims == 1 else "x:7 y:5"
        module = (ncd.Identity.of(f"b c {axes}") >> ncd.AdaptiveAvgPool(axes, output)).to_torch(b=2, c=3)
        x = torch.randn(2, 3, *(7, 5)[:dims])
        torch.testing.assert_close(module(x), getattr(F, f"adaptive_avg_pool{dims}d")(x, output))


# -- symbolic sizes ------------------------------------------------------------------------------------
def test_stride_two_halves_a_symbolic_size() -> None:
    conv = ncd.Conv("c x -> d x", kernel=3, stride=2, padding=1)
    assert str(conv.cod) == "d x:x/2"
    bound = conv.bind(x=8)
    assert str(bound.cod) == "d x:4"
    module = conv.to_torch(c=2, d=3, x=8)
    assert module(torch.randn(5, 2, 8)).shape == (5, 3, 4)


def test_odd_size_raises_when_bound_after_building_and_floors_when_bound_before() -> None:
    """Symbolic sizes assume the stride divides the input; a later binding that breaks it raises.

    A box built on a concrete size uses PyTorch's floor rule instead, and matches nn.Conv1d.
    """
    conv = ncd.Conv("c x -> d x", kernel=3, stride=2, padding=1)
    with pytest.raises(SizeError, match=r"stride 2 does not divide axis x=7"):
        conv.bind(x=7)
    with pytest.raises(SizeError, match=r"stride 2 does not divide axis x=7"):
        (ncd.Identity.of("c x:7") >> conv)
    concrete = ncd.Conv("c x:7 -> d x", kernel=3, stride=2, padding=1)
    assert str(concrete.cod) == "d x:4"
    module = concrete.to_torch(c=2, d=3)
    torch_conv = nn.Conv1d(2, 3, 3, stride=2, padding=1)
    only_submodule(module, nn.Conv1d).load_state_dict(torch_conv.state_dict())
    x = torch.randn(4, 2, 7)
    torch.testing.assert_close(module(x), torch_conv(x))


def test_sizes_follow_expressions_through_a_u_net_stage() -> None:
    """U-Net sizes x_i = 512·2^(1−i): a stride-2 max pool takes x_i to x_{i+1}, a 2×2 ★ᵀ conv back."""
    i = "i"
    down = ncd.Identity.of(f"c x:512*2**(1-{i}) y:512*2**(1-{i})") >> ncd.MaxPool("x y", 2)
    assert down.cod.same(ncd.parse_type(f"c x:512*2**(1-({i}+1)) y:512*2**(1-({i}+1))"))
    up = ncd.ConvTranspose(f"c x:512*2**(1-{i}) y:512*2**(1-{i}) -> d x y", kernel=2, stride=2)
    assert up.cod.same(ncd.parse_type(f"d x:512*2**(1-({i}-1)) y:512*2**(1-({i}-1))"))
    assert str(down.bind(i=4).cod) == "c x:32 y:32"


@pytest.mark.parametrize("kernel,stride,padding,dilation", [(3, 1, 0, 1), (3, 2, 1, 1), (2, 2, 0, 1), (7, 2, 3, 1),
                                                            (3, 3, 0, 2), (1, 2, 0, 1), (5, 4, 2, 1)])
def test_symbolic_size_rule_agrees_with_torch_whenever_the_stride_divides(kernel, stride, padding, dilation) -> None:
    conv = ncd.Conv("c x -> d x", kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    for x in range(stride * 4, stride * 9, stride):
        got = int(conv.bind(x=x).cod[0].axes[1].size)
        want = F.conv1d(torch.zeros(1, 1, x), torch.zeros(1, 1, kernel), stride=stride, padding=padding,
                        dilation=dilation).shape[-1]
        assert got == want, (x, got, want)


def test_json_round_trip_keeps_symbolic_sizes() -> None:
    d = ncd.Identity.of("b c x y") >> ncd.Conv("c x y -> d x y", 3, stride=2, padding=1, groups="c") >> ncd.MaxPool(
        "x:x/2 y:y/2", 2) >> ncd.ConvTranspose("d x:x/4 y:y/4 -> e x y", 4, stride=4)
    again = ncd.load_json(d.to_json())
    assert again == d
    assert str(again.cod) == "b e x y"
