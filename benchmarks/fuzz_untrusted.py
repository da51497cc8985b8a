"""The long fuzz run: hostile diagram files and builder calls through the whole public API.

    python benchmarks/fuzz_untrusted.py --cases 5000 --builders 1000 [--start 0] [--time-limit 10]

Each case (see ``tests/fuzz_cases.py``) is a mutation of a gallery model's or a primitive
sample's JSON, or a public builder called with hostile text; it is loaded or built, then
lowered, run, costed, differentiated and drawn, under a time limit, in an empty working
directory.  Printed: how many cases each stage refused with an ``ncd`` error, how many passed
every stage, and the failures — non-``ncd`` exceptions, hangs, memory blow-ups, files
written — which must all be 0.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.fuzz_cases import build_case, case_text, run_case, seed_documents, warm_up  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5000, help="mutated JSON documents")
    parser.add_argument("--builders", type=int, default=1000, help="hostile builder calls")
    parser.add_argument("--start", type=int, default=0, help="first case seed")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per case")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    warm_up()
    docs = seed_documents(large=True)
    print(f"{len(docs)} seed documents (gallery models and primitive samples)")
    here = os.getcwd()
    failures = []
    for kind, count in (("json", args.cases), ("builder", args.builders)):
        stages: collections.Counter[str] = collections.Counter()
        slowest = (0.0, -1)
        began = time.perf_counter()
        for seed in range(args.start, args.start + count):
            case = case_text(docs, seed)[1] if kind == "json" else build_case(seed)
            with tempfile.TemporaryDirectory() as tmp:
                os.chdir(tmp)
                t0 = time.perf_counter()
                outcome = run_case(case, time_limit=args.time_limit)
                slowest = max(slowest, (time.perf_counter() - t0, seed))
                os.chdir(here)
            stages[outcome.failure or ("passed every stage" if outcome.stage == "ok" else f"refused at {outcome.stage}")] += 1
            if outcome.failure:
                failures.append((kind, seed, outcome))
        took = time.perf_counter() - began
        print(f"\n{kind}: {count} cases in {took:.0f} s ({1000 * took / max(count, 1):.0f} ms each, slowest"
              f" {slowest[0]:.2f} s: seed {slowest[1]})")
        for stage, n in sorted(stages.items(), key=lambda item: -item[1]):
            print(f"  {stage:28s} {n:6d}  {100 * n / count:5.1f}%")
    kinds = collections.Counter(o.failure for _, _, o in failures)
    print(f"\nnon-ncd exceptions: {kinds['exception']}, hangs: {kinds['hang']}, memory blow-ups: {kinds['memory']},"
          f" files written: {kinds['file']}")
    for kind, seed, outcome in failures[:50]:
        print(f"  {kind} seed {seed}: {outcome.failure} at {outcome.stage}: {outcome.detail[:200]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
