"""Untrusted diagrams cannot touch the machine, and every bad input gets an ``ncd`` error.

The references are independent of the code under test: torch's own operator schemas decide
which ATen operators have side effects, the file system says whether a file was written,
PyTorch computes the expected values, and a subprocess shows what the CLI prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import ncd
from ncd.errors import LimitError, NCDError, SchemaError, SizeError, TypeMismatchError
from ncd.limits import override
from ncd.prims.opaque import Opaque
from ncd.prims.opaque_allowlist import ALLOWED


# -- 1. opaque operators ----------------------------------------------------------------------------
def _aten_overloads() -> list[tuple[str, Any]]:
    """Every ATen overload torch registers, as (``aten.name.overload``, the OpOverload)."""
    found = []
    for schema in torch._C._jit_get_all_schemas():
        if not schema.name.startswith("aten::"):
            continue
        name, overload = schema.name[len("aten::"):], schema.overload_name or "default"
        packet = getattr(torch.ops.aten, name, None)
        op = getattr(packet, overload, None) if packet is not None else None
        if isinstance(op, torch._ops.OpOverload):
            found.append((f"aten.{name}.{overload}", op))
    return sorted(found, key=lambda item: item[0])


#: Words of operators that reach files, storages, processes, streams or the random generator.
_WORLD = ("file", "storage", "share", "set_", "rand", "seed", "bernoulli", "multinomial", "normal_", "uniform",
          "exponential", "geometric", "cauchy", "poisson", "dropout", "print", "save", "load", "stream", "process",
          "empty", "resize", "_foreach", "_fused")


def _side_effect(target: str, op: Any) -> str | None:
    """Why torch's schema says ``op`` does more than compute from its arguments (None: nothing)."""
    schema, name = op._schema, target.split(".")[1]
    if schema.is_mutable:
        return "mutable schema"
    if any(a.is_out for a in schema.arguments):
        return "out= argument"
    if any(a.alias_info is not None and a.alias_info.is_write for a in (*schema.arguments, *schema.returns)):
        return "written alias"
    if torch.Tag.nondeterministic_seeded in op.tags or any("Generator" in str(a.type) for a in schema.arguments):
        return "random state"
    if torch.Tag.inplace_view in op.tags:
        return "in-place view"
    if any(word in name for word in _WORLD):
        return "file, storage, process or random operator"
    return None


OVERLOADS = _aten_overloads()
SIDE_EFFECTS = [(t, why) for t, op in OVERLOADS if (why := _side_effect(t, op))]


def _opaque_doc(target: str, args: list[Any] | None = None, kwargs: list[Any] | None = None) -> dict[str, Any]:
    box = Opaque("aten.cumsum.default", "a:3", "a:3", (("$in", 0), 0))
    doc = json.loads(box.to_json())
    doc["diagram"]["fields"]["target"] = target
    if args is not None:
        doc["diagram"]["fields"]["args"] = {"tuple": args}
    if kwargs is not None:
        doc["diagram"]["fields"]["kwargs"] = {"tuple": kwargs}
    return doc


def test_the_walk_covers_torchs_whole_operator_set() -> None:
    assert len(OVERLOADS) > 2000 and len(SIDE_EFFECTS) > 1000
    reasons = {why for _, why in SIDE_EFFECTS}
    assert {"mutable schema", "random state", "file, storage, process or random operator"} <= reasons


def test_every_aten_operator_with_side_effects_is_refused_at_load() -> None:
    """Each of them, named in an opaque box of a file, is refused with the operator and the JSON path."""
    accepted = []
    for target, why in SIDE_EFFECTS:
        try:
            ncd.load_json(json.dumps(_opaque_doc(target)))
        except SchemaError as error:
            message = str(error)
            assert target in message and "$.diagram.fields.target" in message, message
        else:
            accepted.append((target, why))
    assert accepted == []


def test_the_allowlist_holds_no_operator_with_side_effects() -> None:
    """The other direction: every overload of every allowlisted name that loads is side-effect free."""
    loadable = []
    for target, op in OVERLOADS:
        if target.split(".")[1] not in ALLOWED:
            continue
        try:
            ncd.load_json(json.dumps(_opaque_doc(target)))
        except SchemaError as error:
            if "allowlist" in str(error) or "untrusted" in str(error):
                continue
        loadable.append(target)
        assert _side_effect(target, op) is None, target
    assert len(loadable) > 500


def test_a_file_that_maps_a_file_and_fills_it_is_refused_and_writes_nothing(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = _opaque_doc("aten.from_file.default", ["pwned.bin", True, 64], [{"tuple": ["dtype", {"tuple": ["$dtype", "uint8"]}]}])
    doc["diagram"]["fields"]["inputs"] = {"type": []}
    with pytest.raises(SchemaError, match=r"at \$\.diagram\.fields\.target: operator aten\.from_file\.default"):
        ncd.load_json(json.dumps(doc))
    assert list(tmp_path.iterdir()) == []


def test_trusting_a_file_is_an_explicit_opt_in() -> None:
    doc = json.dumps(_opaque_doc("aten.cumprod.default"))  # allowlisted: loads either way
    assert ncd.load_json(doc) == ncd.load_json(doc, trust=True)
    risky = json.dumps(_opaque_doc("aten.native_dropout.default", [{"tuple": ["$in", 0]}, 0.5, True]))
    with pytest.raises(SchemaError, match="random state"):
        ncd.load_json(risky)
    box = ncd.load_json(risky, trust=True)
    assert box.prim.target == "aten.native_dropout.default"  # type: ignore[attr-defined]


def test_an_allowlisted_call_runs_and_matches_torch() -> None:
    box = ncd.load_json(json.dumps(_opaque_doc("aten.cumprod.default")))
    x = torch.randn(3)
    torch.testing.assert_close(box.to_torch()(x), torch.cumprod(x, 0))


def test_a_call_whose_results_are_larger_than_declared_is_refused_before_it_runs() -> None:
    doc = _opaque_doc("aten.repeat.default", [{"tuple": ["$in", 0]}, {"tuple": [4096, 4096]}])
    box = ncd.load_json(json.dumps(doc))
    with pytest.raises(ncd.LoweringError, match=r"result 0 has shape \(4096, 12288\), but the diagram declares 'a:3'"):
        box.to_torch()
    with pytest.raises(ncd.LoweringError, match="declares"):
        ncd.cost(box)


def test_a_call_declared_larger_than_the_memory_budget_is_not_run_to_measure_its_cost() -> None:
    # a file's repeat of one entry declared (and made) 4096 x 4096: to_torch refused it past the budget, but ncd.cost
    # ran it on real tensors to count its FLOPs (declared 65536 x 65536, 16 GiB and its gradient, on any machine)
    box = Opaque("aten.repeat.default", "a:1 c:1", "n:4096 p:4096", (("$in", 0), (4096, 4096)))
    loaded = ncd.load_json(box.to_json())
    with override(memory=2**24):
        with pytest.raises(LimitError, match=r"cost of repeat .*: the bytes of its inputs and results \(8 an entry\) is"
                                             r" 134217736, more than the limit of 16777216 \(memory in ncd.limits\)"):
            ncd.cost(loaded)
        with pytest.raises(LimitError, match=r"tensor 'n p' needs 64 MiB"):
            loaded.to_torch()
    small = ncd.load_json(Opaque("aten.repeat.default", "a:1 c:1", "n:4 p:8", (("$in", 0), (4, 8))).to_json())
    with override(memory=2**24):
        assert ncd.cost(small).forward_flops == 0  # (a copy: no FLOPs) within the budget, measured as before


@pytest.mark.parametrize("target, args, kwargs", [
    ("aten.ones.default", [{"tuple": [1048576, 1048576]}], []),
    ("aten.eye.default", [1048576], []),
    ("aten.full.default", [{"tuple": [1048576, 1048576]}, 1.0], [{"tuple": ["device", {"tuple": ["$device", "cpu"]}]}]),
])
def test_a_call_that_makes_a_tensor_larger_than_declared_is_refused_before_it_allocates(
        target: str, args: list[Any], kwargs: list[Any]) -> None:
    # 4 TiB each: checking the shape on the CPU could not allocate it, and the refusal came only when it ran
    box = ncd.load_json(json.dumps(_opaque_doc(target, args, kwargs)))
    with pytest.raises(ncd.LoweringError, match=r"result 0 has shape \(1048576, 1048576\), but the diagram declares"):
        box.to_torch()


# -- 2. limits ---------------------------------------------------------------------------------------
def _copy_doc(n: int) -> str:
    return json.dumps({"format": "ncd.diagram", "version": 1, "diagram": {"node": "box", "op": "copy", "fields": {
        "type": {"type": [{"segment": [{"axis": "a", "size": "2"}]}]}, "n": n}}})


def test_a_copy_into_a_million_wires_is_refused_at_load() -> None:
    with pytest.raises(SchemaError, match=r"at \$\.diagram: .*more than the limit of 65536 \(segments in ncd\.limits\)"):
        ncd.load_json(_copy_doc(2**20))
    assert len(ncd.load_json(_copy_doc(3)).cod) == 3


def test_repetition_counts_are_limited_before_anything_is_unrolled() -> None:
    layer = ncd.Linear("m -> m").block("layer")
    with pytest.raises(LimitError, match=r"repetition count of 'i' is 10{30}, more than the limit of 10000"):
        ncd.repeat(layer, "i", 0, 10**30).to_source(m=4)
    with pytest.raises(LimitError, match="repetition count"):
        ncd.cost(ncd.repeat(layer, "i", 0, 100_000), m=4)
    assert ncd.cost(ncd.repeat(layer, "i", 0, 12), m=4).numbers.params == 12 * 16


def test_memory_budget_is_checked_at_lowering_naming_the_axis_and_size() -> None:
    d = ncd.Identity.of("b t m") >> ncd.Softmax("m")
    with pytest.raises(LimitError, match=r"tensor 'b t m' needs 4 GiB \(b=1, t=1048576, m=1024\), more than the memory"
                                         r" budget of 1 GiB .* largest axis is t = 1048576"):
        with override(memory=2**30):
            d.to_torch(b=1, t=2**20, m=1024)
    with pytest.raises(LimitError, match="weight"):
        ncd.Linear("m -> n").to_torch(m=2**20, n=2**20)  # 4 TiB of weights: refused, not allocated
    with pytest.raises(LimitError, match="tensor"):
        d.example_inputs(b=2**15, t=2**15, m=2**10)


def test_sizes_strings_nesting_and_files_have_limits() -> None:
    with pytest.raises(LimitError, match="axis_size"):
        ncd.parse_type(f"a:{10**30}")
    with pytest.raises(SchemaError, match=r"more than the limit of 1000 \(string in ncd\.limits\)"):
        ncd.load_json((ncd.Identity.of("m") >> ncd.ReLU()).block("b").to_json().replace('"b"', '"' + "b" * 5000 + '"'))
    deep = ncd.Identity.of("m") >> ncd.ReLU()
    for _ in range(120):
        deep = deep.block("x")
    assert ncd.load_json(deep.to_json()) == deep  # what building allows loads back (nesting in ncd.limits)
    with override(nesting=100), pytest.raises(SchemaError, match=r"nested more than 100 deep .*nesting in ncd\.limits"):
        ncd.load_json(deep.to_json())
    with override(file_bytes=100), pytest.raises(LimitError, match="file_bytes"):
        ncd.load_json(deep.to_json())


_TOWER = """
import json, ncd
from ncd.errors import SizeError
box = {"node": "box", "op": "scale", "fields": {"factor": {"size": "t**t**t**t"}}}
body = {"node": "weave", "inner": box, "axis": {"axis": "t", "size": "t"}, "dom_pos": [0], "cod_pos": [0]}
meta = {"tuple": [{"tuple": ["defaults", {"tuple": [{"tuple": ["t", 5]}]}]}]}
d = ncd.load_json(json.dumps({"format": "ncd.diagram", "version": 1,
                              "diagram": {"node": "block", "name": "m", "body": body, "meta": meta}}))
for use in (lambda: d.to_torch(), lambda: ncd.cost(d), lambda: d.to_source()):
    try:
        use()
    except SizeError as error:
        print("refused:", error)
"""


def test_a_size_whose_power_binds_astronomically_large_is_refused_not_computed() -> None:
    # a file's factor t**t**t**t with its default t=5 read back untrusted: sympy computed 5**(5**3125) eagerly, so
    # to_torch, cost and to_source hung; bound, each power with a size in its exponent is bounded as the parser bounds
    # powers of numbers
    done = subprocess.run([sys.executable, "-c", _TOWER], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(ncd.__file__).parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all("the power t**(t**t) is too large" in line and "t=5" in line for line in lines), lines
    with pytest.raises(SizeError, match=r"2\*\*\(m\*\*5\) is too large"):
        (ncd.Identity.of("b m") >> ncd.Scale("2**(m**5)")).to_torch(b=2, m=100)
    small = (ncd.Identity.of("b m") >> ncd.Scale("2**(m - 3)") >> ncd.Scale("512*2**(1-m)")).to_torch(b=2, m=3)
    assert torch.equal(small(torch.ones(2, 3)), torch.full((2, 3), 128.0))  # sizes in exponents still bind


# -- 3 and 4. nothing invalid accepted silently ------------------------------------------------------------
def _mlp_doc() -> dict[str, Any]:
    return json.loads((ncd.Linear("m:4 -> n:3", bias=True) >> ncd.ReLU()).block("mlp").to_json())


@pytest.mark.parametrize("change,where", [
    (lambda d: d.update(extra=1), r"at \$: the document has no field\(s\) \['extra'\]"),
    (lambda d: d.update(version=True), r"at \$\.version: .*version True"),
    (lambda d: d["diagram"].update(colour="red"), r"at \$\.diagram: a block node has no field\(s\) \['colour'\]"),
    (lambda d: d["diagram"]["body"]["parts"][0].update(note=1), r"at \$\.diagram\.body\.parts\[0\]: a box node"),
    (lambda d: d["diagram"]["body"]["parts"][0]["fields"]["dom_axes"]["segment"][0].update(sizes="3"),
     r"a tagged axis value has no field\(s\) \['sizes'\]"),
    (lambda d: d["diagram"]["body"]["parts"][0]["fields"].update(bias=1), r"fields\.bias: primitive 'linear' expects bool"),
    (lambda d: d["diagram"]["body"]["parts"][1].update(dom_pos=[0.5]), r"dom_pos\[0\]: expected a whole number"),
    (lambda d: d["diagram"]["body"].update(node="sequence"), r"unknown node kind 'sequence'"),
])
def test_unknown_fields_and_wrong_types_are_refused(change: Any, where: str) -> None:
    doc = _mlp_doc()
    change(doc)
    with pytest.raises(SchemaError, match=where):
        ncd.load_json(json.dumps(doc))


@pytest.mark.parametrize("size", ["0", "-2", "1/2", "2.5", "10**40"])
def test_sizes_that_are_zero_negative_or_not_whole_are_refused(size: str) -> None:
    text = (ncd.Identity.of("m:7") >> ncd.ReLU()).to_json().replace('"size": "7"', f'"size": "{size}"')
    with pytest.raises(SchemaError, match=r"at \$\.diagram"):
        ncd.load_json(text)


def test_duplicate_keys_nonfinite_numbers_and_control_characters_are_refused() -> None:
    text = ncd.LayerNorm("m").to_json()
    with pytest.raises(SchemaError, match="appears twice"):
        ncd.load_json(text.replace('"node": "box"', '"node": "box", "node": "box"'))
    doc = json.loads(text)
    for bad in (float("inf"), float("nan")):
        doc["diagram"]["fields"]["eps"] = bad
        with pytest.raises(SchemaError, match=r"fields\.eps: primitive .* takes finite numbers"):
            ncd.load_json(json.dumps(doc))
    for bad in ("a\x00b", "x\x1b]52;c;ZXZpbA==\x07", "\ud800"):
        with pytest.raises(SchemaError, match="control characters"):
            ncd.load_json(json.dumps({**json.loads(text), "diagram": {**json.loads(text)["diagram"], "label": bad}}))
    with pytest.raises(SchemaError, match="not UTF-8"):
        ncd.load_json(b"\xff\xfe{}")


def test_duplicate_axis_names_in_one_tensor_are_refused() -> None:
    with pytest.raises(TypeMismatchError, match="names axis m twice"):
        ncd.Linear("m m -> n")
    with pytest.raises(TypeMismatchError, match="already has an axis b"):
        ncd.Softmax("x").weave("b").weave("b")
    assert str(ncd.Einsum("a a -> a").cod) == "a"  # a diagonal is the one place a name repeats


def test_size_keywords_that_name_no_axis_raise() -> None:
    d = ncd.Linear("m -> h k")
    with pytest.raises(SizeError, match="heads is not a size of the diagram; its sizes are h, k, m"):
        d.to_torch(m=4, h=2, k=2, heads=4)
    with pytest.raises(SizeError, match="heads is not a size"):
        ncd.cost(d, heads=4)
    with pytest.raises(SizeError, match="axis h has size 2 in the diagram, so h=3 cannot apply"):
        d.bind(h=2).to_torch(m=4, k=2, h=3)


def test_block_defaults_and_legends_must_be_pairs() -> None:
    body = ncd.Identity.of("m") >> ncd.ReLU()
    with pytest.raises(TypeMismatchError, match="defaults must be"):
        body.block("b", defaults=5)
    with pytest.raises(SizeError, match="default size m=0"):
        body.block("b", defaults=(("m", 0),))
    with pytest.raises(TypeMismatchError, match="legend must be"):
        body.block("b", legend=("x",))


def test_infinite_or_nan_constants_are_refused_where_they_would_reach_code() -> None:
    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ncd.ParseError, match="eps must be a finite non-negative number"):
            ncd.LayerNorm("m", eps=bad)
    for base in (0.0, float("inf"), float("nan")):
        with pytest.raises(ncd.ParseError, match="finite positive base"):
            ncd.Sinusoidal("t m", base=base)


def test_a_failure_while_running_is_an_ncd_error_naming_the_generated_line() -> None:
    """torch refuses batch statistics of one sample; the error says which generated line, and keeps torch's."""
    module = ncd.BatchNorm("b c:3", channel="c").to_torch(b=1)
    module.train()
    with pytest.raises(ncd.RunError, match=r"at generated line \d+ `.*self\.bn\(.*`: ValueError: Expected more than 1"
                                           r" value per channel") as info:
        module(torch.randn(1, 3))
    assert isinstance(info.value.__cause__, ValueError)
    x = torch.randn(4, 3)  # the control: a real batch runs, as torch's own batch normalisation
    torch.testing.assert_close(ncd.BatchNorm("b c:3", channel="c").to_torch(b=4)(x),
                               torch.nn.functional.batch_norm(x, None, None, training=True))


def test_a_factor_past_int64_runs_as_a_float_and_one_past_the_floats_is_refused() -> None:
    """``Scale(10**30)`` lowered to ``x * 1000000000000000019884624838656``, a Python int torch cannot convert (a
    RunError; a traced ``x * 1e30`` failed so); it is the float torch multiplies by.  ``10**400`` is no float."""
    module = (ncd.Identity.of("m") >> ncd.Scale("10**30")).to_torch(m=3)
    x = torch.randn(3)
    torch.testing.assert_close(module(x), x * 1e30)
    with pytest.raises(ncd.LoweringError, match="past the largest float"):
        (ncd.Identity.of("m") >> ncd.Scale("10**400")).to_torch(m=3)


class _Hash(torch.nn.Module):
    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (ids * 2654435761) % 1000, ids & (2**40 + 3), x + 2**40


def test_operands_past_a_million_round_trip_untrusted_and_sizes_past_it_are_still_refused() -> None:
    """A model's own numbers (a multiplicative hash, a 41-bit mask, ``x + 2**40``) are operands, not sizes: the JSON
    ``to_json`` writes reads back untrusted and computes what the model does; a count past ``MAX_INT`` in a field
    that sets how much is built (an opaque call's arguments) is still refused."""
    from ncd.ir.serialize import MAX_INT

    model = _Hash().eval()
    ids, x = torch.randint(0, 10**6, (2, 5)), torch.randn(2, 5, dtype=torch.float64)
    traced = ncd.trace(model, ids, x)
    loaded = ncd.load_json(traced.to_json())
    fresh = torch.randint(0, 10**6, (2, 5)), torch.randn(2, 5, dtype=torch.float64)
    for args in ((ids, x), fresh):
        for got, want in zip(loaded.to_torch(b=2, t=5)(*args), model(*args), strict=True):
            assert got.dtype == want.dtype and torch.equal(got, want)
    hostile = _opaque_doc("aten.ones.default", [{"tuple": [MAX_INT + 1, 2]}])
    with pytest.raises(SchemaError, match=r"within ±1048576"):
        ncd.load_json(json.dumps(hostile))


# -- 5. names -------------------------------------------------------------------------------------------
def test_a_full_width_label_is_not_the_input_variable() -> None:
    """``residual(L^ｘ)`` computes x + L(x): Python reads ``ｘ`` as ``x``, so it must get its own name."""
    d = ncd.residual(ncd.Linear("m -> m", name="ｘ"))
    module = d.to_torch(m=3)
    linear = next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(2, 3)
    torch.testing.assert_close(module(x), x + linear(x))


def test_names_equal_after_nfkc_get_separate_weights_and_classes() -> None:
    d = ncd.Linear("m -> m", name="x") >> ncd.Linear("m -> m", name="ｘ")
    assert len(list(d.to_torch(m=3).parameters())) == 2
    act, act_wide = (ncd.Identity.of("m") >> ncd.ReLU()).block("Act"), (ncd.Identity.of("m") >> ncd.Tanh()).block("Ａct")
    module = (act >> act_wide).to_torch(m=3)
    x = torch.randn(3)
    torch.testing.assert_close(module(x), torch.tanh(torch.relu(x)))


@pytest.mark.parametrize("name", ["W₁", "L²", "ℓ", "class", "sum", "float", "self", "__init__", "٣",
                                  "x̃", "L̂", "W̅", "t̅", "x\u0301", "ĉ\u0327"])  # combining marks: redteam13
def test_any_label_or_block_name_lowers_to_code_that_compiles_and_computes(name: str) -> None:
    d = (ncd.Identity.of("m") >> ncd.Linear("m -> m", name=name) >> ncd.Scale("2")).block(name)
    module = d.to_torch(m=3)
    linear = next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(3)
    torch.testing.assert_close(module(x), 2 * linear(x))



@pytest.mark.parametrize("axis", ["self", "diagram", "text"])
def test_an_axis_named_like_a_parameter_is_a_size_everywhere_sizes_are_keywords(axis: str) -> None:
    """Sizes are keyword arguments: an axis a file names ``self`` binds, lowers and costs like any other."""
    d = ncd.Identity.of(f"b {axis}") >> ncd.Linear(f"{axis} -> n")
    sizes = {"b": 2, axis: 3, "n": 4}
    assert str(d.bind(**sizes).dom) == f"b:2 {axis}:3"
    assert "Linear(3, 4" in d.to_source(**sizes)
    module = d.to_torch(**sizes)
    (x,) = d.example_inputs(**sizes)
    linear = next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
    torch.testing.assert_close(module(x), linear(x))
    plain = ncd.Identity.of("b m") >> ncd.Linear("m -> n")  # the same diagram with an ordinary name
    assert ncd.cost(d, **sizes).forward_flops == ncd.cost(plain, b=2, m=3, n=4).forward_flops > 0
    assert str(ncd.parse_type(f"{axis} q", **{axis: 5, "q": 2})) == f"{axis}:5 q:2"


def test_errors_and_outputs_carry_no_escapes_or_absolute_paths(tmp_path: Path) -> None:
    error = NCDError("box \x1b]0;owned\x07name\x1b[31m")
    assert str(error) == "box name"
    d = ncd.Linear("m -> n") >> ncd.ReLU()
    here = str(Path(__file__).resolve().parent)
    assert here not in d.to_json()
    from ncd.viewer import to_html

    assert here not in to_html(d)
    assert all(not b.source.file.startswith("/") for b in d.boxes() if b.source)  # type: ignore[union-attr]


def test_tracing_from_many_threads_gives_each_its_own_diagram() -> None:
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(4, 4 + k), torch.nn.ReLU(), torch.nn.Linear(4 + k, 3)).eval()
              for k in range(8)]
    results: dict[int, bool] = {}

    def run(k: int) -> None:
        x = torch.randn(2, 4)
        d = ncd.trace(models[k], x)
        results[k] = str(d.cod) == "b n:3" and torch.allclose(d.to_torch()(x), models[k](x), atol=1e-5)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {k: True for k in range(8)}


# -- 3. the command line -----------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b'{"format": "ncd.diagram", "version": true}', b"[" * 100_000,
                                     b'{"format":"ncd.diagram","version":1,"diagram":{"node":"block","name":"\\u001b[2Jx",'
                                     b'"body":{"node":"identity","type":{"type":[]}}}}'])
def test_the_cli_prints_one_line_and_exits_2_for_a_bad_file(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    run = subprocess.run([sys.executable, "-m", "ncd", "cost", str(path)], capture_output=True, cwd=tmp_path,
                         env={**os.environ, "NCD_DEBUG": ""})
    assert run.returncode == 2
    err = run.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("ncd cost: error: ") and "\x1b" not in err, err
    assert run.stdout == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_the_examples_of_security_md_run() -> None:
    import doctest

    root = Path(__file__).resolve().parent.parent
    result = doctest.testfile(str(root / "SECURITY.md"), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize("shape", ["100000x100000x100000", "0x3", "2x3:intx", "2x3:int0", "axb"])
def test_trace_inputs_on_the_command_line_are_checked_before_they_are_allocated(shape: str) -> None:
    from ncd.torch.trace_cli import parse_input

    with pytest.raises(ncd.TraceError, match=f"input '{shape}'"):
        parse_input(shape)


def test_a_failed_trace_prints_one_line_not_torchs_logs(tmp_path: Path) -> None:
    (tmp_path / "branchy.py").write_text("import torch\n\nclass Branchy(torch.nn.Module):\n    def forward(self, x):\n"
                                         "        return x[: int(x.abs().sum()) + 1]\n\n\ndef make():\n"
                                         "    return Branchy()\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "ncd", "trace", "branchy:make", "--input", "2x3"], capture_output=True,
                         text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("ncd trace: error: cannot trace Branchy"), run.stderr


def test_a_block_with_no_outputs_lowers_to_valid_code() -> None:
    """Found by the long fuzz run: a block that only deletes its wire, in parallel with an identity."""
    d = ncd.Identity.of("a:3") @ ncd.Delete("b:2").block("b")
    x0, x1 = torch.randn(3), torch.randn(2)
    torch.testing.assert_close(d.to_torch()(x0, x1), x0)


def test_memory_budget_finds_a_peak_in_the_middle_of_a_repetition() -> None:
    # the hidden width is 1 at both ends of the range and 25*2**20+1 at i = 5: checking only the
    # first and last iteration would let a hostile file allocate 800 MiB of weights at i = 5
    width = "i*(10-i)*2**20+1"
    layer = (ncd.Linear(f"m -> n:{width}") >> ncd.Linear(f"n:{width} -> m")).block("layer")
    deep = ncd.repeat(layer, "i", 0, 11)
    with override(memory=2**28), pytest.raises(LimitError, match=r"weight .* more than the memory budget of 256 MiB"):
        deep.to_torch(m=2)
    small = ncd.repeat(ncd.Linear("m -> m").block("layer"), "i", 0, 11)
    assert sum(p.numel() for p in small.to_torch(m=2).parameters()) == 11 * 4  # unchanged sizes: one visit, counted 11 times


class _PureOpaque(torch.nn.Module):
    """Pure tensor functions ncd draws as opaque boxes: its own JSON of them loads untrusted."""

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        sampled = torch.nn.functional.grid_sample(x, grid, align_corners=False)
        return torch.special.erfinv(sampled.tanh() * 0.5) + x.mT.mT.mean()


def test_ncd_s_own_json_of_pure_opaque_calls_loads_untrusted_and_runs() -> None:
    import warnings

    torch.manual_seed(0)
    model, x, grid = _PureOpaque(), torch.randn(1, 2, 4, 4), torch.rand(1, 3, 3, 2) * 2 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x, grid)
    assert d.opaque_count >= 1
    loaded = ncd.load_json(d.to_json())  # untrusted: every opaque target on the allowlist
    torch.testing.assert_close(loaded.to_torch()(x, grid), model(x, grid))
