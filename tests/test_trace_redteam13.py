"""redteam13: an opaque ``scaled_dot_product_attention`` call (a decoding step of two tokens after a left-padded
cache: the attention rule declines its mask) reads back from untrusted JSON when its ``dropout_p`` is zero, given or
by default; a crafted call that could draw (a positive rate, a rate that is no number, an argument given twice or
unknown) is still refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import ncd
from ncd.prims.opaque import Opaque
from ncd.prims.opaque_allowlist import check_allowed

SDPA = "aten.scaled_dot_product_attention.default"
QKV = (("$in", 0), ("$in", 1), ("$in", 2))


def _sdpa(args: tuple[object, ...], kwargs: tuple[object, ...] = ()) -> ncd.Box:
    return Opaque(SDPA, "b h t k, b h s k, b h s k, b 1 t s [bool]", "b h t k", args=args, kwargs=kwargs)


def _inputs(seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(2, 3, 4, 8, generator=g), torch.randn(2, 3, 6, 8, generator=g), torch.randn(2, 3, 6, 8, generator=g)
    mask = torch.rand(2, 1, 4, 6, generator=g) > 0.4
    mask[..., -1] = True  # every query sees a key
    return q, k, v, mask


@pytest.mark.parametrize("kwargs", [(("scale", 0.25),), (("dropout_p", 0.0), ("scale", 0.25)), ()])
def test_an_opaque_attention_without_dropout_reads_back_untrusted_equal_to_torch(kwargs: tuple[tuple[str, float], ...]) -> None:
    d = _sdpa(QKV + (("$in", 3),), kwargs)
    read = ncd.load_json(d.to_json()).to_torch(b=2, h=3, t=4, s=6, k=8)
    scale = dict(kwargs).get("scale")
    for seed in (0, 1):
        q, k, v, mask = _inputs(seed)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        torch.testing.assert_close(read(q, k, v, mask), want)


def test_a_positional_zero_rate_reads_back_and_a_positive_one_is_refused() -> None:
    ok = _sdpa(QKV + (("$in", 3), 0.0, False))
    ncd.load_json(ok.to_json())
    bad = json.loads(ok.to_json())
    text = json.dumps(bad).replace("0.0, false", "0.5, false")
    assert text != json.dumps(bad)
    with pytest.raises(ncd.SchemaError, match="draws from the global random state"):
        ncd.load_json(text)
    ncd.load_json(text, trust=True)  # a file the user trusts still loads


@pytest.mark.parametrize("args, kwargs", [
    (QKV + (None, 0.1), ()),
    (QKV, (("dropout_p", 0.1),)),
    (QKV, (("dropout_p", math.nan),)),
    (QKV, (("dropout_p", "0"),)),
    (QKV, (("dropout_p", True),)),
    (QKV, (("dropout_p", None),)),
    (QKV + (None, 0.0), (("dropout_p", 0.0),)),  # given twice
    (QKV, (("dropout", 0.0),)),  # a name the schema does not have
    (QKV, (("dropout_p", 0.0, 1),)),  # not a pair
    (QKV, ((0, 0.0),)),
    (QKV, "dropout_p"),
    (QKV + (None, 0.0, False, 0.3, False, 1), ()),  # more positional arguments than the schema takes
    (None, ()),
])
def test_an_attention_call_that_may_draw_is_refused(args: tuple[object, ...] | None, kwargs: object) -> None:
    with pytest.raises(ncd.ParseError, match="draws from the global random state"):
        check_allowed(SDPA, args, kwargs)


def test_the_cpu_flash_kernel_is_read_the_same_way_and_dropout_itself_is_not() -> None:
    flash = "aten._scaled_dot_product_flash_attention_for_cpu.default"
    check_allowed(flash, QKV[:2] + (("$in", 2),))
    check_allowed(flash, QKV + (0.0, True), (("scale", 0.5),))
    with pytest.raises(ncd.ParseError, match="draws from the global random state"):
        check_allowed(flash, QKV + (0.2,))
    with pytest.raises(ncd.ParseError, match="draws from the global random state"):
        check_allowed("aten.native_dropout.default", (("$in", 0), 0.0, False), ())  # by name, whatever its rate


def test_an_attention_call_missing_a_required_operand_is_refused() -> None:
    for short in (QKV[:2], QKV[:1] + (0,), ()):
        with pytest.raises(ncd.ParseError, match="draws from the global random state"):
            check_allowed(SDPA, short, ())
