"""The HTML viewer without a browser: view states, the records behind tooltips, escaping, writers.

The browser half is ``tests/test_viewer_browser.py``.  ``gpt2_like`` (the public DSL only)
is shared with it: a GPT-2-shaped model whose blocks nest three deep.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest

import ncd
import ncd.zoo
from ncd.viewer import explore, notebook_html, to_html, write_html
from ncd.viewer.page import script_json

SIZES = {"m": 768, "k": 64, "h": 12, "f": 3072, "t": 1024, "v": 50257}
EVIL = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">"


def gpt2_like(layers: int = 12, name: str = "GPT2") -> ncd.Block:
    """Pre-norm decoder: N × (x + Attention(LN x), x + MLP(LN x)), final LN, unembedding ``L^U``."""
    norm = ncd.LayerNorm if hasattr(ncd, "LayerNorm") else None

    def ln() -> ncd.Diagram:
        return norm("m") if norm else ncd.Identity.of("~t m")

    def lin(label: str, spec: str = "m -> k h") -> ncd.Diagram:
        return ncd.Linear(spec, bias=True, name=label)

    def rename(new: str) -> ncd.Diagram:
        return ncd.Identity.of("~t m") >> ncd.Rename(f"t -> ~{new}")

    projections = (ncd.Copy("~t m", 3) >> (rename("y") >> lin("Q")) @ (rename("x") >> lin("K")) @ (rename("x") >> lin("V")))
    scores = ncd.Einsum("~y k h, ~x k h -> ~y ~x h") >> ncd.Scale("k**-0.5") >> ncd.Softmax("~x")
    product = (scores @ ncd.Identity.of("~x k h")) >> ncd.Einsum("~y ~x h, ~x k h -> ~y k h")
    attention = (projections.block("Projections") >> product.block("ScaledDotProduct") >> lin("O", "k h -> m")
                 >> ncd.Identity.of("~y m") >> ncd.Rename("y -> ~t")).block("Attention")
    mlp = (ncd.Linear("m -> f", bias=True) >> ncd.GELU() >> ncd.Linear("f -> m", bias=True)).block("MLP")
    wires = ncd.Identity.of("~t m")
    layer = (ncd.residual(wires >> ln() >> attention) >> ncd.residual(wires >> ln() >> mlp)).block("Layer")
    body = wires >> ncd.repeat(layer, "i", 0, "N", name="Layers") >> ln() >> ncd.Linear("m -> v", name="U")
    return body.block(name, defaults=tuple({**SIZES, "N": layers}.items()))


def drawn_blocks(diagram: ncd.Diagram, depth: int = 0) -> list[tuple[str, int]]:
    """Blocks as the paper draws them (runs of equal blocks folded, repetitions once), with their depth.

    Written independently of the viewer: a plain walk of the diagram tree.
    """
    if isinstance(diagram, ncd.Block):
        return [(diagram.name, depth)] + drawn_blocks(diagram.body, depth + 1)
    if isinstance(diagram, ncd.Seq):
        parts = [p for k, p in enumerate(diagram.parts)
                 if not (k and isinstance(p, ncd.Block) and p == diagram.parts[k - 1])]
        return [b for p in parts for b in drawn_blocks(p, depth)]
    return [b for child in diagram.children() for b in drawn_blocks(child, depth)]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _data(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="ncd-data">(.*?)</script>', page, re.S)
    assert match
    return json.loads(match.group(1))


def test_one_view_per_drawn_block_below_the_default_depth() -> None:
    model = gpt2_like()
    views = explore(model)
    expected = [name for name, depth in drawn_blocks(model) if depth >= 1]
    assert expected == ["Layer", "Attention", "Projections", "ScaledDotProduct", "MLP"]
    assert len(views.views) == 1 + len(expected)
    names = sorted(views.catalogue.blocks[v.key]["name"] for v in views.views if v.key)
    assert names == sorted(expected)
    # each view's key is its block; its expanded path is the block and its ancestors
    for view in views.views[1:]:
        record = views.catalogue.blocks[view.key]
        assert f'data-block="{view.key}"' in view.svg and 'class="ncd-fence"' in view.svg
        assert record["parent"] == view.key.rpartition("/")[0]


@pytest.mark.parametrize("depth", [1, 2])
def test_the_first_view_is_the_renderers_svg_plus_an_invisible_overlay(depth: int) -> None:
    model = gpt2_like()
    view = explore(model, ncd.render.Style(depth=depth)).views[0].svg
    overlay = re.search(r'<g class="ncd-hit">.*?</g>\n', view, re.S)
    assert overlay and "<text" not in overlay.group(0)
    assert all(f'class="ncd-{kind}"' in overlay.group(0) for kind in ("fence", "comp", "box", "wire"))
    # the viewer pans and zooms one row: the renderer's drawing with page="none" (no wrapping into rows)
    assert view.replace(overlay.group(0), "") == ncd.render.to_svg(model, depth=depth, page="none", embed_fonts=False)


def test_a_48_layer_model_has_as_many_views_as_a_12_layer_one() -> None:
    small, large = explore(gpt2_like(12)), explore(gpt2_like(48))
    assert [v.key for v in small.views] == [v.key for v in large.views]


def test_folded_blocks_are_one_view_with_their_count() -> None:
    layer = (ncd.Linear("m -> m") >> ncd.ReLU()).block("Layer")
    model = (ncd.Identity.of("~t m") >> layer >> layer >> layer).block("Net")
    views = explore(model)
    assert [v.key for v in views.views] == ["", "0/0"]
    info = views.catalogue.infos[views.catalogue.blocks["0/0"]["info"]]
    assert dict(info["rows"])["folded"].startswith("×3")
    assert "×3" in views.views[0].svg  # the renderer's fold marker


def test_depth_option_sets_what_is_collapsed_at_first() -> None:
    model = gpt2_like()
    deeper = explore(model, ncd.render.Style(depth=2))
    assert [v.key for v in deeper.views][0] == ""
    assert {deeper.catalogue.blocks[k]["name"] for k in deeper.views[0].collapsed} == {"Attention", "MLP"}


def test_wire_records_name_the_axis_and_its_size() -> None:
    views = explore(gpt2_like())
    wires = [r for r in views.catalogue.infos if r["kind"] == "wire"]
    by_title = {r["title"]: dict(r["rows"]) for r in wires}
    assert by_title["axis m"]["size"] == f"m = {SIZES['m']}"
    assert by_title["axis v"]["size"] == f"v = {SIZES['v']}"
    assert by_title["axis t\u0305"]["role"].startswith("item axis")


def test_every_wire_between_boxes_is_hoverable_in_every_view() -> None:
    from ncd.render.model import Path
    from ncd.render.svg import paint_svg
    from ncd.viewer.info import Catalogue
    from ncd.viewer.views import ViewLayout, _continue_wires, _lay_out, _TaggedPath

    model = gpt2_like()
    catalogue = Catalogue(model, costs=False)
    model_axes = {a.name for node in model.walk() for typ in (node.dom, node.cod) for seg in typ for a in seg}
    views = explore(model, costs=False)
    for view in views.views:
        panel = (view.key, views.contexts[view.key]) if view.key else None
        ctx = ViewLayout(ncd.render.Style(), catalogue, 1, panel)
        node = panel[1].node if panel else model
        placed: list = []
        paint_svg(_lay_out(ctx, node), embed_fonts=False, placed=placed)
        continued = _continue_wires(placed, catalogue.wire_axis)
        wires = [(k, it) for k, (it, _, _, _) in enumerate(placed)
                 if isinstance(it, Path) and it.role == "wire" and it.owner is None and not it.dashed]
        assert wires and all(isinstance(it, _TaggedPath) or k in continued for k, it in wires), view.key
        tags = [it.tag if isinstance(it, _TaggedPath) else continued[k] for k, it in wires]
        names = {catalogue.infos[tag]["title"].removeprefix("axis ").rstrip("\u0305") for tag in tags}
        ends = {a.name for typ in (node.dom, node.cod) for seg in typ for a in seg}
        assert names <= model_axes and ends <= names, (view.key, names)


def test_a_panel_is_the_renderers_drawing_of_its_block() -> None:
    """Each panel is the block's definition: the renderer's drawing of that block, its sub-blocks collapsed."""
    import xml.etree.ElementTree as ET

    model = gpt2_like()
    views = explore(model)
    ns = "{http://www.w3.org/2000/svg}"
    for view in views.views[1:]:
        node = views.contexts[view.key].node
        svg = re.sub(r'<g class="ncd-hit">.*?</g>\n', "", view.svg, flags=re.S)
        mine, theirs = ET.fromstring(svg), ET.fromstring(ncd.render.to_svg(node, depth=1, page="none"))
        assert [t.text for t in mine.iter(f"{ns}text")] == [t.text for t in theirs.iter(f"{ns}text")], view.key
        assert len(list(mine.iter(f"{ns}path"))) == len(list(theirs.iter(f"{ns}path")))
        assert (view.width, view.height) == pytest.approx((float(theirs.get("width")), float(theirs.get("height"))))
    # the panel of a block lists exactly the sub-blocks it draws collapsed
    layer = next(v for v in views.views if views.catalogue.blocks.get(v.key, {}).get("name") == "Layer")
    assert sorted(views.catalogue.blocks[k]["name"] for k in layer.collapsed) == ["Attention", "MLP"]


def test_box_records_name_their_primitive_for_search() -> None:
    views = explore(gpt2_like(), costs=False)
    boxes = [r for r in views.catalogue.infos if r["kind"] == "box"]
    words = {r["title"]: r["find"][0].split() for r in boxes}
    assert "softmax" in next(w for t, w in words.items() if "softmax" in w)
    assert "gelu" in words["GELU"]
    assert {"linear", "projection", "q"} <= set(next(w for t, w in words.items() if t.endswith("^Q")))
    axes = {r["find"][0] for r in views.catalogue.infos if r["kind"] == "wire"}
    assert {"m", "k", "h", "f", "t", "v"} <= axes
    # every record the page can search for is drawn in some view
    drawn = {i for v in views.views for i in v.infos}
    assert {i for i, r in enumerate(views.catalogue.infos) if r["kind"] != "block"} <= drawn


def _traced_gpt2(layers: int) -> ncd.Diagram:
    import warnings

    import torch
    import transformers

    warnings.filterwarnings("ignore", message=".*token_id.*")
    config = transformers.GPT2Config(n_layer=layers, n_embd=32, n_head=4, vocab_size=50, n_positions=16, use_cache=False,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return ncd.trace(transformers.GPT2Model(config).eval(), torch.randint(0, 50, (1, 6)))


def _chained(layers: int) -> ncd.Diagram:
    model = gpt2_like(1)
    repeat = next(node for node in model.walk() if isinstance(node, ncd.Repeat))
    chain = ncd.Identity.of(repeat.dom)
    for _ in range(layers):
        chain = chain >> repeat.body
    return chain.block("Chain", defaults=model.get("defaults"))


def _woven_repeat(layers: int) -> ncd.Diagram:
    """A repetition broadcast over the batch (the layers take ``m``, the model ``b m``): costed as ``(b layer)ⁿ``."""
    layer = (ncd.LayerNorm("m") >> ncd.Linear("m -> f", bias=True) >> ncd.GELU()
             >> ncd.Linear("f -> m", bias=True)).block("Layer")
    body = ncd.Identity.of("b m") >> ncd.repeat(layer, "i", 0, layers, name="Layers")
    return body.block("Model", defaults=(("b", 2), ("m", 8), ("f", 16)))


@pytest.mark.parametrize("build", [lambda: gpt2_like(6), lambda: _chained(4), lambda: _traced_gpt2(3),
                                   lambda: ncd.zoo.MODELS["transformer"](), lambda: ncd.zoo.MODELS["resnet"](),
                                   lambda: _woven_repeat(7)],
                         ids=["repeat", "chain", "traced", "transformer", "resnet", "woven-repeat"])
def test_composed_costs_equal_costing_the_whole(build) -> None:
    """The viewer costs each distinct part once and composes; the totals are ``ncd.cost`` of the whole."""
    from ncd.viewer.costs import Costs

    model = build()
    defaults = dict(model.get("defaults", ())) if isinstance(model, ncd.Block) else {}
    mine, whole = Costs(defaults).of(model), ncd.cost(model)
    for name in ("forward_flops", "backward_flops", "params", "activation_bytes"):
        assert getattr(mine, name) == getattr(whole, name), name
    # and the top block's tooltip shows them
    catalogue = explore(model).catalogue
    top = dict(catalogue.infos[catalogue.block_info["0"]]["rows"]) if "0" in catalogue.block_info else None
    if top is not None:
        from ncd.viewer.info import human

        assert top["forward"] == human(float(whole.forward_flops), "FLOP")


def test_box_records_show_primitive_parameters_types_and_weights() -> None:
    views = explore(gpt2_like())
    unembed = next(r for r in views.catalogue.infos if r["kind"] == "box" and r["title"] == "L^U")
    rows = dict(unembed["rows"])
    assert rows["primitive"].startswith("linear") and "learned" in rows["primitive"]
    assert rows["input"].startswith("m") and rows["output"].startswith("v")
    assert rows["weights"] == f"weight: v = {SIZES['v']} × m = {SIZES['m']}"
    assert "dom_axes='m'" in rows["parameters"]


def test_box_costs_match_a_hand_count() -> None:
    views = explore(gpt2_like())
    rows = dict(next(r for r in views.catalogue.infos if r["title"] == "L^U")["rows"])
    macs = SIZES["t"] * SIZES["m"] * SIZES["v"]  # t tokens, each an m × v matrix-vector product
    assert rows["forward"] == f"{2 * macs / 1e9:.3g} GFLOP"
    assert rows["parameter count"] == f"{SIZES['m'] * SIZES['v'] / 1e6:.3g} M"


def test_user_labels_never_reach_the_markup() -> None:
    evil = (ncd.Identity.of("~t m") >> ncd.Linear("m -> n", name=EVIL)).block(EVIL)
    page = to_html((ncd.Identity.of("~t m") >> evil).block("outer " + EVIL))
    assert "<script>window" not in page and "<img src=x" not in page
    parser = _Collect()
    parser.feed(page)
    scripts = [attrs.get("type") for tag, attrs in parser.tags if tag == "script"]
    # the viewer itself, the JSON data and one SVG data block per view (never run: their content is not parsed here)
    assert scripts.count(None) == 1 and scripts.count("application/json") == 1
    assert set(scripts) == {None, "application/json", "image/svg+xml"}
    assert not [t for t, _ in parser.tags if t == "img"]
    assert not [a for _, attrs in parser.tags for a in attrs if a.startswith("on")]
    data = _data(page)
    assert EVIL in {b["name"] for b in data["blocks"].values()}


def test_page_needs_no_network() -> None:
    page = to_html(gpt2_like())
    parser = _Collect()
    parser.feed(page)
    for tag, attrs in parser.tags:
        for key in ("src", "href"):
            assert key not in attrs, (tag, attrs)
    without_data = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "", page)  # the embedded fonts
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+", without_data))
    assert urls <= {"http://www.w3.org"}, urls  # only the SVG namespace name, never fetched
    assert "default-src 'none'" in page


def hybrid() -> ncd.Block:
    """Equal blocks not in a row (A B A, as a hybrid model's layers): not folded, so each is its own block."""
    wires = ncd.Identity.of("~t m")
    inner = (ncd.Linear("m -> n") >> ncd.ReLU()).block("Inner")
    a = (wires >> inner >> ncd.Linear("n -> m")).block("A")
    b = (wires >> ncd.Linear("m -> m")).block("B")
    return (wires >> a >> b >> a).block("Net")


def test_a_panel_drawn_as_an_earlier_one_travels_as_it_and_its_replacements() -> None:
    views = explore(hybrid(), costs=False)
    assert [v.key for v in views.views] == ["", "0/0", "0/1", "0/2", "0/0/0", "0/2/0"]
    data = _data(to_html(hybrid(), costs=False))
    by_key = {v["key"]: v for v in data["views"]}
    assert by_key["0/2"]["as"] == 1 and by_key["0/2/0"]["as"] == 4  # the second A and its Inner
    assert all("as" not in by_key[k] for k in ("", "0/0", "0/1", "0/0/0"))
    for k, v in enumerate(data["views"]):  # what the page's script makes is the panel's own drawing, exactly
        if "as" in v:
            text = views.views[v["as"]].svg
            for a, b in v["r"]:
                text = b.join(text.split(a))
            assert text == views.views[k].svg and 'data-block="0/2/0"' in text
    assert 'id="ncd-view-3"' not in to_html(hybrid(), costs=False)


def test_a_view_that_could_end_its_data_block_travels_as_json() -> None:
    from ncd.viewer.page import page
    from ncd.viewer.views import View

    views = explore(gpt2_like(2), costs=False)
    plain = views.views[0].svg
    views.views[0] = dataclasses.replace(views.views[0], svg=plain.replace("</svg>", "<!-- </SCRIPT> --></svg>"))
    text = page(views, "t")
    data = _data(text)
    assert "svg" in data["views"][0] and "s" not in data["views"][0]  # as JSON, escaped
    assert all("s" in v and "svg" not in v for v in data["views"][1:])  # the others as they are
    for k, v in enumerate(views.views[1:], 1):
        assert f'<script type="image/svg+xml" id="ncd-view-{k}">{v.svg}</script>' in text
    assert "</SCRIPT>" not in text and isinstance(views.views[0], View)


def test_script_json_escapes_markup() -> None:
    text = script_json({"a": "</script><!-- & -->"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- & -->"}


def test_draw_and_the_command_line_write_one_html_file(tmp_path) -> None:
    model = gpt2_like(2)
    path = ncd.draw(model, tmp_path / "model.html")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("<!DOCTYPE html>") and _data(text)["title"] == "GPT2"
    source = tmp_path / "model.json"
    source.write_text(model.to_json(), encoding="utf-8")
    out = tmp_path / "cli.html"
    done = subprocess.run([sys.executable, "-m", "ncd", "draw", str(source), "-o", str(out), "--depth", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = _data(out.read_text(encoding="utf-8"))
    assert data["depth"] == 2 and len(data["views"]) == 1 + 4  # Attention, MLP, and Attention's two sub-blocks
    assert all(set(v) == {"key", "s", "w", "h", "i"} for v in data["views"])  # each SVG in its own data block
    assert write_html(model, tmp_path / "w.html") == str(tmp_path / "w.html")


def test_notebook_display_is_the_viewer_in_a_sandboxed_iframe() -> None:
    model = gpt2_like(2)
    shown = model._repr_html_()
    assert shown == notebook_html(model)
    assert shown.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts allow-downloads"' in shown
    assert "<script" not in shown  # the page is an attribute value, fully escaped


def test_bad_input_names_what_it_got() -> None:
    with pytest.raises(ncd.NCDError, match="expected an ncd diagram, not str"):
        to_html("not a diagram")  # type: ignore[arg-type]


def test_a_panel_too_wide_for_a_window_goes_into_rows() -> None:
    """A long block's panel is wrapped into rows joined by arrows; nothing is lost and keys do not change."""
    from collections import Counter

    from ncd.viewer.rows import ROW_WIDTH

    steps = ncd.Identity.of("~t m")
    for k in range(40):
        steps = steps >> (ncd.Linear("m -> m", name=f"W{k}") >> ncd.ReLU()).block(f"Step{k}")
    views = explore((ncd.Identity.of("~t m") >> steps.block("Wide")).block("Net"), costs=False)
    panel = views.views[1]
    node = views.contexts[panel.key].node
    one_row = ncd.render.layout(node, depth=1, page="none")
    assert one_row.width > 2.5 * ROW_WIDTH and panel.width <= ROW_WIDTH + 100
    assert panel.svg.count("marker-end") >= 2 * 2 * 2  # two wires, out of and into each of 2+ breaks
    # every block of the one-row drawing is there, in order, with the keys it has in one row
    assert [views.catalogue.blocks[k]["name"] for k in panel.collapsed] == [f"Step{k}" for k in range(40)]
    assert panel.collapsed == [f"0/0/{k}" for k in range(40)]
    ns = "{http://www.w3.org/2000/svg}"
    import xml.etree.ElementTree as ET

    svg = re.sub(r'<g class="ncd-hit">.*?</g>\n', "", panel.svg, flags=re.S)
    mine = Counter(t.text for t in ET.fromstring(svg).iter(f"{ns}text"))
    theirs = Counter(t.text for t in ET.fromstring(ncd.render.to_svg(node, depth=1, page="none")).iter(f"{ns}text"))
    assert not theirs - mine  # the rows add wire labels at their ends, nothing is dropped
    assert panel.svg.count('class="ncd-comp"') == 40


def test_no_absolute_path_of_the_building_machine_in_the_page() -> None:
    """Tooltips say where a box was built, relative to its package or script, never as a path of this machine."""
    import os
    from pathlib import Path

    user = (ncd.Identity.of("b m") >> ncd.Linear("m -> m", name="Mine")).block("User")
    machine = {str(Path(__file__).resolve().parent), os.getcwd(), sys.prefix, str(Path(ncd.__file__).resolve().parent),
               str(Path.home())}
    for model in (user, gpt2_like(2), ncd.zoo.resnet()):
        page = to_html(model)
        rows = [dict(r["rows"]).get("built at") for r in _data(page)["infos"] if r["kind"] == "box"]
        assert any(rows), "no box says where it was built"
        for place in machine:
            assert place not in page, place
    mine = [r for r in _data(to_html(user))["infos"] if r["title"] == "L^Mine"]
    where = dict(mine[0]["rows"])["built at"]
    assert "test_viewer.py:" in where and not os.path.isabs(where), where
