"""Drawing API: formats chosen by extension, PNG/PDF through cairosvg, Jupyter, CLI, typesetting, options, errors."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

import ncd
from ncd.cli import main
from ncd.errors import InputError
from ncd.ir.size import size
from ncd.render import WRITERS, layout, register_writer, to_png, to_svg, to_tikz
from ncd.render.model import Rect, Text
from ncd.render.pictograms import LEARNED_FILL
from ncd.render.typeset import label_text, pieces
from tests.test_render_golden import digit_mlp, folded_layers, multi_head, residual_block


def mlp() -> ncd.Diagram:
    return (ncd.Identity.of("b ~t m") >> ncd.Linear("m -> n", bias=True, name="Q") >> ncd.ReLU()).block("MLP")


# -- typesetting --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, item, expected", [
    ("x/s", True, [("x", 0, True), ("/", 0, False), ("s", 0, False)]),
    ("k**2", False, [("k", 0, False), ("2", 1, False)]),
    ("k**-0.5", False, [("k", 0, False), ("−1/2", 1, False)]),
    ("c_i", False, [("c", 0, False), ("i", -1, False)]),
    ("2*c", False, [("2", 0, False), ("c", 0, False)]),
    ("n_1/4", False, [("n", 0, False), ("1", -1, False), ("/", 0, False), ("4", 0, False)]),
    ("512", False, [("512", 0, False)]),
])
def test_sizes_are_typeset_like_the_paper(text: str, item: bool, expected: list) -> None:
    assert [(p.text, p.script, p.overline) for p in pieces(size(text), item)] == expected


@pytest.mark.parametrize("axis, expected", [("k:10", "k = 10"), ("~x", "x"), ("~x:x/2", "x/2"), ("(k h)", "k·h"),
                                            ("m:512", "m = 512")])
def test_axis_labels_say_name_and_size(axis: str, expected: str) -> None:
    assert label_text(ncd.parse_axis(axis)) == expected


def test_bound_equal_axes_are_written_as_a_power() -> None:
    axis = ncd.Bind("~x ~y -> (x y)").bind(x=28, y=28).cod[0].axes[0]
    assert [(p.text, p.script) for p in pieces(axis.parts[0].size)] == [("28", 0)]
    assert label_text(axis) == "282"  # 28 with superscript 2


# -- outputs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".svg", ".png", ".pdf", ".tex", ".tikz"])
def test_draw_chooses_the_format_from_the_extension(ext: str, tmp_path: Path) -> None:
    path = ncd.draw(mlp(), tmp_path / f"d{ext}")
    data = Path(path).read_bytes()
    magic = {".svg": b"<svg", ".png": b"\x89PNG", ".pdf": b"%PDF", ".tex": b"\\documentclass", ".tikz": b"\\begin{tikzpicture}"}
    assert data.startswith(magic[ext])


def test_png_is_the_svg_rendered_at_scale(tmp_path: Path) -> None:
    diagram = mlp()
    drawing = layout(diagram)
    image = Image.open(io.BytesIO(to_png(diagram, scale=2))).convert("RGB")
    assert image.size == (round(drawing.width * 2), round(drawing.height * 2))
    learned = next(f for f in drawing.footprints if f.name.startswith("L"))
    # the pixel beside the letter, inside the learned box, has the learned fill the layout asked for
    x, y = round((learned.x + 3) * 2), round((learned.y + 3) * 2)
    assert "#{:02x}{:02x}{:02x}".format(*image.getpixel((x, y))) == LEARNED_FILL
    corner = image.getpixel((1, 1))
    assert corner == (255, 255, 255)


def test_pdf_page_has_the_drawing_size(tmp_path: Path) -> None:
    drawing = layout(mlp())
    pdf = (Path(ncd.draw(mlp(), tmp_path / "d.pdf"))).read_bytes()
    box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)", pdf)
    assert box and float(box.group(1)) == pytest.approx(drawing.width * 0.75, abs=1)  # cairosvg: 96 px per inch
    assert float(box.group(2)) == pytest.approx(drawing.height * 0.75, abs=1)


def test_jupyter_shows_the_svg() -> None:
    diagram = mlp()
    assert diagram._repr_svg_() == to_svg(diagram)


def test_svg_is_self_contained_and_names_the_paper_font() -> None:
    svg = to_svg(mlp())
    assert "CMU Sans Serif" in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    embedded = to_svg(mlp(), embed_fonts=True)
    assert "@font-face" in embedded and "base64," in embedded


def test_svg_text_matches_the_layout() -> None:
    drawing = layout(mlp())
    svg = to_svg(mlp())
    assert svg.count("<text") == sum(len(t.runs) for t in drawing.of(Text))
    assert svg.count("<rect") == len(drawing.of(Rect)) + 1  # + the white background


def test_writers_are_a_registry_for_new_formats(tmp_path: Path) -> None:
    seen = []

    @register_writer(".demo")
    def write(diagram: ncd.Diagram, path: str, style: object) -> None:
        seen.append((str(diagram.dom), path))
        Path(path).write_text("demo")

    try:
        ncd.draw(mlp(), tmp_path / "x.demo")
    finally:
        WRITERS.pop(".demo")
    assert seen == [("b t̅ m", str(tmp_path / "x.demo"))]


# -- options --------------------------------------------------------------------------------------
def test_depth_collapses_blocks_into_component_boxes() -> None:
    full = layout(residual_block())
    collapsed = layout(residual_block(), depth=0)
    assert {f.kind for f in collapsed.footprints} == {"component"}
    assert [f.name for f in collapsed.footprints] == ["Identity ResNet block"]
    assert len(full.footprints) > 5 and collapsed.width < full.width / 2


def test_identical_blocks_fold_into_one_with_a_count() -> None:
    folded = layout(folded_layers(), page="none")
    unfolded = layout(folded_layers(), fold=False, page="none")
    assert "×3" in [t.string for t in folded.of(Text)]
    assert len(unfolded.footprints) == 3 * len(folded.footprints)


def test_learned_boxes_are_bold_and_named() -> None:
    texts = [t for t in layout(multi_head()).of(Text) if t.role == "text"]
    names = {"".join(r.text for r in t.runs) for t in texts if all(r.bold for r in t.runs)}
    assert {"LQ", "LK", "LV", "LO"} <= names


def test_legend_and_title_are_drawn() -> None:
    texts = [t.string for t in layout(digit_mlp(), legend={"n_b": "n_1/4"}, title="Digits").of(Text)]
    assert "Legend" in texts and "Digits" in texts and any(s.startswith("n") and "= n" in s for s in texts)


def test_labels_option() -> None:
    none = [t for t in layout(mlp(), labels="none").of(Text) if t.role == "label"]
    ends = [t for t in layout(mlp(), labels="ends").of(Text) if t.role == "label"]
    every = [t for t in layout(mlp()).of(Text) if t.role == "label"]
    assert none == [] and len(ends) == 6 and len(every) > len(ends)


def test_scalar_functions_are_glyphs_on_the_wires_not_boxes() -> None:
    drawing = layout(ncd.Identity.of("b t m") >> ncd.GELU())
    (glyph,) = drawing.footprints
    assert glyph.kind == "glyph"
    assert [t.string for t in drawing.of(Text) if t.role == "text"] == ["GELU"]


def test_a_primitive_without_a_pictogram_gets_a_labelled_box() -> None:
    from dataclasses import dataclass
    from typing import ClassVar

    from ncd.ir.axes import Type, parse_type
    from ncd.ir.primitive import PRIMITIVES, Primitive

    @dataclass(frozen=True)
    class Mystery(Primitive):
        op: ClassVar[str] = "test_render_mystery"

        def signature(self) -> tuple[Type, Type]:
            return parse_type("a b"), parse_type("c")

        def label(self) -> str:
            return "Mystery"

    try:
        drawing = layout(ncd.Box(Mystery()))
    finally:
        PRIMITIVES.pop("test_render_mystery")
    assert [f.name for f in drawing.footprints] == ["test_render_mystery"]
    assert "Mystery" in [t.string for t in drawing.of(Text)]


# -- errors ------------------------------------------------------------------------------------------
def test_bad_calls_raise_input_errors_that_say_what_is_known(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown extension '.bmp'; known: .*\.pdf.*\.svg"):
        ncd.draw(mlp(), tmp_path / "x.bmp")
    with pytest.raises(InputError, match=r"unknown option\(s\) colour"):
        to_svg(mlp(), colour="red")
    with pytest.raises(InputError, match=r"expected an ncd diagram, not str"):
        ncd.draw("b m", tmp_path / "x.svg")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"depth=-1"):
        to_tikz(mlp(), depth=-1)



@pytest.mark.parametrize("options, message", [
    ({"scale": 0}, r"scale=0 must be a finite number > 0"),
    ({"scale": float("nan")}, r"scale=nan must be"),
    ({"pitch": -5}, r"pitch=-5 must be a finite number > 0"),
    ({"text_size": "big"}, r"text_size='big' must be"),
    ({"margin": float("inf")}, r"margin=inf must be a finite number ≥ 0"),
    ({"fold": "no"}, r"fold='no' must be True or False"),
    ({"legend": 3}, r"legend=3 must map symbols to sizes"),
    ({"legend": [("n",)]}, r"legend entry \('n',\) must be a \(symbol, size\) pair"),
    ({"legend": {"n\x1b[2J": "m"}}, r"legend symbol must not contain control characters"),
    ({"title": "a\x00b"}, r"title must not contain control characters .*a\\u0000b"),
    ({"title": "x" * 5000}, r"title has 5000 characters, more than the limit"),
])
def test_bad_options_are_input_errors_naming_the_option_for_every_format(tmp_path: Path, options: dict,
                                                                         message: str) -> None:
    for ext in (".svg", ".png", ".pdf", ".tex", ".html"):
        with pytest.raises(InputError, match=message):
            ncd.draw(mlp(), tmp_path / f"x{ext}", **options)
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_titles_and_legends_that_pass_are_well_formed_svg_and_the_text_survives() -> None:
    import xml.etree.ElementTree as ET

    svg = to_svg(mlp(), title="<b>T&amp;</b>", legend={"n_b": "n/4", "k": 3})
    texts = "".join(ET.fromstring(svg).itertext()).replace("\xa0", " ")
    assert "<b>T&amp;</b>" in texts and "3" in texts


# -- command line -----------------------------------------------------------------------------------
def test_cli_draws_a_zoo_model_and_a_json_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mlp.svg"
    assert main(["draw", "mlp", "-o", str(out)]) == 0
    assert out.read_text().startswith("<svg")
    source = tmp_path / "d.json"
    source.write_text(mlp().to_json())
    png = tmp_path / "d.png"
    assert main(["draw", str(source), "-o", str(png), "--depth", "0"]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    assert json.loads(source.read_text())["format"]


def test_cli_reports_unknown_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["draw", "no_such_model", "-o", str(tmp_path / "x.svg")]) == 2
    assert "neither a diagram JSON file nor a zoo model" in capsys.readouterr().err
    assert main(["draw", "mlp", "-o", str(tmp_path / "x.svg"), "--size", "m"]) == 2





def test_tikz_draws_every_element_in_a_named_style_a_user_can_restyle() -> None:
    from ncd.render.tikz import ROLES

    source = to_tikz(ncd.zoo.unet(), standalone=False)
    drawn = [line for line in source.splitlines() if line.startswith(("\\path[", "\\node["))]
    assert drawn and all(re.search(r",?ncd (" + "|".join(ROLES) + r")\]", line) for line in drawn)
    assert "rgb,255" not in source  # colours are named (\providecolor), not literals
    assert all(f"\\ncdstyle{{ncd {role}}}" in source for role in ROLES)  # defined unless the user defined it first
    assert "y\\ =\\ " not in source and "\\ =\\ " in source  # spaces survive: 'y = x', not 'y=  x'
    assert "\\bigstar" in source and "\\star$" not in source


def test_convolution_boxes_show_stride_dilation_padding_and_their_name() -> None:
    d = ncd.Identity.of("c ~x ~y") >> ncd.Conv("c ~x ~y -> d ~x:x/2 ~y:y/2", kernel=3, stride=2, padding=1, name="Q")
    labels = [t.string for t in layout(d).of(Text) if t.role == "text"]
    assert labels == ["★3s2,p1Q"]  # ★3, subscript s2,p1, superscript Q (like L^Q)
    plain = ncd.Identity.of("c ~x") >> ncd.Conv("c ~x -> d ~x", kernel=3, padding=1)
    assert [t.string for t in layout(plain).of(Text) if t.role == "text"] == ["★3p1"]


def test_pooling_is_a_trapezoid_and_a_save_tag_takes_every_wire() -> None:
    from ncd.render.model import Circle, Polygon

    d = ncd.Identity.of("c ~x ~y") >> ncd.Save("c ~x ~y", "C", "λ") >> ncd.MaxPool("~x ~y", 2)
    drawing = layout(d, page="none")
    (pool,) = [p for p in drawing.of(Polygon) if p.role == "box"]
    (x0, t0), (x1, t1), (x2, b1), (x3, b0) = pool.points
    assert x0 == x3 and x1 == x2 and b0 - t0 < b1 - t1  # a short input edge, a tall output edge
    dots = [c for c in drawing.of(Circle) if c.role == "dot"]
    assert len(dots) == 3 and len({round(c.cx, 2) for c in dots}) == 1  # one dot on each of c, x̄, ȳ


def test_python_names_print_literally_and_multi_letter_symbols_like_single_letters() -> None:
    """#12 item 3: a block's Python name is not read as TeX (``self_attn`` keeps its underscore, no subscript);
    a multi-letter size variable is italic like a one-letter one, a primed one keeps its subscript, and an
    exponent ``2^{1−l}`` keeps its letter (it printed ``2^{1−!}``)."""
    from ncd.render.typeset import symbol_pieces, typeset_text

    assert [(p.text, p.script) for p in typeset_text("self_attn: LlamaAttention")] == [("self_attn: LlamaAttention", 0)]
    assert [(p.text, p.italic, p.script) for p in symbol_pieces("ch")] == [("ch", True, 0)]
    assert [(p.text, p.italic, p.script) for p in symbol_pieces("n8ʹ")] == [("n", True, 0), ("ʹ", True, 0),
                                                                             ("8", False, -1)]
    assert [(p.text, p.script) for p in pieces(size("2**(1-l)"))] == [("2", 0), ("1", 1), ("−", 1), ("l", 1)]
    drawing = ncd.render.layout((ncd.Identity.of("b n8ʹ:14") >> ncd.ReLU()).block("self_attn"), page="none")
    assert "self_attn" in {t.string for t in drawing.of(Text)}
