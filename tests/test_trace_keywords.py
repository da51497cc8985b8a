"""A traced model's lowered module takes its inputs as the model did: by position, or by the names of the traced call.

Before, ``lowered(**inputs)`` (the model traced as ``ncd.trace(model, **inputs)``) raised "takes 2 tensor(s) ..., but
0 were given": the keywords were never looked at.  Each call is compared with the model's own.
"""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.errors import InputError


class Tagger(nn.Module):
    """Embeds tokens, masks padding, takes an optional list of extra features and a flag."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, extra: list[torch.Tensor] | None = None,
                doubled: bool = False) -> torch.Tensor:
        h = self.embed(input_ids) * attention_mask[..., None]
        if extra is not None:
            h = h + extra[0] * extra[1]
        out = self.head(h)
        return out * 2 if doubled else out


def _inputs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(2, 5)
    mask[0, :2] = 0
    return {"input_ids": torch.randint(0, 20, (2, 5), generator=g), "attention_mask": mask}


def _traced(*args: object, **kwargs: object) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = Tagger().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, ncd.trace(model, *args, **kwargs).to_torch()


@pytest.mark.parametrize("how", ["keywords", "swapped", "mixed", "positions"])
def test_the_lowered_module_takes_the_traced_calls_keywords(how: str) -> None:
    model, lowered = _traced(**_inputs(0))
    x = _inputs(1)  # fresh values
    with torch.no_grad():
        want = model(**x)
        got = {"keywords": lambda: lowered(**x),
               "swapped": lambda: lowered(attention_mask=x["attention_mask"], input_ids=x["input_ids"]),
               "mixed": lambda: lowered(x["input_ids"], attention_mask=x["attention_mask"]),
               "positions": lambda: lowered(x["input_ids"], x["attention_mask"])}[how]()
    torch.testing.assert_close(got, want)


def test_a_model_traced_by_position_is_called_by_its_parameters_names_and_pickles() -> None:
    x = _inputs(0)
    model, lowered = _traced(x["input_ids"], x["attention_mask"])
    with torch.no_grad():
        torch.testing.assert_close(pickle.loads(pickle.dumps(lowered))(**x), model(**x))


def test_a_list_argument_is_taken_by_its_name_and_a_flag_must_be_the_traced_one() -> None:
    x = _inputs(0)
    extra = [torch.randn(2, 5, 8), torch.randn(2, 5, 8)]
    model, lowered = _traced(**x, extra=extra, doubled=True)
    with torch.no_grad():
        torch.testing.assert_close(lowered(**x, extra=extra, doubled=True), model(**x, extra=extra, doubled=True))
    with pytest.raises(InputError, match="made with doubled=True; given doubled=False"):
        lowered(**x, extra=extra, doubled=False)
    with pytest.raises(InputError, match="'extra' of the lowered Tagger holds 2 tensor"):
        lowered(**x, extra=extra[:1], doubled=True)


def test_keywords_the_traced_call_did_not_pass_are_refused_naming_the_inputs() -> None:
    x = _inputs(0)
    _, lowered = _traced(**x)
    with pytest.raises(InputError, match="takes no input 'mask'; its inputs, by position or by name: input_ids,"
                                         " attention_mask"):
        lowered(input_ids=x["input_ids"], mask=x["attention_mask"])
    with pytest.raises(InputError, match="not given: attention_mask"):
        lowered(input_ids=x["input_ids"])
