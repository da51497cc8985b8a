"""``ncd.decode`` of recurrent models: the state of a scan over the token axis is the cache (saved by the prefill,
loaded and saved again by each step); checked against the full forward in float64, against greedy decoding with the
module's own state, and the state bytes against the tensors that state holds."""

from __future__ import annotations

import pytest
import torch

import ncd
from ncd.inference.derive import DecodeError


class LM(torch.nn.Module):
    """Embedding, a two-layer LSTM (or GRU), a linear head: a token-level recurrent language model."""

    def __init__(self, cell: type[torch.nn.Module] = torch.nn.LSTM) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(30, 8)
        self.rnn = cell(8, 12, num_layers=2, batch_first=True)
        self.out = torch.nn.Linear(12, 30)

    def forward(self, ids: torch.Tensor, state: object = None) -> object:
        y, state = self.rnn(self.emb(ids), state)
        return self.out(y), state


class Logits(torch.nn.Module):
    def __init__(self, lm: LM) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm(ids)[0]


@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU], ids=lambda c: c.__name__)
def test_prefill_and_steps_equal_the_full_forward_and_greedy_decoding(cell: type[torch.nn.Module]) -> None:
    torch.manual_seed(0)
    lm = LM(cell).eval()
    ids = torch.randint(0, 30, (2, 7))
    d = ncd.trace(Logits(lm), ids)
    decoding = ncd.decode(d)
    assert all(s.is_state for s in decoding.sites) and len(decoding.sites) == (4 if cell is torch.nn.LSTM else 2)
    run = decoding.lower(weights=d.to_torch().state_dict(), dtype=torch.float64)
    lm = lm.double()
    full = lm(ids)[0]
    logits, caches = run.prefill(ids[:, :3])
    outs = [logits]
    for k in range(3, 7):
        logits, caches = run.step(ids[:, k:k + 1], caches)
        outs.append(logits)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-12, rtol=1e-12)
    assert len(run._steps) == 1  # a state does not grow: one step for every position
    # greedy tokens against the module carrying its own state (PyTorch's cache for nn.LSTM / nn.GRU)
    prompt = ids[:, :4]  # the traced batch: an implicit zero initial state is a constant of the traced size
    got = run.generate(prompt, 6)
    logits, state = lm(prompt)
    want = [prompt]
    for _ in range(6):
        nxt = logits[:, -1:].argmax(-1)
        want.append(nxt)
        logits, state = lm(nxt, state)
    assert torch.equal(got, torch.cat(want, dim=1))
    # the state one sequence holds, in bytes, against the tensors nn.LSTM / nn.GRU return
    held = sum(t.numel() * t.element_size() for t in (state if isinstance(state, tuple) else (state,))) // len(prompt)
    assert decoding.state_bytes(dtype="float64") == held
    assert decoding.cache_bytes(dtype="float64") == 0  # nothing grows per token
    assert decoding.cache_bytes_at(100, dtype="float64") == held


def test_a_recurrent_model_mixing_tokens_otherwise_is_refused() -> None:
    class Conv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(30, 8)
            self.rnn = torch.nn.GRU(8, 8, batch_first=True)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            y = self.rnn(self.emb(ids))[0]
            return torch.flip(y, (1,))  # reads later positions: not causal

    d = ncd.trace(Conv().eval(), torch.randint(0, 30, (2, 5)))
    with pytest.raises(DecodeError, match="mixes the token positions|opaque box on the token wires"):
        ncd.decode(d).step  # noqa: B018


def test_the_command_line_reports_the_state(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ncd.cli import main

    d = ncd.trace(Logits(LM().eval()), torch.randint(0, 30, (2, 5)))
    path = tmp_path / "lstm.json"
    path.write_text(d.to_json(), encoding="utf-8")
    assert main(["decode", str(path), "--dtype", "float32", "--context", "64"]) == 0
    out = capsys.readouterr().out
    assert "recurrent state 192 B per" in " ".join(out.split())  # h and c of two layers: 4 x 12 x 4 bytes
