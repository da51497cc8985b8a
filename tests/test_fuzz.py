"""Fuzzing: hostile files and hostile builder calls end in an ``ncd`` error or work — nothing else.

Hypothesis draws the cases (a fixed seed, a bounded budget): mutations of the gallery's JSON and
of every primitive sample's JSON, and public builders called with hostile text.  Each case is
loaded or built, then lowered, run, costed, differentiated and drawn under a time limit in an
empty working directory; the test asserts no non-``ncd`` exception, no hang, no memory blow-up
and no file written.  ``benchmarks/fuzz_untrusted.py`` is the long run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_cases import build_case, case_text, run_case, seed_documents, warm_up

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
_DOCS: list[Any] = []


@pytest.fixture(scope="module", autouse=True)
def _prepared() -> None:
    warm_up()
    _DOCS.extend(seed_documents())


def _run(case: Any, tmp: Path) -> None:
    here = os.getcwd()
    os.chdir(tmp)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = run_case(case, time_limit=10.0)
    finally:
        os.chdir(here)
    assert not outcome.failure, f"{outcome.failure} at {outcome.stage}: {outcome.detail}"


@FUZZ
@given(seed=st.integers(0, 2**32))
def test_mutated_gallery_and_sample_json_is_refused_or_works(seed: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    name, text = case_text(_DOCS, seed)
    _run(text, tmp_path_factory.mktemp("case"))


@settings(FUZZ, max_examples=100)
@given(seed=st.integers(0, 2**32))
def test_public_builders_with_hostile_arguments_are_refused_or_work(seed: int,
                                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    _run(build_case(seed), tmp_path_factory.mktemp("case"))


def test_the_fuzzer_reaches_every_stage(tmp_path: Path) -> None:
    """The control: unmutated seeds pass every stage, so the fuzz cases do exercise lowering, running and drawing."""
    from tests.fuzz_cases import Outcome

    outcomes: list[Outcome] = []
    here = os.getcwd()
    import json

    for _name, doc in _DOCS[:4]:
        os.chdir(tmp_path)
        try:
            outcomes.append(run_case(json.dumps(doc)))
        finally:
            os.chdir(here)
    assert [o.stage for o in outcomes] == ["ok"] * 4, outcomes
