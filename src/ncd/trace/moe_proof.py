"""The check that a dense reading equals an experts module's own forward (:func:`agrees`), on the traced arguments and on
random tokens, routes and weights — with the live parameters and with random ones (:func:`perturbed`) — and the
module's state read before and compared after it (:func:`_state`, :func:`_put_state_back`): a forward that writes its
own state is not read densely.  Values are compared at their own scale (:func:`within`)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.nn.utils.stateless import _reparametrize_module

from ncd.trace.moe_readings import Forward
from ncd.trace.moe_same import made_of

__all__ = ["PROBED", "agrees", "covering", "noise_shared", "perturbed", "within"]


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The tokens ``t m``, the chosen experts (``t k`` or a one-hot ``t k e``) and their weights ``t k`` of a call."""
    values = list(args) + list(kwargs.values())
    if len(values) != 3 or not all(isinstance(v, torch.Tensor) for v in values):
        return None
    x, index, weight = values
    if x.dim() != 2 or not x.is_floating_point() or index.is_floating_point() or index.dtype == torch.bool:
        return None
    if not weight.is_floating_point() or weight.dim() != 2 or tuple(weight.shape) != tuple(index.shape[:2]):
        return None
    if index.dim() not in (2, 3) or index.shape[0] != x.shape[0]:
        return None
    return x, index, weight


#: the fewest random tokens :func:`agrees` checks (each expert among them however few the traced tokens)
PROBED = 8


def _routes(experts: int, k: int, rows: int, one_hot: bool, gen: torch.Generator) -> torch.Tensor:
    """Random routing of ``rows`` tokens to ``k`` experts each (distinct ones; for a one-hot mask ``t k e``, any, some
    tokens dropped as by an expert's capacity) in which every expert is chosen: ``⌈e/k⌉`` of the tokens, at random
    places among the rows, are routed to experts ``0 … e-1`` in turn (``rows`` is at least that many)."""
    cover = -(-experts // k)
    covered = torch.randperm(rows, generator=gen)[:cover]
    every = torch.arange(cover * k).view(cover, k) % experts
    if not one_hot:
        chosen = torch.rand((rows, experts), generator=gen).argsort(dim=1)[:, :k]
        chosen[covered] = every.gather(1, torch.rand((cover, k), generator=gen).argsort(dim=1))
        return chosen
    picked = torch.randint(experts, (rows, k), generator=gen)
    picked[covered] = every
    kept = torch.randint(2, (rows, k, 1), generator=gen)
    kept[covered] = 1
    return torch.nn.functional.one_hot(picked, experts) * kept


def agrees(module: torch.nn.Module, dense: Forward, call: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
           experts: int, traced: Any = None, later: list[Any] | None = None) -> bool:
    """Whether ``dense`` equals the module's own forward on the traced arguments and on random ones (``traced``: what
    the module's own forward gave on the traced arguments in the run that read them, if known; else it is run).
    ``later`` (where ``traced`` is not known): the dense reading is not run on the traced arguments here — the caller
    runs it on them next, recorded — and what the module's own forward gives on them is put in ``later``, for the
    caller to compare (:func:`_agree`) before it keeps the reading (:mod:`ncd.trace.moe_first_call`).

    The random cases have as many tokens as the traced one, as many cases as make at least :data:`PROBED` and
    ``⌈e/k⌉`` tokens, of random values routed at random with random weights, every expert chosen by some token
    (:func:`_routes`): both sides compute each token from its own row, so every expert is checked on random tokens.
    Then both again on cases routing every expert with the module's parameters replaced by random ones of their scale
    (:func:`perturbed`): a model as built has zero expert biases, where a bias the reading misplaces vanishes; and on
    one case of as many tokens all routed to the same experts, run alone (:func:`_crowded`: an expert's capacity
    reached, which random routings rarely reach).  Within
    :func:`noise_shared`, that check of a module made of the same as one passed already (another layer's, on the same
    random parameters and cases: :func:`~ncd.trace.moe_same.made_of`) is not run again."""
    x, index, weight = call
    tokens, k = int(index.shape[0]), int(index.shape[1])
    if x.device.type == "meta" or tokens < 1 or k < 1 or (index.dim() == 2 and k > experts) \
            or (index.dim() == 3 and index.shape[2] != experts):
        return False
    gen = torch.Generator().manual_seed(0)
    probes = -(-max(tokens, PROBED, -(-experts // k)) // tokens)  # cases of the traced number of tokens
    cases = [call, *_random_cases(call, experts, probes, gen)]
    try:
        with torch.no_grad():
            if not _cases_agree(module, dense, cases, traced, later if traced is None else None, first_traced=True):
                return False
            every = _random_cases(call, experts, covering(experts, k, tokens), gen)
            crowded = _crowded(every[0], experts)  # (run alone: the others of a call may decide a token's result)
            other = perturbed(dict(module.named_parameters()))
            made = made_of(module, dense, other, [*every, crowded]) if _PASSED else None
            if made is not None and made in _PASSED[-1]:  # this very check passed (another layer): the same answer
                return True
            with _reparametrize_module(module, other):
                agreed = _cases_agree(module, dense, every, None) and _agree(dense(*crowded), module.forward(*crowded))
            if agreed and made is not None:
                _PASSED[-1].append(made)
            return agreed
    except Exception:  # noqa: BLE001 - a reading that cannot run is not proven
        return False


def _crowded(call: tuple[torch.Tensor, torch.Tensor, torch.Tensor], experts: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``call`` with every token routed to experts ``0 … k-1`` (its tokens and weights kept): where a kernel
    computes a token from the others of its call — an expert's capacity (tokens past it dropped), a routing it
    special-cases — the dense reading, which computes each token alone, differs on it; random routings spread the
    tokens and rarely reach a capacity (an experts module dropping tokens past twice its share agreed on every random
    case and the traced one, and was read densely: silently wrong on an input crowding one expert).

    >>> call = (torch.zeros(3, 4), torch.tensor([[2, 1], [0, 3], [1, 2]]), torch.ones(3, 2))
    >>> _crowded(call, 4)[1].tolist()
    [[0, 1], [0, 1], [0, 1]]
    """
    x, index, weight = call
    tokens, k = int(index.shape[0]), int(index.shape[1])
    first = torch.arange(k, device=index.device) % experts
    if index.dim() == 3:  # one-hot masks ``t k e``
        same = torch.nn.functional.one_hot(first, experts).to(index.dtype).expand(tokens, k, experts)
    else:
        same = first.to(index.dtype).expand(tokens, k)
    return x, same.contiguous(), weight


def covering(experts: int, k: int, tokens: int) -> int:
    """The fewest cases of ``tokens`` tokens routed to ``k`` experts each in which every expert can be chosen:
    ``⌈⌈e/k⌉ / t⌉``."""
    cover = -(-experts // k)
    return -(-cover // tokens)


def _random_cases(call: tuple[torch.Tensor, torch.Tensor, torch.Tensor], experts: int, count: int,
                  gen: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``count`` cases of the traced call's shapes: random tokens, routed at random (every expert chosen by a token of
    one of them, :func:`_routes`) with random weights."""
    x, index, weight = call
    tokens, k = int(index.shape[0]), int(index.shape[1])
    rows = count * tokens
    chosen = _routes(experts, k, rows, index.dim() == 3, gen).to(index.dtype)
    xs = (2 * torch.randn((rows, *x.shape[1:]), generator=gen)).to(x.dtype)
    ws = torch.rand((rows, k), generator=gen).to(weight.dtype)
    return [(xs[j:j + tokens], chosen[j:j + tokens], ws[j:j + tokens]) for j in range(0, rows, tokens)]


def _cases_agree(module: torch.nn.Module, dense: Forward, cases: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                 traced: Any, later: list[Any] | None = None, first_traced: bool = False) -> bool:
    """Whether ``dense`` equals the module's own forward on every case (``first_traced``: the first is the traced one,
    its module's result known as ``traced``, if given; with ``later``, its dense reading left to the caller and the
    module's own result put in ``later``, :func:`agrees`): the random ones in one call of each side
    (:func:`_agree_at_once`), else one case at a time."""
    later = later if first_traced else None
    if _agree_at_once(module, dense, cases, traced, later, first_traced):
        return True
    own = module.forward  # what the model runs (an instance's own forward, if it has one), not the class's
    first: list[Any] = []
    for j, (xv, iv, wv) in enumerate(cases):  # (one case at a time: the answer whenever the one call is not)
        want = traced if j == 0 and traced is not None else own(xv, iv, wv)
        if j == 0 and later is not None:
            first.append(want)
        elif not _agree(dense(xv, iv, wv), want):
            return False
    if later is not None:
        later[:] = first
    return True


def perturbed(params: Mapping[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """``params`` with each floating tensor replaced by random values of its own scale (its root mean square, read from
    a sample of its entries, :func:`_scale`, and rounded to a power of two), the others kept; one of a scale below a
    tenth of the largest (all zero, as a model's biases are built, or about so) takes the largest: weights where no
    term of a module vanishes, nor any two weights are equal, as the zeros and ones of a model as built make them
    (uniform noise, :func:`_levels`).  Within :func:`noise_shared`, modules of parameters of the same shapes share the
    noise (the layers of a model: drawn once), and those of the same scales its very values (made once).

    >>> other = perturbed({"weight": torch.full((64, 64), 0.02), "bias": torch.zeros(64), "steps": torch.arange(3)})
    >>> bool(other["bias"].ne(0).all()), 0.01 < float(other["bias"].abs().max()) < 0.1, other["steps"].tolist()
    (True, True, [0, 1, 2])
    """
    gen = torch.Generator().manual_seed(seed)
    scales = {name: _scale(p) if p.is_floating_point() and p.numel() else 0.0 for name, p in params.items()}
    top = max((s for s in scales.values() if math.isfinite(s)), default=0.0) or 1.0
    memo = _NOISE[-1] if _NOISE else {}
    out: dict[str, torch.Tensor] = {}
    for j, (name, p) in enumerate(params.items()):
        if not p.is_floating_point():
            out[name] = p
            continue
        scale = _power_of_two(scales[name] if top / 10 <= scales[name] < math.inf else top)
        key = (seed, j, tuple(p.shape), p.device, p.dtype)
        if key in memo:  # the same levels: their values as made for the last module if of its scale (and not
            levels, buffer, made, version = memo[key]  # written since), else made over them (checked already)
            if made == scale and buffer._version == version:
                out[name] = buffer
                continue
            out[name] = buffer.copy_(levels).mul_(scale / _SPREAD)  # (a quarter of the time of one mixed-type mul)
        else:
            levels = _levels(tuple(p.shape), gen).to(p.device)
            out[name] = levels.to(p.dtype).mul_(scale / _SPREAD)
        memo[key] = levels, out[name], scale, out[name]._version
    return out


#: the most entries of a parameter :func:`_scale` reads
_SAMPLE = 4096


def _scale(p: torch.Tensor) -> float:
    """The root mean square of ``p``'s entries, read from at most :data:`_SAMPLE` of them evenly spaced (reading every
    entry of muse_spark's 3.1M expert weights took 1-2 ms a layer; the scale is rounded after, :func:`_power_of_two`).

    >>> round(_scale(torch.full((3, 5000), -0.5)), 6), _scale(torch.zeros(7)), round(_scale(torch.tensor([3.0, 4.0])), 6)
    (0.5, 0.0, 3.535534)
    """
    flat = p.detach().reshape(-1)
    sample = flat[::max(1, -(-flat.numel() // _SAMPLE))]
    return float(torch.linalg.vector_norm(sample.float())) / math.sqrt(sample.numel())


def _power_of_two(scale: float) -> float:
    """``scale`` rounded to the nearest power of two (in log scale; layers whose weights are of about the same scale
    share their random values, :func:`perturbed`); a scale that is not positive and finite: 1.

    >>> _power_of_two(0.02), _power_of_two(3.0), _power_of_two(0.0)
    (0.015625, 4.0, 1.0)
    """
    return 2.0 ** round(math.log2(scale)) if 0 < scale < math.inf else 1.0


def _levels(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Uniformly random int16 values (of mean about 0 and standard deviation :data:`_SPREAD`), four from each 64-bit
    draw: a quarter of the generator's work of ``randn`` (muse_spark's 3.1M expert weights: 11 → 3 ms).

    >>> x = _levels((256, 256), torch.Generator().manual_seed(0)).double() / _SPREAD
    >>> abs(float(x.mean())) < 0.02, abs(float(x.std()) - 1) < 0.02, x.unique().numel() > 30000
    (True, True, True)
    """
    n = math.prod(shape)
    draws = torch.randint(-(2 ** 63), 2 ** 63 - 1, (-(-n // 4),), dtype=torch.int64, generator=gen)
    return draws.view(torch.int16)[:n].view(shape)


#: the standard deviation of the 65,536 values of an int16 drawn uniformly
_SPREAD = math.sqrt((65536 ** 2 - 1) / 12)


#: the noise :func:`perturbed` drew within :func:`noise_shared` (and the values it last made of it, their scale and
#: version as made), innermost last
_NOISE: list[dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor, float, int]]] = []


#: what the checks :func:`agrees` passed under random parameters within :func:`noise_shared` were made of
#: (:func:`~ncd.trace.moe_same.made_of`), innermost last
_PASSED: list[list[list[Any]]] = []


@contextlib.contextmanager
def noise_shared() -> Iterator[None]:
    """Within the block, :func:`perturbed` draws the noise of each parameter's place and shape once (a model's layers of
    experts are checked on the same random parameters, each module's written over the last one's, or kept as they are
    where the scales are the same: a check is done with its parameters before the next one draws; the noise is let go
    after the block)."""
    _NOISE.append({})
    _PASSED.append([])
    try:
        yield
    finally:
        _NOISE.pop()
        _PASSED.pop()


def within(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Whether ``got`` is ``want`` up to rounding, at ``want``'s own scale: ``allclose`` in float64 at ``rtol`` 1e-4 and
    ``atol`` 1e-5 times the largest ``|want|`` (an absolute floor passed experts whose outputs are far below it: a
    kernel renormalising its routing weights, of outputs ~1e-6, was read as the weighted sum).  Two float32 tensors are
    compared in float32 first, within a bound ``2⁻²⁰`` of itself below that one (float32's rounding, ``2⁻²⁴`` of each
    value, cannot cross it): where every entry is within it, it is within in float64; else float64 decides (muse_spark:
    0.6 → 0.2 ms a comparison, and no first call of ``allclose``).

    >>> want = torch.tensor([1.0, -2.0, 1e-3, 0.0])
    >>> [within(want + torch.tensor(d), want) for d in ([1e-4, 0, 0, 0], [0, 0, 0, 2.1e-5], [0, 0, 0, 1.9e-5])]
    [True, False, True]
    """
    if torch.equal(got, want):
        return True
    scale = float(want.detach().abs().max()) if want.numel() else 0.0
    atol = 1e-5 * scale if math.isfinite(scale) else 0.0
    if got.dtype == want.dtype == torch.float32 and got.shape == want.shape and 1e-30 < atol < 1e30:
        bound = want.detach().abs().mul_(1e-4).add_(atol).mul_(1 - 2 ** -20)
        if bool(torch.sub(got.detach(), want.detach()).abs_().le_(bound).all()):
            return True
    return bool(torch.allclose(got.double(), want.double(), atol=atol, rtol=1e-4))


def _agree(got: Any, want: Any) -> bool:
    """Whether the dense reading's ``got`` is the module's ``want`` (of one case) up to rounding."""
    if not (isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor) and got.shape == want.shape
            and got.dtype == want.dtype):
        return False
    return within(got, want)


def _agree_at_once(module: torch.nn.Module, dense: Forward, cases: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                   traced: Any, later: list[Any] | None = None, first_traced: bool = False) -> bool:
    """:func:`agrees`' cases run in one call of each side, their tokens one after another, and each case's rows
    compared as :func:`agrees` compares that case: both sides compute each token from its own row (the module's
    kernel routes every token alone), so the rows are each case's results, at a fraction of the cost (the expert
    weights are read once, not once a case: muse_spark 77 → 57 ms for its two).  False, and the cases are run one
    at a time, wherever this does not hold or cannot run.  The traced case (``first_traced``: the first) is run alone
    on each side, as the model runs it (the module's own result known as ``traced``, or the dense reading's left to the
    caller with ``later``): a kernel may compute a token from the others of its call (a routing it special-cases, a
    capacity), where the traced case's rows among the random ones are not what the model computes (read densely,
    silently wrong)."""
    try:
        alone = cases[:1] if first_traced else []
        joined = cases[len(alone):]
        wants: list[Any] = [traced if traced is not None else module.forward(*case) for case in alone]
        gots: list[Any] = [None if later is not None else dense(*case) for case in alone]
        if joined:
            sizes = [int(case[0].shape[0]) for case in joined]
            got = dense(*[torch.cat([case[part] for case in joined]) for part in range(3)])
            want = module.forward(*[torch.cat([case[part] for case in joined]) for part in range(3)])
            if not (isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor)
                    and got.shape[:1] == want.shape[:1] == (sum(sizes),)):
                return False
            starts = [sum(sizes[:j]) for j in range(len(joined) + 1)]  # each case's first row in the joined calls
            gots += [got[a:b] for a, b in zip(starts, starts[1:])]
            wants += [want[a:b] for a, b in zip(starts, starts[1:])]
        if not all(g is None or _agree(g, w) for g, w in zip(gots, wants)):
            return False
        if later is not None:
            later[:] = [w for g, w in zip(gots, wants) if g is None]
        return True
    except Exception:  # noqa: BLE001 - cases one at a time, as ever
        return False


def _state(module: torch.nn.Module) -> list[tuple[Any, ...]]:
    """The tensors and numbers ``module`` and its submodules hold (where, what, its version and a copy of a buffer or
    plain tensor's values; parameters by version only), to tell whether a run of it wrote them (:func:`_put_state_back`)."""
    out: list[tuple[Any, ...]] = []
    for m in module.modules():
        for store in (m._parameters, m._buffers, vars(m)):
            for name, v in list(store.items()):
                if isinstance(v, torch.Tensor):
                    kept = None if store is m._parameters else v.detach().clone()
                    out.append((store, name, v, v._version, kept))
                elif type(v) in (int, float, bool) and store is vars(m):
                    out.append((store, name, v, None, None))
    return out


def _put_state_back(before: list[tuple[Any, ...]]) -> bool:
    """Whether the state read by :func:`_state` is unchanged; where it is not, it is put back (values and bindings)."""
    same = True
    with torch.no_grad():
        for store, name, v, version, kept in before:
            now = store.get(name)
            if isinstance(v, torch.Tensor):
                if now is not v or v._version != version:
                    same = False
                    if kept is not None and v._version != version:
                        v.copy_(kept)
                    store[name] = v
            elif type(now) is not type(v) or now != v:
                same = False
                store[name] = v
    return same
