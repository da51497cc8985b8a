"""Recording on the meta device (a large model's calls run for their shapes only): the same records as torch's
Python meta kernels give, and the same diagram as recording on real values."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import pytest
import torch
from torch import nn

import ncd
from ncd.render import to_svg

record = importlib.import_module("ncd.trace.record")
recording = importlib.import_module("ncd.trace.recording")  # the recording of the calls (what reads _on_meta_device)
meta_device = importlib.import_module("ncd.trace.meta")  # (its rules made from the arguments, set aside in one test)


class ConvThenAttention(nn.Module):
    """A convolutional front end, an encoder layer (attention, norms, GELU) and a head: the calls of the audio and
    vision models the corpus records on the meta device."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 16, 10, stride=5)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=dropout, activation="gelu", batch_first=True)
        self.head = nn.Linear(16, 4)
        self.p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.conv(x.unsqueeze(1))).transpose(1, 2)
        # (a functional dropout: recorded in eval mode too, where the layer's nn.Dropout modules are the identity)
        h = nn.functional.dropout(h, self.p, self.training)
        out: torch.Tensor = self.head(self.layer(h) * 0.5 + h)
        return out


def _python_meta(func: Any, args: Any, kwargs: Any) -> Any:
    """``func`` on meta copies with torch's Python dispatcher on (its decompositions: the reference)."""
    from torch._dispatch.python import enable_python_dispatcher

    with enable_python_dispatcher():
        margs, mkwargs = record._to_meta((args, kwargs))
        return func(*margs, **mkwargs)


#: where torch's C++ meta kernel (what the recording runs) and its Python one (the reference) make tensors of the
#: same shape, strides, offset and dtype but differ in whether the result is a view: operator -> (C++ view, Python view)
VIEWNESS_DIFFERS = {
    "scaled_dot_product_attention": (False, True),  # the Python kernel returns a view of its product
    "dropout": (True, False),  # eval mode: the C++ kernel returns a view of its input; the Python one a new tensor
}


def _compared_with_python_meta(fast: Any, found: list[tuple[str, Any, Any]], checked: list[str],
                               known: list[str] | None = None) -> Any:
    """``fast`` (:func:`recording._on_meta_device`) checked against the Python meta kernels.  Differences are listed
    in ``found``, not raised: an exception here would make the trace record again on real values and pass.  The
    :data:`VIEWNESS_DIFFERS` ones seen are listed in ``known``."""

    def compared(func: Any, args: Any, kwargs: Any, memo: Any = None) -> Any:
        margs, mkwargs, out = fast(func, args, kwargs, memo)
        name = func.overloadpacket.__name__
        want = _python_meta(func, args, kwargs)
        got_leaves, want_leaves = torch.utils._pytree.tree_leaves(out), torch.utils._pytree.tree_leaves(want)
        if len(got_leaves) != len(want_leaves):
            found.append((name, len(got_leaves), len(want_leaves)))
        for got, ref in zip(got_leaves, want_leaves):
            if isinstance(ref, torch.Tensor):
                if not isinstance(got, torch.Tensor) or got.device.type != "meta":
                    found.append((name, got, "a meta tensor"))
                    continue
                layout = (got.shape, got.stride(), got.dtype, got.storage_offset())
                if layout != (ref.shape, ref.stride(), ref.dtype, ref.storage_offset()):
                    found.append((name, layout, (ref.shape, ref.stride(), ref.dtype, ref.storage_offset())))
                elif (got._base is None) != (ref._base is None):
                    if (got._base is not None, ref._base is not None) == VIEWNESS_DIFFERS.get(name):
                        if known is not None:
                            known.append(name)
                    else:
                        found.append((name, f"view {got._base is not None}", f"view {ref._base is not None}"))
            elif got != ref:
                found.append((name, got, ref))
        checked.append(name)
        return margs, mkwargs, out

    return compared


def _recorded_on(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether every recording :func:`record.record` finished was on meta (a failed meta one records again), from its
    start or from where its budget ran out (:mod:`ncd.trace.switch`)."""
    from ncd.trace import recording

    finished: list[bool] = []
    inner, switch = record._record, recording.switch
    switched: list[bool] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        switched.clear()
        out = inner(*args, **kwargs)
        finished.append(kwargs["meta"] or any(switched))
        return out

    def switching(rec: Any) -> bool:
        done: bool = switch(rec)
        switched.append(done)
        return done

    monkeypatch.setattr(record, "_record", counted)
    monkeypatch.setattr(recording, "switch", switching)
    return finished


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_meta_records_match_the_python_meta_kernels_and_the_real_recording(
        monkeypatch: pytest.MonkeyPatch, train: bool) -> None:
    torch.manual_seed(0)
    model, x = ConvThenAttention(dropout=0.1).train(train), torch.randn(2, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = to_svg(ncd.trace(model, x))
    found: list[tuple[str, Any, Any]] = []
    checked: list[str] = []
    known: list[str] = []
    monkeypatch.setattr(record, "META_ABOVE", 0)
    monkeypatch.setattr(record, "WORK_BUDGET", -1)  # straight to meta (not on real values within a budget first)
    monkeypatch.setattr(recording, "_on_meta_device",
                        _compared_with_python_meta(recording._on_meta_device, found, checked, known))
    finished = _recorded_on(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = to_svg(ncd.trace(model, x))
    assert finished == [True], finished  # recorded on meta, once: not again on real values
    assert not found, found
    # (norms and activations are made as their input, not by a meta kernel: not among them)
    assert {"conv1d", "linear", "add", "mul"} <= set(checked) and len(checked) >= 10, checked
    # the known view-ness differences, each seen (dropout returns its input in eval mode only); no SVG shows them
    assert set(known) == ({"scaled_dot_product_attention"} if train else set(VIEWNESS_DIFFERS)), known
    assert meta == real


def test_a_difference_from_the_python_meta_kernels_fails_the_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above can fail: a meta ``linear`` made with other strides is listed (and the trace still ends)."""
    torch.manual_seed(0)
    model, x = ConvThenAttention().eval(), torch.randn(2, 64)
    found: list[tuple[str, Any, Any]] = []
    checked: list[str] = []
    fast = recording._on_meta_device

    def wrong(func: Any, args: Any, kwargs: Any, memo: Any = None) -> Any:
        margs, mkwargs, out = fast(func, args, kwargs, memo)
        if func.overloadpacket.__name__ == "linear" and out.dim() >= 2:
            out = out.transpose(-1, -2).contiguous().transpose(-1, -2)
        return margs, mkwargs, out

    monkeypatch.setattr(record, "META_ABOVE", 0)
    monkeypatch.setattr(record, "WORK_BUDGET", -1)  # straight to meta (not on real values within a budget first)
    monkeypatch.setattr(recording, "_on_meta_device", _compared_with_python_meta(wrong, found, checked))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ncd.trace(model, x)
    assert [f[0] for f in found] and {f[0] for f in found} == {"linear"}, found


class Layers(nn.Module):
    """Four equal encoder layers after a convolution: the last three make the same calls on the same shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 16, 10, stride=5)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation="gelu", batch_first=True)
                                    for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.conv(x.unsqueeze(1))).transpose(1, 2)
        for layer in self.layers:
            h = layer(h) * 0.5 + h
        return h


def test_repeated_meta_calls_remake_the_outputs_the_meta_kernels_give(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model, x = Layers().eval(), torch.randn(2, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = to_svg(ncd.trace(model, x))
    remade, differ = [], []
    fast = recording._on_meta_device

    def compared(func: Any, args: Any, kwargs: Any, memo: Any = None) -> Any:
        assert memo is not None
        hit = record._meta_key(func, *record._to_meta((args, kwargs))) in memo
        margs, mkwargs, out = fast(func, args, kwargs, memo)
        if hit:  # made from an earlier call's metadata: as the kernel makes it (differences listed: raising here
            remade.append(func.overloadpacket.__name__)  # would only make the trace record again on real values)
            want = fast(func, args, kwargs, None)[2]
            for got, ref in zip(torch.utils._pytree.tree_leaves(out), torch.utils._pytree.tree_leaves(want), strict=True):
                if record._described(got) != record._described(ref):
                    differ.append((func, record._described(got), record._described(ref)))
        return margs, mkwargs, out

    monkeypatch.setattr(record, "META_ABOVE", 0)
    monkeypatch.setattr(record, "WORK_BUDGET", -1)  # straight to meta (not on real values within a budget first)
    finished = _recorded_on(monkeypatch)
    with warnings.catch_warnings():  # the results made from the arguments' layouts (meta._permuted, _linear): as real
        warnings.simplefilter("ignore")
        assert to_svg(ncd.trace(model, x)) == real
    assert finished == [True], finished
    finished.clear()
    monkeypatch.setattr(meta_device, "_permuted", lambda *_: None)  # (the memo is for every other operator:
    monkeypatch.setattr(meta_device, "_linear", lambda *_: None)  # these two met again, it remakes them)
    monkeypatch.setattr(recording, "_on_meta_device", compared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = to_svg(ncd.trace(model, x))
    assert finished == [True], finished
    assert not differ
    # (attention is made from its arguments' shapes, not remade: meta._attention, checked below against its kernel)
    assert {"linear", "add"} <= set(remade) and "scaled_dot_product_attention" not in remade and len(remade) >= 16, \
        (len(remade), remade)
    assert meta == real


class Lookup(nn.Module):
    """A large embedding table before a small layer; with ``tied`` an output head that multiplies by the table."""

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.table = nn.Embedding(100_000, 64)
        self.layer = nn.Linear(64, 64)
        self.head = nn.Linear(64, 100_000, bias=False) if tied else None
        if self.head is not None:
            self.head.weight = self.table.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.layer(self.table(ids))
        return self.head(h) if self.head is not None else h


@pytest.mark.parametrize("tied", [False, True], ids=["lookup", "tied-head"])
def test_a_table_only_looked_up_is_not_arithmetic_a_tied_head_is(monkeypatch: pytest.MonkeyPatch, tied: bool) -> None:
    model, ids = Lookup(tied).eval(), torch.randint(0, 100_000, (1, 1000))
    assert sum(p.numel() for p in model.parameters()) * ids.numel() > record.META_ABOVE
    finished = _recorded_on(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diagram = ncd.trace(model, ids)
    assert finished == [tied], finished  # a lookup does no arithmetic per parameter; the head's matrix product does
    assert record._computing(model) == 64 * 64 + 64 + (100_000 * 64 if tied else 0)
    assert diagram.opaque_count == 0


def test_pointwise_arithmetic_made_without_a_meta_kernel_is_what_the_python_meta_kernels_make() -> None:
    """``meta._pointwise`` (add, sub, mul, div, neg on floating tensors of one dtype, each contiguous, broadcast, and
    numbers) against torch's Python meta kernels: the same shape, strides, offset and dtype; anything else (a
    transposed operand, another dtype's, a complex number) is left to the kernel."""
    from ncd.trace.meta import POINTWISE, _pointwise

    made, left = 0, 0
    for shape in [(), (1,), (3,), (2, 1, 3), (1, 1), (2, 3, 4), (0, 3), (4, 0, 1)]:
        for dtype in [torch.float32, torch.float16, torch.bfloat16, torch.float64]:
            a = torch.empty(shape, dtype=dtype, device="meta")
            others: list[Any] = [a, torch.empty(shape, dtype=dtype), 2, 0.5, True, 2j,
                                 torch.empty(shape, dtype=torch.float64 if dtype == torch.float32 else torch.float32),
                                 torch.empty(shape, dtype=torch.int64, device="meta")]
            if len(shape) >= 2:
                others.append(torch.empty(tuple(reversed(shape)), dtype=dtype, device="meta").transpose(0, -1))
            if shape:
                others += [torch.empty((1,) * len(shape), dtype=dtype, device="meta"),  # broadcasts
                           torch.empty(shape[1:], dtype=dtype, device="meta"), torch.empty((), dtype=dtype),
                           torch.empty((5,) + shape, dtype=dtype, device="meta"),
                           nn.Parameter(torch.empty(shape[-1:], dtype=dtype, device="meta"))]  # (a layer's scale)
            if len(shape) >= 2:
                others.append(torch.empty(shape[:-1] + (1,), dtype=dtype, device="meta"))
            for func in POINTWISE:
                for rest in [()] if func == torch.ops.aten.neg.default else [(o,) for o in others]:
                    for kwargs in [{}, {"alpha": 2}] if func._schema.arguments[-1].name == "alpha" else [{}]:
                        got = _pointwise(func, (a, *rest), kwargs)
                        if got is None:
                            left += 1
                            continue
                        made += 1
                        want = _python_meta(func, (a, *rest), kwargs)
                        assert (got.shape, got.stride(), got.storage_offset(), got.dtype, got._base) == \
                            (want.shape, want.stride(), want.storage_offset(), want.dtype, None), (func, shape, rest)
    assert made > 500 and left > 500, (made, left)
    transposed = torch.empty(3, 2, device="meta").t()
    assert _pointwise(torch.ops.aten.add.Tensor, (transposed, transposed), {}) is None  # (not contiguous: the kernel)


def test_convolutions_and_pads_made_without_a_meta_kernel_are_what_the_meta_kernels_make() -> None:
    """``meta._conv1d`` and ``meta._pad`` against torch's meta kernels on random arguments: the same shape, strides,
    offset and dtype where they make a result (many cases), and left to the kernel otherwise (many cases too: another
    layout, a 4-d pad, a mode other than constant, a size the kernel refuses)."""
    import random

    rng = random.Random(0)
    made = refused = 0
    conv, pad = torch.ops.aten.conv1d.default, torch.ops.aten.pad.default
    for _ in range(600):
        dtype = rng.choice([torch.float32, torch.float16, torch.bfloat16])
        if rng.random() < 0.5:
            groups = rng.choice([1, 1, 2, 3])
            c, out = groups * rng.randint(1, 4), groups * rng.randint(1, 4)
            x = torch.empty(rng.randint(1, 3), c, rng.randint(1, 40), dtype=dtype, device="meta")
            if rng.random() < 0.2:
                x = x.transpose(1, 2).contiguous().transpose(1, 2)
            w = torch.empty(out, c // groups + (rng.random() < 0.1), rng.randint(1, 7), dtype=dtype, device="meta")
            bias = rng.choice([None, torch.empty(out, dtype=dtype, device="meta")])
            args: tuple[Any, ...] = (x, w, bias, [rng.randint(1, 3)], [rng.randint(0, 3)], [rng.randint(1, 3)], groups)
            func = conv
        else:
            x = torch.empty(*[rng.randint(1, 6) for _ in range(rng.randint(1, 4))], dtype=dtype, device="meta")
            if rng.random() < 0.2 and x.dim() > 1:
                x = x.transpose(0, -1)
            pads = [rng.randint(-2, 4) for _ in range(2 * rng.randint(1, x.dim()))]
            args = (x, pads, rng.choice(["constant", "constant", "reflect"]), rng.choice([None, 0.0, 1]))
            func = pad
        if _made_as_the_kernel(func, args, {}):
            made += 1
        else:
            refused += 1
    assert made > 150 and refused > 50, (made, refused)


def _made_as_the_kernel(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether ``meta._SHAPED``'s shortcut of ``func`` made a result (asserted: what torch's meta kernel makes, as the
    recording runs it), or left it to the kernel (asserted where the kernel refuses: so must the shortcut)."""
    from ncd.trace.meta import _SHAPED, _described

    ours = _SHAPED[func](args, kwargs)
    try:
        with torch._C._DisablePythonDispatcher():
            theirs = func(*args, **kwargs)
    except Exception:  # noqa: BLE001 - the kernel refuses: so must the shortcut
        assert ours is None, (func, args, kwargs)
        return False
    if ours is None:
        return False
    assert _described(ours) == _described(theirs), (func, args, kwargs)
    return True


def test_attention_made_without_a_meta_kernel_is_what_the_meta_kernel_makes() -> None:
    """``meta._attention`` against torch's meta kernel of ``scaled_dot_product_attention`` (as the recording runs it)
    on random arguments: the same shape, strides, offset and dtype where it makes a result (many cases: grouped
    key/value heads, masks of fewer axes, causal, transposed layouts, half precision), and left to the kernel otherwise
    (many cases too: heads that do not match, dropout, a mask that does not broadcast, a batch that would broadcast)."""
    import random

    rng = random.Random(0)
    made = refused = 0
    sdpa = torch.ops.aten.scaled_dot_product_attention.default

    def tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if rng.random() < 0.3:  # (B, L, H, E) transposed to (B, H, L, E), as attention layers make it
            return torch.empty(shape[0], shape[2], shape[1], shape[3], dtype=dtype, device="meta").transpose(1, 2)
        return torch.empty(shape, dtype=dtype, device="meta")

    for _ in range(500):
        dtype = rng.choice([torch.float32, torch.float16, torch.bfloat16, torch.float64])
        b, hk, n, s, e, ev = (rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 6), rng.randint(1, 7),
                              rng.choice([4, 8]), rng.choice([4, 8]))
        h = hk * rng.choice([1, 1, 2, 3])
        gqa = rng.random() < 0.5
        q = tensor((b, h, n, e), dtype)
        k = tensor((rng.choice([b, b, 1]), hk, s, e + (rng.random() < 0.05)), dtype)
        v = tensor((b, hk, s, ev), dtype)
        kwargs: dict[str, Any] = {"enable_gqa": gqa} if rng.random() < 0.8 else {}
        if rng.random() < 0.3:
            kwargs["scale"] = rng.choice([None, 0.125])
        mask = None
        if rng.random() < 0.4:
            shape = rng.choice([(n, s), (1, 1, n, s), (b, 1, n, s), (b, h, n, s), (s,), (n + 1, s), (1, b, 1, n, s)])
            mask = torch.empty(shape, dtype=rng.choice([torch.bool, dtype, torch.float32]), device="meta")
        args: tuple[Any, ...] = (q, k, v, mask, rng.choice([0.0, 0.0, 0.0, 0.1]), rng.random() < 0.3)
        if _made_as_the_kernel(sdpa, args, kwargs):
            made += 1
        else:
            refused += 1
    assert made > 100 and refused > 50, (made, refused)


def test_pointwise_arithmetic_on_operands_of_any_layout_is_what_the_meta_kernels_make() -> None:
    """``meta._permuted`` (add, sub, mul, div, neg on meta float32/float64 tensors of one dtype laid out any strided way:
    transposed, sliced, expanded, broadcast against others, numbers) against torch's meta kernel as the recording runs
    it (its Python dispatcher off) and its Python reference: the same shape, strides, offset and dtype, a new tensor;
    ``alpha``, another dtype, half or bfloat16 (computed in float32: laid out anew), a 0-dim operand or a non-floating
    one are left to the kernel."""
    import random

    from ncd.trace.meta import POINTWISE, _permuted

    rng = random.Random(0)
    made = left = 0

    def operand(shape: tuple[int, ...], dtype: torch.dtype) -> Any:
        kind = rng.choice(["dense", "permuted", "sliced", "expanded", "broadcast", "number"])
        if kind == "number":
            return rng.choice([2, 0.5, True])
        if kind == "broadcast":
            shape = tuple(1 if rng.random() < 0.5 else n for n in shape)[rng.randint(0, max(0, len(shape) - 1)):] \
                or shape[-1:]
        order = list(range(len(shape)))
        if kind in ("permuted", "sliced"):
            rng.shuffle(order)
        wide = [n + (rng.randint(1, 3) if kind == "sliced" else 0) for n in shape]
        base = torch.empty([wide[i] for i in order], dtype=dtype, device="meta")
        t = base.permute([order.index(i) for i in range(len(shape))])
        if kind == "sliced":
            t = t[tuple(slice(0, n) for n in shape)]
        if kind == "expanded":
            t = torch.empty([1 if n > 1 and rng.random() < 0.5 else n for n in shape], dtype=dtype,
                            device="meta").expand(shape)
        return t

    for _ in range(1500):
        dtype = rng.choice([torch.float32, torch.float16, torch.bfloat16, torch.float64])
        shape = tuple(rng.choice([1, 1, 2, 3, 4, 5]) for _ in range(rng.randint(1, 5)))
        func = rng.choice(sorted(POINTWISE, key=str))
        args = [operand(shape, dtype)] if func == torch.ops.aten.neg.default else \
            [operand(shape, dtype), operand(shape, dtype)]
        if rng.random() < 0.05:
            args[-1] = torch.empty((), dtype=dtype, device="meta")
        if rng.random() < 0.05:
            args[-1] = torch.empty(shape, dtype=torch.int64 if rng.random() < 0.5 else torch.float64, device="meta")
        kwargs = {"alpha": 2} if func._schema.arguments[-1].name == "alpha" and rng.random() < 0.1 else {}
        if func == torch.ops.aten.neg.default and not isinstance(args[0], torch.Tensor):
            continue
        got = _permuted(tuple(args), kwargs)
        try:
            with torch._C._DisablePythonDispatcher():
                want = func(*args, **kwargs)
        except RuntimeError:
            assert got is None, (func, args)
            continue
        if got is None:
            left += 1
            continue
        made += 1
        reference = _python_meta(func, tuple(args), kwargs)
        for other in (want, reference):
            assert (got.shape, got.stride(), got.storage_offset(), got.dtype, got._base) == \
                (other.shape, other.stride(), other.storage_offset(), other.dtype, None), (func, args, kwargs)
        assert got.untyped_storage().nbytes() == want.untyped_storage().nbytes()
    assert made > 400 and left > 400, (made, left)


def _laid_out(rng: Any, shape: list[int], dtype: torch.dtype, kinds: list[str]) -> torch.Tensor:
    """A meta tensor of ``shape`` laid out one of ``kinds`` of ways (picked by ``rng``): dense, its axes permuted in
    memory, sliced out of a wider one so laid out, expanded from size-1 axes, or channels-last (4 axes)."""
    kind = rng.choice(kinds)
    order = list(range(len(shape)))
    if kind in ("permuted", "sliced"):
        rng.shuffle(order)
    wide = [s + (rng.randint(1, 2) if kind == "sliced" else 0) for s in shape]
    t = torch.empty([wide[i] for i in order], dtype=dtype, device="meta").permute([order.index(i) for i in range(len(shape))])
    if kind == "sliced":
        return t[tuple(slice(0, s) for s in shape)]
    if kind == "expanded":
        return torch.empty([1 if rng.random() < 0.5 else s for s in shape], dtype=dtype, device="meta").expand(shape)
    if kind == "channels_last" and len(shape) == 4:
        return torch.empty(shape, dtype=dtype, device="meta").contiguous(memory_format=torch.channels_last)
    return t


def _kernel_made(func: Any, args: tuple[Any, ...], got: Any, counts: dict[str, int]) -> Any:
    """``func`` on ``args`` as the recording runs it (torch's Python dispatcher off), to compare ``got`` (a rule's
    result) with; ``None`` where it raises (the rule made nothing either) or the rule made nothing (counted left)."""
    try:
        with torch._C._DisablePythonDispatcher():
            want = func(*args)
    except RuntimeError:
        assert got is None, args
        return None
    counts["left" if got is None else "made"] += 1
    return None if got is None else want


def test_cat_of_operands_of_any_layout_is_what_the_meta_kernel_makes() -> None:
    """``meta._cat`` against torch's meta kernel as the recording runs it (its Python dispatcher off) and its Python
    reference, on random meta operands (transposed, sliced, expanded, channels-last, any dim): the same shape,
    strides, offset and dtype, a new tensor; other dtypes, empty or mismatched operands, channels-last ones alone are
    left to the kernel."""
    import random

    from ncd.trace.meta import _cat

    rng = random.Random(1)
    counts = {"made": 0, "left": 0}
    cat = torch.ops.aten.cat.default
    for _ in range(1500):
        dtype = rng.choice([torch.float32, torch.float64, torch.float32, torch.float16])
        n = rng.randint(1, 5)
        dim = rng.randint(-n, n - 1)
        tensors = []
        for _ in range(rng.randint(1, 3)):
            shape = [rng.choice([0, 1, 2, 3, 4]) if rng.random() < 0.05 else rng.choice([1, 2, 3, 4]) for _ in range(n)]
            if tensors and rng.random() < 0.9:
                shape = [s if i != dim % n else shape[i] for i, s in enumerate(tensors[0].shape)]
            tensors.append(_laid_out(rng, shape, dtype, ["dense", "permuted", "sliced", "expanded", "channels_last"]))
        args = (tensors, dim) if rng.random() < 0.8 else (tensors,)
        got = _cat(args, {})
        want = _kernel_made(cat, args, got, counts)
        if want is None:
            continue
        reference = _python_meta(cat, args, {})
        for other in (want, reference):
            assert (got.shape, got.stride(), got.storage_offset(), got.dtype, got._base) == \
                (other.shape, other.stride(), other.storage_offset(), other.dtype, None), args
        assert got.untyped_storage().nbytes() == want.untyped_storage().nbytes()
    assert counts["made"] > 400 and counts["left"] > 200, counts


def test_linear_of_inputs_of_any_layout_is_what_the_meta_kernel_makes() -> None:
    """``meta._linear`` against torch's kernel as the recording runs it (its Python dispatcher off: shape, strides,
    offset, dtype and whether it is a view, of what) and its Python reference (shape, strides, offset), on random meta
    inputs of 1-5 axes (transposed, sliced, expanded), weights (transposed too) and biases; other dtypes and
    mismatched sizes are left to the kernel."""
    import random

    from ncd.trace.meta import _described, _linear

    rng = random.Random(2)
    counts = {"made": 0, "left": 0}
    linear = torch.ops.aten.linear.default

    def laid(shape: list[int], dtype: torch.dtype) -> torch.Tensor:
        return _laid_out(rng, shape, dtype, ["dense", "dense", "permuted", "sliced", "expanded"])

    for _ in range(1500):
        dtype = rng.choice([torch.float32, torch.float64, torch.float32, torch.bfloat16])
        k, n = rng.randint(1, 5), rng.randint(1, 5)
        x = laid([rng.randint(1, 4) for _ in range(rng.randint(0, 4))] + [k if rng.random() < 0.95 else k + 1], dtype)
        w = laid([n, k], dtype)
        args: tuple[Any, ...] = (x, w)
        if rng.random() < 0.6:
            args = (x, w, laid([n if rng.random() < 0.95 else n + 1], dtype))
        got = _linear(args, {})
        want = _kernel_made(linear, args, got, counts)
        if want is None:
            continue
        assert _described(got) == _described(want), (args, _described(got), _described(want))
        reference = _python_meta(linear, args, {})
        assert (got.shape, got.stride(), got.storage_offset()) == \
            (reference.shape, reference.stride(), reference.storage_offset()), args
    assert counts["made"] > 600 and counts["left"] > 200, counts
