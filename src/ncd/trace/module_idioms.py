"""Module idioms: a whole activation or RMS-norm module call drawn as one box, once its values prove it.

A class name is never proof: the module is run on a random input and compared with the box's function, and so are the
traced values where the capture kept them (:meth:`ModuleIdioms._module_agrees`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.capture import Node, refs
from ncd.trace.learned import Learned
from ncd.trace.norm_offset import offset_read, recorded_exactly
from ncd.trace.registry import Decline, op_name

__all__ = ["ACTIVATIONS", "ELEMENTWISE", "SWEEP", "ModuleIdioms", "whole"]


def whole(cls: str) -> bool:
    """Whether a module of class ``cls`` may be drawn whole, as one box (an activation or norm class), decided at its
    first call."""
    return bool(ACTIVATIONS.get(cls)) or _norm_class(cls)


def _norm_class(cls: str) -> bool:
    """Whether ``cls`` names a norm the RMS module idiom looks at: an ``*RMSNorm``, or a ``*LayerNorm`` — T5's family
    (``MT5LayerNorm``, ``LongT5LayerNorm``, ``Pix2StructLayerNorm``, ``CpmAntLayerNorm`` …) names its RMS norms so.  Only
    where to look: a ``*LayerNorm`` is tried only when its recorded run is shaped like one (:func:`_rms_shaped`), and
    any is drawn as one box only once checked on values."""
    return cls.endswith("RMSNorm") or cls.endswith("LayerNorm")


class ModuleIdioms(Learned):
    """Activation and RMS-norm modules recognised whole (each decided at the module's first call)."""

    _calls: dict[tuple[int, str], list[Node]] | None
    _tried: set[tuple[int, str]]

    def module_calls(self) -> dict[tuple[int, str], list[Node]]:
        """The calls made inside each activation or RMS-norm module, by ``(depth, path)`` (one pass, built once)."""
        if self._calls is None:
            self._calls = {}
            for n in self.captured.nodes:
                if n.kind == "call":
                    for depth, (path, cls) in enumerate(n.stack):
                        if whole(cls):
                            self._calls.setdefault((depth, path), []).append(n)
        return self._calls

    def module_idiom(self, node: Node) -> bool:
        """A whole activation or RMS-norm module call drawn as one box."""
        from ncd.prims.elementwise import ElementwiseOp
        from ncd.prims.normalization import RMSNormOp

        for depth, (path, cls) in enumerate(node.stack):
            kind = "act" if ACTIVATIONS.get(cls) else "rms" if _norm_class(cls) else None
            if kind is None or not self.whole_at(depth, path, cls):
                continue  # (a layer norm, fused or written out: not tried, as a class of no idiom)
            if (depth, path) in self._tried:  # decided at the module's first call
                return False
            self._tried.add((depth, path))
            run = self.module_calls().get((depth, path), [])
            members = {id(n) for n in run}
            own = f"{path}.weight"
            # Gemma's ``(c + w)`` (its weight read live, through ``self.weight.float()``): checked as that, or nothing
            offset = offset_read(run, own) if kind == "rms" else None
            outside = [r for n in run for r in refs((n.args, n.kwargs)) if id(r) not in members and r.live
                       and not (offset is not None and r.kind == "parameter" and r.source == own)]
            used_after = [n for n in run if any(id(c) not in members for c in self.consumers.get(id(n), []))
                          or any(o is n for o in self.captured.outputs)]
            if len({id(r) for r in outside}) != 1:
                return False
            source = outside[0]
            aliases = [n for n in used_after if _alias_of(n, source)]
            used_after = [n for n in used_after if n not in aliases]
            if len(used_after) != 1:
                return False
            result = used_after[0]
            if tuple(source.value.shape) != tuple(result.value.shape) or id(source) not in self.values:
                return False
            self.stack = node.stack[:depth]
            vid = self.values[id(source)]
            label = path.rsplit(".", 1)[-1]
            try:
                if kind == "act":
                    function = ACTIVATIONS[cls]
                    if self.model is None or not (_recorded_as(run, source, result, function)
                                                  or self._module_agrees(path, source, result,
                                                                         lambda x, _: ELEMENTWISE[function](x),  # type: ignore[index]
                                                                         sweep=True)):
                        return False
                    out = self.apply(Box(ElementwiseOp(function)), [vid])  # type: ignore[arg-type]
                else:
                    module = self.submodule(path) if self.model is not None else None
                    weight = getattr(module, "weight", None)
                    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
                    if not isinstance(weight, torch.Tensor) or eps is None or weight.shape != source.value.shape[-1:]:
                        return False
                    seg = self.segs[vid]
                    n = weight.shape[0]
                    # the weight only if the module reads it as a parameter (a weightless norm may hold ones)
                    read = any(r.kind == "parameter" and r.source == f"{path}.weight"
                               for m in run for r in refs((m.args, m.kwargs)))
                    w = weight.detach() if read else None
                    small = float(eps) ** 0.5 if eps > 0 else _NO_EPS
                    if offset is not None and (not read or source.value.dtype != torch.float32):
                        return False
                    if offset is not None:  # Gemma's ``rms(x) * (offset + w)``: that, or nothing
                        recorded = recorded_exactly(run, source, result, own, offset)  # (its operations as recorded)
                        if recorded is not None:
                            eps = recorded
                        elif not self._module_agrees(path, source, result,
                                                     lambda x, p: torch.nn.functional.rms_norm(x, (n,), None, float(eps))
                                                     * (offset + p["weight"]), small=small):
                            return False
                    elif not self._module_agrees(path, source, result,
                                                 lambda x, p: torch.nn.functional.rms_norm(
                                                     x, (n,), p["weight"] if read else None, float(eps)),
                                                 small=small):
                        return False
                    box = Box(RMSNormOp(Segment(seg.axes[-1:]), float(eps), read, offset or 0.0), label)
                    out = self.apply(box, [vid])
                    if w is not None:
                        self.emitted.tensors.append([w])
            except Decline:
                return False
            self.skip |= members
            self.values[id(result)] = out
            for alias in aliases:
                self.values[id(alias)] = vid
            return True
        return False

    def whole_at(self, depth: int, path: str, cls: str) -> bool:
        """Whether the module call at ``(depth, path)``, of class ``cls``, may be drawn whole (:func:`whole`, and a
        ``*LayerNorm`` only when its recorded run is shaped like an RMS norm): layer reuse walks, never copies, what is
        inside one, as its first call decides it."""
        return whole(cls) and (cls.endswith("RMSNorm") or not cls.endswith("LayerNorm") or self._rms_shaped(depth, path))

    def _rms_shaped(self, depth: int, path: str) -> bool:
        """:func:`_rms_shaped` of the module call at ``(depth, path)`` (once per call)."""
        shaped: dict[tuple[int, str], bool] = self.__dict__.setdefault("_shaped", {})
        key = (depth, path)
        if key not in shaped:
            shaped[key] = _rms_shaped(self.module_calls().get(key, []))
        return shaped[key]

    def _module_agrees(self, path: str, source: Node, result: Node, fn: Callable[[torch.Tensor, _Params], torch.Tensor],
                       small: float = 0.0, sweep: bool = False) -> bool:
        """Whether the module at ``path`` computes ``fn`` (of an input and the module's parameters by name): checked on
        the traced values (when the capture kept them) and on a random input run through the module itself — a class
        name is never proof.  The modules checked act on each row (the last axis) alone, so large tensors are checked on
        a bounded sample of rows (linear time).

        Also with the module's floating parameters replaced by random values (:func:`_perturbed`, ``fn`` given the same):
        the traced weights of a model as built are ones and zeros, where a weight applied before normalising
        (``rms_norm(w * x)``), or a learned scale of 1 inside an activation, equals the idiom — drawn so, the lowered
        module was silently wrong once the weights were trained.

        ``small`` (an RMS norm's ``sqrt(eps)``, :data:`_NO_EPS` for ``eps`` 0): also on a random input of about that
        root mean square (in the value's dtype: a bfloat16 or float16 norm computing in float32 rounds to the same
        half-precision numbers at unit scale whatever it does with ``eps``), where ``eps`` decides the value: a norm
        adding ``eps`` outside the root (the RMSNorm paper's ``x / (rms + eps)``), or another ``eps`` than its
        attribute, agrees within 1e-4 at unit scale only.

        ``sweep`` (an elementwise activation): also on every entry of :data:`SWEEP` (both signs, magnitudes 1e-4 to
        1e4), where a clamp or clip (a ``ReLU`` class computing ReLU6, a GELU clipped at 10) parts from the function:
        the random probe's entries (3 randn) rarely pass 6 and never 10."""
        if self.model is None:
            return False
        try:
            module = self.submodule(path)
            value = source.value
            shape = tuple(int(s) for s in value.shape)
            if value.numel() > _CHECKED and value.dim() >= 1:  # the same last axis, fewer rows
                shape = (max(1, min(_CHECKED // max(shape[-1], 1), 64)), shape[-1])
            probe = self._probe(shape, value.dtype)
            live: _Params = dict(module.named_parameters())
            with torch.no_grad():
                pairs = [(module(probe), fn(probe, live))]
                if small > 0 and value.dtype.is_floating_point:
                    tiny = self._probe(shape, value.dtype) * (small / 3)  # (the probe's entries are 3 randn)
                    pairs.append((module(tiny.clone()), fn(tiny, live)))
                if sweep:
                    pairs += [(module(part.clone()), fn(part, live)) for part in _swept(shape, value.dtype)]
                if value.device.type != "meta" and result.value.device.type != "meta":
                    got, want = _rows(result.value), _rows(value)
                    pairs.append((got, fn(want, live)) if want is not None and got is not None
                                 else (result.value, fn(value, live)))
                if any(p.is_floating_point() for p in live.values()):
                    # (in float32 at least: the placement is what is checked here, the rounding by the probes above)
                    wide = value.dtype if value.dtype in (torch.float32, torch.float64) else torch.float32
                    other = _perturbed(live, wide)
                    x = self._probe(shape, wide)
                    pairs.append((torch.func.functional_call(module, other, (x.clone(),)), fn(x, other)))
            return all(isinstance(a, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and _close(a, b)
                       for a, b in pairs)
        except Exception:  # noqa: BLE001 - a module that cannot be run alone is not recognised
            return False

    def _probe(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """``3 * randn(shape)`` from a generator seeded 0, cast to ``dtype``: a fresh copy of the one drawn for the first
        module checked at this shape and dtype (the same numbers: drawing them again cost more than the check)."""
        drawn: dict[tuple[tuple[int, ...], torch.dtype], torch.Tensor] = self.__dict__.setdefault("_probes", {})
        key = (shape, dtype)
        probe = drawn.get(key)
        if probe is None:
            gen = torch.Generator().manual_seed(0)
            probe = drawn[key] = (3 * torch.randn(shape, generator=gen)).to(dtype)
        return probe.clone()  # (a module may write into its input)


_Params = Mapping[str, torch.Tensor]


def _perturbed(params: _Params, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``params`` with each floating one replaced by ``randn`` of its shape in ``dtype`` (a generator seeded 1; the
    others kept): weights no placement equals another with, as the ones and zeros of a model as built do."""
    gen = torch.Generator().manual_seed(1)
    return {name: torch.randn(p.shape, generator=gen).to(p.device, dtype) if p.is_floating_point() else p
            for name, p in params.items()}


#: The entries an activation module is also checked on (:meth:`ModuleIdioms._module_agrees`): 0 and ``±10**(j/4)`` for
#: ``j`` in ``-16 … 16``, past the clamps and clips of near-miss activations and into the tails of the smooth ones.
SWEEP = (0.0, *(s * 10.0 ** (j / 4) for j in range(-16, 17) for s in (1.0, -1.0)))


def _swept(shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
    """:data:`SWEEP` laid out over as few tensors of ``shape`` as hold it all (cycled to fill the last)."""
    n = max(1, math.prod(shape))
    parts = -(-len(SWEEP) // n)
    values = torch.tensor(SWEEP, dtype=torch.float64).repeat(-(-parts * n // len(SWEEP)))[:parts * n].to(dtype)
    return [values[j * n:(j + 1) * n].reshape(shape) for j in range(parts)]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``torch.allclose(a, b, atol=1e-5 · min(1, max|b|), rtol=1e-4)``, answered first by ``torch.equal`` (one pass,
    no temporaries: equal entries are close, and a module computing the function by the same kernel gives equal ones).
    The absolute tolerance shrinks with values below 1: an RMS norm's outputs are as large as its weight, and of a
    weight of 1e-5 a fixed 1e-5 passed anything (a norm over ``n - 1``, 7 % off, was an rmsnorm box)."""
    if torch.equal(a, b):
        return True
    scale = min(1.0, float(b.abs().max())) if b.numel() and b.is_floating_point() else 1.0
    return bool(torch.allclose(a, b, atol=1e-5 * scale, rtol=1e-4))


#: The scale an RMS norm of ``eps`` 0 is also checked at: one adding an ``eps`` of its own (``1e-12`` or more) parts
#: from the norm there.
_NO_EPS = 1e-6

#: Entries of a traced value a module idiom is checked on in full; larger values are checked on a sample of rows.
_CHECKED = 1 << 16


def _rows(tensor: torch.Tensor) -> torch.Tensor | None:
    """``tensor`` (a traced value) if small, else a spread-out sample of its rows (last axis kept): ``None`` if 0-d."""
    if tensor.numel() <= _CHECKED:
        return tensor
    if tensor.dim() < 1:
        return None
    flat = tensor.reshape(-1, tensor.shape[-1])
    n = max(1, min(flat.shape[0], _CHECKED // max(int(tensor.shape[-1]), 1)))
    picks = torch.unique(torch.linspace(0, flat.shape[0] - 1, n).round().long())
    return flat[picks]


def _recorded_as(run: list[Node], source: Node, result: Node, function: str | None) -> bool:
    """Whether the module's one recorded call is ``function``'s own ATen operator on ``source`` alone, giving
    ``result`` (``aten.gelu(x)`` in a GELU module): the box then stands for the very call the recording holds, which
    the walk would draw as that box without the idiom, so there is nothing for a value check to tell.  QuickGELU:
    the module's recorded calls are the box's lowering itself (:func:`_quick_gelu_recorded`)."""
    if function == "quick_gelu":
        return _quick_gelu_recorded(run, source, result)
    if len(run) != 1 or run[0] is not result or not result.args or result.args[0] is not source:
        return False
    from ncd.trace.idioms_arithmetic import UNARY  # (the walk's own rule for these operators: the names it draws)

    name, full = op_name(result.target)
    if full != f"{name}.default" or name.removeprefix("aten.") not in UNARY:
        return False
    rest, kwargs = result.args[1:], dict(result.kwargs)
    if name == "aten.gelu":
        if len(rest) > 1 or (rest and "approximate" in kwargs) or set(kwargs) - {"approximate"}:
            return False
        approximate = rest[0] if rest else kwargs.get("approximate", "none")
        drawn = {"none": "gelu", "tanh": "gelu_tanh"}.get(approximate) if isinstance(approximate, str) else None
    else:
        drawn = UNARY[name.removeprefix("aten.")] if not rest and not kwargs else None
    value, out = source.value, result.value
    return (drawn is not None and drawn == function and isinstance(value, torch.Tensor) and isinstance(out, torch.Tensor)
            and value.is_floating_point() and out.dtype == value.dtype and tuple(out.shape) == tuple(value.shape))


def _rms_shaped(run: list[Node]) -> bool:
    """Whether a norm module's recorded calls look like a root mean square (a square, a mean and a root or reciprocal
    root — ImageGPT's ``x / sqrt(mean(square(x)) + eps)`` too —, no subtraction and no fused norm): which
    ``*LayerNorm`` modules the RMS idiom is tried on, its value check deciding."""
    names = {op_name(n.target)[0] for n in run}
    return "aten.mean" in names and bool(names & {"aten.pow", "aten.square"}) \
        and bool(names & {"aten.rsqrt", "aten.sqrt"}) and not names & {
        "aten.sub", "aten.native_layer_norm", "aten.layer_norm", "aten.var", "aten.var_mean", "aten.rms_norm"}


def _alias_of(node: Node, source: Node) -> bool:
    """Whether ``node`` is ``source`` passed through casts to its own dtype (``x.to(torch.float32)``)."""
    while node is not source:
        if node.kind != "call" or op_name(node.target)[0] not in ("aten.to", "aten._to_copy", "aten.clone", "aten.alias"):
            return False
        if not isinstance(node.args[0], Node) or node.value.dtype != node.args[0].value.dtype:
            return False
        node = node.args[0]
    return True


def _quick_gelu_recorded(run: list[Node], source: Node, result: Node) -> bool:
    """Whether the module's recorded calls are exactly ``source * sigmoid(1.702 * source)`` giving ``result``, in
    that order (``mul`` by the Python float 1.702 on either side, ``sigmoid`` of it, ``mul`` of ``source`` by that on
    either side), all in ``source``'s dtype and shape: the ``quick_gelu`` row's lowering, the same operations, so the
    box is exact by construction."""
    if len(run) != 3 or run[2] is not result or source.value.dtype != result.value.dtype:
        return False
    scaled, sigmoid, product = run
    names = [op_name(n.target)[1] for n in run]
    if names != ["aten.mul.Tensor", "aten.sigmoid.default", "aten.mul.Tensor"] or any(n.kwargs for n in run):
        return False

    def pair(node: Node, other: object) -> bool:  # the two arguments are source and ``other`` (either order)
        args = node.args
        return len(args) == 2 and ((args[0] is source and _is(args[1], other)) or (args[1] is source and _is(args[0], other)))

    return (pair(scaled, 1.702) and len(sigmoid.args) == 1 and sigmoid.args[0] is scaled and pair(product, sigmoid)
            and all(isinstance(n.value, torch.Tensor) and n.value.dtype == source.value.dtype
                    and tuple(n.value.shape) == tuple(source.value.shape) for n in run))


def _is(arg: object, want: object) -> bool:
    """``arg`` is the node ``want``, or the Python float ``want`` itself (not an int, a bool or a tensor)."""
    if isinstance(want, float):
        return type(arg) is float and arg == want
    return arg is want


#: The elementwise functions module idioms may stand for, as torch computes them (for the numeric check).
ELEMENTWISE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": torch.nn.functional.gelu, "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "silu": torch.nn.functional.silu, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}

#: Module classes that may be drawn as one elementwise box (whatever ATen operators they run), once checked on values.
ACTIVATIONS = {
    "GELUActivation": "gelu", "NewGELUActivation": "gelu_tanh", "GELUTanh": "gelu_tanh", "FastGELUActivation": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh", "QuickGELUActivation": "quick_gelu", "SiLUActivation": "silu", "GELU": None, "SiLU": "silu",
    "ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid",
}
