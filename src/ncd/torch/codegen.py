"""Lowering to readable PyTorch source: one class per block, locals named after boxes.

``to_source(diagram, **sizes)`` binds every size, walks the diagram and writes a Python
module.  ``ncd.torch.module.to_torch`` compiles exactly this source, so what a user reads is
what runs (and what appears in tracebacks).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar

from ncd.ir.collector import no_collector
from ncd.ir.diagram import Block, Diagram, bind_all, defaults_of
from ncd.ir.program import HEADER, Program, layout_comment
from ncd.ir.size import symbolic_sizes
from ncd.torch.codegen_walk import Codegen
from ncd.torch.emitter import ClassEmitter, NamedSizes

__all__ = ["to_source", "to_program", "symbolic_program", "lower", "bind_all", "defaults_of", "ClassEmitter", "Codegen",
           "NamedSizes", "HEADER", "layout_comment"]


def to_source(diagram: Diagram, /, **sizes: int) -> str:
    """Readable PyTorch source for ``diagram``; its last class is the whole diagram.

    >>> import ncd
    >>> src = (ncd.Linear("m -> n", bias=True) >> ncd.ReLU()).to_source(m=4, n=3)
    >>> "nn.Linear(4, 3)" in src
    True
    """
    from ncd.torch.read_back import guard

    guard(diagram, sizes, "to_source")  # a traced model's diagram read back: its other sizes are not checked
    return typed_source(diagram, diagram, sizes)


def typed_source(diagram: Diagram, typed: Diagram, sizes: dict[str, int]) -> str:
    """:func:`to_source` of ``diagram`` at ``sizes``, its constructor giving its tensors the floating-point types a
    traced model's block ``typed`` records (:func:`ncd.torch.read_back.typed_init`; none for any other diagram)."""
    from ncd.torch.read_back import typed_init

    with no_collector():  # lowering allocates many acyclic records (ncd.ir.collector)
        bound = bind_all(diagram, sizes)
        program = lower(bound, NamedSizes.of(diagram, sizes))
    typed_init(typed, program)
    return program.to_source()


def to_program(diagram: Diagram, /, **sizes: int) -> Program:
    """The lowered program of ``diagram`` (every size bound): what :func:`to_source` prints and ``to_torch`` runs.

    >>> import ncd
    >>> program = to_program(ncd.Linear("m -> n") >> ncd.ReLU(), m=4, n=3)
    >>> [op.target for _, op in program.ops()]
    ['self.l', 'torch.relu']
    """
    with no_collector():
        return lower(bind_all(diagram, sizes), NamedSizes.of(diagram, sizes))


def symbolic_program(diagram: Diagram, /, **sizes: int) -> Program:
    """The program of ``diagram`` on symbolic sizes: the ops lowering writes at every size, values with
    sympy sizes, sizes printed by name (``nn.Linear(m, n)``).  A size needed as a number (a ``range``, the
    count of layers that differ) raises :class:`~ncd.errors.SizeError` / :class:`~ncd.errors.LoweringError`.

    A plan lowering chooses by size (the pair order of an einsum of three or more operands) is the one at
    ``sizes`` and the top block's defaults (:func:`ncd.prims.contraction.planned_at`), by axis names when
    they do not bind it: the program equals the bound program at those sizes.

    >>> import ncd
    >>> program = symbolic_program(ncd.Identity.of("b m") >> ncd.Linear("m -> n", bias=True) >> ncd.ReLU())
    >>> [op.code for op in program.top.ops], program.top.init
    (['self.l_plus(x)', 'torch.relu(linear)'], ['self.l_plus = nn.Linear(sizes.m, sizes.n)'])
    """
    from ncd.prims.contraction import planned_at

    defaults = dict(diagram.get("defaults", ())) if isinstance(diagram, Block) else {}
    with symbolic_sizes(), planned_at({**defaults, **sizes}):
        return lower(diagram)


def lower(bound: Diagram, named: NamedSizes | None = None) -> Program:
    """The program of a diagram whose sizes are all bound (:func:`~ncd.ir.diagram.bind_all`); ``named``: the size
    expressions its constants were written as (:meth:`NamedSizes.of` the unbound diagram), printed by name."""
    gen = Codegen(named)
    title = bound.name if isinstance(bound, Block) else "Diagram"
    body = bound.body if isinstance(bound, Block) else bound
    gen.class_for(body, title)
    from ncd.torch.layouts import fuse_layers

    fuse_layers(gen.program, gen.rows, gen.cols)  # a whole encoder layer or attention runs torch's fused kernel in inference
    from ncd.torch.layouts_free import free_dead_values
    from ncd.torch.unread import drop_unread

    drop_unread(gen.program)  # no op computes what nothing reads (a maximum's unread positions, a dead reshape)
    free_dead_values(gen.program)  # each intermediate deleted after its last read, as nested calls free it
    return gen.program


_CUT_OUT: ContextVar[bool] = ContextVar("ncd_cut_out", default=False)


@contextlib.contextmanager
def cut_out() -> Iterator[None]:
    """Lower a region cut out of a model, as ``ncd.cost`` reads it (a per-rank unit of a sharded model): a map
    tied to a weight outside the region declares a weight of its own.  The ops are the same; costs count
    parameters from the diagram's boxes, not from the program's attributes."""
    token = _CUT_OUT.set(True)
    try:
        yield
    finally:
        _CUT_OUT.reset(token)


def lowering_cut_out() -> bool:
    """Whether a region cut out of a model is being lowered (:func:`cut_out`)."""
    return _CUT_OUT.get()


def program_for_costs(diagram: Diagram, symbolic: dict[str, int] | None = None,
                      written: tuple[Diagram, dict[str, int]] | None = None) -> Program:
    """The program ``ncd.cost`` reads (its one hand-off from lowering): of the bound ``diagram`` (``written``: the
    diagram before binding and its sizes, so constants print by name as in ``to_source``), or with ``symbolic``
    given, on symbolic sizes with plans chosen at those sizes (:func:`symbolic_program`).  Lowered as a region cut
    out of a model (:func:`cut_out`: a per-rank unit is costed alone)."""
    with cut_out():
        if symbolic is not None:
            return symbolic_program(diagram, **symbolic)
        return lower(diagram, NamedSizes.of(*written) if written is not None else None)


def top_class_name(source: str) -> str:
    names = re.findall(r"^class (\w+)\(nn\.Module\):", source, flags=re.M)
    return str(names[-1])
