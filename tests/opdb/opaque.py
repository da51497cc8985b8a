"""Samples for the importer's primitives: opaque ATen calls, parameters, constants, views."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError, SizeError
from ncd.prims.arithmetic import Arithmetic
from ncd.prims.gather import ArgMax, Cast, Compare, Gather, GatherOp
from ncd.prims.opaque import Constant, Opaque, Parameter, View
from tests.opdb import error, sample

# an opaque box reproduces the ATen call exactly (no leading batch: it runs on the traced shapes)
sample("opaque", "cumsum", lambda: Opaque("aten.cumsum.default", "a b", "a b", (("$in", 0), -1)), {"a": 3, "b": 4},
       lambda p, x: torch.cumsum(x[0], -1), batch=())
sample("opaque", "split-picks", lambda: Opaque("aten.split.Tensor", "a b", "a b:2, a b:2", (("$in", 0), 2, -1), picks=(0, 1)),
       {"a": 3, "b": 4}, lambda p, x: tuple(torch.split(x[0], 2, -1)), batch=())
error("opaque", "not-aten", lambda: Opaque("os.system", "a", "a"), r"'os.system' is not the name of an ATen operator",
      ParseError)
error("opaque", "keyword", lambda: Opaque("aten.cumsum.default", "a", "a", (("$in", 0), 0), (("k=0) or (y", 1),)),
      r"opaque box aten.cumsum.default: keyword 'k=0\) or \(y' is not a Python identifier", ParseError)
error("opaque", "dtype", lambda: Opaque("aten.cumsum.default", "a", "a", (("$in", 0), 0), (("dtype", ("$dtype", "os")),)),
      r"opaque box aten.cumsum.default: unknown dtype 'os'", ParseError)
error("opaque", "no-overload", lambda: Opaque("aten.cumsum.nothing", "a", "a"), r"no such overload in torch.ops", ParseError)
sample("parameter", "added", lambda: ncd.Identity.of("a m") @ Parameter("m", "bias") >> ncd.Add(), {"a": 3, "m": 4},
       lambda p, x: x[0] + p["weight" if "weight" in p else next(iter(p))], cod="a m")
error("parameter", "two-segments", lambda: Parameter("a, b"),
      r"Parameter takes one segment with at least one axis, e.g. '~t m', not 'a, b'", ParseError)
sample("constant", "number", lambda: ncd.Identity.of("a") @ Constant("", value=2.0) >> ncd.Multiply(), {"a": 3},
       lambda p, x: 2 * x[0], cod="a")
sample("constant", "buffer", lambda: ncd.Identity.of("a") @ Constant("a", name="mask") >> ncd.Add(), {"a": 3},
       lambda p, x: x[0] + next(iter(p.values())))
error("constant", "dtype", lambda: Constant("a", dtype="complex32"), r"unknown dtype 'complex32'", ParseError)
sample("view", "split-heads", lambda: ncd.Identity.of("b m:6") >> View("m:6", "h:2 k:3"), {"b": 2},
       lambda p, x: x[0].reshape(*x[0].shape[:-1], 2, 3), cod="b h:2 k:3")
sample("view", "rename", lambda: View("t:4", "s:4"), {}, lambda p, x: x[0], cod="s:4")
error("view", "entries", lambda: View("m:6", "h:2 k:4"), r"6 entries cannot be read as 2 \* 4 = 8", SizeError)

# -- index computations (ncd.prims.gather); references index with torch directly ------------
sample("gather", "end-token-pooling", lambda: ncd.Identity.of("b t m, b [t]") >> Gather("t"), {"b": 3, "t": 5, "m": 4},
       lambda p, x: x[0].gather(-2, x[1][..., None, None].expand(*x[1].shape, 1, 4)).squeeze(-2), cod="b m")
sample("gather", "shared-positions", lambda: ncd.Identity.of("b t m, j [t]") >> Gather("t", "j [t]"),
       {"b": 2, "t": 5, "m": 3, "j": 4}, lambda p, x: x[0][..., x[1], :].movedim(-2, -2), cod="b j m", batch=())
sample("gather", "woven-batch", lambda: Gather("t"), {"t": 6}, lambda p, x: x[0].gather(-1, x[1].unsqueeze(-1)).squeeze(-1),
       batch=(3,))
sample("gather", "integers",  # RoBERTa's token-type buffer read at the position ids: integers keep their range
       lambda: ncd.Identity.of("b t:6 [5], b j:4 [6]") >> ncd.ir.Box(GatherOp(ncd.Axis("t", 6), ncd.parse_type("j:4 [6]")[0],
                                                                              "index", 5)),
       {"b": 3}, lambda p, x: x[0].gather(-1, x[1]), cod="b j:4 [5]")
error("gather", "integer-range", lambda: GatherOp(ncd.Axis("t", 6), ncd.parse_type("[6]")[0], "float", 5),
      r"a segment has an index range exactly when its dtype is index", ParseError)
error("gather", "range", lambda: Gather("t:5", "[4]"), r"gather along axis t of size 5: the positions '\[4\]' must be an"
      r" index segment with range \[5\]", SizeError)
error("gather", "name", lambda: Gather("t:5", "t:2 [5]"), r"gather along axis t: the positions 't:2 \[5\]' reuse its name",
      ParseError)
sample("argmax", "float", lambda: ncd.Identity.of("b t") >> ArgMax("t"), {"b": 3, "t": 5}, lambda p, x: x[0].argmax(-1), grad=False,
       cod="b [t]")
sample("argmax", "first-true", lambda: ncd.Identity.of("b t [bool]") >> ArgMax("t [bool]"), {"b": 3, "t": 5},
       lambda p, x: torch.tensor([[int(v) for v in row].index(1) if bool(row.any()) else 0 for row in x[0].reshape(-1, 5)])
       .reshape(x[0].shape[:-1]), cod="b [t]")
error("argmax", "two-axes", lambda: ArgMax("a b"), r"argmax takes one axis, not 'a b'", ParseError)
sample("compare", "eq-index", lambda: ncd.Identity.of("b t [4]") >> Compare("==", 2, "[4]"), {"b": 3, "t": 5},
       lambda p, x: torch.tensor([[v == 2 for v in row] for row in x[0].reshape(-1, 5).tolist()]).reshape(x[0].shape),
       cod="b t [bool]")
sample("compare", "lt-float", lambda: ncd.Identity.of("b") >> Compare("<", 0.5), {"b": 4}, lambda p, x: x[0] < 0.5,
       cod="b [bool]", grad=False)
sample("compare", "finite", lambda: ncd.Identity.of("b") >> Compare(">", float("-inf")), {"b": 4},
       lambda p, x: x[0] > float("-inf"), cod="b [bool]", grad=False)  # which entries a float mask keeps (SDPA)
error("compare", "relation", lambda: Compare("=~", 1), r"compare: unknown relation '=~'", ParseError)
sample("cast", "bool-to-index", lambda: ncd.Identity.of("b [bool]") >> Cast("[bool]", "[2]"), {"b": 4},
       lambda p, x: torch.where(x[0], 1, 0), cod="b [2]")
sample("cast", "index-to-float", lambda: ncd.Identity.of("b [7]") >> Cast("[7]", ""), {"b": 4},
       lambda p, x: x[0] * 1.0, cod="b")
error("cast", "axes", lambda: Cast("a", "a [2]"), r"cast takes scalar segments, not 'a' -> 'a \[2\]'", ParseError)
sample("cast", "float-to-bool", lambda: ncd.Identity.of("b") >> Cast("", "bool"), {"b": 4}, lambda p, x: x[0] != 0,
       cod="b [bool]", grad=False)
sample("cast", "float-to-float", lambda: ncd.Identity.of("b") >> Cast("", ""), {"b": 4}, lambda p, x: x[0] * 1.0, cod="b")


# -- arithmetic with a Python number of any type, on either side (references: the Python expression itself) ----------
sample("arithmetic", "rsub-int", lambda: ncd.Identity.of("b m") >> Arithmetic("-", 1, reflected=True), {"b": 2, "m": 3},
       lambda p, x: 1 - x[0])
sample("arithmetic", "add-int", lambda: ncd.Identity.of("b m") >> Arithmetic("+", 1), {"b": 2, "m": 3}, lambda p, x: x[0] + 1)
sample("arithmetic", "rdiv", lambda: ncd.Identity.of("b m") >> Arithmetic("/", 3.0, reflected=True), {"b": 2, "m": 3},
       lambda p, x: 3.0 / x[0])
sample("arithmetic", "square", lambda: ncd.Identity.of("b m") >> Arithmetic("**", 2), {"b": 2, "m": 3}, lambda p, x: x[0] ** 2)
sample("arithmetic", "exp2", lambda: ncd.Identity.of("b m") >> Arithmetic("**", 2, reflected=True), {"b": 2, "m": 3},
       lambda p, x: 2 ** x[0])
sample("arithmetic", "clamp-min", lambda: ncd.Identity.of("b m") >> Arithmetic("max", -0.5), {"b": 2, "m": 3},
       lambda p, x: x[0].clamp_min(-0.5))
sample("arithmetic", "scale-by-bool", lambda: ncd.Identity.of("b m") >> Arithmetic("*", True), {"b": 2, "m": 3},
       lambda p, x: x[0] * True)
sample("arithmetic", "index-floor-divide", lambda: ncd.Identity.of("b [9]") >> Arithmetic("//", 2, "[9]", "[5]"), {"b": 4},
       lambda p, x: x[0] // 2, cod="b [5]")
sample("arithmetic", "index-true-divide", lambda: ncd.Identity.of("b [9]") >> Arithmetic("/", 2, "[9]", ""), {"b": 4},
       lambda p, x: x[0] / 2, cod="b", grad=False)
sample("arithmetic", "index-times-int", lambda: ncd.Identity.of("b [9]") >> Arithmetic("*", 3, "[9]", "[25]"), {"b": 4},
       lambda p, x: x[0] * 3, cod="b [25]")
error("arithmetic", "operator", lambda: Arithmetic("@", 1), r"arithmetic: unknown operator '@'", ParseError)
error("arithmetic", "bitwise-float", lambda: Arithmetic("<<", 1), r"arithmetic <<: a bitwise operator of integers", ParseError)
error("arithmetic", "value", lambda: Arithmetic("+", "1"), r"arithmetic \+: '1' is not a Python number", ParseError)

# -- scatter of a number at positions (ncd.prims.gather.ScatterOp) -----------------------------------------------------
from ncd.prims.gather import Scatter  # noqa: E402


def _positions(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """Distinct positions per row (as a router's top-k gives them), with the harness' leading batch axis of 2."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.randperm(sizes["t"], generator=g)[:sizes["j"]] for _ in range(2 * sizes["b"])]
    return torch.randn(2, sizes["b"], sizes["t"], sizes["c"], generator=g), torch.stack(rows).reshape(2, sizes["b"], -1)


sample("scatter", "group-mask", lambda: ncd.Identity.of("b t c, b j [t]") >> Scatter("t", 1.0, "j [t]"),
       {"b": 3, "t": 5, "j": 2, "c": 2}, lambda p, x: x[0].scatter(-2, x[1][..., None].expand(*x[1].shape, 2), 1.0),
       inputs=_positions, cod="b t c")
sample("scatter", "minus-infinity", lambda: Scatter("t", float("-inf")), {"t": 6},
       lambda p, x: x[0].scatter(-1, x[1].unsqueeze(-1), float("-inf")), grad=False)
error("scatter", "range", lambda: Scatter("t:5", 0.0, "[4]"), r"gather along axis t of size 5: the positions '\[4\]' must",
      SizeError)
error("scatter", "value", lambda: Scatter("t:5", "one"), r"scatter along axis t: 'one' is not a number", ParseError)  # type: ignore[arg-type]
