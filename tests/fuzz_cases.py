"""Hostile diagram files for the fuzz test and the long fuzz run (``benchmarks/fuzz_untrusted.py``).

A case is a mutation of a *seed document* (the JSON of a gallery model or of a primitive's
sample) driven by one integer; :func:`run_case` loads it and, while it is accepted, lowers,
runs, costs, differentiates and draws it, exactly as a user of the public API would.  It
reports an :class:`Outcome`: which stage refused it with an ``ncd`` error, or the failure —
a non-``ncd`` exception, a hang (each case runs under a time limit), a memory blow-up (peak
resident memory) or a file written to the working directory.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import resource
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ncd
from ncd.errors import NCDError

#: Values a mutation may put anywhere: wrong types, extreme numbers, hostile text, tagged values.
POOL: list[Any] = [
    None, True, False, 0, -1, 1, 3, 2**20, 2**31, 10**30, -(10**30), 0.5, 1e308, float("inf"), float("nan"),
    "", "x", "b", "m", "ｘ", "W₁", "class", "sum", "\x1b[31mred", "\x00", "a" * 3000, "aten.from_file.default",
    "aten.fill_.Scalar", "aten.cumsum.default", "10**30", "0", "-1", "1/2", "x/0", "2**100000", "(((((((1)))))))",
    [], {}, [1, 2], {"tuple": []}, {"tuple": [1, "x"]}, {"size": "10**30"}, {"size": "0"}, {"size": "n"},
    {"axis": "b", "size": "2"}, {"axis": "q", "size": "100000"}, {"segment": []}, {"type": []},
]
NODE_KINDS = ["identity", "box", "seq", "par", "weave", "block", "repeat", "loop"]


def seed_documents(large: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The gallery's small models (``large``: and the transformer) and every primitive sample of the op database,
    as JSON documents."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for name in ("mlp", "attention", "multi_head_attention", "convolution") + (("transformer",) if large else ()):
        docs.append((name, json.loads(ncd.zoo.MODELS[name]().to_json())))
    from tests.opdb import SAMPLES, load

    load()
    for sample in SAMPLES:
        try:
            docs.append((sample.id, json.loads(sample.build().bind(**sample.sizes).to_json())))
        except NCDError:
            continue
    return docs


def _paths(x: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, (*path, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _paths(v, (*path, i))


def _get(x: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        x = x[p]
    return x


def mutate(doc: dict[str, Any], rng: random.Random, count: int) -> Any:
    """``count`` random mutations of a deep copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for _ in range(count):
        paths = list(_paths(doc))
        path = rng.choice(paths)
        if not path:
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        value = parent[key]
        move = rng.randrange(9)
        if move == 0:
            parent[key] = copy.deepcopy(rng.choice(POOL))
        elif move == 1 and isinstance(parent, dict):
            del parent[key]
        elif move == 1 and isinstance(parent, list) and parent:
            parent.pop(key)
        elif move == 2 and isinstance(parent, dict):
            parent[rng.choice(["extra", "colour", "sizes", "node", "op", "fields"])] = copy.deepcopy(rng.choice(POOL))
        elif move == 3:  # another subtree of the same document
            parent[key] = copy.deepcopy(_get(doc, rng.choice(paths)))
        elif move == 4 and isinstance(value, bool):
            parent[key] = not value
        elif move == 4 and isinstance(value, (int, float)):
            parent[key] = rng.choice([value * 1000, -value, value + 1, value * 2**20, 0])
        elif move == 4 and isinstance(value, str):
            strings = [v for p in paths if isinstance(v := _get(doc, p), str)]
            parent[key] = rng.choice([rng.choice(strings), value * 2, value + "\u0305", value.upper(), "10**9",
                                      f"{value}*{value}", value + " " + value])
        elif move == 5 and isinstance(parent, dict) and key == "node":
            parent[key] = rng.choice(NODE_KINDS)
        elif move == 6 and isinstance(parent, dict) and key == "op":
            from ncd.ir.primitive import PRIMITIVES

            parent[key] = rng.choice(sorted(PRIMITIVES))
        elif move == 7 and isinstance(value, list) and value:
            value.append(copy.deepcopy(rng.choice(value)))
        elif move == 8 and isinstance(value, dict) and "node" in value:  # nest it in blocks or a repetition
            parent[key] = rng.choice([{"node": "block", "name": "B", "body": value, "meta": {"tuple": []}},
                                      {"node": "repeat", "body": value, "var": "i", "start": "0",
                                       "stop": rng.choice(["3", "100000", "10**30", "N"]), "name": None}])
    return doc


class Hang(BaseException):
    """Raised by the timer when a case runs past its time limit (a BaseException: nothing may swallow it)."""


@dataclass
class Outcome:
    stage: str  # the stage that refused it with an ncd error, "ok" if all passed, or where it failed
    failure: str = ""  # "", "exception", "hang", "memory", "file"
    detail: str = ""


#: Public builders and the text arguments a hostile caller might give them.
BUILDERS: list[tuple[str, Callable[..., Any], int]] = [
    ("parse_type", ncd.parse_type, 1), ("Linear", ncd.Linear, 1), ("Einsum", ncd.Einsum, 1),
    ("Softmax", ncd.Softmax, 1), ("LayerNorm", ncd.LayerNorm, 1), ("Identity.of", ncd.Identity.of, 1),
    ("Copy", ncd.Copy, 1), ("Transpose", ncd.Transpose, 1), ("Scale", ncd.Scale, 1), ("Embedding", ncd.Embedding, 1),
    ("Concat", ncd.Concat, 1), ("Bind", ncd.Bind, 1), ("Index", ncd.Index, 1), ("Conv", ncd.Conv, 1),
    ("Sinusoidal", ncd.Sinusoidal, 1), ("Rename", ncd.Rename, 1),
]
TEXTS = ["m -> n", "a b -> b a", "y k, x k -> y x", "b t m", "m", "m:0", "m:-3", "m:1/2", "m:10**30", "m m -> n",
         "x -> ｘ", "W₁ -> L²", "ℓ", "(k h)", "~t m", "b t m, b s m", "m -> k h", "", " ", ",", "->", "a:2**2**2**2",
         "b (k h) -> b k h", "m:3 -> n:4", "\x1b[2J", "a" * 500, "0", "k**-0.5", "inf", "nan", "1e309"]


def build_case(seed: int) -> Callable[[], Any]:
    """Case ``seed`` of the builder fuzz: a public builder called with hostile text, sized and composed at random."""
    rng = random.Random(seed)
    calls = []
    for _ in range(rng.choice([1, 2, 3])):
        name, fn, _ = rng.choice(BUILDERS)
        arg = rng.choice(TEXTS + [v for v in POOL if isinstance(v, (str, int))])
        label = rng.choice([None, "x", "ｘ", "sum", "W₁", "\x07", "class"])
        calls.append((fn, arg, label))
    sizes = {k: rng.choice([1, 2, 3, 0, -1, 2**40]) for k in rng.sample(["m", "n", "k", "h", "a", "b", "t", "heads"], 3)}

    def build() -> Any:
        diagram = None
        for fn, arg, label in calls:
            try:
                part = fn(arg, name=label) if label is not None and fn in (ncd.Linear,) else fn(arg)
            except TypeError:  # the builder's own Python signature (e.g. a required second argument)
                part = fn(arg, arg)
            if not isinstance(part, ncd.Diagram):
                part = ncd.Identity(part) if isinstance(part, ncd.Type) else ncd.Identity.of("m")
            diagram = part if diagram is None else diagram >> part
        return diagram.bind(**sizes) if sizes else diagram

    return build


def _stages(text: str | Callable[[], Any]) -> Iterator[tuple[str, Callable[[], Any]]]:
    state: dict[str, Any] = {}
    load = (lambda: ncd.load_json(text)) if isinstance(text, str) else text
    yield "load", lambda: state.setdefault("d", load())

    def sizes() -> dict[str, int]:
        d = state["d"]
        return {str(s): 3 for s in d.free_symbols if str(s) not in dict(_defaults(d))}

    yield "types", lambda: (str(state["d"].dom), str(state["d"].cod), repr(state["d"]))
    yield "source", lambda: state["d"].to_source(**sizes())
    yield "lower", lambda: state.setdefault("m", state["d"].to_torch(**sizes()))
    yield "inputs", lambda: state.setdefault("x", state["d"].example_inputs(**sizes()))
    yield "run", lambda: state["m"](*state["x"])
    yield "cost", lambda: ncd.cost(state["d"], **sizes()).table()
    yield "backward", lambda: ncd.backward(state["d"])
    yield "draw", lambda: ncd.render.to_svg(state["d"])


def warm_up() -> None:
    """Import and initialise everything once, outside any time limit (a timer firing inside ``import torch``
    would leave it half imported)."""
    import torch  # noqa: F401

    d = ncd.zoo.mlp()
    d.to_torch()(*d.example_inputs())
    ncd.cost(d).table()
    ncd.backward(d)
    ncd.render.to_svg(d)


def _defaults(d: Any) -> tuple[tuple[str, int], ...]:
    return tuple(d.get("defaults", ())) if isinstance(d, ncd.Block) else ()


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(text: str | Callable[[], Any], time_limit: float = 10.0, memory_margin: int = 3 * 2**30) -> Outcome:
    """Drive ``text`` (or what a builder call returns) through the public API under a time limit, in the current
    directory (which must be empty)."""
    assert threading.current_thread() is threading.main_thread(), "the time limit needs the main thread"
    before = _rss()

    def expire(signum: int, frame: Any) -> None:
        raise Hang()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    stage = "load"
    outcome = Outcome("ok")
    try:
        with ncd.limits.override(memory=2**30):
            for stage, step in _stages(text):
                try:
                    step()
                except NCDError:
                    outcome = Outcome(stage)
                    break
    except Hang:
        outcome = Outcome(stage, "hang", f"more than {time_limit} s")
    except RecursionError as error:
        outcome = Outcome(stage, "exception", f"RecursionError: {str(error)[:200]}")
    except MemoryError:
        outcome = Outcome(stage, "memory", "MemoryError")
    except Exception as error:  # noqa: BLE001 - exactly what the fuzz test counts
        outcome = Outcome(stage, "exception", f"{type(error).__name__}: {str(error)[:300]}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if not outcome.failure and _rss() - before > memory_margin:
        outcome = Outcome(stage, "memory", f"peak resident memory grew by {(_rss() - before) / 2**30:.1f} GiB")
    written = os.listdir(".")
    if written and not outcome.failure:
        outcome = Outcome(stage, "file", f"wrote {written[:5]}")
    return outcome


def case_text(docs: list[tuple[str, dict[str, Any]]], seed: int) -> tuple[str, str]:
    """The seed document's name and the hostile text of case ``seed``."""
    rng = random.Random(seed)
    name, doc = docs[rng.randrange(len(docs))]
    mutated = mutate(doc, rng, rng.choice([1, 1, 2, 3, 5]))
    return name, json.dumps(mutated, ensure_ascii=rng.random() < 0.5, allow_nan=True)


def percent(part: int, whole: int) -> str:
    return f"{100 * part / max(whole, 1):.1f}%" if not math.isnan(part) else "-"
