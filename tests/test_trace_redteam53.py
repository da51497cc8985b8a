"""redteam53: models and calls a user brings that the corpus does not try, each compared against the model itself.

A concatenation whose output the trace held as a number while one of its inputs is a symbol's wire
(``torch.cat([x[:, :1] - 1, x], 1)``: ``t + 1``) refused every other size: ``torch.diff(position_ids, prepend=...)``,
transformers' packed-sequence test of ``position_ids``, made any model given ``position_ids`` (Llama, GPT-NeoX, ...)
unlowerable at another batch or length ("concat into y: the output has size 8 but the inputs 1=1 t=5 add up to 6").
The concatenation now derives its output's size from its inputs (``ConcatOp``: a whole-number output joining a
symbol's wire is the inputs' sum), which the symbolic pass follows as it follows a pad's or a convolution's.

The rest are the reproducers of this stop's red-team run that pass: each is traced, drawn, lowered and compared with
the model on the traced input, on fresh values, at other sizes where the diagram lowers there, and (where it has
floating-point inputs) in its gradients.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.ir.binding import defaults_of
from ncd.render import to_svg


def _trace(model: nn.Module, *args: Any, **kwargs: Any) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *args, **kwargs)


def _flat(value: Any) -> list[torch.Tensor]:
    if hasattr(value, "to_tuple") and not isinstance(value, torch.Tensor):
        value = value.to_tuple()
    return [v for v in torch.utils._pytree.tree_leaves(value) if isinstance(v, torch.Tensor)]


def _same(got: Any, want: Any) -> None:
    got, want = _flat(got), _flat(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


# -- the concatenation sized by its inputs --------------------------------------------------------------------------
class _Prepended(nn.Module):
    """``torch.diff`` with a prepended column (transformers' ``find_packed_sequence_indices``)."""

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return torch.diff(p, prepend=p[:, :1] - 1, dim=-1)


class _FirstRepeated(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :1] - 1, x], 1) * 2


@pytest.mark.parametrize("make, inputs", [
    (_Prepended, lambda b, t: (torch.arange(t).expand(b, t) + torch.randint(0, 3, (b, 1)),)),
    (_FirstRepeated, lambda b, t: (torch.randn(b, t, 4),)),
], ids=["diff_prepend", "cat_first"])
def test_a_concatenation_joining_the_token_wire_lowers_at_other_sizes(make: Any, inputs: Any) -> None:
    torch.manual_seed(0)
    model = make().eval()
    d = _trace(model, *inputs(3, 7))
    for b, t in ((3, 7), (2, 5), (1, 9)):
        x = inputs(b, t)
        _same(d.to_torch(b=b, t=t)(*x), model(*x))  # refused at (2, 5) and (1, 9) before ("add up to")


def _llama(**extra: Any) -> nn.Module:
    import transformers

    config = transformers.LlamaConfig(vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=1, intermediate_size=32, max_position_embeddings=64, **extra)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_llama_given_position_ids_lowers_at_other_sizes_and_packed_positions_are_followed() -> None:
    model = _llama()
    g = torch.Generator().manual_seed(1)

    def call(b: int, t: int, packed: bool = False) -> dict[str, torch.Tensor]:
        p = torch.arange(t).expand(b, t).clone()
        if packed:
            p[:, t // 2:] -= t // 2
        return {"input_ids": torch.randint(3, 99, (b, t), generator=g), "position_ids": p}

    d = _trace(model, use_cache=False, **call(3, 7))
    assert d.opaque_count == 0
    with torch.no_grad():
        for b, t, packed in ((3, 7, False), (3, 7, True), (2, 5, False), (1, 9, True)):
            inputs = call(b, t, packed)
            _same(d.to_torch(b=b, t=t)(*inputs.values()), model(**inputs, use_cache=False).logits)


# -- reproducers that pass: plain PyTorch as users write it ------------------------------------------------------------
class _Ellipsis(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 6))
        self.u = nn.Parameter(torch.randn(4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.einsum("...ij,jk->...ik", x, self.w)
        z = torch.einsum("b...d,b...d->b...", y, y)
        return torch.einsum("...i,i->...", z, self.u), torch.einsum("bt...->b...", y).sum(-1)


class _Pieces(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(12, 24)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.lin(x).chunk(2, dim=-1)
        parts = torch.split(a * torch.sigmoid(b), [3, 4, 5], dim=-1)
        cols = [row * (i + 1) for i, row in enumerate(x.unbind(1))]
        return torch.stack([p.mean(-1) for p in parts], -1), torch.stack(cols, 1).sum(1)


class _WhereScalars(nn.Module):
    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.where(x > 0, x, 0.1 * x)
        z = torch.where(keep[..., None], 1.0, -1.0) * y
        s = (x @ x.transpose(1, 2)).masked_fill(~keep[:, None, :], float("-inf"))
        return s.softmax(-1) @ z, torch.where(keep, 3, 7)


class _EncoderSeqFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8), enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, src_key_padding_mask: torch.Tensor) -> torch.Tensor:
        return self.enc(x, src_key_padding_mask=src_key_padding_mask)


class _Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(8, 8, 3, groups=8, padding="same", dilation=2)
        self.b = nn.Conv1d(8, 4, 4, groups=2, padding="same")
        self.c = nn.Conv1d(4, 4, 5, padding="same", padding_mode="reflect")
        self.up = nn.ConvTranspose1d(4, 2, 3, dilation=2, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.c(F.silu(self.b(self.a(x)))))


class _PaddedPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8, padding_idx=0)
        self.out = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        keep = ids != 0
        n = keep.sum(1, keepdim=True).clamp(min=1)
        pooled = (self.emb(ids) * keep.unsqueeze(-1)).sum(1) / n
        return self.out(pooled), ids.gather(1, n - 1), n * 2 - 1


class _IndexMath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Embedding(16, 6)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pos = (mask.cumsum(-1) - 1).clamp(min=0) * mask
        rel = pos[:, :, None] - pos[:, None, :]
        last = mask.sum(-1) - 1
        return x + self.pos(pos), (rel.abs() // 2 + (rel > 0).long() * 4) % 7, x[torch.arange(x.shape[0]), last]


class _Teacher(nn.Module):
    """A target computed under ``no_grad`` and a straight-through rounding: the lowered module's gradients are the
    model's (none into the teacher, the identity through the rounding)."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Linear(4, 4)
        self.t = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.t(x).softmax(-1)
        y = self.s(x)
        y = y + (torch.round(y * 4) / 4 - y).detach()
        return -(target * y.log_softmax(-1)).sum(-1).mean()


class _KeywordOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor, *, scale: float = 1.0, mask: Any = None,
                bias: Any = None) -> tuple[Any, ...]:
        y = self.lin(x) * scale
        if mask is not None:
            y = y * mask
        if bias is not None:
            y = y + bias
        return y, None, (y.sum(), None)


def _lengths_mask(b: int, t: int) -> torch.Tensor:
    lengths = torch.tensor([t, max(t - 2, 1), max(t - 1, 1)][:b])
    return torch.arange(t)[None, :] >= lengths[:, None]


def _left_padded(b: int, t: int) -> torch.Tensor:
    m = torch.ones(b, t, dtype=torch.long)
    m[1:, :2] = 0
    return m


CASES = {  # name: (model, inputs at (b, t, seed)) -> (args, kwargs)
    "einsum_ellipsis": (_Ellipsis, lambda b, t, g: ((torch.randn(b, t, 4, 8, generator=g),), {})),
    "chunk_split_unbind": (_Pieces, lambda b, t, g: ((torch.randn(b, t, 12, generator=g),), {})),
    "where_scalars": (_WhereScalars, lambda b, t, g: ((torch.randn(b, t, 6, generator=g),
                                                       torch.rand(b, t, generator=g) > 0.3), {})),
    "encoder_padding_seq_first": (_EncoderSeqFirst, lambda b, t, g: ((torch.randn(t, b, 8, generator=g),),
                                                                      {"src_key_padding_mask": _lengths_mask(b, t)})),
    "convs_same_groups_dilation": (_Convs, lambda b, t, g: ((torch.randn(b, 8, 11, generator=g),), {})),
    "embedding_padding_pool": (_PaddedPool, lambda b, t, g: ((torch.cat(
        [torch.randint(1, 20, (b, t - 2), generator=g), torch.zeros(b, 2, dtype=torch.long)], 1),), {})),
    "int64_index_math": (_IndexMath, lambda b, t, g: ((torch.randn(b, t, 6, generator=g), _left_padded(b, t)), {})),
    "no_grad_teacher_straight_through": (_Teacher, lambda b, t, g: ((torch.randn(b, t, 4, generator=g),), {})),
    "keyword_only_tuple_none": (_KeywordOnly, lambda b, t, g: ((torch.randn(b, t, 6, generator=g),),
                                                               {"scale": 0.5, "mask": None,
                                                                "bias": torch.randn(6, generator=g)})),
}


def _grads(module: nn.Module, call: Any, flat: bool) -> list[torch.Tensor]:
    """The gradients of a fixed weighting of ``module``'s outputs: its inputs' and its parameters'."""
    leaves, spec = torch.utils._pytree.tree_flatten(call)
    leaves = [v.detach().clone().requires_grad_(v.is_floating_point()) if isinstance(v, torch.Tensor) else v
              for v in leaves]
    args, kwargs = torch.utils._pytree.tree_unflatten(leaves, spec)
    module.zero_grad(set_to_none=True)
    out = module(*_flat((args, kwargs))) if flat else module(*args, **kwargs)
    outs = [o for o in _flat(out) if o.requires_grad]
    sum(((o * torch.linspace(-1, 1, o.numel()).view(o.shape)).sum() for o in outs), torch.zeros(())).backward()
    grads = [v.grad for v in leaves if isinstance(v, torch.Tensor) and v.grad is not None]
    return grads + [p.grad for p in module.parameters() if p.grad is not None]


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_user_model_is_the_model_traced_fresh_at_other_sizes_and_in_its_gradients(name: str) -> None:
    make, inputs = CASES[name]
    torch.manual_seed(0)
    model = make().eval()
    args, kwargs = inputs(3, 7, torch.Generator().manual_seed(0))
    d = _trace(model, *args, **kwargs)
    assert d.opaque_count == 0 and "<svg" in to_svg(d)
    lowered = d.to_torch()
    sizes = defaults_of(d.as_block())
    for b, t, seed in ((3, 7, 0), (3, 7, 1), (2, 5 if "t" in sizes else 7, 2)):  # (a 4-d input is 'b c y x')
        a, k = inputs(b, t, torch.Generator().manual_seed(seed))
        try:
            run = lowered if (b, t) == (3, 7) else d.to_torch(**{k: v for k, v in {"b": b, "t": t}.items() if k in sizes})
        except ncd.TraceError as error:  # a refusal names what holds the traced sizes
            assert "traced" in str(error)
            continue
        with torch.no_grad():
            _same(run(*_flat((a, k))), model(*a, **k))
    want, got = _grads(model, (args, kwargs), False), _grads(lowered, (args, kwargs), True)
    assert sorted(float(g.norm()) for g in got) == pytest.approx(sorted(float(g.norm()) for g in want), rel=1e-4,
                                                                 abs=1e-6)


class _NeedsGrad(nn.Module):
    def __init__(self, learned: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4) if learned else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return y * 2 if y.requires_grad else y * 3


@pytest.mark.parametrize("learned", [False, True])
def test_a_requires_grad_branch_traced_under_no_grad_is_warned_about(learned: bool) -> None:
    # traced under torch.no_grad, the model's answer (False) is the capture's: the diagram is y * 3, but the lowered
    # module called with gradients on (or on an input needing one) is y * 3 where the model is y * 2; before, no word
    torch.manual_seed(0)
    model, x = _NeedsGrad(learned), torch.randn(2, 4)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match=r"reads a tensor's \.requires_grad at .*called with"
                                                             r" gradients on \(as the lowered module's parameters"):
        lowered = ncd.trace(model, x).to_torch()
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x))  # as traced: the model's branch
    given = x.clone().requires_grad_()
    torch.testing.assert_close(lowered(given) * 2, model(given) * 3)  # the other branch: what the warning is about
