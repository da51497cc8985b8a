"""The IO model (ncd.iomodel): the checks of IO_MODEL.md §4, against independent counts.

Independent references: the loop simulator (executes the loop nest, counts every element),
the paper's published formulas (FA1, FA2, tiled matmul) and datasheet figures.
"""

from __future__ import annotations

import math
import os
import random

import pytest
import sympy

import ncd
from ncd.iomodel.optimum import attention_query_group, fp8_ratio, matmul_tile, search
from ncd.iomodel.program import flatten
from ncd.iomodel.schedule import Schedule, StreamError
from ncd.iomodel.simulate import simulate
from ncd.zoo.heads import scaled_dot_product

H100 = ncd.Hierarchy.preset("h100")
TWO = H100.restrict("hbm", "smem")
THREE = H100.restrict("hbm", "l2", "smem")
MATMUL = ncd.Einsum("a b, b c -> a c")
S = {n: sympy.Symbol(n, positive=True) for n in "a b c y x k".split() + ["g_a", "g_c", "s_b", "B_r", "B_c", "g_y"]}


def attention(causal: bool = False) -> ncd.Diagram:
    return ncd.online_softmax(scaled_dot_product("", "causal" if causal else None))


def test_check1_tiled_matmul_moves_20480_elements() -> None:
    r = ncd.io(MATMUL, TWO, group={"smem": {"a": 16, "c": 8}}, a=64, b=48, c=32)
    assert r.transfers["smem"] == 20480
    # the published formula (a/g_a)(c/g_c)(g_a b + b g_c + g_a g_c)
    assert (64 // 16) * (32 // 8) * (16 * 48 + 48 * 8 + 16 * 8) == 20480
    p = flatten(MATMUL, {"a": 64, "b": 48, "c": 32})
    assert simulate(p, Schedule.make(TWO, p, {"smem": {"a": 16, "c": 8}}, None), "smem") == 20480


def test_matmul_closed_forms_symbolic() -> None:
    r = ncd.io(MATMUL, TWO, group={"smem": {"a": "g_a", "c": "g_c"}}, stream={"smem": {"b": "s_b"}})
    a, b, c, ga, gc, sb = (S[n] for n in ("a", "b", "c", "g_a", "g_c", "s_b"))
    assert sympy.simplify(r.formulas["smem"] - (a * b * c * (1 / ga + 1 / gc) + a * c)) == 0
    assert sympy.simplify(r.memory["smem"] - (ga * gc + sb * (ga + gc))) == 0
    naive = ncd.io(MATMUL, TWO)
    assert sympy.simplify(naive.formulas["smem"] - (a * b + b * c + a * c)) == 0


def test_attention_loop_orders_fa1_fa2_and_unfused() -> None:
    y, x, k, br, bc, gy = (S[n] for n in ("y", "x", "k", "B_r", "B_c", "g_y"))
    fa1 = ncd.io(attention(), TWO, stream={"smem": {"x": "B_c", "y": "B_r"}})
    assert sympy.simplify(fa1.formulas["smem"] - (2 * x * k + (x / bc) * (3 * y * k + 4 * y))) == 0
    fa2 = ncd.io(attention(), TWO, group={"smem": {"y": "B_r"}}, stream={"smem": {"x": "B_c"}})
    assert sympy.simplify(fa2.formulas["smem"] - (2 * y * k + 2 * y * x * k / br)) == 0
    sx = S["B_c"]
    m = ncd.io(attention(), TWO, group={"smem": {"y": "g_y"}}, stream={"smem": {"x": "B_c"}}).memory["smem"]
    assert sympy.simplify(m - (2 * gy * k + 2 * gy + 2 * sx * k + gy * sx)) == 0
    unfused = ncd.io(scaled_dot_product(), TWO)
    assert sympy.simplify(unfused.formulas["smem"] - (4 * y * x + 2 * y * k + 2 * x * k)) == 0


def test_check3_h100_tile_optimum() -> None:
    M = H100.capacity("smem", "float16")
    assert M == 116224
    assert matmul_tile(M) == 340 == math.isqrt(M)
    assert attention_query_group(M, 128) == 454
    # at g_y = 454 the FA2 working set (s_x -> 1) fits; at 455 it does not
    for g, fits in ((454, True), (455, False)):
        m = ncd.io(attention(), TWO, group={"smem": {"y": g}}, stream={"smem": {"x": 1}}, y=g, x=64, k=128).memory["smem"]
        assert (m - 2 * g - 2 * 128 - g <= M) is fits  # the paper's M ≈ 2 g_y k (dropping the s_x terms)


def test_check4_fp8_ratios_from_the_model() -> None:
    assert f"{fp8_ratio('attention'):.2f}" == "4.00"
    assert f"{fp8_ratio('matmul'):.2f}" == "2.83"
    # the same ratios from the model's own transfer formulas at their optimum tiles
    def dependent_bytes(dtype: str, kind: str) -> sympy.Expr:
        q = ncd.iomodel.element_bytes(dtype)
        M = sympy.Rational(H100.level("smem").capacity, q)
        if kind == "attention":
            f = ncd.io(attention(), TWO, group={"smem": {"y": "g_y"}}, stream={"smem": {"x": 1}}).formulas["smem"]
            f = f.subs(S["g_y"], M / (2 * S["k"]))
            return q * (f - 2 * S["y"] * S["k"])
        f = ncd.io(MATMUL, TWO, group={"smem": {"a": "g_a", "c": "g_c"}}).formulas["smem"]
        f = f.subs({S["g_a"]: sympy.sqrt(M), S["g_c"]: sympy.sqrt(M)})
        return q * (f - S["a"] * S["c"])
    assert sympy.simplify(dependent_bytes("float16", "attention") / dependent_bytes("float8", "attention")) == 4
    assert sympy.simplify(dependent_bytes("float16", "matmul") / dependent_bytes("float8", "matmul")) == 2 ** sympy.Rational(3, 2)


def test_check5_16k_tokens_h100_two_level_memory_three_level_compute() -> None:
    sizes = dict(y=16384, x=16384, k=128)
    fa2 = dict(group={"smem": {"y": 128}}, stream={"smem": {"x": 128}})
    two = ncd.io(attention(), TWO, **fa2, **sizes)
    three = ncd.io(attention(), THREE, **fa2, **sizes)
    assert two.transfers["smem"] == 2 * 16384 * 128 + 2 * 16384 * 16384 * 128 // 128
    assert two.bound == "memory" and three.bound == "compute"
    assert three.transfers["l2"] == 4 * 16384 * 128  # Q, K, V, O once from HBM; K/V re-reads served by L2
    assert all(three.feasible.values())
    # datasheet figures: 3.35 TB/s HBM3, 989.4 TFLOP/s dense fp16
    assert two.transfer_times["smem"] == pytest.approx(two.transfers["smem"] * 2 / 3.35e12)
    assert three.compute_time > three.transfer_times["smem"] > three.transfer_times["l2"]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _random_schedule(rng: random.Random, axes: dict[str, int], levels: tuple[str, ...], allowed: set[str],
                     groupable: set[str]) -> tuple[dict, dict]:
    group: dict[str, dict[str, int]] = {}
    stream: dict[str, dict[str, int]] = {}
    current = dict(axes)
    for lvl in levels:
        names = [n for n in axes if n in allowed and rng.random() < 0.6]
        rng.shuffle(names)
        for n in names:
            c = rng.choice(_divisors(current[n]))
            if n in groupable and rng.random() < 0.5:
                group.setdefault(lvl, {})[n] = c
            else:
                stream.setdefault(lvl, {})[n] = c
            current[n] = c
    return group, stream


@pytest.mark.parametrize("seed", range(int(os.environ.get("NCD_IO_SEEDS", "8"))))
def test_check2_simulator_equals_closed_forms_on_random_schedules(seed: int) -> None:
    rng = random.Random(seed)
    cases = [
        (MATMUL, {"a": 12, "b": 8, "c": 6}, {"a", "b", "c"}, {"a", "c"}),
        (attention(), {"y": 8, "x": 12, "k": 4}, {"y", "x", "k"}, {"y", "k"}),
        (ncd.online_softmax(scaled_dot_product("h")), {"y": 6, "x": 4, "k": 2, "h": 2}, {"y", "x", "h"}, {"y", "h"}),
        (ncd.Linear("m -> n") >> ncd.ReLU(), {"m": 8, "n": 6, "t": 4}, {"m", "n"}, {"n"}),
    ]
    checked = 0
    for diagram, sizes, allowed, groupable in cases:
        if "t" in sizes:
            diagram = diagram.weave("t")
        for levels in (("smem",), ("l2", "smem"), ("l2", "smem", "registers")):
            hier = {1: TWO, 2: THREE, 3: H100}[len(levels)]
            group, stream = _random_schedule(rng, sizes, levels, allowed, groupable)
            if not group and not stream:  # no relabelling: the unfused baseline, not one kernel
                continue
            p = flatten(diagram, sizes)
            try:
                sched = Schedule.make(hier, p, group, stream)
            except StreamError:
                continue
            report = ncd.io(diagram, hier, group=group, stream=stream, **sizes)
            for lvl in hier.levels[1:]:
                assert simulate(p, sched, lvl) == report.transfers[lvl], (group, stream, lvl)
                checked += 1
    assert checked >= 4


@pytest.mark.parametrize("order", ["fa1", "fa2"])
def test_causal_transfers_simulator_equals_closed_form(order: str) -> None:
    sizes = {"y": 16, "x": 16, "k": 2}
    d = attention(causal=True)
    for by, bx in ((4, 4), (8, 2), (2, 8)):
        group, stream = ({"smem": {"y": by}}, {"smem": {"x": bx}}) if order == "fa2" else (None, {"smem": {"x": bx, "y": by}})
        r = ncd.io(d, TWO, group=group, stream=stream, **sizes)
        p = flatten(d, sizes)
        counted = simulate(p, Schedule.make(TWO, p, group, stream), "smem")
        if order == "fa2":
            assert counted == r.transfers["smem"]
        else:  # the closed form reloads on every needed step; the simulator keeps a tile that two
            # consecutive needed steps share (at most once per outer iteration under the mask)
            assert r.transfers["smem"] - 4 * 16 // bx * (by * 2 + 2 * by * 2 + 2 * 2 * by) <= counted <= r.transfers["smem"]
        full = ncd.io(attention(), TWO, group=group, stream=stream, **sizes)
        assert r.transfers["smem"] < full.transfers["smem"] and r.causal


def test_streaming_an_ordinary_softmax_names_the_rewrite() -> None:
    with pytest.raises(StreamError, match=r"ncd\.online_softmax") as info:
        ncd.io(scaled_dot_product(), TWO, group={"smem": {"y": 4}}, stream={"smem": {"x": 4}}, y=8, x=8, k=4)
    assert "'x'" in str(info.value) and "size 8" in str(info.value)
    with pytest.raises(StreamError, match="group"):
        ncd.io(MATMUL, TWO, group={"smem": {"b": 4}}, a=8, b=8, c=8)
    with pytest.raises(StreamError, match="accumulator"):
        ncd.io(ncd.LayerNorm("m"), TWO, stream={"smem": {"m": 4}}, m=8)


def test_bad_requests_are_ncd_errors() -> None:
    with pytest.raises(ncd.NCDError, match="no level 'sram'"):
        ncd.io(MATMUL, TWO, group={"sram": {"a": 4}})
    with pytest.raises(ncd.NCDError, match="no axis 'q'"):
        ncd.io(MATMUL, TWO, group={"smem": {"q": 4}})
    with pytest.raises(ncd.NCDError, match="does not divide"):
        ncd.io(MATMUL, TWO, group={"smem": {"a": 5}}, a=8, b=8, c=8)
    with pytest.raises(ncd.NCDError, match="no hierarchy preset"):
        ncd.Hierarchy.preset("tpu")
    with pytest.raises(ncd.NCDError, match="no matrix rate"):
        ncd.io(MATMUL, ncd.Hierarchy.preset("a100"), group={"smem": {"a": 4}}, dtype="float8", a=8, b=8, c=8)


def test_presets_levels_restrict_and_sources() -> None:
    for name in ("h100", "a100", "h200"):
        h = ncd.Hierarchy.preset(name)
        assert h.levels == ("hbm", "l2", "smem", "registers")
        assert "datasheet" in (type(h).preset.__doc__ or "") or h.source
        assert all(lv.source for lv in h.chain)
    h100, h200 = ncd.Hierarchy.preset("h100"), ncd.Hierarchy.preset("h200")
    assert h100.level("hbm").capacity == 80 * 10**9 and h100.level("l2").bandwidth == 3.35e12
    assert h200.level("l2").bandwidth == 4.8e12 and h100.rate("float16") == 989.4e12
    a100 = ncd.Hierarchy.preset("a100")
    assert a100.capacity("smem", "float16") == 83456 and math.isqrt(83456) == 288
    assert a100.level("l2").bandwidth == 2.039e12 and a100.rate("bfloat16") == 312e12
    two = h100.restrict("hbm", "smem")
    assert two.levels == ("hbm", "smem") and two.level("smem").bandwidth == 3.35e12  # the bottleneck pipe
    assert h100.multiple("smem", "k", "float16") == 64 and h100.multiple("smem", "k", "float8") == 128


def test_search_finds_a_feasible_tiling() -> None:
    best = search(MATMUL, TWO, "smem", group=("a", "c"), stream=("b",), a=1024, b=1024, c=1024)
    r = ncd.io(MATMUL, TWO, group={"smem": best.group}, stream={"smem": best.stream}, a=1024, b=1024, c=1024)
    assert r.memory["smem"] == best.memory <= TWO.capacity("smem") and r.transfers["smem"] == best.transfers
    worse = ncd.io(MATMUL, TWO, group={"smem": {"a": 64, "c": 64}}, stream={"smem": {"b": 64}}, a=1024, b=1024, c=1024)
    assert r.transfers["smem"] < worse.transfers["smem"]
    # the closed-form optimum g = ⌊√M⌋ = 340 is not a divisor of 1024; the best power of two below it wins
    assert best.group == {"a": 256, "c": 256}
