"""The scalar functions of the elementwise family (:mod:`ncd.prims.elementwise`), one row each: the glyph the paper
draws, the PyTorch call, what autograd keeps and the derivative.  Add a function here and every interpreter has it.

>>> from ncd.prims.functions import ROWS
>>> ROWS["relu"].lowering("x", ())
'torch.relu(x)'
>>> ROWS["leaky_relu"].lowering("x", (0.2,))
'F.leaky_relu(x, 0.2)'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Function", "ROWS", "FUNCTIONS", "number_text"]


@dataclass(frozen=True)
class Function:
    """One row of the elementwise family: what every interpreter needs to know about a scalar function.

    ``glyph`` is what the paper draws; ``call`` the PyTorch source of the lowering (``{}`` is
    the input); ``saves`` which value autograd keeps for the backward pass (``"input"``,
    ``"output"`` or ``None``) — the cost model counts it and the backward diagram stores it;
    ``derivative`` is f′ as PyTorch source in that stored value ``{v}`` (``None`` when the
    backward needs no derivative box: f′ is then the constant ``slope``, ``-1`` for ``neg``, ``0`` for the
    roundings ``sign``/``trunc``/``round``/``floor``/``ceil``, ``1`` for ``identity`` and ``frac``).

    ``params`` names the function's numeric arguments and their defaults (``leaky_relu``'s slope, ``softplus``'s
    beta and threshold): ``call`` writes them where it says ``{args}`` (nothing when they are the defaults),
    ``derivative`` reads each by name (``{negative_slope}``).

    ``inner``: ``call`` is a composite whose autograd also keeps one new tensor of the input's size (QuickGELU's
    ``x * torch.sigmoid(1.702 * x)`` keeps ``x`` and the sigmoid): the cost model counts it.
    """

    glyph: str
    call: str
    saves: str | None
    derivative: str | None
    params: tuple[tuple[str, float], ...] = ()
    slope: float | None = None
    inner: bool = False

    def defaults(self) -> tuple[float, ...]:
        return tuple(d for _, d in self.params)

    def lowering(self, x: str, args: tuple[float, ...]) -> str:
        """The call on ``x`` with the arguments ``args`` (empty: the defaults)."""
        given = "".join(", " + number_text(a) for a in args)
        return self.call.replace("{args}", given).format(x)

    def derivative_at(self, v: str, args: tuple[float, ...]) -> str:
        assert self.derivative is not None
        values = args or self.defaults()
        return self.derivative.format(v=v, **{name: number_text(a) for (name, _), a in zip(self.params, values)})


def number_text(value: float) -> str:
    """A Python literal for an argument (``0.2``, ``-1.0``, ``20``)."""
    return repr(int(value)) if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


_GELU = "0.5 * (1 + torch.erf({v} * 0.7071067811865476)) + {v} * torch.exp(-0.5 * {v} * {v}) * 0.3989422804014327"
_GELU_TANH = ("0.5 * (1 + torch.tanh(0.7978845608028654 * ({v} + 0.044715 * {v} ** 3)))"
              " + 0.5 * {v} * (1 - torch.tanh(0.7978845608028654 * ({v} + 0.044715 * {v} ** 3)) ** 2)"
              " * 0.7978845608028654 * (1 + 0.134145 * {v} * {v})")

#: The elementwise family, one row per function (add a function here and every interpreter has it).  At a NaN input
#: relu's gradient passes (``threshold_backward`` tests ``x <= 0``, false there, in every path of its kernel).  relu6,
#: hardtanh, the ELUs and hardswish have no one value there: torch's CPU kernels give 0 (hardtanh) or NaN (ELU) in
#: their vectorised loop and the scalar tail's value (the gradient, the positive slope) in the last entries; their
#: rows give the vectorised loop's, what most entries of a tensor get.
ROWS: dict[str, Function] = {
    "relu": Function("R", "torch.relu({})", "output", "(~({v} <= 0)).to({v}.dtype)"),
    "gelu": Function("GELU", "F.gelu({})", "input", _GELU),
    "gelu_tanh": Function("GELU", "F.gelu({}, approximate='tanh')", "input", _GELU_TANH),
    "silu": Function("SiLU", "F.silu({})", "input", "torch.sigmoid({v}) * (1 + {v} * (1 - torch.sigmoid({v})))"),
    # CLIP's QuickGELU, x σ(1.702 x), in the very operations ``transformers``' QuickGELUActivation runs (bit-equal)
    "quick_gelu": Function("qGELU", "{0} * torch.sigmoid(1.702 * {0})", "input",
                           "torch.sigmoid(1.702 * {v}) * (1 + 1.702 * {v} * (1 - torch.sigmoid(1.702 * {v})))",
                           inner=True),
    "tanh": Function("tanh", "torch.tanh({})", "output", "1 - {v} * {v}"),
    "sigmoid": Function("σ", "torch.sigmoid({})", "output", "{v} * (1 - {v})"),
    "exp": Function("exp", "torch.exp({})", "output", "{v}"),
    "log": Function("log", "torch.log({})", "input", "1 / {v}"),
    "square": Function("x²", "torch.square({})", "input", "2 * {v}"),
    "sqrt": Function("√", "torch.sqrt({})", "output", "0.5 / {v}"),
    "neg": Function("−", "torch.neg({})", None, None, slope=-1),
    "abs": Function("|x|", "torch.abs({})", "input", "torch.sign({v})"),
    "identity": Function("id", "{}", None, None, slope=1),
    # functions the importer met opaque (one row each: lowering, saved value, derivative and glyph)
    "rsqrt": Function("1/√", "torch.rsqrt({})", "output", "-0.5 * {v} * {v} * {v}"),
    "reciprocal": Function("1/x", "torch.reciprocal({})", "output", "-{v} * {v}"),
    "softplus": Function("softplus", "F.softplus({}{args})", "input",
                         "torch.where({v} * {beta} > {threshold}, 1.0, torch.sigmoid({v} * {beta}))",
                         (("beta", 1.0), ("threshold", 20.0))),
    "mish": Function("mish", "F.mish({})", "input",
                     "torch.tanh(F.softplus({v})) + {v} * torch.sigmoid({v}) * (1 - torch.tanh(F.softplus({v})) ** 2)"),
    "hardswish": Function("hswish", "F.hardswish({})", "input",
                          "torch.where({v} <= -3, 0.0, torch.where({v} < 3, {v} / 3 + 0.5, 1.0))"),
    "hardsigmoid": Function("hσ", "F.hardsigmoid({})", "input", "(({v} > -3) & ({v} < 3)).to({v}.dtype) / 6"),
    "relu6": Function("R6", "F.relu6({})", "input", "(({v} > 0) & ({v} < 6)).to({v}.dtype)"),
    "leaky_relu": Function("LR", "F.leaky_relu({}{args})", "input", "torch.where({v} > 0, 1.0, {negative_slope})",
                           (("negative_slope", 0.01),)),
    "elu": Function("ELU", "F.elu({}{args})", "input", "torch.where({v} > 0, 1.0, {alpha} * torch.exp({v}))",
                    (("alpha", 1.0),)),
    # CELU and SELU are ELUs with their own scales (autograd keeps the input of the ELU they run)
    "celu": Function("CELU", "F.celu({}{args})", "input", "torch.where({v} > 0, 1.0, torch.exp({v} / {alpha}))",
                     (("alpha", 1.0),)),
    "selu": Function("SELU", "F.selu({})", "input",
                     "torch.where({v} > 0, 1.0507009873554805, 1.7580993408473766 * torch.exp({v}))"),
    "hardtanh": Function("hardtanh", "F.hardtanh({}{args})", "input",
                         "(({v} > {min_val}) & ({v} < {max_val})).to({v}.dtype)", (("min_val", -1.0), ("max_val", 1.0))),
    "erf": Function("erf", "torch.erf({})", "input", "1.1283791670955126 * torch.exp(-{v} * {v})"),
    "sin": Function("sin", "torch.sin({})", "input", "torch.cos({v})"),
    "cos": Function("cos", "torch.cos({})", "input", "-torch.sin({v})"),
    "log1p": Function("log1p", "torch.log1p({})", "input", "1 / (1 + {v})"),
    "log2": Function("log₂", "torch.log2({})", "input", "1.4426950408889634 / {v}"),  # 1 / (x ln 2)
    "expm1": Function("expm1", "torch.expm1({})", "output", "{v} + 1"),
    "acos": Function("acos", "torch.acos({})", "input", "-torch.rsqrt(1 - {v} * {v})"),
    # log σ(x) = −softplus(−x): one saved tensor (F.logsigmoid keeps its input and a buffer)
    "log_sigmoid": Function("log σ", "-F.softplus(-{})", "input", "torch.sigmoid(-{v})"),
    # piecewise constant (autograd keeps nothing: the gradient is zero) and x − trunc(x) (the gradient passes)
    "sign": Function("sgn", "torch.sign({})", None, None, slope=0),
    "trunc": Function("trunc", "torch.trunc({})", None, None, slope=0),
    "round": Function("round", "torch.round({})", None, None, slope=0),
    "floor": Function("⌊x⌋", "torch.floor({})", None, None, slope=0),
    "ceil": Function("⌈x⌉", "torch.ceil({})", None, None, slope=0),
    "frac": Function("frac", "torch.frac({})", None, None, slope=1),
}

#: Elementwise function names and the glyph the paper draws for them.
FUNCTIONS: dict[str, str] = {name: row.glyph for name, row in ROWS.items()}
