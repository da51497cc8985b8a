"""``ncd.trace`` on plain PyTorch models users write themselves (``benchmarks/corpus_torch.py``, the corpus' zoo).

Every check compares the lowered module against the original model: on the traced input, on a fresh input of the
same shapes, its parameter count, and (for shared weights) one training step of both.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd
from tests.benchmarks import benchmark

corpus = benchmark("import_corpus")
zoo = corpus.zoo_module()

#: a fast subset of the zoo, one entry per kind of feature: masks, attention layouts, recurrences with a state passed
#: in, a whole network, tensors inside a list argument, in-place writes through views, shared weights, float64,
#: complex numbers, non-tensor arguments; whole networks users write (a diffusion U-Net, a Perceiver, a selective scan,
#: a GPT with its cache, DETR, Swin); styles users write (fixed boolean masks, buffers, keyword-only inputs)
SUBSET = ["torch.encoder_padding_mask", "torch.mha_cross_kdim_vdim", "torch.bilstm_h0", "torch.unet",
          "torch.odd_interface", "torch.inplace_views", "torch.weight_reused", "torch.indexing", "torch.float64",
          "torch.complex_fft", "torch.nontensor_args", "torch.gnn_index_add", "torch.same_tensor_twice",
          # the second part (benchmarks/corpus_torch_users.py): networks, einsum indices, scatters, casts, losses
          "torch.diffusion_unet", "torch.perceiver", "torch.selective_scan", "torch.gpt_kv_cache", "torch.swin_window",
          "torch.detr_decoder", "torch.einsum_indices", "torch.scatter_reduce", "torch.mixed_precision",
          "torch.masked_writes", "torch.losses_reduced", "torch.bitwise",
          # the third part (benchmarks/corpus_torch_styles.py): fixed masks and buffers, slices written in place,
          # keyword-only and 0-d inputs, complex rotary, a hand-written mixture of experts
          "torch.fixed_bool_index", "torch.buffers_projection", "torch.slice_inplace", "torch.keyword_only",
          "torch.scalar_tensors", "torch.complex_rotary", "torch.hand_moe"]


@pytest.fixture(scope="module")
def entries() -> dict[str, object]:
    return {e.name: e for e in corpus.torch_entries()}


@pytest.mark.parametrize("name", SUBSET)
def test_zoo_model_round_trips_with_the_original_parameters(name: str, entries: dict[str, object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, _ = corpus.run_one(entries[name], determinism=False)
    assert result.status == "traced", result.reason
    assert not result.lowered and not result.failed, (result.lowered, result.failed)
    assert result.equal, (result.diff, result.diff_fresh, result.opaque_ops)
    assert result.params_lowered == result.params


def test_a_size_read_from_the_inputs_is_refused_naming_the_line() -> None:
    with pytest.raises(ncd.TraceError, match=r"corpus_torch\.py:\d+"):
        ncd.trace(zoo.DataDependentSize(), torch.randn(2, 16))


def test_the_zoo_is_in_the_corpus() -> None:
    names = {e.name for e in corpus.torch_entries()}
    assert {f"torch.{name}" for name, _, _ in zoo.zoo()} <= names and len(names) >= 50


def _trace(model: torch.nn.Module, *inputs: object) -> ncd.trace.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *inputs)


def test_tensors_inside_a_list_argument_are_inputs_not_constants() -> None:
    class Pair(torch.nn.Module):
        def forward(self, xs: list[torch.Tensor], scale: dict[str, torch.Tensor]) -> torch.Tensor:
            return (xs[0] * xs[1]) * scale["s"]

    model = Pair()
    xs, s = [torch.randn(2, 3), torch.randn(2, 3)], {"s": torch.randn(3)}
    d = _trace(model, xs, s)
    assert d.opaque_count == 0
    lowered = d.to_torch()
    fresh, fresh_s = [torch.randn(2, 3), torch.randn(2, 3)], torch.randn(3)
    torch.testing.assert_close(lowered(*fresh, fresh_s), model(fresh, {"s": fresh_s}))


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _one_step_equal(model: torch.nn.Module, lowered: torch.nn.Module, x: torch.Tensor) -> None:
    """One SGD step on each: a weight shared in the model must stay shared in the lowered module."""
    for module in (model, lowered):
        optimiser = torch.optim.SGD(module.parameters(), lr=0.5)
        module(x).square().sum().backward()
        optimiser.step()
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x))


def test_a_weight_read_as_itself_and_transposed_is_one_parameter() -> None:
    torch.manual_seed(0)
    model, x = zoo.ReusedWeight(), torch.randn(2, 5, 16)
    lowered = _trace(model, x).to_torch()
    assert _params(lowered) == _params(model) == 8 * 16 + 16
    _one_step_equal(model, lowered, x)


def test_a_weight_read_transposed_first_is_one_parameter_too() -> None:
    class Code(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(16, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(torch.relu(x @ self.w), self.w)

    torch.manual_seed(0)
    model, x = Code(), torch.randn(3, 16)
    lowered = _trace(model, x).to_torch()
    assert _params(lowered) == _params(model)
    _one_step_equal(model, lowered, x)


def test_tied_weights_stay_tied_when_lowered_at_another_batch_size() -> None:
    torch.manual_seed(0)
    model = zoo.Tied().eval()
    d = _trace(model, torch.randint(0, 20, (2, 6)))
    lowered = d.to_torch(b=3)
    assert _params(lowered) == _params(model)
    ids = torch.randint(0, 20, (3, 6))
    torch.testing.assert_close(lowered(ids), model(ids))


def test_a_float64_model_lowers_in_float64() -> None:
    torch.manual_seed(0)
    model, x = zoo.Float64().eval(), torch.randn(2, 6, 16, dtype=torch.float64)
    lowered = _trace(model, x).to_torch()
    y = torch.randn(2, 6, 16, dtype=torch.float64)
    assert lowered(y).dtype == torch.float64
    torch.testing.assert_close(lowered(y), model(y), rtol=1e-12, atol=1e-12)


def test_a_complex_number_argument_is_written_in_the_opaque_call() -> None:
    class Rotate(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.view_as_real(torch.fft.fft(x) * (0.5 - 2j))

    model, x = Rotate(), torch.randn(2, 8)
    d = _trace(model, x)
    again = ncd.load_json(d.as_block().to_json())  # the safe loader accepts ('$complex', (re, im))
    y = torch.randn(2, 8)
    for lowered in (d.to_torch(), again.to_torch()):
        torch.testing.assert_close(lowered(y), model(y))
    from ncd.errors import NCDError
    from ncd.prims.opaque import check_call

    with pytest.raises(NCDError, match="complex"):
        check_call("aten.mul.Tensor", 1, (("$in", 0), ("$complex", ("1", 2.0))), ())


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN])
@pytest.mark.parametrize("batch_first", [True, False])
def test_a_bidirectional_recurrence_with_an_initial_state_is_two_scans(cls: type, batch_first: bool) -> None:
    torch.manual_seed(0)
    model = cls(8, 6, num_layers=2, bidirectional=True, batch_first=batch_first).eval()

    def inputs() -> tuple[torch.Tensor, ...]:
        x = torch.randn((2, 5, 8) if batch_first else (5, 2, 8))
        return (x, torch.randn(4, 2, 6)) + ((torch.randn(4, 2, 6),) if cls is torch.nn.LSTM else ())

    def run(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        out = module(args[0], (args[1], args[2]) if len(args) == 3 else args[1])
        return list(torch.utils._pytree.tree_leaves(out))

    first = inputs()
    d = _trace(model, first[0], (first[1], first[2]) if len(first) == 3 else first[1])
    assert d.opaque_count == 0
    lowered = d.to_torch()
    assert _params(lowered) == _params(model)
    fresh = inputs()
    for got, want in zip(lowered(*fresh), run(model, fresh), strict=True):
        torch.testing.assert_close(got, want)


def test_recurrent_cells_are_their_cell_equations() -> None:
    class Cells(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm, self.gru = torch.nn.LSTMCell(5, 4), torch.nn.GRUCell(4, 4, bias=False)
            self.rnn = torch.nn.RNNCell(4, 3, nonlinearity="relu")

        def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
            h2, c2 = self.lstm(x, (h, c))
            g = self.gru(h2, h)
            return h2, c2, g, self.rnn(g), self.lstm(x[0])[0]  # the last: unbatched, no state given

    torch.manual_seed(0)
    model = Cells().eval()

    def inputs() -> tuple[torch.Tensor, ...]:
        return torch.randn(2, 5), torch.randn(2, 4), torch.randn(2, 4)

    d = _trace(model, *inputs())
    assert d.opaque_count == 0
    lowered = d.to_torch()
    assert _params(lowered) == _params(model)
    fresh = inputs()
    for got, want in zip(lowered(*fresh), model(*fresh), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_vit_traced_in_another_precision_lowers_in_it_at_any_batch(dtype: torch.dtype) -> None:
    """A ViT traced in float64 crashed in ``to_torch`` (the lowered module's weights were float32)."""
    torch.manual_seed(0)
    model = zoo.ViT().eval().to(dtype)
    d = _trace(model, torch.randn(2, 3, 16, 16, dtype=dtype))
    for batch in (2, 3):
        lowered = d.to_torch(b=batch)
        x = torch.randn(batch, 3, 16, 16, dtype=dtype)
        got, want = lowered(x), model(x)
        assert got.dtype == dtype and all(p.dtype == dtype for p in lowered.parameters())
        tol = 1e-12 if dtype == torch.float64 else 2e-2
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
