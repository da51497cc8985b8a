"""``ncd decode``: what a causal model costs to serve, token by token, as a table.

    ncd decode gpt2 --prompt 128 --context 1000
    ncd decode llama-3.1-8b --dtype bfloat16 --context 8192 --peak-flops 989e12 --bandwidth 3.35e12
    ncd decode model.json --size N=4 --cache-dtype int8

Per layer and for the whole model: FLOPs of a prefill of ``--prompt`` tokens and of one step after
``--context`` cached positions, cache bytes per token and at that context length, bytes a step reads
(weights and cache), arithmetic intensity, and — given a machine — whether a step is compute- or
memory-bound.
"""

from __future__ import annotations

import argparse
from typing import Any

from ncd.cli import load_diagram, parse_sizes

__all__ = ["add_arguments", "run", "decode_table", "DEFAULT_CONTEXT"]

#: cached positions before the step when ``--context`` is not given (capped by the model's position table)
DEFAULT_CONTEXT = 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ncd.inference.examples import PRESETS

    parser.add_argument("model", help=f"a zoo model, a preset ({', '.join(PRESETS)}) or a diagram JSON file")
    parser.add_argument("--size", action="append", default=[], metavar="K=V", help="bind an axis size (repeatable)")
    parser.add_argument("--prompt", type=int, default=None, help="prompt length of the prefill (default: the model's t)")
    parser.add_argument("--context", type=int, default=None,
                        help=f"cached positions before the step (default {DEFAULT_CONTEXT}, or fewer if the model's"
                             " position table holds fewer)")
    parser.add_argument("--dtype", default="bfloat16", help="element type of weights and caches (default bfloat16)")
    parser.add_argument("--cache-dtype", default=None, help="element type of the caches (default: --dtype)")
    parser.add_argument("--tokens", default=None, help="the token axis (default: the item axis of the first input)")
    parser.add_argument("--hierarchy", default=None, help="a memory-hierarchy preset (e.g. h100) for the verdict")
    parser.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s for the roofline verdict")
    parser.add_argument("--bandwidth", type=float, default=None, help="memory bandwidth in bytes/s for the verdict")
    parser.add_argument("--formulas", action="store_true", help="also print cache bytes per token as formulas")


def _load(target: str, sizes: dict[str, int]) -> Any:
    from ncd.inference.examples import PRESETS

    if target in PRESETS:
        return PRESETS[target](**sizes)  # type: ignore[operator]
    return load_diagram(target, sizes)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    import ncd
    from ncd.inference.costs import roofline_for
    from ncd.inference.policy import Policy

    sizes = parse_sizes(args.size)
    diagram = _load(args.model, sizes)
    decoding = ncd.decode(diagram, tokens=args.tokens)
    roofline = roofline_for(args.hierarchy, args.peak_flops, args.bandwidth, args.dtype)
    policy = Policy(default=args.dtype, cache=args.cache_dtype)
    bound = {**sizes} if args.prompt is None else {**sizes, decoding.token: args.prompt}
    if args.context is not None:
        costs = decoding.costs(policy=policy, roofline=roofline, **bound, c=args.context)
    else:
        costs = _default_context_costs(decoding, policy, roofline, bound)
    console = Console()
    console.width = max(console.width, 120)  # the numbers are long; a pipe's 80 columns would cut them
    console.print(decode_table(decoding, costs, policy))
    if args.formulas:
        console.print(f"cache bytes per token = {decoding.cache_formula()}   (q = bytes per element)", highlight=False)
        console.print(f"per layer = {decoding.cache_formula('layer')}", highlight=False)
    return 0


def _default_context_costs(decoding: Any, policy: Any, roofline: Any, bound: dict[str, int]) -> Any:
    """Costs at :data:`DEFAULT_CONTEXT` cached positions, or at the most the model allows below it.

    A learned position table of ``n`` rows lets a step read positions up to ``n - 1`` only (GPT-2: 1023 cached
    positions); the largest context that holds is found by bisection, since the bound is the model's own.
    """
    from ncd.errors import NCDError

    def attempt(c: int) -> Any:
        try:
            return decoding.costs(policy=policy, roofline=roofline, **bound, c=c)
        except NCDError:
            return None

    costs = attempt(DEFAULT_CONTEXT)
    if costs is not None:
        return costs
    low, high = 1, DEFAULT_CONTEXT  # attempt(high) fails; find the largest low that holds
    best = attempt(low)
    if best is None:
        return decoding.costs(policy=policy, roofline=roofline, **bound, c=DEFAULT_CONTEXT)  # raises the real error
    while high - low > 1:
        mid = (low + high) // 2
        if (found := attempt(mid)) is not None:
            low, best = mid, found
        else:
            high = mid
    return best


def _bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def decode_table(decoding: Any, costs: Any, policy: Any) -> Any:
    """A ``rich`` table: one row per repeated layer and the whole model, prefill and step."""
    from rich.table import Table

    t, c = costs.sizes.get(decoding.token), costs.sizes["c"]
    title = f"{getattr(decoding.diagram, 'name', 'model')}: prefill of {t} tokens, step after {c} cached positions"
    table = Table(title=title)
    for column in ("", "prefill FLOPs", "step FLOPs", "cache / token", f"cache at {c}"):
        table.add_column(column, justify="right" if column else "left", no_wrap=True)
    per_layer = policy.cache_bytes_per_layer(decoding, **costs.sizes)
    for name, flops in costs.layers.items():
        count = _count(decoding, name)
        prefill_layer = costs.prefill_layers.get(name.replace("Step/", "Prefill/"), 0)
        table.add_row(f"{name.split('/')[-1]} (one of {count})", f"{prefill_layer:,}", f"{flops:,}",
                      _bytes(float(per_layer)), _bytes(float(costs.cache_read_bytes) / max(count, 1)))
    table.add_row("model", f"{costs.prefill_flops:,}", f"{costs.step_flops:,}", _bytes(float(costs.cache_per_token)),
                  _bytes(float(costs.cache_read_bytes)), style="bold")
    table.caption = (
        f"step reads {_bytes(float(costs.step_bytes))} (weights {_bytes(float(costs.weight_bytes))} + cache"
        f" {_bytes(float(costs.cache_read_bytes))}); intensity {costs.intensity:.2f} FLOP/B"
        + (f"; {costs.bound}-bound on {costs.roofline.name} (ridge {costs.roofline.ridge:.0f} FLOP/B,"
           f" {costs.step_seconds * 1e3:.3f} ms/step)" if costs.roofline else "; give --hierarchy or --peak-flops"
           " and --bandwidth for the verdict")
        + f"; {policy.describe()}"
        + (f"; recurrent state {_bytes(float(_state(decoding, policy, costs)))} per sequence (in the cache column:"
           " it does not grow per token)" if any(s.is_state for s in decoding.sites) else "")
    )
    return table


def _state(decoding: Any, policy: Any, costs: Any) -> Any:
    return decoding.state_bytes(dtype=policy.cache or policy.default, **costs.sizes)


def _count(decoding: Any, name: str) -> int:
    from ncd.inference.costs import _repeat_count

    return _repeat_count(decoding, name.split("/")[-1])
