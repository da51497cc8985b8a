"""Bad DSL text and bad inputs are refused with ncd errors naming the text, the box and the types (fix11)."""

from __future__ import annotations

import pytest
import torch

import ncd
from ncd.errors import InputError, ParseError, RunError
from ncd.ir.axes import parse_type


@pytest.mark.parametrize("text", ["b [0]", "b [-3]", "b [2.5]", "b m [0.5]", "b [sqrt(2)]"])
def test_an_index_range_that_is_no_positive_whole_number_is_refused_where_it_is_written(text: str) -> None:
    # before, these parsed (`b [5/2]`) and failed later, at composition, with no word of the range
    with pytest.raises(ParseError, match=r"index range .* must be a positive whole number"):
        parse_type(text)


@pytest.mark.parametrize("text", ["b [3]", "b [v]", "b [k - 1]", "b [k/2]"])
def test_index_ranges_that_can_be_sizes_still_parse(text: str) -> None:
    assert parse_type(text)[0].dtype == "index"


@pytest.mark.parametrize("name", ["é", "名前", "x́", "α", "d_k"])
def test_an_axis_named_by_any_python_identifier_lowers_and_computes_as_torch(name: str) -> None:
    # before, `ir/size.NAME` read ASCII and Greek only: 'é m' was refused ("unexpected character 'é'")
    d = ncd.Einsum(f"{name} m, m -> {name}")
    module = d.to_torch(**{name: 3, "m": 4})
    x, w = torch.randn(3, 4), torch.randn(4)
    torch.testing.assert_close(module(x, w), x @ w)
    namespace: dict[str, object] = {}
    exec(d.to_source(**{name: 3, "m": 4}), namespace)  # noqa: S102 - the printed source runs too
    assert torch.equal(namespace[ncd.torch.codegen.top_class_name(d.to_source(**{name: 3, "m": 4}))]()(x, w),
                       module(x, w))


@pytest.mark.parametrize("name", ["ﬁ", "2k", "a.b"])
def test_an_axis_name_python_would_not_read_back_is_refused(name: str) -> None:
    # 'ﬁ' is an identifier, but Python reads the keyword `ﬁ=3` as `fi=3` (NFKC): it could never be given a size
    with pytest.raises(ParseError, match="cannot read size"):
        parse_type(f"{name} m")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64, torch.bool])
def test_an_input_of_another_type_than_the_parameters_is_an_input_error_naming_both(dtype: torch.dtype) -> None:
    module = ncd.Linear("m -> n", name="Q").to_torch(m=3, n=4)
    x = torch.ones(2, 3, dtype=dtype)
    with pytest.raises(RuntimeError, match="dtype"):
        torch.nn.functional.linear(x, module.l_q.weight if hasattr(module, "l_q") else next(module.parameters()))
    with pytest.raises(InputError, match=rf"input 0 \('m'\) is {dtype}, but box L\^Q computes in torch.float32"):
        module(x)
    if dtype.is_floating_point:  # the advice works
        assert module.to(dtype)(x).dtype == dtype


def test_an_embedding_index_out_of_range_names_the_box_and_the_vocabulary_size() -> None:
    module = ncd.Embedding("v", "m", name="E").to_torch(v=5, m=3)
    assert module(torch.tensor([0, 4])).shape == (2, 3)
    for bad in (torch.tensor([1, 5]), torch.tensor([-1, 2])):
        with pytest.raises(IndexError):
            torch.nn.functional.embedding(bad, torch.zeros(5, 3))
        with pytest.raises(RunError, match=r"box Emb\^E reads an index out of its range: .* below 5"):
            module(bad)
