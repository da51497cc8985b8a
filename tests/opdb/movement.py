"""Samples for bind/unbind, concatenation, indexing, slicing and size-1 axes."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError, SizeError
from tests.opdb import error, sample

# -- bind / flatten ------------------------------------------------------------------------
sample("bind", "trailing", lambda: ncd.Identity.of("b k h") >> ncd.Bind("k h -> m"), {"b": 2, "k": 3, "h": 4},
       lambda p, x: x[0].flatten(-2), cod="b m:h*k")
sample("bind", "parts-woven-after", lambda: ncd.Identity.of("k h x") >> ncd.Bind("k h -> (k h)"), {"k": 3, "h": 2, "x": 4},
       lambda p, x: x[0].reshape(*x[0].shape[:-3], 6, 4), cod="(k h) x")
sample("bind", "flatten-image", lambda: ncd.Flatten("c x y") >> ncd.Linear("(c x y) -> n"), {"c": 2, "x": 3, "y": 3, "n": 5},
       lambda p, x: x[0].flatten(-3) @ [v for k, v in p.items() if k.endswith("weight")][0].T, cod="n")
error("bind", "contradiction", lambda: ncd.Bind("k:2 h:3 -> m:7"), r"m has size 7 but k=2 h=3 multiply to 6", SizeError)

# -- unbind --------------------------------------------------------------------------------
sample("unbind", "heads", lambda: ncd.Identity.of("b m") >> ncd.Unbind("m -> k h"), {"b": 2, "k": 3, "h": 4},
       lambda p, x: x[0].unflatten(-1, (3, 4)), dom="b m:h*k", cod="b k h")
sample("unbind", "solved", lambda: ncd.Identity.of("m:12 t") >> ncd.Unbind("m:12 -> k h:3"), {"t": 2},
       lambda p, x: x[0].unflatten(-2, (4, 3)), cod="k:4 h:3 t")
error("unbind", "contradiction", lambda: ncd.Unbind("m:12 -> k:5 h:3"), r"k=5 h=3 multiply to 15, not to the size 12 of m",
      SizeError)

# -- concat --------------------------------------------------------------------------------
sample("concat", "channels", lambda: ncd.Identity.of("c x, d x") >> ncd.Concat("c, d -> e"), {"c": 2, "d": 3, "x": 4},
       lambda p, x: torch.cat([x[0], x[1]], dim=-2), cod="e:c+d x")
sample("concat", "same-name", lambda: ncd.Concat("x:3, x:5"), {}, lambda p, x: torch.cat(x, dim=-1), cod="x:8")
sample("concat", "three", lambda: ncd.Identity.of("b c, b c, b c") >> ncd.Concat("c, c, c -> n"), {"b": 2, "c": 3},
       lambda p, x: torch.cat(x, dim=-1), cod="b n:3*c")
sample("concat", "class-token",
       lambda: (ncd.Parameter("~c:1 m", name="C") @ ncd.Identity.of("~t m")) >> ncd.Concat("~c:1, ~t -> ~s"),
       {"t": 3, "m": 4}, lambda p, x: torch.cat([p["c"].expand(*x[0].shape[:-2], 1, 4), x[0]], dim=-2),
       cod="s̅:t+1 m")  # a learned tensor has no batch dimensions: they are broadcast (regression, ViT's class token)
# phimoe's router, cpmant's segment ids: positions join positions of the same range (no gradient flows)
sample("concat", "positions", lambda: ncd.Identity.of("b p [4], b q [4]") >> ncd.Concat("p [4], q [4] -> r"),
       {"b": 2, "p": 3, "q": 2}, lambda p, x: torch.cat(x, dim=-1), cod="b r:p+q [4]")
sample("concat", "ranges-join", lambda: ncd.Identity.of("b p [224], b q [91]") >> ncd.Concat("p [224], q [91] -> r"),
       {"b": 2, "p": 3, "q": 2}, lambda p, x: torch.cat(x, dim=-1), cod="b r:p+q [224]")
sample("concat", "flags", lambda: ncd.Identity.of("t b [bool], t b [bool]") >> ncd.Concat("t b [bool], t b [bool] -> s b"),
       {"b": 2, "t": 3}, lambda p, x: torch.cat(x, dim=-2), cod="s:2*t b [bool]")
error("concat", "ranges", lambda: ncd.Concat("p [n], q [5] -> r"), r"join only when the ranges are equal or numbers", ParseError)
error("concat", "kinds", lambda: ncd.Concat("p [4], q -> r"), r"hold different kinds of values", ParseError)
error("concat", "sum", lambda: ncd.Concat("c:2, c:3 -> c:6"), r"output has size 6 but the inputs c=2 c=3 add up to 5", SizeError)
error("concat", "names", lambda: ncd.Concat("c, d"), r"different names; name the output", ParseError)

# -- index ---------------------------------------------------------------------------------
sample("index", "first-axis", lambda: ncd.Identity.of("a b") >> ncd.Index("a", 1), {"a": 3, "b": 4},
       lambda p, x: x[0][..., 1, :], cod="b")
sample("index", "last", lambda: ncd.Identity.of("a b") >> ncd.Index("b", -1), {"a": 3, "b": 4},
       lambda p, x: x[0][..., -1], cod="a")
error("index", "range", lambda: ncd.Index("a:3", 3), r"index 3 is out of range for axis a of size 3", SizeError)

# -- slice ---------------------------------------------------------------------------------
sample("slice", "step", lambda: ncd.Identity.of("x b") >> ncd.Slice("x", 1, 6, 2), {"x": 7, "b": 3},
       lambda p, x: x[0][..., 1:6:2, :], cod="x:3 b")
sample("slice", "renamed", lambda: ncd.Identity.of("b t") >> ncd.Slice("t", 0, 4, out="s"), {"b": 2, "t": 6},
       lambda p, x: x[0][..., :4], cod="b s:4")
error("slice", "past-end", lambda: ncd.Slice("x:4", 0, 6), r"stop 6 is past the size 4 of x", SizeError)

# -- squeeze / unsqueeze -------------------------------------------------------------------
sample("squeeze", "middle", lambda: ncd.Identity.of("a s:1 b") >> ncd.Squeeze("s"), {"a": 3, "b": 4},
       lambda p, x: x[0].squeeze(-2), cod="a b")
error("squeeze", "size", lambda: ncd.Squeeze("s:3"), r"axis s must have size 1, not 3", SizeError)
sample("unsqueeze", "before", lambda: ncd.Identity.of("c x y") >> ncd.Unsqueeze("s", "x"), {"c": 2, "x": 3, "y": 4},
       lambda p, x: x[0].unsqueeze(-3), cod="c s:1 x y")
sample("unsqueeze", "after", lambda: ncd.Identity.of("c x y") >> ncd.Unsqueeze("s", after="y"), {"c": 2, "x": 3, "y": 4},
       lambda p, x: x[0].unsqueeze(-1), cod="c x y s:1")
sample("unsqueeze", "end", lambda: ncd.Identity.of("c x") >> ncd.Unsqueeze("s"), {"c": 2, "x": 3},
       lambda p, x: x[0].unsqueeze(-1), cod="c x s:1")
error("unsqueeze", "both", lambda: ncd.Unsqueeze("s", "x", after="c"), r"either position .* or after, not both", ParseError)
sample("concat", "segments", lambda: ncd.Identity.of("b c x y, b d x y") >> ncd.Concat("c x y, d x y -> e x y"),
       {"b": 2, "c": 2, "d": 3, "x": 4, "y": 2}, lambda p, x: torch.cat(x, dim=-3), cod="b e:c+d x y")
error("concat", "two-differ", lambda: ncd.Concat("c x, d z -> e x"), r"axes c, x differ between the segments", ParseError)
