"""How the import corpus (``benchmarks/import_corpus.py``) times ncd against torchview: each tool's first call on a
model, taken several times, alternately, and reported by its median run.

One run per tool cannot tell whether a model is within issue 11's targets (at most 1.5× torchview on the 2-layer toys,
at most 1× from 12 layers up): torchview's own time on one model moved by up to 30 % between two corpus runs (stop 47:
canine 138 → 93 ms), ncd's by up to 15 %.  So each tool's first call is timed ``k`` times and the median run counts.

*First call*, repeated: every run of a tool is a process of its own, forked from the model's process after the model
was built and run (:func:`import_corpus._child`).  Each run starts from that same state — a copy of the same model
instance, as built and run, never seen by the tool in that process — and repeats the tool's part of the warm-up before
it is timed; whatever a run leaves behind (hooks, caches in the model, the tool's own caches) ends with its process.
Both tools are treated alike, and the runs alternate: ncd's first (its checks follow it), torchview's first (and its
second call), then rounds of one run of each, torchview first in odd rounds and ncd first in even ones.

How many runs (``k``, odd, the same for both tools): :func:`repeat` adds two rounds when their estimated cost (the
first runs' times plus :data:`OVERHEAD` a round) is at most :data:`FIRST_BUDGET`; while the median ratio so far is near
the model's target (:data:`NEAR` × 1.5, or × 1 from :data:`corpus_shrink.DEPTH` layers up), two more at a time as long
as all its repeats stay within :data:`NEAR_BUDGET`, up to :data:`MOST` runs.  Cheap models get more runs than expensive
ones, and models whose verdict the noise could change get the most; a model far from its target (or whose first runs
cost more than the budget: the 12-layer models whose torchview time is seconds) keeps fewer.  ``fixed`` asks for a
number of runs instead (``import_corpus.py --repeats``; 1: one run each, as before stop 48).
"""

from __future__ import annotations

import math
import os
import pickle
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from corpus_shrink import DEPTH

#: CPU seconds (the model's process and the runs' processes): two more rounds for every model when they are estimated to
#: cost at most this
FIRST_BUDGET = 1.5
#: CPU seconds all repeats of one model may cost when its ratio is near its target (over the stop-47 corpus, the
#: repeats add about 10 minutes of CPU summed over the models, ~5 minutes of a run with ``-j 2``)
NEAR_BUDGET = 3.0
#: the most runs of each tool
MOST = 7
#: "near its target": a median ratio in [low × target, high × target]
NEAR = (0.8, 1.25)
#: CPU seconds a round costs beside the timed calls (two forked processes, their page copies and exits, each tool's part
#: of the warm-up: ~0.07 s ncd, ~0.03 s torchview and its ``dot``; 0.16 s measured on torch.gpt_kv_cache), for the first
#: estimate; later rounds are estimated from the rounds measured
OVERHEAD = 0.16
#: CPU seconds: torchview is not called a second time on a model whose first call took longer (11 of 663 models at stop
#: 47, each 30× to 1000× ncd's time; kosmos-2's second call alone was 163 s): that time pays for the repeated first calls
SECOND_CALL_UP_TO = 5.0
#: a round is started only with this many seconds of the model's time limit left beyond three times its estimate
MARGIN = 10.0


@dataclass
class Runs:
    """Each tool's runs on one model, in the order they ran (``nan``: that run failed)."""
    trace: list[float] = field(default_factory=list)
    draw: list[float] = field(default_factory=list)
    torchview: list[float] = field(default_factory=list)
    #: what the runs after the first cost on :func:`repeat`'s clock (the corpus: CPU seconds)
    spent: float = 0.0

    def ours(self) -> list[float]:
        return [t + d for t, d in zip(self.trace, self.draw)]


def target(layers: int) -> float:
    """Issue 11's bound on trace+draw / torchview for a model of ``layers`` layers (1.5 for the toys, 1 from 12 up)."""
    return 1.0 if layers >= DEPTH else 1.5


def median_run(times: Sequence[float]) -> int | None:
    """The index of the median run among those that did not fail (the lower of the two middle ones for an even count),
    or ``None`` when every run failed.

    >>> median_run([0.30, 0.10, 0.20]), median_run([0.4, math.nan, 0.1, 0.3, 0.2]), median_run([math.nan])
    (2, 4, None)
    """
    finite = [(t, i) for i, t in enumerate(times) if t == t]
    if not finite:
        return None
    return statistics.median_low(finite)[1]


def ratio(runs: Runs) -> float:
    """The median of ncd's runs over the median of torchview's (``nan`` when either has none)."""
    i, j = median_run(runs.ours()), median_run(runs.torchview)
    if i is None or j is None or not runs.torchview[j]:
        return math.nan
    return runs.ours()[i] / runs.torchview[j]


def repeat(runs: Runs, ours: Callable[[], tuple[float, float] | None], theirs: Callable[[], float] | None, goal: float,
           left: Callable[[], float], fixed: int = 0, clock: Callable[[], float] = time.monotonic) -> Runs:
    """Adds rounds to ``runs`` (which hold each tool's first run): ``ours()`` times one more first call of ncd
    (trace, draw; ``None`` if it failed), ``theirs()`` one of torchview (``None``: torchview is not timed); ``goal``
    is the model's target ratio, ``left()`` the seconds left of its time limit, ``fixed`` a number of runs to take
    instead of choosing (see the module's docstring), ``clock`` the clock the budgets are counted on (the corpus: CPU
    seconds of the model's process and the runs' processes, so that a loaded machine does not change ``k``)."""
    if not runs.ours() or runs.ours()[0] != runs.ours()[0]:
        return runs  # ncd's first run failed (its drawing, say): nothing to repeat
    estimate = (runs.ours()[0] if runs.trace else 0.0) + (runs.torchview[0] if theirs and runs.torchview else 0.0)
    estimate = (estimate if estimate == estimate else 0.0) + OVERHEAD
    spent, rounds = 0.0, 0
    while True:
        done = 1 + rounds
        if fixed:
            if done >= fixed:
                break
        else:
            near = NEAR[0] * goal <= ratio(runs) <= NEAR[1] * goal
            budget = NEAR_BUDGET if near else FIRST_BUDGET if rounds == 0 else 0.0
            if done >= MOST or spent + 2 * estimate > budget:
                break
        if left() < 3 * 2 * estimate + MARGIN:
            break
        start, batch = clock(), 2 if not fixed or fixed - done >= 2 else 1
        for _ in range(batch):
            rounds += 1
            for ncd in ((False, True) if rounds % 2 else (True, False)):  # torchview first in odd rounds
                if ncd:
                    got = ours()
                    runs.trace.append(got[0] if got else math.nan)
                    runs.draw.append(got[1] if got else math.nan)
                elif theirs is not None:
                    runs.torchview.append(theirs())
        spent += clock() - start
        runs.spent = spent
        estimate = (clock() - start) / batch
    return runs


def apply(result: Any, runs: Runs) -> None:
    """``result`` (an ``import_corpus.Result``) takes the runs and, as its times, ncd's median run (its trace and draw
    times, so that ``trace_s + draw_s`` is the median of trace+draw) and torchview's median run; a tool none of whose
    runs completed keeps the times it had (ncd's trace of a model whose drawing failed, say)."""
    result.trace_runs, result.draw_runs, result.torchview_runs = list(runs.trace), list(runs.draw), list(runs.torchview)
    result.repeats_s = runs.spent
    i, j = median_run(runs.ours()), median_run(runs.torchview)
    if i is not None:
        result.trace_s, result.draw_s = runs.trace[i], runs.draw[i]
    if j is not None:
        result.torchview_s = runs.torchview[j]


def told(apart: Callable[[Callable[[], int], float], int], work: Callable[[Callable[[Any], None]], int],
         limit: float) -> tuple[int, Any]:
    """``apart(run, limit)`` (a forked process's exit code) for a ``work`` that may ``tell`` its forking process one
    small picklable value (a pipe): the exit code and that value (``None`` if it told nothing)."""
    read, write = os.pipe()

    def run() -> int:
        os.close(read)

        def tell(value: Any) -> None:
            os.write(write, pickle.dumps(value))  # small: fits the pipe's buffer, read once the process has ended

        return work(tell)

    try:
        code = apart(run, limit)
    finally:
        os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    return code, (pickle.loads(data) if data else None)


def spread(values: Sequence[float]) -> float:
    """How far one tool's runs on a model moved: the slowest over the fastest, minus one (``nan`` under two runs).

    >>> round(spread([0.10, 0.13, 0.11]), 3)
    0.3
    """
    finite = [v for v in values if v == v and v > 0]
    return max(finite) / min(finite) - 1 if len(finite) > 1 else math.nan
