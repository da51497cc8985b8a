"""Where a corpus model's first ``ncd.trace`` (or its drawing) spends its CPU time, or its page faults: a sampling
profile taken as ``import_corpus.py`` times the call (a forked process of a parent that built the model and froze its
heap, the warm-up repeated there, one torch thread), over ``-n`` forked runs.

cProfile is no help here: it triples the trace's time, and it times a Python frame's C calls (a kernel, a page
fault) apart from the line that made them.  This samples the Python stack every 0.5 ms of CPU time (``ITIMER_PROF``)
and weighs each sample by the CPU seconds (``--weight cpu``) or the minor page faults (``--weight faults``: memory
touched for the first time, ~1-2 us each) since the sample before: a long kernel call counts whole, at the line that
called it.

    PYTHONPATH=src .venv/bin/python benchmarks/first_call_profile.py longformer
    PYTHONPATH=src .venv/bin/python benchmarks/first_call_profile.py led --draw -n 3
    PYTHONPATH=src .venv/bin/python benchmarks/first_call_profile.py longformer --below ncd/trace/inplace.py:write
    PYTHONPATH=src .venv/bin/python benchmarks/first_call_profile.py longformer --weight faults

Prints the functions by inclusive share, then the innermost lines of ``ncd`` by self share (a kernel's time at the
``ncd`` line that ran it); ``--below FILE:FUNCTION``: only the samples inside that function, by the lines of ``ncd``
it reached.
"""

from __future__ import annotations

import argparse
import collections
import gc
import importlib
import os
import pickle
import pkgutil
import resource
import signal
import sys
import tempfile
import time
import warnings
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import import_corpus as corpus  # noqa: E402

Frame = tuple[str, str, int]
Sample = tuple[float, tuple[Frame, ...]]


def _short(filename: str) -> str:
    """``ncd/...``, ``torch/...`` or ``transformers/...`` where the file is in one of them."""
    for cut in ("/src/", "site-packages/"):
        if cut in filename:
            return filename.split(cut, 1)[1]
    return filename


def _sampled(built: Any, draw: bool, faults: bool) -> list[Sample]:
    """One first call, in this (forked) process: the weighted stacks."""
    import ncd
    from ncd.render import to_svg

    def reading() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return float(usage.ru_minflt) if faults else time.process_time()

    samples: list[Sample] = []
    last = [reading()]

    def sample(_: int, frame: Any) -> None:
        now = reading()
        stack = []
        while frame is not None:
            if frame.f_code.co_filename != __file__:  # (this profiler's own frames: not the call's)
                stack.append((_short(frame.f_code.co_filename), frame.f_code.co_name, frame.f_lineno or 0))
            frame = frame.f_back
        samples.append((now - last[0], tuple(stack)))
        last[0] = now

    signal.signal(signal.SIGPROF, sample)
    corpus._warm_up(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()
        if not draw:
            last[0] = reading()
            signal.setitimer(signal.ITIMER_PROF, 0.0005, 0.0005)
        diagram = ncd.trace(built.model, **built.inputs)
        if draw:
            gc.collect()
            last[0] = reading()
            signal.setitimer(signal.ITIMER_PROF, 0.0005, 0.0005)
            to_svg(diagram)
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
    return samples


def profile(name: str, runs: int, draw: bool, faults: bool) -> list[Sample]:
    """The samples of ``runs`` first calls of the corpus entry ``name``, each in a process forked from this one."""
    import ncd

    for info in pkgutil.walk_packages(ncd.__path__, "ncd."):  # as import_corpus.py: the modules imported before
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    torch.set_num_threads(1)
    corpus._warm_up(False)
    entries = {e.name: e for e in corpus.all_entries()}
    if name not in entries:
        raise SystemExit(f"no corpus entry {name!r}")
    _, built = corpus.build_one(entries[name])
    if built is None:
        raise SystemExit(f"{name} does not build")
    gc.collect()
    gc.freeze()
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(runs):
            path = os.path.join(folder, f"{run}.pkl")
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the forked copy
                code = 1
                try:
                    with open(path, "wb") as f:
                        pickle.dump(_sampled(built, draw, faults), f)
                    code = 0
                finally:
                    os._exit(code)
            os.waitpid(pid, 0)
            with open(path, "rb") as f:
                samples.extend(pickle.load(f))
    return samples


def report(samples: list[Sample], runs: int, faults: bool, below: str = "", top: int = 40) -> str:
    """The inclusive functions and the innermost ``ncd`` lines, as shares of the samples' weight."""
    unit = "faults" if faults else "ms"
    scale = 1.0 if faults else 1000.0
    if below:
        samples = [(w, stack[:max(i for i, f in enumerate(stack) if f"{f[0]}:{f[1]}" == below)])
                   for w, stack in samples if any(f"{f[0]}:{f[1]}" == below for f in stack)]
    total = sum(w for w, _ in samples) or 1.0
    inclusive: collections.Counter[str] = collections.Counter()
    innermost: collections.Counter[str] = collections.Counter()
    for weight, stack in samples:
        for key in {f"{f[0]}:{f[1]}" for f in stack}:
            inclusive[key] += weight
        own = next((f for f in stack if f[0].startswith("ncd/")), None)
        if own is not None:
            innermost[f"{own[0]}:{own[1]}:{own[2]}"] += weight
    lines = [f"{len(samples)} samples, {total * scale / runs:.1f} {unit} a run" + (f" inside {below}" if below else "")]
    for title, counts in (("inclusive", inclusive), ("innermost ncd line", innermost)):
        lines.append(f"--- {title}")
        lines += [f"{100 * w / total:5.1f} %  {w * scale / runs:9.1f} {unit}  {key}" for key, w in counts.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a corpus entry (import_corpus.py --list)")
    parser.add_argument("-n", "--runs", type=int, default=5)
    parser.add_argument("--draw", action="store_true", help="profile to_svg of the traced diagram, not ncd.trace")
    parser.add_argument("--weight", choices=("cpu", "faults"), default="cpu")
    parser.add_argument("--below", default="", help="FILE:FUNCTION, e.g. ncd/trace/inplace.py:write")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    faults = args.weight == "faults"
    print(report(profile(args.name, args.runs, args.draw, faults), args.runs, faults, args.below, args.top))


if __name__ == "__main__":
    main()
