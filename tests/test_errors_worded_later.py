"""Error messages worded when first read (:func:`ncd.errors.worded_later`): a convolution or a pad refusing the output
sizes it holds raises a :class:`SizeError` whose text is built only when read (the symbolic pass of a trace catches
such refusals to learn the derived sizes, and mostly never reads the text: sympy's printer costs ~0.5-1 ms a first
print).  The text, the repr, copies and pickles must be those an eager message gives, word for word, and what the box
derives must be there before the text is read."""

from __future__ import annotations

import copy
import pickle

import pytest
import sympy

import ncd.prims.windows as windows
from ncd.errors import SizeError, printable, worded_later
from ncd.ir.axes import Axis, Segment
from ncd.ir.size import size, size_text
from ncd.prims.convolution import ConvOp
from ncd.prims.padding import PadOp

T = size("t")


def _conv(length: sympy.Expr, out: sympy.Expr, kernel: int = 4, padding: int = 3) -> ConvOp:
    return ConvOp(Segment((Axis("c", sympy.Integer(8)), Axis("t", length))),
                  Segment((Axis("d", sympy.Integer(8)), Axis("t", out))), (kernel,), (1,), (padding,), (1,))


@pytest.mark.parametrize("length, out, want", [
    (T, sympy.Integer(11), T + 3),  # the symbolic pass's attempt: t held as 11 where t + 3 is derived
    (sympy.Integer(8), sympy.Integer(12), sympy.Integer(11)),
    (T, T, T + 3),
    (2 * T + 1, sympy.Integer(5), 2 * T + 4),
])
def test_conv_refusal_reads_as_the_eager_message(monkeypatch: pytest.MonkeyPatch, length: sympy.Expr, out: sympy.Expr,
                                                 want: sympy.Expr) -> None:
    with pytest.raises(SizeError) as caught:
        _conv(length, out)
    error = caught.value
    assert error.derived == (("t", out, want),)  # (before the text is read: what the symbolic pass learns from)
    words = error.args[0]
    assert getattr(words, "_word", None) is not None  # not worded yet
    with monkeypatch.context() as patched:  # the eager message: worded at once
        patched.setattr(windows, "worded_later", lambda word: word())
        with pytest.raises(SizeError) as eager:
            _conv(length, out)
    assert type(eager.value.args[0]) is str and eager.value.derived == error.derived
    assert str(error) == str(eager.value) == f"★4: output axis t has size {size_text(out)}, but input axis" \
                                             f" t={size_text(length)} gives {size_text(want)}"
    assert getattr(words, "_word", None) is None  # worded once, kept
    assert repr(error) == repr(eager.value) == f"SizeError({str(error)!r})"
    assert str(copy.copy(error)) == str(error) == str(copy.deepcopy(error))
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is SizeError and str(back) == str(error) and back.args == eager.value.args
    assert back.derived == error.derived


def test_conv_refusal_text_of_the_traced_attempt() -> None:
    with pytest.raises(SizeError, match=r"^★4: output axis t has size 11, but input axis t=t gives t \+ 3$"):
        _conv(T, sympy.Integer(11))


def test_pad_refusal_reads_as_the_eager_message() -> None:
    axes = Segment((Axis("c", sympy.Integer(2)), Axis("t", T)))
    output = Segment((Axis("c", sympy.Integer(2)), Axis("t", sympy.Integer(64))))
    with pytest.raises(SizeError) as caught:
        PadOp(axes, (0, 0), (0, 56), output=output)
    error = caught.value
    assert error.derived == (("t", sympy.Integer(64), T + 56),)
    assert getattr(error.args[0], "_word", None) is not None  # not worded yet
    want = Segment((Axis("c", sympy.Integer(2)), Axis("t", T + 56)))
    assert str(error) == f"pad of '{axes}': the output '{output}' must have the padded sizes '{want}'"
    assert pickle.loads(pickle.dumps(error)).args == (str(error),)
    assert str(error) == "pad of 'c:2 t': the output 'c:2 t:64' must have the padded sizes 'c:2 t:t+56'"


def test_worded_later_text_is_made_once_and_printable() -> None:
    calls: list[int] = []

    def word() -> str:
        calls.append(1)
        return "axis \x1b[31mt\x1b[0m of size 7"

    error = SizeError(worded_later(word))
    assert not calls
    assert str(error) == printable("axis \x1b[31mt\x1b[0m of size 7") == "axis t of size 7"
    assert f"{error}" == str(error) == format(error, "")
    assert len(calls) == 1
