"""A run-time guard: the branch a traced model took, checked on every later input.

A model whose control flow reads a truth value of its inputs (``if not padding_mask.any(): padding_mask = None``)
computes one thing on inputs that take the branch and another on the rest.  ``ncd.trace`` records the branch the
example took and draws a ``Guard`` on the value read: a box with no outputs that, when the lowered module runs,
checks the value is as traced and otherwise raises (:class:`ncd.errors.RunError` naming the model's line) — the
diagram holds for every input that takes the traced branch and never silently computes the other.

Woven over axes (a batch), it checks every entry.

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd, torch
>>> from ncd.prims.guard import Guard
>>> d = ncd.Identity.of("m") @ Guard(expected=False, line="model.py:12")
>>> str(d.dom), str(d.cod)
('m, [bool]', 'm')
>>> m = d.to_torch(m=3)
>>> m(torch.ones(3), torch.tensor(False)).tolist()
[1.0, 1.0, 1.0]
>>> m(torch.ones(3), torch.tensor(True))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ncd.errors.RunError: running Diagram ... guard of model.py:12: the model read True here, but the traced model read False: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ncd.errors import ParseError
from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box, Identity
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING

if TYPE_CHECKING:
    from ncd.analysis.backward import BoxBackward
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["GuardOp", "Guard", "LINE_CHARS"]

CONDITION = Segment((), "bool")

#: a model's line as :func:`ncd.trace.capture.user_line` gives it (``modeling_fsmt.py:266``): pasted into source
LINE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-:<> ")


@dataclass(frozen=True)
class GuardOp(Primitive):
    """The truth value of ``condition`` (a bool, or an index: ``!= 0``) is ``expected``: checked at run time.

    ``condition -> ()``: nothing comes out.  ``line`` is the model's line that read the value (``file.py:12``)."""

    condition: Segment = CONDITION
    expected: bool = False
    line: str = ""

    op: ClassVar[str] = "guard"
    family: ClassVar[str] = "guard"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.condition.axes or self.condition.dtype == "float":
            raise ParseError(f"a guard reads one bool or index entry (a number: compare it with 0 first), not"
                             f" '{self.condition}'")
        if not isinstance(self.expected, bool):
            raise ParseError(f"a guard expects True or False, not {self.expected!r}")
        if len(self.line) > 200 or not set(self.line) <= LINE_CHARS:
            raise ParseError(f"a guard's line is a file name and a line number ('model.py:12'), not {self.line!r}")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.condition,)), Type(())

    def label(self) -> str:
        return "assert " + ("≠ 0" if self.expected else "= 0")


def Guard(condition: Segment | None = None, *, expected: bool, line: str = "") -> Box:
    """A check that the scalar ``condition`` (a bool by default, or an index) is ``expected`` whenever the diagram runs."""
    return Box.make(GuardOp(CONDITION if condition is None else condition, expected, line))


#: the words every guard's refusal holds (the other-sizes check tells a guard's refusal from a failure by them)
TRACED_READ = "but the traced model read"


@LOWERING.rule(GuardOp)
def lower_guard(prim: GuardOp, ctx: RuleContext) -> list[str]:
    """``if not bool((c != 0).eq(expected).all()): raise RuntimeError(...)`` (the lowered module names it a RunError)."""
    (c,) = ctx.args
    where = f"guard of {prim.line}" if prim.line else "guard"
    message = (f"{where}: the model read {not prim.expected} here, {TRACED_READ} {prim.expected}: this"
               " input takes a branch the diagram does not hold (trace the model again on an input that takes it)")
    ctx.em.line(f"if not bool(({c.var} != 0).eq({prim.expected}).all()):\n    raise RuntimeError({message!r})")
    return []


@COST.rule(GuardOp)
def cost_guard(prim: GuardOp, ctx: CostContext) -> list[Tensor]:
    """A comparison per entry; nothing is made, nothing saved."""
    return []


@BACKWARD.rule(GuardOp)
def backward_guard(prim: GuardOp, box: Box, builder: object) -> BoxBackward:
    """A check of a bool or an index: no gradient flows in or out."""
    from ncd.analysis.backward import BoxBackward

    return BoxBackward((), Identity(Type(())))


@DRAWING.rule(GuardOp)
def draw_guard(prim: GuardOp, ctx: Layout, box: Box) -> Frag:
    """A box ending the condition's wire, ``assert = 0`` (or ``≠ 0``): the branch the trace took."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), fill="#ffffff", name="guard")


# -- import recognition: the converter draws a guard where the traced model read a truth value into Python -------

IMPORT.known(GuardOp, by="ncd.trace.convert")
