"""Mixtures of experts: the experts' kernel plumbing drawn as a weighted sum over an expert axis.

A library runs its experts however it likes — sorting tokens by expert and a grouped GEMM
(``sort``, ``histc``, ``cumsum``, ``_grouped_mm``, ``index_put``), a batched GEMM, a loop — but
what it computes from the tokens ``x`` (``t m``), the router's chosen experts ``i`` (``t k``, in
``[e]``) and their weights ``w`` (``t k``) is::

    y[t, m] = Σ_k w[t, k] · expert_{i[t, k]}(x[t])[m]
            = Σ_e G[t, e] · expert_e(x[t])[m],   G[t, e] = Σ_k w[t, k] · [i[t, k] = e]

with every expert the same gated MLP over weights that carry an expert axis ``e``:
``expert_e(x) = (act(x W_gate[e]ᵀ) ⊙ x W_up[e]ᵀ) W_down[e]ᵀ``.  :func:`prepare` finds a module
whose parameters carry a leading expert axis, reads the three tensors it receives from the
recording and its one result, and re-runs the recorded operations on the traced values and on
random tokens, experts and weights: only if they equal this sum every time (for one of the
usual weight layouts and activations) is the module drawn as it — the gate ``G`` (a gather
from the identity on ``e``, weighted by ``w``), the experts as einsums with ``e`` on their
learned weights, and the weighted sum over ``e``.  The router before it (linear, softmax,
top-k) is drawn by the ordinary rules.  Anything else stays as recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ncd.trace.capture import Node, refs
from ncd.trace.convert import Converter, op_name
from ncd.trace.moe_emit import _emitter
from ncd.trace.moe_proof import noise_shared

__all__ = ["prepare", "Experts"]

#: activations an expert may use, as torch computes them (the value check picks the one that agrees)
ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu,
    "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"), "relu": torch.relu,
    "relu2": lambda x: torch.square(torch.relu(x)),
}


@dataclass
class Experts:
    """A recognised experts call: ``out = Σ_e G[t, e] · expert_e(x)``."""

    path: str
    x: Node
    index: Node
    weight: Node
    out: Node
    members: list[Node]
    layout: str  # "gate_up" (W1: e 2f m, chunked gate|up), "gate_up_t" (W1: e m 2f), "plain" (W1: e f m, no gate)
    act: str
    params: list[tuple[str, torch.Tensor]]  # (state-dict name, value): the input projection(s), then the output one


def prepare(conv: Converter) -> dict[int, Callable[[Converter, Node], None]]:
    """Find experts calls; skip their recorded operations and return an emitter for each call's result node."""
    if conv.model is None:
        return {}
    by_path = _candidates(conv)
    emitters: dict[int, Callable[[Converter, Node], None]] = {}
    taken: set[int] = set()
    with noise_shared():  # (the random parameters of layers of the same shapes drawn once)
        for path, members in by_path.items():
            if any(id(n) in taken for n in members):
                continue
            try:
                module = conv.submodule(path)
            except AttributeError:
                continue
            found = _recognise(conv, path, module, members)
            if found is None:
                continue
            taken |= {id(n) for n in members}
            conv.skip |= {id(n) for n in members if n is not found.out}
            emitters[id(found.out)] = _emitter(found)
    for path, members in by_path.items():
        if path and not any(id(n) in taken for n in members):
            emitters.update(_expert_names(conv, path, members))
    return emitters


def _candidates(conv: Converter) -> dict[str, list[Node]]:
    """The calls made inside each module (by path, in the recording's order) that may hold experts: its own parameters
    may carry an expert axis (:func:`_maybe_experts`), or it has a dense reading.  For every other module
    :func:`_recognise` finds nothing and :func:`_expert_names` names nothing, so their calls are not gathered."""
    from ncd.trace.moe_readings import dense_reading

    paths: dict[str, None] = {}  # every module path called, in the order of its first call
    last: tuple[tuple[str, str], ...] | None = None
    for n in conv.captured.nodes:
        if n.kind == "call" and n.stack != last:  # (consecutive calls mostly share their stack)
            last = n.stack
            for path, _ in last:
                paths[path] = None
    wanted: set[str] = set()
    for path in paths:
        try:
            module = conv.submodule(path)
        except AttributeError:
            continue
        if _maybe_experts(module) or (path and dense_reading(module) is not None):
            wanted.add(path)
    by_path: dict[str, list[Node]] = {path: [] for path in paths if path in wanted}
    if by_path:
        for n in conv.captured.nodes:
            if n.kind == "call":
                for path, _ in n.stack:
                    if path in by_path:
                        by_path[path].append(n)
    return by_path


def _maybe_experts(module: torch.nn.Module) -> bool:
    """False only when :func:`_expert_params` is ``None`` for ``module``, told from its own parameter table without
    torch's generator (asked through it when its class collects parameters another way)."""
    table = module.__dict__.get("_parameters")
    cls = type(module)
    if (not isinstance(table, dict) or cls.named_parameters is not torch.nn.Module.named_parameters
            or cls._named_members is not torch.nn.Module._named_members):
        return _expert_params(module) is not None
    params = [p for p in table.values() if p is not None]
    return bool(params) and all(p.dim() == 3 and p.is_floating_point() for p in params)


def _expert_names(conv: Converter, path: str, members: list[Node]) -> dict[int, Callable[[Converter, Node], None]]:
    """For experts read densely (:mod:`ncd.trace.moe_dense`), the einsums reading their weights (``e …``) and the read of
    the identity on the experts (``e e``) take them with the expert axis named ``e``, then run their ordinary rule: the
    experts' outputs, their biases and the gate meet on one wire ``e`` (by size alone it could be the heads' name)."""
    from ncd.trace.moe_readings import dense_reading

    assert conv.model is not None
    try:
        module = conv.submodule(path)
    except AttributeError:
        return {}
    if dense_reading(module) is None:
        return {}
    sizes = {int(p.shape[0]) for _, p in module.named_parameters(recurse=False)}
    if len(sizes) > 1:
        return {}
    experts = sizes.pop() if sizes else len(list(module.children()))
    prefix = f"{path}."

    def expert_tensor(r: Node) -> bool:
        t = r.value
        if not isinstance(t, torch.Tensor) or r.live or t.device.type == "meta" or not t.dim() or t.shape[0] != experts:
            return False
        if r.kind == "parameter":
            return r.source.startswith(prefix) and "." not in r.source[len(prefix):]
        return tuple(t.shape) == (experts, experts) and torch.equal(t, torch.eye(experts, dtype=t.dtype))

    emitters: dict[int, Callable[[Converter, Node], None]] = {}
    for n in members:
        read = [r for r in refs((n.args, n.kwargs)) if expert_tensor(r)]
        if read and n.live and op_name(n.target)[0] in ("aten.einsum", "aten.index"):  # others name them by their input
            emitters[id(n)] = _named_reads(read, experts)
    return emitters


def _named_reads(read: list[Node], experts: int) -> Callable[[Converter, Node], None]:
    def emit(conv: Converter, node: Node) -> None:
        from ncd.ir.rules import IMPORT
        from ncd.trace.convert import RULES, Decline
        from ncd.trace.naming import PRIME

        e = conv.namer.claim("e", experts)
        for r in read:
            if id(r) in conv.values:
                continue
            if r.kind == "parameter":
                conv.bind(r, conv.value(r, [e, *(conv.namer.fresh(int(s)) for s in r.value.shape[1:])]))
            else:  # the identity on the experts, drawn under its name
                identity = Node("experts_identity", "constant", value=r.value, source="identity")
                conv.bind(r, conv.value(identity, [e + PRIME, e]))
                conv.bind(identity, conv.values[id(r)])  # kept alive with its value (ids stay unique), and
                conv.forget(identity)  # unbound: read by no other node, the layer's walk stays copyable
        name = op_name(node.target)[0]
        fn = RULES.get(name) or IMPORT.get(name)
        if fn is None:
            raise Decline(f"no rule for {name}")
        fn(conv, node)

    return emit



def _expert_params(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]] | None:
    params: list[tuple[str, torch.Tensor]] = [(name, p) for name, p in module.named_parameters(recurse=False)]
    if not params or any(p.dim() != 3 or not p.is_floating_point() for _, p in params):
        return None
    experts = {int(p.shape[0]) for _, p in params}
    # (one expert too, as HunYuan's tiny config has: the value check proves the reading all the same)
    return params if len(experts) == 1 and experts.pop() >= 1 else None


def _recognise(conv: Converter, path: str, module: torch.nn.Module, members: list[Node]) -> Experts | None:
    params = _expert_params(module)
    if params is None or len(params) not in (2, 3):
        return None
    inside = {id(n) for n in members}
    outside: dict[int, Node] = {}
    for n in members:
        for r in refs((n.args, n.kwargs)):
            if id(r) not in inside and r.live and isinstance(r.value, torch.Tensor):
                outside[id(r)] = r
    results = [n for n in members if any(id(c) not in inside for c in conv.consumers.get(id(n), []))
               or any(o is n for o in conv.captured.outputs)]
    if len(outside) != 3 or len(results) != 1:
        return None
    floats = [r for r in outside.values() if r.value.is_floating_point()]
    ints = [r for r in outside.values() if not r.value.is_floating_point() and r.value.dtype != torch.bool]
    if len(floats) != 2 or len(ints) != 1:
        return None
    (index,) = ints
    if index.value.dim() != 2:
        return None
    tokens, k = (int(s) for s in index.value.shape)
    x = next((f for f in floats if f.value.dim() == 2 and f.value.shape[0] == tokens and tuple(f.value.shape) != (tokens, k)),
             None)
    weight = next((f for f in floats if f is not x and tuple(f.value.shape) == (tokens, k)), None)
    out = results[0]
    if x is None or weight is None or tuple(out.value.shape) != tuple(x.value.shape):
        return None
    order = {id(n): j for j, n in enumerate(conv.captured.nodes)}
    members = sorted(members, key=lambda n: order.get(id(n), 0))
    prefix = f"{path}." if path else ""
    named = [(prefix + name, p.detach()) for name, p in params]
    doubles = [p.double() for _, p in named]  # (read by every layout and activation tried)
    for layout in _layouts(named, int(x.value.shape[1])):
        for act in ACTS:
            if _agrees(members, x, index, weight, out, named, layout, act, doubles):
                return Experts(path, x, index, weight, out, members, layout, act, named)
    return None


def _layouts(params: list[tuple[str, torch.Tensor]], m: int) -> list[str]:
    shapes = [tuple(int(s) for s in p.shape[1:]) for _, p in params]
    found = []
    if len(params) == 2:
        (a, b), (c, d) = shapes
        if b == m and a % 2 == 0 and (c, d) == (m, a // 2):
            found.append("gate_up")
        if a == m and b % 2 == 0 and (c, d) == (b // 2, m):
            found.append("gate_up_t")
        if b == m and (c, d) == (m, a):
            found.append("plain")
    elif len(params) == 3 and shapes[0] == shapes[1] and shapes[0][1] == m and shapes[2] == (m, shapes[0][0]):
        found.append("gate_and_up")
    return found


def dense(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, params: list[tuple[str, torch.Tensor]],
          layout: str, act: str) -> torch.Tensor:
    """``Σ_e G[t, e] · expert_e(x)`` computed densely (every expert on every token), in float64."""
    return _dense(x, index, weight, [p.double() for _, p in params], layout, act)


def _dense(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, w: list[torch.Tensor], layout: str,
           act: str) -> torch.Tensor:
    """:func:`dense` of the parameters ``w`` in float64 already."""
    experts = int(w[0].shape[0])
    x = x.double()
    gate = torch.einsum("tk,tke->te", weight.double(), torch.nn.functional.one_hot(index.long(), experts).double())
    fn = ACTS[act]
    if layout == "gate_up":
        h = torch.einsum("tm,egm->teg", x, w[0])
        g, u = h.chunk(2, dim=-1)
        h = fn(g) * u
    elif layout == "gate_up_t":
        h = torch.einsum("tm,emg->teg", x, w[0])
        g, u = h.chunk(2, dim=-1)
        h = fn(g) * u
    elif layout == "gate_and_up":
        h = fn(torch.einsum("tm,efm->tef", x, w[0])) * torch.einsum("tm,efm->tef", x, w[1])
    else:
        h = fn(torch.einsum("tm,efm->tef", x, w[0]))
    y = torch.einsum("tef,efm->tem" if layout == "gate_up_t" else "tef,emf->tem", h, w[-1])
    return torch.einsum("te,tem->tm", gate, y)


def _agrees(members: list[Node], x: Node, index: Node, weight: Node, out: Node, params: list[tuple[str, torch.Tensor]],
            layout: str, act: str, doubles: list[torch.Tensor] | None = None) -> bool:
    """The recorded operations, re-run on the traced values and on random ones, equal :func:`dense` every time
    (``doubles``: the parameters in float64, if made already).  The sum is computed once for the random cases
    together (it computes each token from its own row); the recorded operations, of the traced shapes, once a case.
    Where the three random cases leave an expert unchosen, more cases route every expert
    (:func:`~ncd.trace.moe_proof._routes`): a kernel wrong on an expert no token chose was read as the sum."""
    from ncd.trace.live_masks import _run
    from ncd.trace.moe_proof import within

    tokens, k = (int(s) for s in index.value.shape)
    experts = int(params[0][1].shape[0])
    if k > experts:
        return False
    w = doubles if doubles is not None else [p.double() for _, p in params]
    gen = torch.Generator().manual_seed(0)
    traced = [x.value, index.value, weight.value]  # recorded on the meta device (a large model): random values only
    cases = 3
    chosen = torch.rand((cases * tokens, experts), generator=gen).argsort(dim=1)[:, :k]
    xs = (2 * torch.randn((cases * tokens, *x.value.shape[1:]), generator=gen)).to(x.value.dtype)
    ws = torch.rand((cases * tokens, k), generator=gen).to(weight.value.dtype)
    # more cases routing every expert where these leave one out: a kernel wrong on an expert no token chose was read
    # as the sum (32 experts, 1 per token, 2 traced tokens)
    if int(torch.bincount(chosen.flatten(), minlength=experts).count_nonzero()) < experts:
        from ncd.trace.moe_proof import _routes

        cover = -(-experts // k)  # the fewest tokens choosing every expert
        more = -(-cover // tokens)  # cases of the traced number of tokens (the kernel's shapes)
        chosen = torch.cat([chosen, _routes(experts, k, more * tokens, False, gen)])
        xs = torch.cat([xs, (2 * torch.randn((more * tokens, *x.value.shape[1:]), generator=gen)).to(x.value.dtype)])
        ws = torch.cat([ws, torch.rand((more * tokens, k), generator=gen).to(weight.value.dtype)])
        cases += more
    # contiguous, as a router's top-k indices are: a kernel may view them (``index.view(-1)``), which a column slice
    # of ``argsort`` does not allow (the check failed, and the experts stayed opaque: mixtral under a padded mask)
    chosen = chosen.to(index.value.dtype).contiguous()

    def same(got: object, want: torch.Tensor) -> bool:
        return isinstance(got, torch.Tensor) and got.shape == want.shape and within(got, want)

    try:
        if not any(v.device.type == "meta" for v in traced) and not same(
                _run(members, {id(x): traced[0], id(index): traced[1], id(weight): traced[2]}, until=out),
                _dense(traced[0], traced[1], traced[2], w, layout, act)):
            return False
        want = _dense(xs, chosen, ws, w, layout, act)
        for j in range(0, cases * tokens, tokens):
            got = _run(members, {id(x): xs[j:j + tokens], id(index): chosen[j:j + tokens], id(weight): ws[j:j + tokens]},
                       until=out)
            if not same(got, want[j:j + tokens]):
                return False
        # the first case's tokens again, scaled so the experts' first projections have a root mean square of 3: with
        # weights of std 0.02 (transformers' initialisation) 2·randn tokens give projections of about 0.2, where gelu and
        # its tanh approximation agree to 1e-7 and the first of ACTS was read (a gelu_tanh expert drawn as gelu)
        first = _projections(xs[:tokens].double(), w, layout)
        rms = float(first.square().mean().sqrt()) if first.numel() else 0.0
        if 0 < rms < math.inf:
            scaled = (xs[:tokens].double() * (_ACTIVE / rms)).to(x.value.dtype)
            got = _run(members, {id(x): scaled, id(index): chosen[:tokens], id(weight): ws[:tokens]}, until=out)
            if not same(got, _dense(scaled, chosen[:tokens], ws[:tokens], w, layout, act)):
                return False
        return _agrees_perturbed(members, x, index, weight, out, params, layout, act, gen)
    except Exception:  # noqa: BLE001 - operations that cannot be re-run: not recognised
        return False


def _agrees_perturbed(members: list[Node], x: Node, index: Node, weight: Node, out: Node,
                      params: list[tuple[str, torch.Tensor]], layout: str, act: str, gen: torch.Generator) -> bool:
    """:func:`_agrees` on random cases routing every expert, with every parameter the recorded operations read replaced
    by random values of its scale (:func:`~ncd.trace.moe_proof.perturbed`; one parameter read twice, the same values):
    a model as built has zero biases and small weights, where a term the sum leaves out (a bias of the experts' own, a
    parameter of a submodule) vanishes, and the kernel was drawn as the sum, silently wrong once trained."""
    from ncd.trace.live_masks import _run
    from ncd.trace.moe_proof import _routes, covering, perturbed, within

    read: dict[tuple[object, ...], list[Node]] = {}  # the parameters read, by the memory they view (one may be read
    for n in members:                                     # by several nodes, or under another module's name)
        for r in refs((n.args, n.kwargs)):
            if r.kind == "parameter" and isinstance(r.value, torch.Tensor) and not any(q is r for q in read.get(_key(r.value), [])):
                read.setdefault(_key(r.value), []).append(r)
    if any(_key(p) not in read for _, p in params) or any(r.value.device.type == "meta" for rs in read.values() for r in rs):
        return False  # (a parameter of the sum the operations do not read as such: not proven)
    keys = list(read)
    other = perturbed({str(j): read[key][0].value for j, key in enumerate(keys)})
    given = {id(r): other[str(j)] for j, key in enumerate(keys) for r in read[key]}
    mine = [other[str(keys.index(_key(p)))].double() for _, p in params]
    tokens, k = (int(s) for s in index.value.shape)
    experts = int(params[0][1].shape[0])
    count = covering(experts, k, tokens)  # cases of the traced number of tokens routing every expert
    chosen = _routes(experts, k, count * tokens, False, gen).to(index.value.dtype).contiguous()
    xs = (2 * torch.randn((count * tokens, *x.value.shape[1:]), generator=gen)).to(x.value.dtype)
    ws = torch.rand((count * tokens, k), generator=gen).to(weight.value.dtype)
    want = _dense(xs, chosen, ws, mine, layout, act)
    for j in range(0, count * tokens, tokens):
        got = _run(members, {**given, id(x): xs[j:j + tokens], id(index): chosen[j:j + tokens], id(weight): ws[j:j + tokens]},
                   until=out)
        if not (isinstance(got, torch.Tensor) and got.shape == want[j:j + tokens].shape and within(got, want[j:j + tokens])):
            return False
    return True


def _key(t: torch.Tensor) -> tuple[object, ...]:
    """The memory a tensor views (the same for a parameter and its detached copies)."""
    return t.data_ptr(), tuple(t.shape), t.stride(), t.dtype


#: The root mean square of the experts' first projections on the scaled case of :func:`_agrees`: where the
#: activations of :data:`ACTS` part from one another (gelu and gelu_tanh by up to 5e-4 near 2)
_ACTIVE = 3.0


def _projections(x: torch.Tensor, w: list[torch.Tensor], layout: str) -> torch.Tensor:
    """The experts' first projections of the tokens ``x`` (every expert), as :func:`_dense` computes them."""
    return torch.einsum("tm,emg->teg" if layout == "gate_up_t" else "tm,efm->tef", x, w[0])
