"""Red-team cases of the DSL (stop 53): architectures and pieces no gallery model, zoo entry or other test builds, each
checked against something independent of ncd: a hand-written PyTorch reference (the lowered module's declared weights,
read through its ``state_dict``), ``torch.utils.flop_counter`` on that reference, the tensors torch's autograd saves
(``saved_tensors_hooks``) against ``activation_bytes``, ``torch.autograd`` against the backward diagram, the generated
source and the JSON read-back against the module, and the layout checker on the drawing.  Then bad input: every
refusal is an ``ncd.NCDError`` whose text names the axes and sizes."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import ncd
from ncd.prims.gather import Gather
from ncd.render import layout
from ncd.render.check import problems
from ncd.torch.codegen import top_class_name
from ncd.torch.verify import compare_gradients

Id = ncd.Identity.of
Ref = Callable[..., Any]


def _close(a: Any, b: Any, what: str, tol: float = 1e-4) -> None:
    if isinstance(a, tuple | list):
        assert len(a) == len(b), what
        for x, y in zip(a, b):
            _close(x, y, what, tol)
        return
    assert a.shape == b.shape, f"{what}: {tuple(a.shape)} != {tuple(b.shape)}"
    if a.is_floating_point():
        torch.testing.assert_close(a.double(), b.double(), atol=tol, rtol=tol, msg=what)
    else:
        assert torch.equal(a, b), what


def _saved_bytes(module: torch.nn.Module, xs: tuple[torch.Tensor, ...]) -> int:
    """Bytes of the distinct storages torch's autograd saves for the backward pass (weights aside)."""
    weights = {p.data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in weights and t.numel():
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    grads = tuple(x.detach().clone().requires_grad_(x.is_floating_point()) for x in xs)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(*grads)
    return sum(seen.values())


def _check(d: ncd.Diagram, sizes: dict[str, int], ref: Ref, xs: tuple[torch.Tensor, ...], *, grads: bool = True,
           params: int | None = None) -> None:
    module = d.to_torch(**sizes)
    weights = {k: v.detach() for k, v in module.state_dict().items()}  # the declared layouts
    got = module(*xs)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        want = ref(weights, *xs)
    _close(got, want, "module vs hand-written reference")
    report = ncd.cost(d, **sizes)
    assert int(report.forward_matmul) == counter.get_total_flops()
    assert int(report.params) == sum(p.numel() for p in module.parameters())
    if params is not None:
        assert int(report.params) == params
    if any(x.is_floating_point() for x in xs) or params:
        assert int(report.activation_bytes) == _saved_bytes(module, xs)
    source = d.to_source(**sizes)
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - our own generated source
    again = namespace[top_class_name(source)]()
    again.load_state_dict(module.state_dict())
    _close(again(*xs), got, "generated source vs module", 1e-6)
    read = ncd.load_json(d.to_json())
    assert read == d
    lowered = read.to_torch(**sizes)
    lowered.load_state_dict(module.state_dict())
    _close(lowered(*xs), got, "JSON read-back vs module", 1e-6)
    if grads:
        for what, mine, theirs in compare_gradients(d, inputs=xs, **sizes):
            _close(mine, theirs, f"gradient of {what}", 1e-3)
    assert problems(layout(d)) == []


def _causal(t: int, window: int | None = None) -> torch.Tensor:
    i, j = torch.arange(t)[:, None], torch.arange(t)[None]
    return (j > i) | (j <= i - window) if window is not None else j > i


def _renamed(a: str, b: str) -> ncd.Diagram:
    return Id(f"~{a} m") >> ncd.Rename(f"~{a} -> ~{b}")


# -- attention variants ---------------------------------------------------------------------------------------------
def _grouped(kv: str, window: int | None = None) -> ncd.Diagram:
    """Self attention whose keys and values have the axes ``kv`` (``k g``: grouped query; ``k``: multi-query)."""
    q = "k g r" if "g" in kv else "k h"
    scores = f"~y {q}, ~x {kv} -> ~y ~x {q.removeprefix('k ')}"
    proj = ncd.Copy("~t m", 3) >> (_renamed("t", "y") >> ncd.Linear(f"m -> {q}", name="Q")) \
        @ (_renamed("t", "x") >> ncd.Linear(f"m -> {kv}", name="K")) @ (_renamed("t", "x") >> ncd.Linear(f"m -> {kv}", name="V"))
    weights = ncd.Einsum(scores) >> ncd.Scale("k**-0.5") >> ncd.CausalMask(query="y", key="x", window=window) >> ncd.Softmax("~x")
    out = f"~y ~x {q.removeprefix('k ')}, ~x {kv} -> ~y {q}"
    return proj >> weights @ Id(f"~x {kv}") >> ncd.Einsum(out) >> ncd.Linear(f"{q} -> m", name="O") >> ncd.Rename("~y -> ~t")


def test_grouped_query_attention_with_three_groups_of_three_heads() -> None:
    def ref(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        t, (k, g, r) = x.shape[0], (2, 3, 3)
        q = (x @ w["l_q.weight"].T).view(t, k, g, r)
        key, v = (x @ w["l_k.weight"].T).view(t, k, g), (x @ w["l_v.weight"].T).view(t, k, g)
        s = (torch.einsum("ykgr,xkg->gryx", q, key) / math.sqrt(k)).masked_fill(_causal(t), float("-inf")).softmax(-1)
        return torch.einsum("gryx,xkg->ykgr", s, v).reshape(t, -1) @ w["l_o.weight"].T

    _check(_grouped("k g"), dict(m=10, k=2, g=3, r=3, t=5), ref, (torch.randn(5, 10),))


@pytest.mark.parametrize("window", [None, 3])
def test_multi_query_attention_causal_and_sliding_window(window: int | None) -> None:
    def ref(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        t, k, h = x.shape[0], 4, 5
        q, key, v = (x @ w["l_q.weight"].T).view(t, k, h), x @ w["l_k.weight"].T, x @ w["l_v.weight"].T
        s = (torch.einsum("ykh,xk->hyx", q, key) * k**-0.5).masked_fill(_causal(t, window), float("-inf")).softmax(-1)
        return torch.einsum("hyx,xk->ykh", s, v).reshape(t, k * h) @ w["l_o.weight"].T

    _check(_grouped("k", window), dict(m=8, k=4, h=5, t=7), ref, (torch.randn(7, 8),))


def _attend(padding: bool = False) -> ncd.Diagram:
    scores = ncd.Einsum("~y k h, ~x k h -> ~y ~x h") >> ncd.Scale("k**-0.5")
    if padding:
        scores = (scores @ Id("~x [bool]")) >> ncd.PaddingMask(key="x")
    return scores >> ncd.Softmax("~x")


def test_cross_attention_with_a_padding_mask_and_biases() -> None:
    kv = ncd.Copy("~x m") >> ncd.Linear("m -> k h", name="K", bias=True) @ ncd.Linear("m -> k h", name="V", bias=True)
    d = (Id("~y m") >> ncd.Linear("m -> k h", name="Q", bias=True)) @ kv @ Id("~x [bool]")
    d = d >> (Id("~y k h, ~x k h") @ ncd.Swap("~x k h, ~x [bool]")) >> (_attend(True) @ Id("~x k h"))
    d = d >> ncd.Einsum("~y ~x h, ~x k h -> ~y k h") >> ncd.Linear("k h -> m", name="O", bias=True)

    def ref(w: dict[str, torch.Tensor], y: torch.Tensor, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        def lin(n: str, z: torch.Tensor) -> torch.Tensor:
            return F.linear(z, w[f"l_plus_{n}.weight"], w[f"l_plus_{n}.bias"])
        q, key, v = lin("q", y).view(-1, 3, 2), lin("k", x).view(-1, 3, 2), lin("v", x).view(-1, 3, 2)
        s = (torch.einsum("ykh,xkh->hyx", q, key) / math.sqrt(3)).masked_fill(~keep, float("-inf")).softmax(-1)
        return lin("o", torch.einsum("hyx,xkh->ykh", s, v).reshape(-1, 6))

    keep = torch.tensor([True, True, False, True, False, True])
    _check(d, dict(m=5, k=3, h=2, y=4, x=6), ref, (torch.randn(4, 5), torch.randn(6, 5), keep))


def test_perceiver_latents_attend_to_the_input() -> None:
    latents = ncd.Parameter("~y m", name="Latents") >> ncd.Linear("m -> k h", name="Q")
    kv = ncd.Copy("~x m") >> ncd.Linear("m -> k h", name="K") @ ncd.Linear("m -> k h", name="V")
    d = (latents @ kv) >> (_attend() @ Id("~x k h")) >> ncd.Einsum("~y ~x h, ~x k h -> ~y k h") >> ncd.Linear("k h -> m", name="O")

    def ref(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        q = (w["latents"] @ w["l_q.weight"].T).view(-1, 3, 2)
        key, v = (x @ w["l_k.weight"].T).view(-1, 3, 2), (x @ w["l_v.weight"].T).view(-1, 3, 2)
        s = (torch.einsum("ykh,xkh->hyx", q, key) / math.sqrt(3)).softmax(-1)
        return torch.einsum("hyx,xkh->ykh", s, v).reshape(-1, 6) @ w["l_o.weight"].T

    _check(d, dict(m=5, k=3, h=2, y=3, x=7), ref, (torch.randn(7, 5),), params=15 + 4 * 30)


# -- feed-forward, convolution, routing ---------------------------------------------------------------------------
def test_gated_mlp_with_a_hidden_width_no_head_count_divides() -> None:
    d = ncd.Copy("~t m") >> (ncd.Linear("m -> f", name="G") >> ncd.SiLU()) @ ncd.Linear("m -> f", name="U") \
        >> ncd.Multiply() >> ncd.Linear("f -> m", name="D")

    def ref(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return (F.silu(x @ w["l_g.weight"].T) * (x @ w["l_u.weight"].T)) @ w["l_d.weight"].T

    _check(d, dict(m=6, f=11, t=3), ref, (torch.randn(3, 6),), params=3 * 66)


def test_depthwise_separable_convolution() -> None:
    d = ncd.Conv("c y x -> c y x", kernel=3, padding=1, groups="c", name="DW") >> ncd.ReLU() \
        >> ncd.Conv("c y x -> d y x", kernel=1, name="PW")

    def ref(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.conv2d(x[None], w["conv_dw.weight"], w["conv_dw.bias"], padding=1, groups=3))
        return F.conv2d(y, w["conv_pw.weight"], w["conv_pw.bias"])[0]

    _check(d, dict(c=3, d=5, y=7, x=6), ref, (torch.randn(3, 7, 6),), params=3 * 9 + 3 + 15 + 5)


@pytest.mark.parametrize("t", [7, 8])
def test_one_dimensional_unet_on_odd_and_even_lengths(t: int) -> None:
    down = ncd.Conv(f"c t:{t} -> d t", kernel=3, stride=2, padding=1, name="Down")
    up = ncd.ConvTranspose(f"d {down.cod[0].axes[1]} -> c t", kernel=3, stride=2, padding=1, output_padding=(t + 1) % 2,
                           name="Up")
    d = ncd.Save(f"c t:{t}", "S", 0) >> down >> ncd.ReLU() >> up >> (Id(f"c t:{t}") @ ncd.Load(f"c t:{t}", "S", 0)) \
        >> ncd.Concat("c, c -> e:2*c") >> ncd.Conv("e t -> c t", kernel=1, name="Head")

    def ref(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.conv1d(x[None], w["conv_down.weight"], w["conv_down.bias"], stride=2, padding=1))
        y = F.conv_transpose1d(y, w["conv_t_up.weight"], w["conv_t_up.bias"], stride=2, padding=1, output_padding=(t + 1) % 2)
        return F.conv1d(torch.cat([y, x[None]], 1), w["conv_head.weight"], w["conv_head.bias"])[0]

    _check(d, dict(c=3, d=4), ref, (torch.randn(3, t),))


def test_mixture_of_experts_routed_to_the_top_two() -> None:
    router = ncd.Linear("m -> e", name="Router") >> ncd.TopK("e", 2, "j")
    d = ncd.Copy("~t m") >> (ncd.Linear("m -> n e", name="Experts") @ router) >> (Id("~t n e") @ ncd.Swap("~t j, ~t j [e]"))
    d = d >> (Gather("e", "j [e]") @ ncd.Softmax("j")) >> ncd.Einsum("n j, j -> n")

    def ref(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        v, i = (x @ w["l_router.weight"].T).topk(2, -1)
        picked = torch.gather((x @ w["l_experts.weight"].T).view(-1, 4, 5), 2, i[:, None, :].expand(-1, 4, -1))
        return torch.einsum("tnj,tj->tn", picked, v.softmax(-1))

    _check(d, dict(m=6, e=5, n=4, t=3), ref, (torch.randn(3, 6),))


def test_state_space_scan_and_its_refused_backward() -> None:
    step = (Id("s") @ ncd.Linear("m -> s", name="B")) >> ncd.Add() >> ncd.Copy("s") >> Id("s") @ ncd.Linear("s -> m", name="C")
    d = ncd.Scan(step, "t:5", carry=1)

    def ref(w: dict[str, torch.Tensor], h: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ys = []
        for xt in x:
            h = h + xt @ w["l_b.weight"].T
            ys.append(h @ w["l_c.weight"].T)
        return h, torch.stack(ys)

    _check(d, dict(m=3, s=4), ref, (torch.randn(4), torch.randn(5, 3)), grads=False)
    with pytest.raises(ncd.NCDError, match="backward of primitive 'scan' is not supported"):
        ncd.backward(d, m=3, s=4)


def test_a_pyramid_whose_widths_double_with_the_iteration() -> None:
    d = ncd.repeat(lambda i: ncd.Linear(f"w:m*2**({i}) -> w:m*2**({i}+1)", bias=True) >> ncd.ReLU(), "i", 0, "N")

    def ref(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        for n in range(3):
            x = F.relu(F.linear(x, w[f"layers.{n}.l_plus.weight"], w[f"layers.{n}.l_plus.bias"]))
        return x

    _check(d, dict(m=2, N=3), ref, (torch.randn(2),), params=(4 * 2 + 4) + (8 * 4 + 8) + (16 * 8 + 16))


def test_embedding_with_padding_index_offset_rms_norm_and_tied_unembedding() -> None:
    d = Id("~t [v]") >> ncd.Embedding(vocab="v", dim="m", name="E", padding_idx=0) >> ncd.RMSNorm("m", offset=1.0) \
        >> ncd.Unembed(vocab="v", dim="m", tied_to="E")

    def ref(w: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        e = F.rms_norm(F.embedding(ids, w["embedding_e.weight"], padding_idx=0), (3,), 1.0 + w["rms_weight"], eps=1e-6)
        return e @ w["embedding_e.weight"].T

    _check(d, dict(v=7, m=3, t=5), ref, (torch.tensor([0, 3, 6, 0, 2]),), params=7 * 3 + 3)


# -- odd axes and names ---------------------------------------------------------------------------------------------
def test_axes_of_size_one_everywhere() -> None:
    d = Id("b t m") >> ncd.Linear("m -> k h", name="Q", bias=True) >> ncd.Softmax("h") >> ncd.LayerNorm("k h") \
        >> ncd.Linear("k h -> m", name="O")

    def ref(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, w["l_plus_q.weight"], w["l_plus_q.bias"]).view(1, 1, 1, 1).softmax(-1)
        return F.layer_norm(y, (1, 1), w["ln.weight"], w["ln.bias"]).flatten(-2) @ w["l_o.weight"].T

    _check(d, dict(m=1, k=1, h=1, b=1, t=1), ref, (torch.randn(1, 1, 1),))


def test_unicode_and_very_long_names() -> None:
    d = ncd.Linear("é m -> 名前", name="Проекция", bias=True) >> ncd.Softmax("名前")
    _check(d, {"é": 2, "m": 3, "名前": 4},
           lambda w, x: F.linear(x.flatten(), w["l_plus_проекция.weight"], w["l_plus_проекция.bias"]).softmax(-1),
           (torch.randn(2, 3),))
    wide = "a" * 60
    d = (ncd.Linear(f"m -> {wide}", name="Long" * 40) >> ncd.GELU() >> ncd.Linear(f"{wide} -> m", name="Back")).block("B" * 150)
    _check(d, {"m": 3, wide: 5}, lambda w, x: F.gelu(x @ next(iter(w.values())).T) @ w["b.l_back.weight"].T
           if "b.l_back.weight" in w else F.gelu(x @ list(w.values())[0].T) @ list(w.values())[1].T, (torch.randn(3),))


def test_repeated_axis_names_read_as_diagonals_and_a_scalar_segment() -> None:
    _check(ncd.Einsum("i j, j i -> ()"), dict(i=3, j=4), lambda w, a, b: torch.einsum("ij,ji->", a, b),
           (torch.randn(3, 4), torch.randn(4, 3)))
    _check(ncd.Einsum("i i j -> j i"), dict(i=3, j=2), lambda w, a: torch.einsum("iij->ji", a), (torch.randn(3, 3, 2),))
    _check(ncd.Einsum("m, () -> m"), dict(m=4), lambda w, x, s: x * s, (torch.randn(4), torch.randn(())))


# -- primitives on uneven sizes ---------------------------------------------------------------------------------------
PIECES: list[tuple[str, Callable[[], ncd.Diagram], dict[str, int], Ref, Callable[[], tuple[torch.Tensor, ...]]]] = [
    ("conv1d dilated same", lambda: ncd.Conv("c t -> d t", kernel=3, dilation=2, padding="same", name="A"), dict(c=2, d=3, t=9),
     lambda w, x: F.conv1d(x[None], w["conv_a.weight"], w["conv_a.bias"], dilation=2, padding=2)[0], lambda: (torch.randn(2, 9),)),
    ("conv3d stride 2", lambda: ncd.Conv("c z y x -> d z y x", kernel=2, stride=2, name="A"), dict(c=2, d=3, z=4, y=4, x=6),
     lambda w, x: F.conv3d(x[None], w["conv_a.weight"], w["conv_a.bias"], stride=2)[0], lambda: (torch.randn(2, 4, 4, 6),)),
    ("conv 2 groups", lambda: ncd.Conv("c y x -> d y x", kernel=3, groups=2, padding=1, bias=False, name="A"),
     dict(c=4, d=6, y=5, x=5),
     lambda w, x: F.conv2d(x[None], w["conv_a.weight"], None, padding=1, groups=2)[0], lambda: (torch.randn(4, 5, 5),)),
    ("conv transpose grouped dilated", lambda: ncd.ConvTranspose("c t -> d t", kernel=3, stride=2, dilation=2, groups=2, name="A"),
     dict(c=4, d=6, t=4),
     lambda w, x: F.conv_transpose1d(x[None], w["conv_t_a.weight"], w["conv_t_a.bias"], stride=2, dilation=2, groups=2)[0],
     lambda: (torch.randn(4, 4),)),
    ("max pool padded odd", lambda: Id("c y:7 x:7") >> ncd.MaxPool("y:7 x:7", 3, 2, 1), dict(c=2),
     lambda w, x: F.max_pool2d(x, 3, 2, 1), lambda: (torch.randn(2, 7, 7),)),
    ("avg pool padded odd", lambda: Id("c y:7 x:7") >> ncd.AvgPool("y:7 x:7", 3, 2, 1), dict(c=2),
     lambda w, x: F.avg_pool2d(x, 3, 2, 1), lambda: (torch.randn(2, 7, 7),)),
    ("adaptive avg uneven", lambda: Id("c t:7") >> ncd.AdaptiveAvgPool("t:7", 3), dict(c=2),
     lambda w, x: F.adaptive_avg_pool1d(x, 3), lambda: (torch.randn(2, 7),)),
    ("bilinear resize", lambda: ncd.Interpolate("y x", "y2:7 x2:5", mode="bilinear"), dict(y=3, x=4),
     lambda w, x: F.interpolate(x[None, None], size=(7, 5), mode="bilinear")[0, 0], lambda: (torch.randn(3, 4),)),
    ("reverse cumsum", lambda: ncd.CumSum("t", reverse=True), dict(t=5), lambda w, x: x.flip(0).cumsum(0).flip(0),
     lambda: (torch.randn(5),)),
    ("roll", lambda: ncd.Roll("t", 2), dict(t=5), lambda w, x: x.roll(2, 0), lambda: (torch.randn(5),)),
    ("uneven pad", lambda: ncd.Pad("t", 3, 1), dict(t=5), lambda w, x: F.pad(x, (3, 1)), lambda: (torch.randn(5),)),
    ("concat of three", lambda: ncd.Concat("a, b, c -> d:a+b+c"), dict(a=1, b=2, c=3), lambda w, a, b, c: torch.cat([a, b, c]),
     lambda: (torch.randn(1), torch.randn(2), torch.randn(3))),
    ("slice step 3", lambda: Id("t:9") >> ncd.Slice("t", 1, 8, 3), {}, lambda w, x: x[1:8:3], lambda: (torch.randn(9),)),
    ("logsumexp of two axes", lambda: ncd.LogSumExp("a b"), dict(a=2, b=3), lambda w, x: x.logsumexp((0, 1)),
     lambda: (torch.randn(2, 3),)),
    ("l1 norm", lambda: ncd.VectorNorm("a", p=1.0), dict(a=4), lambda w, x: x.norm(p=1), lambda: (torch.randn(4),)),
    ("where", lambda: Id("t [bool], t, t") >> ncd.Where(), dict(t=5), lambda w, c, a, b: torch.where(c, a, b),
     lambda: (torch.tensor([1, 0, 1, 0, 0]).bool(), torch.randn(5), torch.randn(5))),
    ("log softmax", lambda: ncd.Softmax("a", log=True), dict(a=4), lambda w, x: x.log_softmax(0), lambda: (torch.randn(4),)),
    ("descending sort", lambda: ncd.Sort("t", "s", descending=True), dict(t=5), lambda w, x: tuple(x.sort(descending=True)),
     lambda: (torch.randn(5),)),
    ("median", lambda: ncd.Median("t"), dict(t=5), lambda w, x: x.median(), lambda: (torch.randn(5),)),
    ("product through two zeros", lambda: ncd.Prod("t"), dict(t=4), lambda w, x: x.prod(),
     lambda: (torch.tensor([2.0, 0.0, 3.0, 0.0]),)),
    ("divide by a scalar", lambda: (Id("t") @ Id("()")) >> ncd.Divide(), dict(t=4), lambda w, a, b: a / b,
     lambda: (torch.randn(4), torch.randn(()) + 3)),
    ("sqrt at zero", lambda: ncd.Sqrt(), {}, lambda w, x: x.sqrt(), lambda: (torch.tensor(0.0),)),
    ("layer norm of two axes without bias", lambda: ncd.LayerNorm("h w", bias=False), dict(h=2, w=3),
     lambda w, x: F.layer_norm(x, (2, 3), w["ln.weight"]), lambda: (torch.randn(2, 3),)),
]


@pytest.mark.parametrize(("build", "sizes", "ref", "inputs"), [p[1:] for p in PIECES], ids=[p[0] for p in PIECES])
def test_a_piece_on_uneven_sizes(build: Callable[[], ncd.Diagram], sizes: dict[str, int], ref: Ref,
                                 inputs: Callable[[], tuple[torch.Tensor, ...]]) -> None:
    torch.manual_seed(0)
    _check(build(), sizes, ref, inputs())


# -- bad input ------------------------------------------------------------------------------------------------------
def test_an_empty_composition_is_the_empty_diagram() -> None:
    # Seq.of() raised IndexError ('tuple index out of range'); Par.of() was already the identity on ''
    assert ncd.Seq.of() == ncd.Par.of() == Id("")
    assert ncd.Seq.of(Id(""), Id("")) == Id("")
    assert ncd.cost(ncd.Seq.of()).params == 0


@pytest.mark.parametrize("build", [lambda: ncd.Softmax("a b"), lambda: ncd.CausalMask("y x"), lambda: ncd.PaddingMask("s t")])
def test_two_axes_where_one_is_read_is_named_as_such(build: Callable[[], object]) -> None:
    # was "axis 'a b': cannot read size 'a b': unexpected 'b' at position 2"
    with pytest.raises(ncd.ParseError, match=r"expected one axis, not the 2 axes '\w \w'"):
        build()


def test_one_axis_with_a_spaced_size_is_still_read() -> None:
    assert str(ncd.Softmax("t:x * 2").dom) == "t:2*x"


@pytest.mark.parametrize(("call", "message"), [
    (lambda: ncd.Linear("m -> k", name="P").to_torch(m=4, k=3)(torch.randn(2, 5)), r"axes 'm' of sizes \(m=4\).*shape \(2, 5\)"),
    (lambda: ncd.Einsum("a b, b c -> a c").to_torch(a=2, b=3, c=4)(torch.randn(2, 3), torch.randn(4, 4)),
     r"input 1 should end in axes 'b c' of sizes \(b=3, c=4\).*\(4, 4\)"),
    (lambda: ncd.Linear("m:4 -> k:4") >> ncd.Linear("k:5 -> m"), "axis k has size 4 in the first and 5 in the second"),
    (lambda: (Id("m:4") >> ncd.Linear("m -> k")).to_torch(m=5, k=2), "axis m has size 4 in the diagram, so m=5 cannot apply"),
    (lambda: ncd.Linear("m -> k").to_torch(m=4.5, k=3), "size m=4.5 must be a positive whole number"),
    (lambda: ncd.Conv("c t:3 -> d t", kernel=5), "axis t of size 3 .* shorter than the kernel's span 5"),
    (lambda: (Id("e:3") >> ncd.TopK("e", 5, "j")).to_torch(), "k=5 must be between 1 and the size 3 of e"),
    (lambda: Id("t:5") >> ncd.Slice("t", 2, 9), "stop 9 is past the size 5 of t"),
    (lambda: ncd.Conv("c t -> d t", kernel=3, stride=2, padding=1).bind(t=7), "stride 2 does not divide axis t=7"),
])
def test_bad_input_is_an_ncd_error_naming_axes_and_sizes(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ncd.NCDError, match=message):
        call()


def _edited(edit: Callable[[dict[str, Any]], None]) -> str:
    data = json.loads((ncd.Linear("m -> k") >> ncd.Softmax("k")).to_json())
    edit(data)
    return json.dumps(data)


@pytest.mark.parametrize("text", [
    "import os; os.system('touch /tmp/ncd_pwned')",
    _edited(lambda j: j["diagram"]["parts"][0].__setitem__("op", "os.system")),
    _edited(lambda j: j["diagram"]["parts"][0]["fields"]["dom_axes"]["segment"][0].__setitem__(
        "size", "__import__('os').system('touch /tmp/ncd_pwned')")),
    _edited(lambda j: j["diagram"]["parts"][0]["fields"]["dom_axes"]["segment"][0].__setitem__("axis", "m); import os#")),
    _edited(lambda j: j["diagram"]["parts"][0].__setitem__("label", 'x"""\nimport os\n"""')),
    _edited(lambda j: j["diagram"]["parts"][1]["fields"]["axis"].__setitem__("axis", "q")),
    '{"format":"ncd.diagram","version":1,"diagram":' + '{"node":"seq","parts":[' * 3000 + ']}' * 3000 + '}',
])
def test_a_hostile_or_broken_file_is_refused_before_anything_runs(text: str) -> None:
    with pytest.raises(ncd.NCDError):
        ncd.load_json(text)


def test_a_label_python_would_misread_stays_text_in_the_generated_source() -> None:
    for name in ['a"""b', "ab\\", "self", "forward", "torch", "'''"]:
        d = (ncd.Linear("m -> k", name=name) >> ncd.ReLU()).block(name)
        source = d.to_source(m=3, k=2)
        namespace: dict[str, Any] = {}
        exec(source, namespace)  # noqa: S102 - our own generated source
        module, again = d.to_torch(m=3, k=2), namespace[top_class_name(source)]()
        again.load_state_dict(module.state_dict())
        x = torch.randn(3)
        assert torch.equal(again(x), module(x))


# -- decoding -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kv", "window", "sizes"), [("k g", None, dict(m=10, k=2, g=3, r=3)), ("k", 3, dict(m=8, k=4, h=5))])
def test_decoding_grouped_and_windowed_attention_equals_the_whole_model(kv: str, window: int | None,
                                                                         sizes: dict[str, int]) -> None:
    attention = Id("~t m") >> ncd.RMSNorm("m") >> _grouped(kv, window)
    model = (Id("~t [v]") >> ncd.Embedding(vocab="v", dim="m", name="E") >> ncd.residual(attention)
             >> ncd.Unembed(vocab="v", dim="m", tied_to="E")).block("LM")
    sizes = dict(sizes, v=11)
    whole = model.to_torch(t=8, **sizes)
    decoding = ncd.decode(model)
    run = decoding.lower(weights=whole.state_dict(), dtype=torch.float64, **sizes)
    ids = torch.randint(0, 11, (1, 8))
    with FlopCounterMode(display=False) as prefill:
        logits, caches = run.prefill(ids[:, :5])
    steps = [logits]
    for p in range(5, 8):
        with FlopCounterMode(display=False) as step:
            logits, caches = run.step(ids[:, p:p + 1], caches, past=p)
        steps.append(logits)
        costs = decoding.costs("float32", t=5, c=p, **sizes)
        assert (costs.prefill_matmul, costs.step_matmul) == (prefill.get_total_flops(), step.get_total_flops())
        held = min(p, window - 1) if window else p  # keys and values cached before the step
        assert costs.cache_read_bytes == held * costs.cache_per_token == held * 2 * (6 if kv == "k g" else 4) * 4
    _close(torch.cat(steps, -2), whole.double()(ids), "prefill and steps vs the whole model", 1e-9)
    # its own weights, with or without the token length (both raised "sizes t are not bound; pass them as keywords")
    for given in ({}, {"t": 5}):
        assert decoding.lower(**sizes, **given).generate(torch.tensor([1, 2, 3]), 2).shape == (5,)
