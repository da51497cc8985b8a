"""Sharding on the wires: placements, derived collectives, per-rank costs, and PyTorch's distributed engine.

The collectives ``ncd.cost`` predicts are compared with what PyTorch records (``CommDebugMode`` and a
dispatch-mode recorder of every collective's buffer) under the fake process group of world size 8,
and the sharded module's outputs and gradients with the single-process module's on a real gloo group.
Both run in subprocesses: a process group is process-wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import sympy

import ncd
from ncd.distributed import NVLINK, ShardingError, TwoLevel, derive
from ncd.distributed.verify import SCENARIOS, gpt2_block, predict, scenario

MEGATRON = {"h": "tp", "f": "tp"}


def _run(*args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "ncd.distributed.verify", *args], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fake() -> dict:
    return _run("fake", "all")


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_predicted_collectives_equal_recorded(fake: dict, name: str) -> None:
    recorded, predicted = fake[name]["recorded"], fake[name]["predicted"]
    for phase in ("forward", "backward"):
        assert predicted[phase] == recorded[phase], (name, phase)
        assert {k: v["count"] for k, v in predicted[phase].items()} == recorded[f"{phase}_debug"], (name, phase)
    assert predicted["param_numel"] == recorded["param_numel"]
    assert sum(v["count"] for v in recorded["forward"].values()) > 0


def test_fake_predictions_are_the_ones_computed_here(fake: dict) -> None:
    for name in SCENARIOS:
        assert predict(scenario(name)) == fake[name]["predicted"]


def test_sharded_module_equals_single_process_on_gloo() -> None:
    result = _run("gloo", "all", "2")
    assert set(result) == {"tp", "tp_sp", "dp_tp"}  # dp_tp on 2 processes: FSDP2 over dp=2, tp=1
    for name, r in result.items():
        assert r["allclose"] and r["same_names"], (name, r)
        assert r["output"] < 1e-12 and r["grads"] < 1e-12 and r["params"] == 16


def test_megatron_two_all_reduces_per_block_symbolic() -> None:
    block = gpt2_block()
    body = block.body
    sharded = ncd.shard(body, ncd.Mesh(tp=8), MEGATRON)
    report = ncd.cost(sharded)
    assert report.collectives == {"all_reduce": 2, "all_gather": 0, "reduce_scatter": 0, "all_to_all": 0}
    t, m = sympy.symbols("t m", positive=True)
    forward = [c for c in derive(sharded).collectives if c.phase == "forward"]
    assert [c.kind for c in forward] == ["all_reduce", "all_reduce"]
    assert all(sympy.simplify(c.numel - t * m) == 0 for c in forward)
    bound = ncd.cost(sharded, t=1024, m=768, k=64, h=16)
    assert bound.per_rank.collective_bytes()["all_reduce"] == 2 * 1024 * 768 * 4


def test_sequence_parallel_turns_all_reduces_into_gathers_and_scatters() -> None:
    report = ncd.cost(ncd.shard(gpt2_block(), ncd.Mesh(tp=8), {**MEGATRON, "t": "tp"}))
    assert report.collectives == {"all_reduce": 0, "all_gather": 2, "reduce_scatter": 2, "all_to_all": 0}
    assert report.per_rank.counts("backward") == {"all_reduce": 0, "all_gather": 2, "reduce_scatter": 2, "all_to_all": 0}


def test_per_rank_costs_split_the_sharded_boxes_only() -> None:
    block = gpt2_block()
    whole = ncd.cost(block)
    sharded = ncd.cost(ncd.shard(block, ncd.Mesh(tp=8), MEGATRON))
    assert sharded.forward_flops == whole.forward_flops  # the report's totals stay the whole model's
    m, f, h, k = 64, 256, 8, 8
    layer_norms = 2 * 2 * m
    replicated = layer_norms + m + m  # row-parallel biases are whole
    assert sharded.per_rank.params == replicated + (whole.params - replicated) // 8
    assert sharded.per_rank.forward_flops < whole.forward_flops / 4
    unsharded = ncd.cost(ncd.shard(block, ncd.Mesh(tp=1), MEGATRON))
    assert unsharded.per_rank.forward_flops == whole.forward_flops
    assert unsharded.per_rank.params == whole.params
    assert unsharded.per_rank.activation_bytes == whole.activation_bytes
    assert sharded.per_rank.activation_bytes < whole.activation_bytes / 2
    assert (f, h, k) == (4 * m, 8, 8)


def test_time_model_presets_and_two_levels() -> None:
    sharded = ncd.shard(gpt2_block(), ncd.Mesh(dp=2, tp=4), {**MEGATRON, "b": "dp"})
    per_rank = ncd.cost(sharded, b=16).per_rank
    nbytes = 8 * 16 * 64 * 4  # one all-reduce of t m for 8 samples per rank
    expected_ar = 2 * 3 * NVLINK.alpha + 2 * 3 / 4 * nbytes / NVLINK.bandwidth
    assert per_rank.time(NVLINK, "forward") > 2 * expected_ar
    two = TwoLevel(ranks_per_node=4)  # tp inside a node, dp across nodes: slower than all NVLink
    assert per_rank.time(two) > per_rank.time(NVLINK)
    assert TwoLevel(ranks_per_node=8).link(sharded_mesh := ncd.Mesh(dp=2, tp=4), "dp").name == "NVLink"
    assert two.link(sharded_mesh, "dp").name == "InfiniBand" and two.link(sharded_mesh, "tp").name == "NVLink"


@pytest.mark.parametrize(("placements", "pattern"), [
    ({"x": "tp"}, r"axis x \(size t = 16\) is split over mesh axis tp=8, but ◸ .* acts on it"),
    ({"m": "tp"}, r"axis m .*LN.* normalises over it"),
    ({"h": "tp", "f": "tp", "z": "tp"}, r"'z' is not a wire"),
    ({"h": "mp"}, r"mesh axis 'mp' does not exist"),
])
def test_illegal_placements_are_refused(placements: dict, pattern: str) -> None:
    with pytest.raises(ShardingError, match=pattern):
        ncd.shard(gpt2_block(), ncd.Mesh(tp=8), placements)


def test_splitting_the_axis_a_softmax_normalises_over_is_refused() -> None:
    scores = ncd.Identity.of("~y ~x h") >> ncd.Softmax("~x")
    with pytest.raises(ShardingError, match=r"axis x \(size x = 32\) .* tp=8, but ◁ .* normalises over it"):
        ncd.shard(scores.block("Scores", defaults=(("x", 32), ("y", 8), ("h", 4))), ncd.Mesh(tp=8), {"x": "tp"})
    assert ncd.cost(ncd.shard(scores, ncd.Mesh(tp=4), {"h": "tp"}), x=8, y=8, h=4).collectives["all_gather"] == 0


def test_sizes_must_divide_and_every_mesh_axis_must_carry_something() -> None:
    with pytest.raises(ShardingError, match=r"axis h of size h = 6 at L₊\^Q .* not divisible by mesh axis tp=4"):
        ncd.shard(gpt2_block(h=6), ncd.Mesh(tp=4), MEGATRON)
    with pytest.raises(ShardingError, match=r"mesh axis dp=2 carries no wire"):
        ncd.shard(gpt2_block(), ncd.Mesh(dp=2, tp=4), MEGATRON)
    with pytest.raises(ShardingError, match=r"not divisible"):
        ncd.cost(ncd.shard(gpt2_block().body, ncd.Mesh(tp=8), MEGATRON), t=4, m=64, h=12, k=8)
    with pytest.raises(ShardingError, match="Mesh"):
        ncd.Mesh(tp=0)


def test_unsharded_reports_have_no_collectives() -> None:
    assert ncd.cost(gpt2_block()).collectives == {"all_reduce": 0, "all_gather": 0, "reduce_scatter": 0, "all_to_all": 0}


def test_sharded_diagram_round_trips_through_json() -> None:
    sharded = ncd.shard(gpt2_block(), ncd.Mesh(tp=8), MEGATRON)
    again = ncd.load_json(sharded.to_json())
    assert ncd.cost(again).collectives == ncd.cost(sharded).collectives


@pytest.mark.parametrize(("placements", "tags"), [
    (MEGATRON, ["AR_tp", "AR_tp", "∂AR_tp", "∂AR_tp"]),
    ({**MEGATRON, "t": "tp"}, ["AG_tp", "AG_tp", "RS_tp", "RS_tp"]),
])
@pytest.mark.parametrize("page", ["none", "column"])  # one row, and wrapped into rows with definitions
def test_drawing_tags_each_derived_collective_and_subscripts_split_wires(placements: dict, tags: list[str], page: str) -> None:
    from ncd.render import layout
    from ncd.render.check import problems
    from ncd.render.model import Rect, Text

    sharded = ncd.shard(gpt2_block(), ncd.Mesh(tp=8), placements)
    drawing = layout(sharded, page=page)
    assert problems(drawing) == []
    glyphs = [r for r in drawing.of(Rect) if r.role == "glyph" and r.stroke == "#b03030"]
    texts = [t.string for t in drawing.of(Text)]
    found = sorted(t for t in texts if t.replace("∂", "")[:2] in ("AR", "AG", "RS"))
    assert found == sorted(t.replace("_", "") for t in tags) and len(glyphs) == len(tags)
    assert sum(t == "htp" for t in texts) >= 3 and any(t.startswith("ftp") for t in texts)  # h and f carry their mesh axis
    plain = layout(gpt2_block(), page="none")
    assert not [t for t in plain.of(Text) if "tp" in t.string]


def test_shard_command_prints_the_per_rank_table(capsys: pytest.CaptureFixture[str]) -> None:
    from ncd.cli import main

    assert main(["shard", "gpt2", "--mesh", "tp=4", "--place", "h=tp,f=tp", "--size", "N=2", "--where"]) == 0
    out = capsys.readouterr().out
    report = ncd.cost(ncd.shard(ncd.zoo.gpt2(N=2), ncd.Mesh(tp=4), MEGATRON))
    assert report.collectives["all_reduce"] == 4
    row = next(line for line in out.splitlines() if "forward" in line and "all_reduce" in line)
    assert f"{report.per_rank.collective_bytes()['all_reduce']:,}" in row and " 4 " in row
    assert f"{report.per_rank.param_bytes:,}" in out and "forward all_reduce over tp ×2: 6144 elements of y m (Σtp) at L₊^O" in out
    assert main(["shard", "gpt2", "--mesh", "tp=8", "--place", "h=tp,f=tp"]) == 2  # 12 heads do not split 8 ways
    assert "axis h of size h = 12" in capsys.readouterr().err


def test_a_change_of_split_axis_is_an_all_to_all_both_ways() -> None:
    # the first input arrives split along h (a column-parallel map), the second along t: the einsum needs one split
    diagram = (ncd.Identity.of("m") >> ncd.Linear("m -> h")) @ ncd.Identity.of("~t h") >> ncd.Einsum("h, ~t h -> ~t h")
    sharded = ncd.shard(diagram, ncd.Mesh(tp=4), {"h": "tp", "t": "tp"})
    report = ncd.cost(sharded, m=8, h=8, t=16)
    assert report.collectives == {"all_reduce": 0, "all_gather": 0, "reduce_scatter": 0, "all_to_all": 1}
    assert report.per_rank.counts("backward") == {"all_reduce": 1, "all_gather": 0, "reduce_scatter": 0, "all_to_all": 1}
    moved = next(c for c in derive(sharded).collectives if c.kind == "all_to_all")
    assert sympy.simplify(moved.numel - sympy.Symbol("h", positive=True) * sympy.Symbol("t", positive=True) / 4) == 0
    assert report.per_rank.collective_bytes()["all_to_all"] == 8 * 16 // 4 * 4
