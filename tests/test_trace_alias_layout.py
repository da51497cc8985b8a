"""The recorder's table of parameters and buffers by (address, shape, strides) (``aliases._by_layout``), read by torch's
own readers for plain tensors and parameters, equals the table read through each tensor's public methods (what any
``__torch_function__`` and the recording's patched readers answer), in the same order; a subclass that overrides the
readers is read through them."""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from ncd.trace.aliases import _by_layout


def _reference(tensors: list[torch.Tensor]) -> dict[tuple[object, ...], list[torch.Tensor]]:
    found: dict[tuple[object, ...], list[torch.Tensor]] = {}
    for t in tensors:
        if t.device.type != "meta":
            found.setdefault((t.data_ptr(), tuple(t.shape), t.stride()), []).append(t)
    return found


class _Strided(torch.Tensor):
    """A tensor subclass whose ``stride()`` reads differently through ``__torch_function__``."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.Tensor.stride:
            return (99,) * args[0].dim()
        return super().__torch_function__(func, types, args, kwargs or {})  # type: ignore[no-untyped-call]


class _Counting(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.seen += 1
        return func(*args, **(kwargs or {}))


def _tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, generator=g))
    b = torch.randn(6, generator=g)
    other = torch.nn.Parameter(torch.randn(3, 4, generator=g))
    wide = torch.randn(5, 8, generator=g)
    return [w, other, b, w.detach(), b.detach(), wide[:, ::2], wide.t(), torch.empty(2, 2, device="meta"),
            torch.nn.Parameter(torch.empty(3, device="meta")), torch.randn(4, 3, generator=g).as_subclass(_Strided),
            torch.zeros(0), w.data]


def _same(a: dict[tuple[object, ...], list[torch.Tensor]], b: dict[tuple[object, ...], list[torch.Tensor]]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert [id(t) for t in a[key]] == [id(t) for t in b[key]]


def test_the_table_equals_the_one_read_by_the_public_readers() -> None:
    tensors = _tensors()
    want = _reference(tensors)
    got = _by_layout(tensors)
    _same(got, want)
    assert any(len(v) > 1 for v in got.values())  # w and its detached alias share a key
    assert any(k[2] == (99, 99) for k in got)  # the subclass read through its override


def test_the_table_under_a_torch_function_mode_equals_the_one_read_through_it() -> None:
    tensors = _tensors()
    with _Counting() as mode:
        want = _reference(tensors)
        seen = mode.seen
        got = _by_layout(tensors)
    _same(got, want)
    assert seen > 0


def test_aliases_found_in_a_recording_of_a_write_through_detach() -> None:
    import ncd

    torch.manual_seed(0)
    model = torch.nn.Embedding(10, 4, max_norm=1.0)
    with torch.no_grad():
        model.weight.mul_(3.0)
    ids = torch.tensor([[1, 2, 3, 1]])
    traced = ncd.trace(model, ids)
    with torch.no_grad():
        want = torch.nn.functional.embedding(ids, model.weight.detach().clone(), max_norm=1.0)
    got = traced.to_torch()(ids)
    assert torch.allclose(got, want, atol=1e-6)


class _Stored(torch.Tensor):
    """A tensor subclass whose ``untyped_storage()`` reads another tensor's storage through ``__torch_function__``."""

    elsewhere = torch.zeros(3)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.Tensor.untyped_storage:
            return cls.elsewhere.untyped_storage()
        return super().__torch_function__(func, types, args, kwargs or {})  # type: ignore[no-untyped-call]


def _indexed_reference(keep: list[object]) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    memory: dict[int, list[int]] = {}
    meta: dict[int, list[int]] = {}
    for t in keep:
        if isinstance(t, torch.Tensor):
            if t.device.type != "meta":
                memory.setdefault(t.untyped_storage().data_ptr(), []).append(id(t))
            else:
                meta.setdefault(t.untyped_storage()._cdata, []).append(id(t))
    return memory, meta


def test_the_index_of_kept_tensors_by_memory_equals_the_one_read_by_the_public_readers() -> None:
    from ncd.trace.aliases import Aliases

    class Kept(Aliases):
        def __init__(self) -> None:
            self.memory: dict[int, list[torch.Tensor]] = {}
            self.meta_memory: dict[int, list[torch.Tensor]] = {}
            self.keep: list[object] = []
            self.indexed = 0

    g = torch.Generator().manual_seed(1)
    base = torch.randn(4, 6, generator=g)
    meta = torch.empty(3, 2, device="meta")
    first = [base, base[1:], 3, torch.nn.Parameter(torch.randn(2, generator=g)), meta, meta.t(),
             torch.randn(5, generator=g).as_subclass(_Stored)]
    later = [base.t(), torch.zeros(0), _Stored.elsewhere, None, torch.randn(2, generator=g)]
    kept = Kept()
    with _Counting():
        for batch in (first, later):
            kept.keep.extend(batch)
            kept._indexed()
    memory, meta_memory = _indexed_reference(kept.keep)
    assert {k: [id(t) for t in v] for k, v in kept.memory.items()} == memory
    assert {k: [id(t) for t in v] for k, v in kept.meta_memory.items()} == meta_memory
    assert len(memory[_Stored.elsewhere.untyped_storage().data_ptr()]) == 2  # the subclass read through its override
    assert kept.indexed == len(kept.keep)
