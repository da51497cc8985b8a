"""One definition per block name, its sizes as symbols (as the paper draws Block(s, N) once).

Checked on the finished drawing: how many definitions (``box =``) are drawn, and what the legend
says each symbol stands for in each instance, against the sizes the diagram was built with.
"""

from __future__ import annotations

import ncd
from ncd.render import layout
from ncd.render.model import Text


def unit(c_in: str, c_out: str, relu: bool = True) -> ncd.Diagram:
    """A block too wide for a row of a column, so that the page draws it by its definition."""
    body = ncd.Identity.of(f"b {c_in}") >> ncd.Linear(f"{c_in} -> h", name="up") >> ncd.GELU()
    for k in range(6):
        body = body >> ncd.Linear("h -> h", name=f"mid{k}") >> ncd.GELU()
    body = body >> ncd.Linear(f"h -> {c_out}", name="down")
    return (body >> ncd.ReLU() if relu else body).block("Unit")


def chain(*units: ncd.Diagram) -> ncd.Diagram:
    d: ncd.Diagram = units[0]
    for u in units[1:]:
        d = d >> u
    return d.block("Net")


def definitions(drawing: ncd.render.Drawing) -> int:
    return sum(1 for t in drawing.of(Text) if t.string == "=")


def legend(drawing: ncd.render.Drawing) -> list[str]:
    return [t.string for t in drawing.of(Text) if " = " in t.string]


def test_blocks_of_one_name_and_shape_share_one_definition() -> None:
    names = [f"n{k}" for k in range(7)]
    d = chain(*(unit(a, b) for a, b in zip(names, names[1:])))
    drawing = layout(d)
    assert definitions(drawing) == 2  # Net = ..., Unit = ... (six instances, one definition)
    rows = legend(drawing)
    assert "ni = n0, n1, n2, n3, n4, n5" in rows and "nj = n1, n2, n3, n4, n5, n6" in rows
    # the definition's wires carry the symbols, its instances their own sizes
    labels = {t.string for t in drawing.of(Text)}
    assert {"ni", "nj"} <= labels and {"n3", "n6"} <= labels


def test_blocks_of_one_name_but_another_shape_keep_their_own_definitions() -> None:
    names = [f"n{k}" for k in range(7)]
    d = chain(*(unit(a, b, relu=k % 2 == 0) for k, (a, b) in enumerate(zip(names, names[1:]))))
    drawing = layout(d)
    assert definitions(drawing) == 3  # Net, Unit with ReLU (three instances), Unit without (three)
    assert legend(drawing) == ["ni = n0, n2, n4", "nj = n1, n3, n5", "nk = n1, n3, n5", "nl = n2, n4, n6"]


def test_resnet_draws_each_block_once_per_shape() -> None:
    """IdentityUnit (three sizes) is defined once; ResidualComponent once per shape (plain, strided, pre-activated)."""
    drawing = layout(ncd.zoo.resnet())
    names = [t.string for t in drawing.of(Text) if t.string in ("ResidualComponent", "IdentityUnit")]
    assert names.count("IdentityUnit") == 3 + 1  # three uses, one definition
    assert definitions(drawing) == 1 + 3 + 1 + 3  # the model, Block1-3, IdentityUnit, three ResidualComponents


def test_numbered_blocks_of_one_list_share_a_definition_with_sizes_in_closed_form() -> None:
    """``stages.1 … stages.3`` (as a traced model numbers the modules of a list) differ only in their sizes: one
    definition ``stages.i: Stage =`` is drawn, the legend gives ``i`` and each size that doubles per stage in closed
    form, and the sizes it gives are the stages' own (checked against the diagram's axes)."""
    from ncd.render.check import problems

    def stage(k: int) -> ncd.Block:
        c, d = 32 * 2 ** k, 64 * 2 ** k
        body = ncd.Identity.of(f"b c:{c}") >> ncd.Linear(f"c:{c} -> d:{d}")
        for _ in range(5):
            body = body >> ncd.ReLU() >> ncd.Linear(f"d:{d} -> d:{d}")
        return (body >> ncd.Linear(f"d:{d} -> c:{2 * c}")).block(f"stages.{k}: Stage")

    stages = [stage(k) for k in (1, 2, 3)]
    drawing = layout((stages[0] >> stages[1] >> stages[2]).block("Net"))
    titles = [t.string for t in drawing.of(Text)]
    assert titles.count("stages.i: Stage") == 1 and problems(drawing) == []
    legend = dict(drawing.legend)
    assert legend["i"] == "1, 2, 3"
    assert legend["c_i"] == "64·2^(i - 1)" and legend["c_j"] == "128·2^(i - 1)"
    ins = [int(list(s.dom[0])[1].size) for s in stages]  # the input width of stage i: 64·2^(i−1)
    assert ins == [64 * 2 ** (i - 1) for i in (1, 2, 3)]


def test_two_families_get_two_index_letters_when_every_index_letter_is_an_axis_name() -> None:
    """With axes named ``i j k l m p q r s`` (as in nemo_speechlm and sam2_vision_model), the two families of
    numbered blocks are indexed by letters no axis has and no other family has (``iʹ``, ``jʹ``): each index has one
    legend row, with the instances' own numbers."""
    from ncd.render.check import problems
    from ncd.render.generic import fresh_index

    letters = "ijklmpqrs"

    def stage(kind: str, k: int) -> ncd.Block:
        c, d = 32 * 2 ** k, 64 * 2 ** k
        body = ncd.Identity.of(f"b c:{c}") >> ncd.Linear(f"c:{c} -> d:{d}")
        for _ in range(5):
            body = body >> ncd.ReLU() >> ncd.Linear(f"d:{d} -> d:{d}")
        return (body >> ncd.Linear(f"d:{d} -> c:{2 * c}")).block(f"{kind}.{k}: {kind.title()}")

    head: ncd.Diagram = ncd.Identity.of("b i")
    for a, b in zip(letters, letters[1:]):
        head = head >> ncd.Linear(f"{a} -> {b}")
    head = head >> ncd.Linear("s -> c:64")
    down = [stage("down", k) for k in (1, 2, 3)]
    up = [stage("up", k) for k in (4, 5)]
    d = head >> down[0] >> down[1] >> down[2] >> ncd.Linear("c:512 -> c:512") >> up[0] >> up[1]
    drawing = layout(d.block("Net"))
    titles = [t.string for t in drawing.of(Text)]
    assert titles.count("down.iʹ: Down") == 1 and titles.count("up.jʹ: Up") == 1
    legend = dict(drawing.legend)
    assert legend["iʹ"] == "1, 2, 3" and legend["jʹ"] == "4, 5"
    assert not set(letters) & set(legend)  # no axis's name is given a value by the legend
    assert problems(drawing) == []
    assert fresh_index(set(letters) | {"iʹ", "jʹ"}) == "kʹ"


def test_a_list_alternating_two_shapes_is_one_family_with_one_index() -> None:
    """A Swin stage alternates plain and shifted-window layers: ``blocks.0, 2, 4`` have one shape and
    ``blocks.1, 3, 5`` another.  The two definitions are of one list with one index: ``blocks.2i`` and
    ``blocks.2i+1`` with the legend row ``i = 0, 1, 2`` (once), each drawing its own shape."""
    from ncd.render.check import problems

    def layer(k: int) -> ncd.Block:
        body = ncd.Identity.of("b c:64") >> (ncd.GELU() if k % 2 else ncd.ReLU())  # the shifted ones differ
        for _ in range(6):
            body = body >> ncd.Linear("c:64 -> c:64") >> ncd.ReLU()
        return body.block(f"blocks.{k}: Layer")

    layers = [layer(k) for k in range(6)]
    d: ncd.Diagram = layers[0]
    for b in layers[1:]:
        d = d >> b
    drawing = layout(d.block("Stage"))
    titles = [t.string for t in drawing.of(Text)]
    assert titles.count("blocks.2i: Layer") == 1 and titles.count("blocks.2i+1: Layer") == 1
    assert definitions(drawing) == 3  # Stage, the even layers, the odd layers
    assert drawing.legend == (("i", "0, 1, 2"),)
    assert problems(drawing) == []
    # each definition draws its own shape: the even layers' GELU-free body first, then the odd layers' GELU
    heads = {t.string: t.y for t in drawing.of(Text) if t.string in ("blocks.2i: Layer", "blocks.2i+1: Layer")}
    gelus = [t.y for t in drawing.of(Text) if t.string == "GELU"]
    assert len(gelus) == 1 and gelus[0] > heads["blocks.2i+1: Layer"] > heads["blocks.2i: Layer"]


def test_columns_reused_across_definitions_draw_what_laying_each_out_afresh_draws(monkeypatch) -> None:
    """The page layout lays a column out once and reuses it wherever the wire labels it read are labelled the same
    (the one-row attempt, a shared definition with its symbols, each attempt at narrower rows): the drawing is the
    one laying every column out afresh gives, byte for byte."""
    from ncd.render import to_svg
    from ncd.render.layout import Layout

    def nested(c_in: str, c_out: str) -> ncd.Diagram:  # a block inside, whose wires carry the definition's symbols
        pre = (ncd.Identity.of(f"b {c_in}") >> ncd.Linear(f"{c_in} -> {c_in}", name="pre") >> ncd.GELU()).block("Pre")
        return (pre >> unit(c_in, c_out).body).block("Unit")

    names = [f"n{k}" for k in range(5)]
    diagrams = [chain(*(nested(a, b) for a, b in zip(names, names[1:]))), ncd.zoo.resnet(), ncd.zoo.unet()]
    reused = [to_svg(d) for d in diagrams]

    def afresh(self: Layout, node: ncd.Diagram, count: int) -> object:
        return self.lay(node) if count == 1 else self.folded(node, count)

    monkeypatch.setattr(Layout, "lay_group", afresh)
    assert [to_svg(d) for d in diagrams] == reused
    drawing = layout(diagrams[0])  # Pre's wires in Unit's definition carry the symbol, as every wire of Unit =
    assert definitions(drawing) == 2 and sum(t.string == "ni" for t in drawing.of(Text)) == 4


def _wire_axes(node: ncd.Diagram) -> list:
    """Every wire's axis, node by node (each node's inputs, then its outputs, its children in order after it)."""
    out = [a for seg in node.dom.segments for a in seg.axes] + [a for seg in node.cod.segments for a in seg.axes]
    for child in node.children():
        out += _wire_axes(child)
    return out


def test_shared_labels_are_those_of_comparing_the_instances_wire_by_wire() -> None:
    """generic_labels matches each instance to the first once per pair of blocks and reuses the match: checked against
    reading every wire of every instance, for several instance lists (in either order, asked twice), and for an
    first instance whose one axis stands for two of another's, which cannot share a definition (the other way round
    they can: each axis of the first stands for one of the other's)."""
    from ncd.render.generic import generic_labels

    names = [f"n{k}" for k in range(5)]
    units = [unit(a, b) for a, b in zip(names, names[1:])] + [unit("n1", "n2")]
    looped = unit("n1", "n1")  # n1 in and out: n1 stands for n2 and n3 in unit("n2", "n3")
    for blocks in (units[:2], units[1:4], units[::-1], [units[0], units[4]], units, units[:3] + [units[0]], [units[1], looped]):
        for _ in range(2):
            found = generic_labels(blocks)
            wires = [_wire_axes(b) for b in blocks]
            columns: dict = {}
            for column in zip(*wires):
                assert columns.setdefault(column[0], column) == column  # one column per axis of the first
            assert found is not None
            labels, rows = found
            differing = {axis: column for axis, column in columns.items() if len(set(column)) > 1}
            assert set(labels) == set(differing)
            for axis, column in differing.items():
                assert labels[axis][1][1] == ", ".join(str(a.size) for a in column)
            assert sorted(rows) == sorted({labels[a][1] for a in labels})
    for _ in range(2):  # asked again: the kept match answers the same
        assert generic_labels([looped, units[1]]) is None and generic_labels([looped, units[0], units[1]]) is None


def test_shapes_and_columns_of_traced_blocks_are_those_of_their_whole_images_and_wire_lists() -> None:
    """same_shape compares two nodes level by level, keeps its answers per pair and takes a nested block's wire list
    from its enclosing one's: checked on every pair of blocks of a traced model (layers alike, a layer of another
    kind, blocks nested at several depths), against the whole shape images (:class:`_Shape`) and every wire's axis
    (``_wire_axes``) of a second trace of the model (nothing kept from the first)."""
    import torch
    from torch import nn

    from ncd.ir.diagram import Block
    from ncd.render import generic

    class Mlp(nn.Module):
        def __init__(self, act: nn.Module) -> None:
            super().__init__()
            self.up, self.act, self.down = nn.Linear(8, 16), act, nn.Linear(16, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(self.act(self.up(x)))

    class Layer(nn.Module):
        def __init__(self, act: nn.Module) -> None:
            super().__init__()
            self.norm, self.mlp = nn.LayerNorm(8), Mlp(act)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.mlp(self.norm(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([Layer(nn.ReLU()), Layer(nn.ReLU()), Layer(nn.GELU()), Layer(nn.ReLU())])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = layer(x)
            return x

    torch.manual_seed(0)
    net, x = Net().eval(), torch.randn(2, 3, 8)
    asked, whole = (ncd.trace(net, x) for _ in range(2))
    blocks, others = ([n for n in d.walk() if isinstance(n, Block)] for d in (asked, whole))
    assert len(blocks) == len(others) > 5
    answers = [[generic.same_shape(a, b) for b in blocks] for a in blocks]
    for _ in range(2):  # (asked again: the kept answers)
        assert answers == [[generic.same_shape(a, b) for b in blocks] for a in blocks]
    images = [generic._SHAPE.fold(b) for b in others]
    assert answers == [[a == b for b in images] for a in images]
    assert any(not row[k] for row in answers for k in range(len(row))) and sum(map(sum, answers)) > len(blocks)
    for k, block in enumerate(blocks):  # (outermost first: the nested blocks take their runs of the layers' lists)
        assert list(generic._axes(block)) == _wire_axes(others[k]) == _wire_axes(block)


def test_the_page_skips_blocks_inside_a_pair_differing_in_no_label_without_changing_its_answer(monkeypatch) -> None:
    """_shared_sizes does not compare the blocks in one place inside two blocks it found to differ in no label (each
    of their wires is one of the pair's): the same answer, and the same drawing, as comparing every pair, on layers
    alike, layers differing in a size inside, and a layer of another kind, for several widths."""
    from ncd.render import to_svg, wrap
    from ncd.render.layout import Layout, _read_axes
    from ncd.render.style import Style

    def layer(n: str, h: str, act: ncd.Diagram, k: int) -> ncd.Diagram:
        inner = (ncd.Identity.of(f"b {n}") >> ncd.Linear(f"{n} -> {h}", name="up") >> act).block("mlp")
        return (inner >> ncd.Linear(f"{h} -> {n}", name="down")).block(f"layers.{k}")

    cases = [chain(layer("n", "h", ncd.GELU(), 0), layer("n", "h", ncd.GELU(), 1)),
             chain(layer("n", "h", ncd.GELU(), 0), layer("n", "j", ncd.GELU(), 1)),
             chain(layer("n", "h", ncd.GELU(), 0), layer("n", "h", ncd.ReLU(), 1)),
             chain(unit("n0", "n1"), unit("n1", "n2"), unit("n2", "n3"))]
    skipped = 0
    for d in cases:
        answers, drawings, asked = [], [], []
        for skip in (True, False):
            if not skip:
                monkeypatch.setattr(wrap, "blocks_inside", lambda a, b: [])
            calls: list[int] = []
            monkeypatch.setattr(wrap, "generic_labels", lambda blocks, *a, _f=wrap.generic_labels, **k:
                                calls.append(1) or _f(blocks, *a, **k))
            ctx = Layout(Style())
            _read_axes(ctx, d)
            ctx.families = wrap._families(d)  # (as page_layout sets them before it asks _shared_sizes)
            # every block measured wider than the widths asked (as the page's probe would note a wide block)
            ctx.probed = {id(b): (b, (1e6, 0.0), []) for b in d.walk() if isinstance(b, ncd.Block)}
            answers.append([wrap._shared_sizes(ctx, d, wide) for wide in (0.0, 50.0)])
            asked.append(len(calls))
            drawings.append(to_svg(d))
            monkeypatch.undo()
        assert answers[0] == answers[1] and drawings[0] == drawings[1]
        skipped += asked[1] - asked[0]
    assert skipped > 0


def test_a_pair_asked_in_the_other_order_reads_the_columns_found_for_the_first_order() -> None:
    """_compare keeps the columns of a pair of blocks whose objects meet one to one and reads them swapped when the pair
    is asked the other way round: the same answer (columns, their order, the names) as reading every wire of both
    blocks, on layers alike, layers differing in a size, a block whose one axis stands for two of another's (kept
    neither way: not one to one), and a pair found to share no drawing one way but not the other."""
    from ncd.render import generic

    names = [f"n{k}" for k in range(4)]
    blocks = [unit(a, b) for a, b in zip(names, names[1:])] + [unit("n1", "n2"), unit("n1", "n1"), unit("n0", "n1", False)]
    swapped = 0
    for i, a in enumerate(blocks):
        for b in blocks[i + 1:]:
            for pair in ([a, b], [b, a]):
                swapped += (id(pair[1]), id(pair[0])) in generic._PAIRED
                found = generic._compare(pair)
                wires = [_wire_axes(x) for x in pair]
                columns: dict = {}
                same = generic.same_shape(*pair)
                for column in zip(*wires) if same else ():
                    if columns.setdefault(column[0], column) != column:
                        same = False
                if not same:
                    assert found is None
                    continue
                assert found is not None
                assert list(found[0].items()) == list(columns.items())
                assert found[1] == frozenset(x.name for w in wires for x in w)
    assert swapped > 0
