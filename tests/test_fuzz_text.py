"""Hostile text in every string of a diagram file: refused with an ``ncd`` error, or drawn inert in every format.

Each case puts one hostile string (markup, TeX commands, code, paths, unicode that changes how text reads,
over-long text) into one string slot of a gallery model's JSON (box labels, block names, axis names,
sizes, meta, source locations).  A file that loads is drawn to SVG, TikZ and the HTML viewer and lowered
to source: the SVG parses as XML and holds no active element or attribute, the TikZ holds none of the
injected TeX commands, the page runs exactly one script (the viewer's own), and the source compiles
without calling anything the text asked for.  ``tests/fuzz_cases.py`` mutates the files' structure;
this test mutates their text.
"""

from __future__ import annotations

import ast
import json
import os
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ncd
from ncd.errors import NCDError
from tests.fuzz_cases import _get, _paths

PAYLOADS = [
    "</script><script>alert(1)</script>", "<img src=x onerror=alert(1)>", "]]><x/>", '"><svg onload=alert(1)>',
    "&lt;&amp;", "<!--", "\\input{/etc/passwd}", "\\immediate\\write18{touch pwn}", "}\\end{tikzpicture}\\input{x}",
    "$x^{", "%", "#1", "{", "\\", "../../../../tmp/pwn", "__import__('os').system('touch pwn')",
    "x\u202ey", "a\u200bb", "a" + "\u0301" * 200, "😀", "𝔼", "注意力", "\ufeff", "\ud800", "Ⅻ", "x" * 999,
    "__class__", "self", "import", "x:3", "(k h)", "~t", "[v]",
]
TEX_COMMANDS = ("\\input", "\\write18", "\\end{tikzpicture}\\input")
_DOC: dict[str, Any] = {}


def _document() -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    if not _DOC:
        doc = json.loads(ncd.zoo.mlp().to_json())
        _DOC["doc"] = doc
        _DOC["slots"] = [p for p in _paths(doc) if p and isinstance(_get(doc, p), str) and p[-1] not in ("op", "kind")]
    return _DOC["doc"], _DOC["slots"]


def _with(doc: dict[str, Any], path: tuple[Any, ...], text: str) -> str:
    copy = json.loads(json.dumps(doc))
    _get(copy, path[:-1])[path[-1]] = text
    return json.dumps(copy)


def _check_inert(d: ncd.Diagram, text: str) -> None:
    root = ET.fromstring(ncd.render.to_svg(d))  # well-formed XML
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        assert tag not in ("script", "foreignObject", "iframe", "a"), tag
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on") and "javascript:" not in value.lower(), (name, value)
    tex = ncd.render.to_tikz(d)
    for command in TEX_COMMANDS:
        assert not (command in text and command in tex), command
    from ncd.viewer import to_html

    page = to_html(d)
    scripts = re.findall(r"<script([^>]*)>", page)
    assert sum("type=" not in attrs for attrs in scripts) == 1, scripts
    assert not re.search(r"<(img|svg)[^>]*on(error|load)=", page.split('<script type="application/json"')[0])
    sizes = {str(s): 2 for s in d.free_symbols}
    tree = ast.parse(d.to_source(**sizes))
    calls = {getattr(n.func, "attr", getattr(n.func, "id", "")) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not calls & {"system", "__import__", "eval", "exec", "open"}, calls


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(slot=st.integers(0, 10**6), payload=st.sampled_from(PAYLOADS))
def test_hostile_text_in_any_string_of_a_file_is_refused_or_drawn_inert(slot: int, payload: str,
                                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    doc, slots = _document()
    path = slots[slot % len(slots)]
    tmp: Path = tmp_path_factory.mktemp("text")
    here = os.getcwd()
    os.chdir(tmp)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                d = ncd.load_json(_with(doc, path, payload))
            except NCDError:
                return
            try:
                _check_inert(d, payload)
            except NCDError:  # refused later (e.g. a size that does not lower): still an ncd error
                pass
    finally:
        os.chdir(here)
    assert not list(tmp.iterdir())


@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_text_as_a_box_label_and_a_block_name(payload: str) -> None:
    """The two places a reader sees first: refused with an ncd error naming the text, or drawn inert."""
    doc, slots = _document()
    where = [p for p in slots if p[-1] in ("label", "name")][:2]
    assert where
    for path in where:
        try:
            d = ncd.load_json(_with(doc, path, payload))
        except NCDError as error:
            assert "$" in str(error) or "label" in str(error) or "name" in str(error)
            continue
        _check_inert(d, payload)
