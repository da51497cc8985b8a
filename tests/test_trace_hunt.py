"""The hunts' models (``benchmarks/corpus_torch_hunt.py``): never a crash, never a silently wrong diagram.

Each entry is traced (or refused with ``ncd.TraceError``); the lowered module equals the model on the traced input and
on a fresh one, with the model's parameter count; the drawing renders; and lowered at another batch (``b=3``) it is
refused or equal to the model on a fresh input of that batch.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

import ncd
from tests.benchmarks import benchmark

corpus = benchmark("import_corpus")
corpus.zoo_module()  # puts benchmarks/ on the path
import corpus_torch_hunt as hunt  # noqa: E402

NAMES = [name for name, _, _ in hunt.zoo()]
#: entries whose lowering at another batch is refused, and why (the rest must lower and be equal)
REFUSED_AT_B3 = {"shape_float_first": "differs from the model", "channels_last": None, "bool_masks": None,
                 "view_writes": None, "int_bits_arithmetic": None, "weight_norm": None, "functional_call": None,
                 "embedding_max_norm": None}


@pytest.fixture(scope="module")
def entries() -> dict[str, object]:
    return {e.name: e for e in corpus.torch_entries()}


def _grown(inputs: dict[str, object], b: int) -> dict[str, object]:
    """The inputs at batch ``b``: their rows repeated (``0 1 0``), their layout (strides, subclass) as given."""
    out: dict[str, object] = {}
    for k, v in inputs.items():
        assert isinstance(v, torch.Tensor)
        rows = v.index_select(0, torch.arange(b) % v.shape[0])
        out[k] = torch.empty_strided(rows.shape, _strides(v, rows.shape), dtype=v.dtype).copy_(rows)
        if type(v) is not torch.Tensor:
            out[k] = out[k].as_subclass(type(v))  # type: ignore[attr-defined]
    return out


def _strides(v: torch.Tensor, shape: torch.Size) -> tuple[int, ...]:
    order = sorted(range(v.dim()), key=lambda d: v.stride(d))  # innermost first
    strides = [0] * v.dim()
    step = 1
    for d in order:
        strides[d] = step
        step *= shape[d]
    return tuple(strides)


@pytest.mark.parametrize("name", NAMES)
def test_a_hunted_model_is_traced_equal_and_lowers_at_another_batch_or_refuses(name: str, entries: dict) -> None:
    from ncd.render import to_svg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, kept = corpus.run_one(entries[f"torch.{name}"], determinism=False)
    assert result.status == "traced", result.reason
    assert not result.lowered and not result.failed, (result.lowered, result.failed)
    assert result.params_lowered == result.params
    model, inputs = kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, **inputs)
    assert "<svg" in to_svg(d)
    fresh = entries[f"torch.{name}"].build()[2]
    _equal(name, d.to_torch(), model, fresh)  # at the traced sizes, on a fresh input (a dataclass output too)
    try:
        lowered = d.to_torch(b=3)
    except ncd.TraceError as error:
        assert name in REFUSED_AT_B3, str(error)
        assert REFUSED_AT_B3[name] is None or REFUSED_AT_B3[name] in str(error)
        return
    except ncd.NCDError as error:  # the batch is no size symbol of this diagram
        assert "cannot apply" in str(error)
        return
    assert REFUSED_AT_B3.get(name) is None, "lowered where it must be refused"
    _equal(name, lowered, model, _grown(fresh, 3))


def _equal(name: str, lowered: torch.nn.Module, model: torch.nn.Module, inputs: dict[str, object]) -> None:
    from ncd.trace.capture import held_tensors

    with torch.no_grad():
        want = held_tensors(model(**inputs))
        got = held_tensors(lowered(*inputs.values()))
    tol = 3e-2 if name.startswith("bfloat16") else 1e-4
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b.to(a.dtype), rtol=tol, atol=tol)


def test_a_parameter_written_through_an_alias_is_read_written_and_warned_about() -> None:
    """``nn.Embedding(max_norm=...)`` renorms the rows it looks up through ``weight.detach()``, a critic clips its weight
    through ``.data``: later reads of the parameter read it written (once, the renorm was dropped and the lowered
    module read unrenormed rows on a fresh input: max difference 18, silently), and the write is warned about."""
    torch.manual_seed(0)
    model = hunt.RenormedEmbedding()
    ids = torch.randint(0, 40, (2, 6))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, ids)
    lowered = d.to_torch()
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        for start in (0, 12, 24, 28):  # every row, most of them not looked up while tracing
            fresh = torch.arange(start, start + 12).reshape(2, 6)
            torch.testing.assert_close(lowered(fresh), model(fresh))
        assert float(model.emb.weight.norm(dim=1).max()) <= 1.0 + 1e-6  # the model did renorm them
    said = [str(w.message) for w in caught if "in place" in str(w.message)]
    assert said and re.search(r"writes into its parameters in place \(fc\.weight at .*:\d+, emb\.weight at .*:\d+\)", said[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_rms_norm_with_the_default_eps_is_a_norm_box(dtype: torch.dtype) -> None:
    """``nn.RMSNorm(m)`` (``eps=None``: ATen takes its compute type's epsilon) is drawn as a norm, not an opaque box,
    and lowers to the model's values bit for bit (the eps ATen uses: float32's for bfloat16)."""
    torch.manual_seed(0)
    model = hunt.DefaultRMSNorm().to(dtype)
    x = torch.randn(2, 6, 16, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert d.opaque_count == 0
    fresh = 1e-4 * torch.randn(3, 6, 16, dtype=dtype)  # tiny values: the eps decides
    with torch.no_grad():
        assert torch.equal(d.to_torch(b=3)(fresh), model(fresh))


class _OtherNames(torch.nn.Module):
    """Reads or writes its input under another name: ``x.data`` (an alias no operator makes), ``x.detach()`` written
    in place, or a ``torch.vmap`` of a layer (its calls run on tensors wrapping the batch)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "data":
            return self.fc(x.data)
        if self.how == "data_write":
            x.data.mul_(2.0)
        elif self.how == "detach_write":
            x.detach().add_(1.0)
        elif self.how == "vmap":
            return torch.vmap(lambda row: self.fc(row).softmax(-1))(x)
        out: torch.Tensor = self.fc(x)
        return out


@pytest.mark.parametrize("how", ["data", "data_write", "detach_write"])
def test_an_input_under_another_name_is_read_as_the_input(how: str) -> None:
    # before: x.data was drawn as a constant (fresh input: max difference 2.6), and writes through x.data or
    # x.detach() were lost (1.5, 1.1), all with no warning about them
    torch.manual_seed(0)
    model = _OtherNames(how)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(2, 6, 16))
    lowered = d.to_torch()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        got = lowered(x.clone())  # each on its own copy: the model writes into its input
        torch.testing.assert_close(got, model(x.clone()))


def test_a_torch_func_transform_is_refused_naming_the_line() -> None:
    # before: the vmapped calls' tensors were drawn as constants (fresh input: max difference 0.97, no warning)
    with pytest.raises(ncd.TraceError, match=r"torch\.func transform \(vmap, grad\) at test_trace_hunt\.py:\d+"):
        ncd.trace(_OtherNames("vmap"), torch.randn(2, 6, 16))


class _VmapMask(torch.nn.Module):
    """Attention whose mask is built by ``torch.vmap`` over index ranges, as ``transformers``' masking utilities do
    (``use_vmap``), optionally reading a padding mask input inside the mapped function."""

    def __init__(self, padding: bool) -> None:
        super().__init__()
        self.padding = padding
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(x.shape[1])

        def allowed(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            causal = k <= q
            return causal & keep[0, k].bool() if self.padding else causal

        mask = torch.vmap(torch.vmap(allowed, in_dims=(None, 0)), in_dims=(0, None))(steps, steps)
        h = self.fc(x)
        out: torch.Tensor = (h @ h.transpose(1, 2)).masked_fill(~mask, float("-inf")).softmax(-1) @ h
        return out


@pytest.mark.parametrize("padding", [False, True])
def test_a_vmap_over_index_ranges_is_traced_and_equal_on_fresh_inputs(padding: bool) -> None:
    # t5gemma2 and unlimited_ocr build their masks this way: refused while every vmap was (163f138); a vmap over the
    # inputs' values stays refused (the test above)
    torch.manual_seed(0)
    model = _VmapMask(padding).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.long))
    x, keep = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.long)
    keep[:, 3:] = 0  # padding the traced call did not have
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x, keep), model(x, keep))


def test_the_transform_check_of_a_call_s_arguments_finds_what_held_tensors_finds() -> None:
    """The recorder's check, at every call once a model has run a ``torch.func`` transform, that no argument is one of
    its tensors (``holds_transformed``: plain tuples, lists and dicts looked through directly) against the pytree walk
    it stands for, on arguments holding the transform's tensors and arguments holding only plain ones."""
    import collections
    import dataclasses

    from torch._C._functorch import is_functorch_wrapped_tensor

    from ncd.trace.aliases import holds_transformed
    from ncd.trace.capture import held_tensors

    @dataclasses.dataclass
    class Record:
        t: object

    class Holder:
        def __init__(self, t: object) -> None:
            self.t = t

    seen: list[tuple[bool, bool]] = []

    def probe(row: torch.Tensor) -> torch.Tensor:
        plain = torch.ones(2)
        for held in (row, plain):
            for value in [(held, 1), [1.0, [None, held]], {"a": held}, collections.OrderedDict(a=held), Record(held),
                          Holder(held), (Holder(Holder([held])),), ({"k": [(3, held)]}, torch.float32),
                          torch.nn.Parameter(plain) if held is plain else held]:
                seen.append((holds_transformed(value), any(map(is_functorch_wrapped_tensor, held_tensors(value)))))
        seen.append((holds_transformed((torch.Size([2]), None, "s", torch.float32)), False))
        return row

    torch.vmap(probe)(torch.randn(3, 2))
    assert all(got == want for got, want in seen), seen
    assert [got for got, _ in seen] == [True] * 9 + [False] * 10


@pytest.mark.parametrize("options", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"label_smoothing": 0.1},
                                     {"weight": True}, {"ignore_index": 7}, {"nll": True}])
@pytest.mark.parametrize("traced, fresh", [([1, 2, 3, 4], [1, -1, 3, 0]), ([1, -1, 3, 4], [0, 2, 3, 1]),
                                           ([1, 2, 3, 4], [-1, -1, 2, 2])])
def test_a_loss_ignores_the_labels_torch_ignores_whatever_the_traced_labels_held(options: dict[str, object],
                                                                                   traced: list[int],
                                                                                   fresh: list[int]) -> None:
    """Rows whose label is ``ignore_index`` (-100, or a class no score has) count for nothing, on any input: the mask
    was drawn only when the traced labels held an ignored class in range, so labels traced without ``-100`` gave a
    module reading other entries at a fresh input's ``-100`` (diff 0.06-3.5 before)."""
    import torch.nn.functional as F

    ignore = int(str(options.get("ignore_index", -100)))
    kwargs = {k: v for k, v in options.items() if k not in ("weight", "nll")}

    class Loss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(8, 5)
            self.register_buffer("w", torch.rand(5) + 0.5)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            scores = self.fc(x)
            if "nll" in options:
                return F.nll_loss(scores.log_softmax(-1), y, **kwargs)  # type: ignore[arg-type]
            w = self.w if "weight" in options else None
            assert w is None or isinstance(w, torch.Tensor)
            return F.cross_entropy(scores, y, weight=w, **kwargs)  # type: ignore[arg-type]

    torch.manual_seed(0)
    model = Loss()
    labels = [torch.tensor([ignore if v < 0 else v for v in vs]) for vs in (traced, fresh)]
    d = ncd.trace(model, torch.randn(4, 8), labels[0])
    assert d.opaque_count == 0
    lowered = d.to_torch()
    for y in labels:
        x = torch.randn(4, 8)
        with torch.no_grad():
            torch.testing.assert_close(lowered(x, y), model(x, y), equal_nan=True)


@pytest.mark.parametrize("norm, check, float_mask", [(False, True, False), (True, True, True), (True, False, False)])
def test_a_transformer_encoder_given_padding_is_its_nested_tensor_path(norm: bool, check: bool, float_mask: bool) -> None:
    """Without gradients ``nn.TransformerEncoder`` outputs 0 at padded rows (before its norm), when every row's padding
    is at its end (``mask_check``): the diagram computes that, on a fresh input padded at the start too (where torch
    takes the other path), and says so (diff 2.0-2.4 at the padded rows before, silently)."""
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, 2, norm=torch.nn.LayerNorm(16) if norm else None,
                                          enable_nested_tensor=True, mask_check=check).eval()

    class Encode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.encoder(x, src_key_padding_mask=padding)
            return out

    def padded(at_end: bool) -> torch.Tensor:
        pad = torch.zeros(2, 6, dtype=torch.bool)
        pad[0, -2:] = at_end
        pad[0, :2] = not at_end
        return pad.float().masked_fill(pad, float("-inf")) if float_mask else pad

    model = Encode()
    with pytest.warns(RuntimeWarning, match="nested-tensor path"):
        d = ncd.trace(model, torch.randn(2, 6, 16), padded(True))
    lowered = d.to_torch()
    for pad in [padded(True)] + ([padded(False)] if check else []):
        x = torch.randn(2, 6, 16)
        with torch.no_grad():
            torch.testing.assert_close(lowered(x, pad), model(x, pad))


def test_arithmetic_on_narrow_integers_wraps_around_as_torch_does() -> None:
    """``+ - *`` on uint8/int8/int16 wrap around in torch; an arithmetic box computes in int64 and would not: they are
    left to torch (opaque boxes), exact on a fresh input that wraps where the traced one did not (before: an image's
    ``img + 1`` at 255 gave 256, and sums of uint8 terms drawn as boxes did not wrap: diff 1.3-1.5 after / 255)."""

    class Narrow(torch.nn.Module):
        def forward(self, img: torch.Tensor, small: torch.Tensor) -> tuple[torch.Tensor, ...]:
            terms = (img + 1) + img * 3 + (img // 3 + img % 5) - img
            return terms, terms.float() / 255, small + small, small * 300

    model = Narrow()
    img = torch.tensor([[0, 7, 100, 200]], dtype=torch.uint8)
    small = torch.tensor([[1, -2, 30, 7]], dtype=torch.int16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, img, small).to_torch()
    for a, b in ((img, small), (torch.tensor([[255, 254, 86, 3]], dtype=torch.uint8),
                                torch.tensor([[30000, -20000, 200, 7]], dtype=torch.int16))):
        for got, want in zip(lowered(a, b), model(a, b)):
            torch.testing.assert_close(got.to(want.dtype), want)
