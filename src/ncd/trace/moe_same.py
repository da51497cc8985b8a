"""Whether a check under random parameters is one made already: the same computation on the same values.

:func:`~ncd.trace.moe_proof.agrees` runs an experts module's own forward and its dense reading with every parameter
replaced by random values (:func:`~ncd.trace.moe_proof.perturbed`).  The layers of a model hold experts modules equal
but for their parameters' values, and within :func:`~ncd.trace.moe_proof.noise_shared` the random values of parameters
of the same places, shapes and scales are the very same tensors: the check of the second layer runs the same code on
the same values as the first's.  :func:`made_of` writes down everything such a check computes from — the module's
class, its state but for its parameters' values (plain values by value, tensors by their values, anything else by
identity), the reading's code and what it holds, the random parameters (by identity and version) and the random cases
(by value) — and a check made of what a passed one was made of passes, without running it again.  Where anything
cannot be written down so, :func:`made_of` gives ``None`` and the check runs.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["made_of"]


class _Same:
    """An object compared by identity (a function, a config, a class)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    __hash__ = None  # type: ignore[assignment]


class _Values:
    """A tensor compared by its values (its class, shape, dtype, device and every entry: ``torch.equal``), each side
    unwritten since it was written down (its version then)."""

    __slots__ = ("t", "version")

    def __init__(self, t: torch.Tensor) -> None:
        self.t, self.version = t, t._version

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Values):
            return False
        a, b = self.t, other.t
        return (type(a) is type(b) and a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
                and a.device.type != "meta" and a._version == self.version and b._version == other.version
                and bool(torch.equal(a, b)))

    __hash__ = None  # type: ignore[assignment]


#: values compared by value
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.layout,
          torch.memory_format)


def _written(v: Any, paths: dict[int, str], depth: int = 0) -> Any:
    """``v`` as compared: plain values by value, containers by their items (sets of plain values), tensors by values,
    the module's own submodules by their path in it, bound methods by function and owner, functions by code and what
    they hold, anything else by identity."""
    if type(v) in _PLAIN:
        return (type(v), v)
    if depth > 8:
        return _Same(v)
    if isinstance(v, torch.Tensor):
        return _Values(v)
    if isinstance(v, torch.nn.Module):
        return ("module", paths[id(v)]) if id(v) in paths else _Same(v)
    if type(v) in (tuple, list):
        return (type(v), tuple(_written(x, paths, depth + 1) for x in v))
    if type(v) in (set, frozenset) and all(type(x) in _PLAIN for x in v):
        return (type(v), frozenset((type(x), x) for x in v))
    if isinstance(v, dict):
        return (type(v), tuple((_written(key, paths, depth + 1), _written(x, paths, depth + 1)) for key, x in v.items()))
    if isinstance(v, types.MethodType):
        return ("method", _written(v.__func__, paths, depth + 1), _written(v.__self__, paths, depth + 1))
    if isinstance(v, types.FunctionType):
        cells = tuple(_written(c.cell_contents, paths, depth + 1) for c in v.__closure__ or ())
        return ("function", _Same(v.__code__), _Same(v.__globals__), cells, _written(v.__defaults__, paths, depth + 1),
                _written(v.__kwdefaults__, paths, depth + 1))
    return _Same(v)


def _state(module: torch.nn.Module, paths: dict[int, str]) -> list[Any]:
    """``module`` and its submodules as compared (:func:`_written`): each one's class and attributes, its parameters by
    name, shape, dtype, device and ``requires_grad`` (their values are replaced), its buffers by values."""
    out: list[Any] = []
    for path, m in module.named_modules(remove_duplicate=False):
        out.append((path, _Same(type(m))))
        for name, v in vars(m).items():
            if name == "_parameters":
                out.append((name, tuple((n, None if p is None else (tuple(p.shape), p.dtype, p.device, p.requires_grad,
                                                                    type(p)))
                                        for n, p in v.items())))
            else:
                out.append((name, _written(v, paths)))
    return out


def made_of(module: torch.nn.Module, reading: Any, params: dict[str, torch.Tensor],
            cases: Sequence[tuple[torch.Tensor, ...]]) -> list[Any] | None:
    """What the check of ``reading`` against ``module``'s own forward, with its parameters replaced by ``params`` (by
    :func:`~torch.nn.utils.stateless._reparametrize_module`), on ``cases`` computes from; ``None`` if it cannot be told
    (the check is run).  Two checks made of equal things compute the same.

    >>> import torch
    >>> a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    >>> noise = {"weight": torch.ones(3, 3), "bias": torch.zeros(3)}
    >>> cases = [(torch.ones(2, 3),)]
    >>> made_of(a, None, noise, cases) == made_of(b, None, noise, cases)  # other parameters, the same noise
    True
    >>> made_of(a, None, noise, cases) == made_of(b, None, dict(noise, bias=torch.zeros(3)), cases)  # other noise
    False
    >>> b.extra = "other"; made_of(a, None, noise, cases) == made_of(b, None, noise, cases)
    False
    """
    try:
        if {name for name, _ in module.named_parameters(remove_duplicate=False)} != set(params):
            return None  # (a parameter left live, one tied under two names: its values are not written down)
        paths = {id(m): path for path, m in module.named_modules(remove_duplicate=False)}
        noise = tuple((name, ("noise", _Same(p), p._version) if p.is_floating_point() else _Values(p))
                      for name, p in params.items())
        return [_state(module, paths), _written(reading, paths), noise,
                [tuple(_Values(t) for t in case) for case in cases]]
    except Exception:  # noqa: BLE001 - not told: the check runs
        return None
