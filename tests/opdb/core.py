"""Samples for the core families: elementwise, linear/einsum, softmax, structure."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ncd
import ncd.prims.structure
from ncd.errors import ParseError, SizeError, TypeMismatchError
from tests.opdb import error, sample


def only(params: dict[str, torch.Tensor], suffix: str) -> torch.Tensor:
    hits = [v for k, v in params.items() if k.endswith(suffix)]
    assert len(hits) == 1, (suffix, list(params))
    return hits[0]


# -- elementwise --------------------------------------------------------------------------
REFS = {
    "relu": torch.relu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu,
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "exp": torch.exp, "square": torch.square, "neg": torch.neg,
    "abs": torch.abs, "identity": lambda x: x,
}
for fn, ref in REFS.items():
    sample("elementwise", fn, lambda fn=fn: ncd.Identity.of("a b") >> ncd.elementwise(fn), {"a": 3, "b": 4},
           lambda p, x, ref=ref: ref(x[0]), dom="a b", cod="a b")
sample("elementwise", "log", lambda: ncd.Identity.of("a") >> ncd.Exp() >> ncd.Log(), {"a": 5}, lambda p, x: x[0])
sample("elementwise", "sqrt", lambda: ncd.Identity.of("a") >> ncd.Square() >> ncd.Scale(4) >> ncd.Sqrt(), {"a": 5},
       lambda p, x: 2 * x[0].abs(), atol=1e-4, grad=False)
error("elementwise", "unknown", lambda: ncd.elementwise("swish2"), r"unknown elementwise function 'swish2'", ParseError)

sample("scale", "symbolic", lambda: ncd.Identity.of("y k") >> ncd.Scale("k**-0.5"), {"y": 3, "k": 16},
       lambda p, x: x[0] * 0.25, cod="y k")
error("scale", "unbound", lambda: ncd.Scale("k**-0.5").to_torch(), r"k .*not bound", SizeError)
sample("multiply", "hadamard", lambda: ncd.Identity.of("a b, a b") >> ncd.Multiply(), {"a": 2, "b": 3},
       lambda p, x: x[0] * x[1], cod="a b")
sample("multiply", "named-broadcast", lambda: ncd.Identity.of("a b, a c") >> ncd.Multiply(), {"a": 2, "b": 3, "c": 4},
       lambda p, x: x[0][..., :, :, None] * x[1][..., :, None, :], cod="a b c")
error("multiply", "n", lambda: ncd.Multiply(1), r"multiply takes at least two tensors, not 1", ParseError)
error("multiply", "mismatch", lambda: ncd.Identity.of("a:2 b, a:3 b") >> ncd.Multiply(),
      r"axis a has size 2 in one segment and 3 in another", TypeMismatchError)

# -- linear --------------------------------------------------------------------------------
sample("linear", "m-kh", lambda: ncd.Linear("m -> k h"), {"m": 6, "k": 2, "h": 3},
       lambda p, x: F.linear(x[0], only(p, "weight")).unflatten(-1, (2, 3)), dom="m", cod="k h")
sample("linear", "bias-woven", lambda: ncd.Identity.of("b t m") >> ncd.Linear("m -> n", bias=True, name="Q"),
       {"b": 2, "t": 3, "m": 4, "n": 5}, lambda p, x: F.linear(x[0], only(p, "weight"), only(p, "bias")), cod="b t n")
sample("linear", "kh-m", lambda: ncd.Linear("k h -> m", bias=True), {"m": 6, "k": 2, "h": 3},
       lambda p, x: F.linear(x[0].flatten(-2), only(p, "weight"), only(p, "bias")))
sample("linear", "trailing-woven", lambda: ncd.Identity.of("m h") >> ncd.Linear("m -> n", bias=True),
       {"m": 4, "n": 5, "h": 3},
       lambda p, x: (F.linear(x[0].transpose(-1, -2), only(p, "weight"), only(p, "bias"))).transpose(-1, -2), cod="n h")
error("linear", "bad-spec", lambda: ncd.Linear("m k h"), r"must have the form 'inputs -> outputs'", ParseError)
error("linear", "mismatch", lambda: ncd.Linear("m -> k") >> ncd.Linear("n -> k"),
      r"axis n of the second is not in segment 0 \('k'\)", TypeMismatchError)
error("linear", "size-contradiction", lambda: ncd.Linear("m -> k:4") >> ncd.Linear("k:5 -> n"),
      r"axis k has size 4 in the first and 5 in the second", TypeMismatchError)

sample("einsum", "attention-scores", lambda: ncd.Einsum("y k h, x k h -> y x h"), {"y": 3, "x": 4, "k": 5, "h": 2},
       lambda p, x: torch.einsum("...ykh,...xkh->...yxh", *x), cod="y x h")
sample("einsum", "contraction", lambda: ncd.Einsum("a b, b c -> a c"), {"a": 3, "b": 4, "c": 5},
       lambda p, x: x[0] @ x[1])
sample("einsum", "diagonal", lambda: ncd.Einsum("a a -> a"), {"a": 4},
       lambda p, x: torch.diagonal(x[0], dim1=-2, dim2=-1))
sample("einsum", "outer", lambda: ncd.Einsum("a, b -> a b"), {"a": 3, "b": 4},
       lambda p, x: x[0][..., :, None] * x[1][..., None, :])
sample("einsum", "transpose", lambda: ncd.Einsum("a b -> b a"), {"a": 3, "b": 4}, lambda p, x: x[0].transpose(-1, -2))
sample("einsum", "three-operand", lambda: ncd.Einsum("a b, b c, c d -> a d"), {"a": 3, "b": 4, "c": 5, "d": 2},
       lambda p, x: x[0] @ x[1] @ x[2], atol=1e-4)
sample("einsum", "inner-broadcast", lambda: ncd.Einsum("y k, x k -> y x").weave("h", shared=[1]),
       {"h": 2, "y": 3, "x": 4, "k": 5}, lambda p, x: x[0] @ x[1].transpose(-1, -2)[..., None, :, :], dom="h y k, x k",
       batch=())
error("einsum", "unknown-output", lambda: ncd.Einsum("a b -> c"), r"output axis c is in no input", ParseError)
error("einsum", "size-conflict", lambda: ncd.Einsum("a b:3, b:4 c -> a c"), r"axis b has size 3 in one input and 4",
      SizeError)

sample("unit", "snake", lambda: (ncd.Identity.of("a") @ ncd.Unit("a", "b:a")) >> ncd.Einsum("a, a b -> b"),
       {"a": 4}, lambda p, x: x[0], cod="b:a")
error("unit", "unequal", lambda: ncd.Unit("a:3", "b:4"), r"equal sizes.*a=3.*b=4", SizeError)

# -- softmax -------------------------------------------------------------------------------
sample("softmax", "middle-axis", lambda: ncd.Identity.of("y x h") >> ncd.Softmax("x"), {"y": 3, "x": 4, "h": 2},
       lambda p, x: torch.softmax(x[0], dim=-2), cod="y x h")
sample("softmax", "log", lambda: ncd.Identity.of("b c") >> ncd.Softmax("c", log=True), {"b": 3, "c": 4},
       lambda p, x: torch.log_softmax(x[0], dim=-1))
error("softmax", "missing-axis", lambda: ncd.Identity.of("y x") >> ncd.Softmax("k"),
      r"axis k of the second is not in segment 0 \('y x'\)", TypeMismatchError)

# -- structure -----------------------------------------------------------------------------
sample("copy", "residual", lambda: ncd.residual(ncd.Linear("m -> m", bias=True) >> ncd.ReLU()), {"m": 5},
       lambda p, x: torch.relu(F.linear(x[0], only(p, "weight"), only(p, "bias"))) + x[0])
error("copy", "n", lambda: ncd.Copy("a", n=1), r"at least two copies", ParseError)
sample("delete", "drop-second", lambda: ncd.Identity.of("a") @ ncd.Delete("b"), {"a": 3, "b": 2}, lambda p, x: x[0],
       cod="a")
error("delete", "bad-type", lambda: ncd.Delete(42), r"expected a type or its text form, not int 42", ParseError)
sample("add", "three", lambda: ncd.Identity.of("a b, a b, a b") >> ncd.Add(3), {"a": 2, "b": 3},
       lambda p, x: x[0] + x[1] + x[2])
sample("add", "inner", lambda: ncd.Identity.of("h a, a") >> ncd.Add(), {"h": 2, "a": 3},
       lambda p, x: x[0] + x[1][..., None, :], cod="h a", batch=())
error("add", "n-from-json", lambda: ncd.Box(ncd.prims.structure.AddOp(-1)), r"add takes at least two tensors, not -1", ParseError)
error("add", "mismatch", lambda: ncd.Identity.of("a:2, a:3") >> ncd.Add(), r"axis a has size 2 in one segment and 3",
      TypeMismatchError)
sample("swap", "reverse", lambda: ncd.Swap("a, b"), {"a": 2, "b": 3}, lambda p, x: (x[1], x[0]), cod="b, a")
error("swap", "perm", lambda: ncd.Swap("a, b", [0, 0]), r"not a permutation", ParseError)
sample("transpose", "yx", lambda: ncd.Identity.of("b y x") >> ncd.Transpose("y x -> x y"), {"b": 2, "y": 3, "x": 4},
       lambda p, x: x[0].transpose(-1, -2), cod="b x y")
sample("transpose", "three", lambda: ncd.Transpose("a b c -> c a b"), {"a": 2, "b": 3, "c": 4},
       lambda p, x: x[0].permute(*range(x[0].dim() - 3), -1, -3, -2))
error("transpose", "names", lambda: ncd.Transpose("a b -> a c"), r"must reorder the axes of one segment", ParseError)
sample("save", "skip", lambda: ncd.Save("m", "C", 1) >> (ncd.Identity.of("m") @ ncd.Load("m", "C", 1)) >> ncd.Add(),
       {"m": 4}, lambda p, x: 2 * x[0])
error("save", "unbound-index", lambda: (ncd.Save("m", "C", "i") >> ncd.ReLU()).to_torch(m=3), r"i .*not bound", SizeError)
sample("load", "twice", lambda: ncd.Save("m", "C") >> (ncd.Identity.of("m") @ ncd.Load("m", "C") @ ncd.Load("m", "C"))
       >> ncd.Add(3), {"m": 4}, lambda p, x: 3 * x[0])
error("load", "nothing-saved", lambda: (ncd.Identity.of("m") @ ncd.Load("m", "C")).to_torch(m=3),
      r"nothing is saved under 'C'", ncd.LoweringError)
error("load", "type-differs", lambda: (ncd.Save("m", "C") >> (ncd.Identity.of("m") @ ncd.Load("n", "C"))).to_torch(m=3, n=4),
      r"'C' holds 'm:3' but is loaded as 'n:4'", ncd.LoweringError)
sample("rename", "self-attention-keys", lambda: ncd.Identity.of("b t m") >> ncd.Rename("t -> x"), {"b": 2, "t": 3, "m": 4},
       lambda p, x: x[0], cod="b x:t m")
error("rename", "count", lambda: ncd.Rename("t m -> x"), r"must map the axes of one segment to as many new names", ParseError)
