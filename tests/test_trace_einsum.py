"""``torch.einsum`` in traced models: every equation torch accepts (ellipses, implicit outputs, repeated letters, the
diagonal and the trace) is one einsum wiring equal to torch's on the traced and on fresh operands; letters that
broadcast (size 1 against n) are an opaque box, never a wrong wiring."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd
from ncd.trace.boxes_einsum import spelled


class Einsum(torch.nn.Module):
    def __init__(self, equation: str) -> None:
        super().__init__()
        self.equation = equation

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.einsum(self.equation, *xs)


CASES = [
    ("bii->bi", [(2, 5, 5)]), ("bii->b", [(2, 5, 5)]), ("ii", [(4, 4)]), ("iii->i", [(3, 3, 3)]),
    ("...ii->...i", [(2, 3, 4, 4)]), ("bii,bij->bj", [(2, 4, 4), (2, 4, 5)]), ("ii,ij->j", [(4, 4), (4, 5)]),
    ("ij,jk", [(3, 4), (4, 5)]), ("ji", [(3, 4)]), ("i,i->", [(4,), (4,)]), ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("b...d,d->b...", [(2, 3, 5, 6), (6,)]), ("a...b,b...->a...", [(2, 3, 4), (4, 3)]), ("...ij,jk", [(2, 3, 4), (4, 5)]),
    ("...", [(2, 3)]), ("i j , j k -> i k", [(3, 4), (4, 5)]), ("BIi->Bi", [(2, 3, 3)]),
]


@pytest.mark.parametrize(("equation", "shapes"), CASES, ids=[c[0] for c in CASES])
def test_an_einsum_equation_is_one_wiring_equal_to_torch(equation: str, shapes: list[tuple[int, ...]]) -> None:
    torch.manual_seed(0)
    model = Einsum(equation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *(torch.randn(*s) for s in shapes))
    assert d.opaque_count == 0
    lowered = d.to_torch()
    fresh = [torch.randn(*s) for s in shapes]
    torch.testing.assert_close(lowered(*fresh), model(*fresh))
    assert "<svg" in ncd.render.to_svg(d)


def test_letters_that_broadcast_are_an_opaque_box_not_a_wrong_wiring() -> None:
    model = Einsum("bij,bjk->bik")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(1, 3, 4), torch.randn(2, 4, 5))
    assert d.opaque_count == 1
    a, b = torch.randn(1, 3, 4), torch.randn(2, 4, 5)
    torch.testing.assert_close(d.to_torch()(a, b), model(a, b))


def test_an_equation_is_spelled_with_letters_for_its_ellipses_and_torchs_implicit_output() -> None:
    assert spelled("...ij,...jk", [3, 2]) == (["aij", "jk"], "aik")
    assert spelled("ba", [2]) == (["ba"], "ab")  # implicit: letters used once, alphabetical
    assert spelled("ii", [2]) == (["ii"], "")


DIAGONALS = [("ii->i", (4, 4)), ("bhtt->bh", (2, 3, 4, 4)), ("ii->", (4, 4)), ("bii->bi", (2, 4, 4)),
             ("iij->ji", (3, 3, 5))]


@pytest.mark.parametrize(("equation", "shape"), DIAGONALS, ids=[c[0] for c in DIAGONALS])
def test_a_letter_repeated_on_one_operand_reads_its_diagonal_with_no_identity_multiplied_in(
        equation: str, shape: tuple[int, ...]) -> None:
    """The importer draws a repeated letter as a cup (the identity matrix) beside the einsum; it lowered to
    ``torch.eye`` multiplied in (``ii->i`` on 4 x 4 charged 32 FLOPs in products, torch's flop_counter 0): now the
    einsum of the operand alone, its diagonal read as torch's own einsum does."""
    from torch.utils.flop_counter import FlopCounterMode

    model = Einsum(equation)
    x = torch.randn(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(Einsum(equation), x)
    assert d.opaque_count == 0 and "unit" in [b.prim.op for b in d.boxes()]
    assert "torch.eye" not in d.to_source()
    lowered = d.to_torch()
    for v in (x, torch.randn(*shape)):
        v = v.clone().requires_grad_(True)
        got, want = lowered(v), model(v)
        torch.testing.assert_close(got, want)
        g = torch.randn_like(want)
        torch.testing.assert_close(torch.autograd.grad(got, v, g), torch.autograd.grad(want, v, g))
    with FlopCounterMode(display=False) as counter:
        model(x)
    numbers = ncd.cost(d).numbers
    assert numbers.forward_matmul == counter.get_total_flops() == 0
    v = x.clone().requires_grad_(True)  # what it sums: the entries its result depends on (flop_counter counts no sums)
    model(v).sum().backward()
    assert v.grad is not None
    summed = int((v.grad != 0).sum()) if len(equation.split("->")[1]) < len(set(equation.split("->")[0])) else 0
    assert numbers.forward_other == summed


PAIRS = [("ii,ij->j", [(4, 4), (4, 5)]), ("ij,jj->i", [(3, 4), (4, 4)]), ("bii,bij->bj", [(2, 4, 4), (2, 4, 5)]),
         ("ii,i->i", [(4, 4), (4,)]), ("ij,ii->j", [(4, 5), (4, 4)])]


def _reads_the_diagonal_as_torch(model: Einsum, shapes: list[tuple[int, ...]], generator: torch.Generator,
                                 dtype: torch.dtype = torch.float32) -> None:
    """Traced at ``shapes``: no ``torch.eye`` in the source, equal to torch (lowered and read back from JSON, on the
    traced and fresh operands), its gradients and torch's flop_counter; the backward diagram builds."""
    from torch.utils.flop_counter import FlopCounterMode

    xs = [torch.randn(*s, generator=generator, dtype=dtype) for s in shapes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *xs)
    assert d.opaque_count == 0 and "unit" in [b.prim.op for b in d.boxes()]
    assert "torch.eye" not in d.to_source()
    lowered = d.to_torch()
    back = ncd.load_json(d.to_json()).to_torch()
    for vs in (xs, [torch.randn(*s, generator=generator, dtype=dtype) for s in shapes]):
        vs = [v.clone().requires_grad_(True) for v in vs]
        got, want = lowered(*vs), model(*vs)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(back(*vs), want)
        g = torch.randn_like(want)
        torch.testing.assert_close(torch.autograd.grad(got, vs, g), torch.autograd.grad(want, vs, g))
    with FlopCounterMode(display=False) as counter:
        model(*xs)
    assert ncd.cost(d).numbers.forward_matmul == counter.get_total_flops()
    ncd.backward(d)


@pytest.mark.parametrize(("equation", "shapes"), PAIRS, ids=[c[0] for c in PAIRS])
def test_a_repeated_letter_beside_another_operand_reads_its_diagonal_with_no_identity_multiplied_in(
        equation: str, shapes: list[tuple[int, ...]]) -> None:
    """fixes: with a second operand the cup made three inputs and the pairs' path multiplied ``torch.eye`` in
    (``ii,ij->j`` on 4 x 4, 4 x 5: 72 FLOPs in products where torch's flop_counter counts 40); now one einsum of the
    two operands with the diagonal read, equal to torch, its gradients and its FLOPs."""
    _reads_the_diagonal_as_torch(Einsum(equation), shapes, torch.Generator().manual_seed(0))


MANY = [("bii,bij,bj->bi", [(2, 4, 4), (2, 4, 5), (2, 5)]), ("ii,ij,jk->k", [(4, 4), (4, 5), (5, 3)]),
        ("ij,jj,jk,k->i", [(3, 4), (4, 4), (4, 5), (5,)]), ("bii,bij,bjk->bk", [(2, 3, 3), (2, 3, 4), (2, 4, 5)]),
        ("ijj,jk,kl->il", [(3, 4, 4), (4, 5), (5, 2)]), ("aii,ab,bc,c->i", [(3, 4, 4), (3, 2), (2, 5), (5,)]),
        ("iij,jk,ik->k", [(3, 3, 4), (4, 2), (3, 2)]), ("ii,ij,jk,kl->l", [(3, 3), (3, 4), (4, 2), (2, 5)]),
        ("ii,ij,jk->ik", [(4, 4), (4, 5), (5, 3)]), ("bij,bii,bjk,bk->bik", [(2, 3, 3), (2, 3, 3), (2, 3, 4), (2, 4)]),
        ("ji,ii,ikk->ik", [(2, 3), (3, 3), (3, 4, 4)]), ("kkj,jjk,ii,kli,k->l", [(3, 3, 2), (2, 2, 3), (4, 4), (3, 5, 4), (3,)])]


@pytest.mark.parametrize(("equation", "shapes"), MANY, ids=[c[0] for c in MANY])
def test_a_repeated_letter_beside_three_operands_reads_its_diagonal_with_no_identity_multiplied_in(
        equation: str, shapes: list[tuple[int, ...]]) -> None:
    """correct (stop 50): with three or more other operands the cup made four inputs and the pairs' plan still
    multiplied ``torch.eye`` in (``bii,bij,bj->bi`` on 2x4x4, 2x4x5, 2x5: 144 FLOPs in products where torch's
    flop_counter counts 80; ``aii,ab,bc,c->i`` 152 against 56); now the other operands' pairs with the cup's letters made
    one, equal to torch, its gradients and its FLOPs, at random sizes too."""
    generator = torch.Generator().manual_seed(len(equation))
    _reads_the_diagonal_as_torch(Einsum(equation), shapes, generator)
    size = {c: int(torch.randint(2, 6, (), generator=generator)) for c in sorted({c for c in equation if c.isalpha()})}
    _reads_the_diagonal_as_torch(Einsum(equation), [tuple(size[c] for c in term) for term in
                                                    equation.split("->")[0].split(",")], generator)


@pytest.mark.parametrize(("equation", "shapes"), MANY[-2:], ids=[c[0] for c in MANY[-2:]])
def test_two_repeated_letters_in_a_float64_model_read_both_diagonals(equation: str, shapes: list[tuple[int, ...]]) -> None:
    """correct (stop 50): a second repeated letter kept its cup, lowered as ``torch.eye`` in the default float32, so
    a float64 model's lowered module raised on its own traced inputs (RunError: einsum of double and float); now every
    cup whose letters index one other operand is read as a diagonal: equal to torch in float64, and its FLOPs."""
    _reads_the_diagonal_as_torch(Einsum(equation), shapes, torch.Generator().manual_seed(1), torch.float64)
