"""A value read into Python by an ``assert`` statement does not matter to what the model computes (it raises or lets
the model go on): ``ncd.trace`` records on.  ``reads._may_assert`` answers from the bytecode, before any source line is
read, whether a code object's line can be an ``assert``: it must say so wherever the source says so (also where
pytest rewrote the statement, as in this module's models)."""

from __future__ import annotations

import inspect
import sys
import types
import warnings

import pytest
import torch

import ncd
from ncd.trace.reads import _may_assert


class _GeneratorAssert(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert all(bool(v.sum() > -1e9) for v in x), "finite rows"
        return x * 2


class _MultiLineAssert(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert (x.abs().max().item() >= 0
                ), "a read on the statement's first line"
        return x + 1


class _Branch(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x > 0).all()):  # a branch on the inputs' values: not an assertion
            return x * 2
        return x * 3


@pytest.mark.parametrize("model", [_GeneratorAssert(), _MultiLineAssert()], ids=lambda m: type(m).__name__)
def test_values_read_by_an_assert_statement_are_recorded_on(model: torch.nn.Module) -> None:
    x = torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert d.method == "dispatch"
    assert d.opaque_count == 0
    fresh = torch.randn(3, 4)
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh))


def test_a_branch_on_a_value_is_still_a_read_that_matters() -> None:
    x = torch.ones(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(_Branch(), x)
    torch.testing.assert_close(d.to_torch()(x + 1), _Branch()(x + 1))
    with pytest.raises(Exception, match="guard"):  # the other branch: refused at run time, never silently wrong
        d.to_torch()(-x)


def _codes(module: types.ModuleType) -> list[types.CodeType]:
    found: list[types.CodeType] = []
    todo = [obj.__code__ for obj in vars(module).values() if isinstance(obj, types.FunctionType)]
    for cls in (obj for obj in vars(module).values() if isinstance(obj, type)):
        todo += [f.__code__ for f in vars(cls).values() if isinstance(f, types.FunctionType)]
    while todo:
        code = todo.pop()
        found.append(code)
        todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return found


def test_every_line_starting_an_assert_statement_is_one_its_code_may_assert_on() -> None:
    import torch.nn.functional
    import transformers.masking_utils
    import transformers.modeling_utils

    lines = 0
    for module in (torch.nn.functional, transformers.modeling_utils, transformers.masking_utils, torch.nn.modules.module,
                   sys.modules[__name__]):  # (this module: its assert statements as pytest rewrote them)
        source = inspect.getsource(module).splitlines()
        for code in _codes(module):
            if code.co_filename != inspect.getsourcefile(module):
                continue
            at = {line for _, _, line in code.co_lines() if line is not None}
            asserting = [n for n in at if source[n - 1].lstrip().startswith("assert ")]
            lines += len(asserting)
            assert not asserting or _may_assert(code), (code.co_name, asserting)
    assert lines >= 5  # the check saw assert statements
