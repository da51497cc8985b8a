"""The Python examples in the README and the walkthrough pages run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.benchmarks import benchmark

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", "docs/backprop.md", "docs/rendering.md", "docs/distributed.md", "docs/io.md", "docs/trace.md",
         "docs/viewer.md", "docs/internals.md"]


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("page", PAGES)
def test_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _blocks(page)
    assert blocks, f"{page} has no Python examples"
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for k, block in enumerate(blocks):
        if ">>>" in block:  # an interactive session: test_every_interactive_example_in_the_docs_runs
            continue
        exec(compile(block, f"{page} (example {k + 1})", "exec"), namespace)  # noqa: S102 - our own docs


def test_readme_example_draws_what_it_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(_blocks("README.md")[0], "README.md", "exec"), namespace)  # noqa: S102
    svg = (tmp_path / "gpt2.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") or svg.startswith("<?xml")
    assert "GPT2" in svg or "GPT-2" in svg
    assert str(namespace["attend"].dom) == "y h k, x h k, x h k"  # type: ignore[attr-defined]


def test_the_gallery_shows_the_code_the_zoo_has_now() -> None:
    """``docs/gallery.md`` (written by ``ncd gallery --out docs/gallery --page docs/gallery.md``) shows, for each model,
    the code that builds it and the PyTorch source it lowers to, and ``docs/gallery/<name>.py`` is that source: both as
    the zoo makes them now, and the source runs (its classes are defined)."""
    import inspect
    import textwrap

    import ncd.zoo

    blocks = _blocks("docs/gallery.md")
    files = sorted((ROOT / "docs" / "gallery").glob("*.py"))
    assert len(files) >= 10
    for path in files:
        factory = getattr(ncd.zoo, path.stem)
        source = factory().to_source()
        stale = f"docs/gallery/{path.name} is stale: run `ncd gallery --out docs/gallery --page docs/gallery.md`"
        assert path.read_text(encoding="utf-8") == source, stale
        assert source.rstrip() + "\n" in blocks, stale
        assert textwrap.dedent(inspect.getsource(factory)).rstrip() + "\n" in blocks, stale
        namespace: dict[str, object] = {"__name__": f"gallery_{path.stem}"}
        exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 - our own generated source
        assert any(isinstance(v, type) for v in namespace.values())


#: the case of ``benchmarks/bench_lowering.py`` each generated-source excerpt of docs/performance.md shows, in order
EXCERPTS = ["transformer encoder layer", "multi-head attention (k h)", "convolution block"]


def test_the_performance_page_shows_the_source_ncd_generates() -> None:
    """The Python blocks of ``docs/performance.md`` are excerpts of generated source (``...`` elides): each of their
    lines is in the source ncd writes now for the bench's diagram at the bench's sizes."""
    cases = {label: (diagram, sizes) for label, diagram, sizes, *_ in benchmark("bench_lowering").cases(quick=False)}
    blocks = _blocks("docs/performance.md")
    assert len(blocks) == len(EXCERPTS)
    for block, label in zip(blocks, EXCERPTS):
        first, *lines = block.strip().split("\n")
        assert first.startswith("# generated source (excerpt)") and lines
        diagram, sizes = cases[label]
        source = diagram.to_source(**sizes)
        for line in lines:
            pattern = re.escape(line.strip()).replace(re.escape("..."), ".*?")
            assert re.search(pattern, source), f"docs/performance.md ({label}): {line.strip()!r} is not generated"


def test_every_interactive_example_in_the_docs_runs() -> None:
    """The ``>>>`` examples in the Python blocks of the README and every ``docs/*.md`` page (``docs/internals.md``'s
    walk through the IR, the lowered program, ...) give the output they show."""
    import doctest

    pages = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))
    ran = 0
    for page in pages:
        for k, block in enumerate(_blocks(page)):
            if ">>>" not in block:
                continue
            test = doctest.DocTestParser().get_doctest(block, {}, f"{page} (example {k + 1})", page, 0)
            result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
            assert result.failed == 0, f"{page} (example {k + 1}): {result.failed} of {result.attempted} failed"
            ran += result.attempted
    assert ran >= 20


def test_every_page_s_python_examples_are_checked() -> None:
    """Each page with Python blocks has a test that runs them (or, for ``docs/performance.md``, compares them with the
    source ncd generates): a page added without one fails here."""
    checked = set(PAGES) | {"docs/gallery.md", "docs/performance.md",  # the two tests above
                            "docs/inference.md"}  # tests/test_decode.py::test_the_inference_page_runs
    for path in sorted((ROOT / "docs").glob("*.md")):
        page = str(path.relative_to(ROOT))
        blocks = _blocks(page)
        if blocks and not all(">>>" in b for b in blocks):  # doctest blocks: the test above
            assert page in checked, f"{page} has Python examples no test runs"


def test_every_python_file_the_docs_name_exists() -> None:
    """A ``name.py`` (or ``path/name.py``) written in code quotes in the README or a ``docs/*.md`` page is a file of the
    repository: a module moved or split leaves no page pointing at a file that is gone."""
    import os

    files: set[str] = set()
    for top, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("out", "node_modules", "__pycache__")]
        rel = Path(top).relative_to(ROOT).as_posix()
        files.update(f"{rel}/{n}" if rel != "." else n for n in names if n.endswith(".py"))
    pages = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    named = {(page.name, m) for page in pages for m in re.findall(r"`([\w./-]+\.py)`", page.read_text(encoding="utf-8"))}
    assert len(named) > 50
    missing = sorted(f"{page}: {name}" for page, name in named
                     if not any(f == name or f.endswith("/" + name) for f in files))
    assert not missing, missing
