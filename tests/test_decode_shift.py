"""``ncd.decode`` of token shift (RWKV's ``x_{t-1}`` mixing, ``nn.ZeroPad2d((0, 0, 1, -1))``): the shifted wire reads one
past position, which is a window state of one position per shift; checked against the full forward (float64), against
greedy decoding with the module carrying its own state (RWKV's ``state[0]``/``state[1]``: the last position's input of
each shift), and the state bytes against those tensors."""

from __future__ import annotations

import pytest
import torch

import ncd
from ncd.inference.derive import DecodeError


class ShiftLayer(torch.nn.Module):
    """RWKV's channel mixing: ``k = x·μ + shift(x)·(1-μ)``, ``v = W₂ relu(W₁ k)²``, gated by ``σ(W_r r)``."""

    def __init__(self, m: int = 12, f: int = 24) -> None:
        super().__init__()
        self.ln = torch.nn.LayerNorm(m)
        self.shift = torch.nn.ZeroPad2d((0, 0, 1, -1))
        self.mix_k = torch.nn.Parameter(torch.rand(1, 1, m))
        self.mix_r = torch.nn.Parameter(torch.rand(1, 1, m))
        self.key, self.value, self.gate = torch.nn.Linear(m, f), torch.nn.Linear(f, m), torch.nn.Linear(m, m)

    def forward(self, x: torch.Tensor, last: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.ln(x)
        if last is None:
            shifted = self.shift(h)
        else:  # the module's own cache: the previous position's normalised input
            shifted = torch.cat([last[:, None], h[:, :-1]], dim=1)
        k = h * self.mix_k + shifted * (1 - self.mix_k)
        r = h * self.mix_r + shifted * (1 - self.mix_r)
        y = torch.sigmoid(self.gate(r)) * self.value(torch.relu(self.key(k)) ** 2)
        return x + y, h[:, -1]


class ShiftLM(torch.nn.Module):
    def __init__(self, layers: int = 2) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(30, 12)
        self.layers = torch.nn.ModuleList(ShiftLayer() for _ in range(layers))
        self.out = torch.nn.Linear(12, 30)

    def forward(self, ids: torch.Tensor, state: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.run(ids, state)[0]

    def run(self, ids: torch.Tensor, state: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.emb(ids)
        new = []
        for k, layer in enumerate(self.layers):
            x, last = layer(x, None if state is None else state[k])
            new.append(last)
        return self.out(x), new


@pytest.fixture(scope="module")
def shifted() -> tuple[ShiftLM, ncd.TracedDiagram]:
    torch.manual_seed(0)
    lm = ShiftLM().eval()
    return lm, ncd.trace(lm, torch.randint(0, 30, (2, 6)), axes={"ids": "b ~t"})


def test_token_shift_decodes_equal_to_the_full_forward_and_its_own_state(shifted: tuple[ShiftLM, ncd.TracedDiagram]) -> None:
    lm, diagram = shifted
    assert diagram.opaque_count == 0, diagram.opaque
    d = ncd.decode(diagram)
    assert [(s.key, str(s.per_sequence())) for s in d.sites] == [("W", "t̅:1 m:12")]  # one position, per layer
    run = d.lower(weights=diagram.to_torch().state_dict(), dtype=torch.float64)
    tokens = torch.randint(0, 30, (2, 9), generator=torch.Generator().manual_seed(1))
    lm = lm.double()
    with torch.no_grad():
        full = lm(tokens)
        for prompt in (1, 4):
            logits, caches = run.prefill(tokens[:, :prompt])
            torch.testing.assert_close(logits, full[:, :prompt], rtol=1e-12, atol=1e-12)
            for p in range(prompt, 9):
                logits, caches = run.step(tokens[:, p:p + 1], caches)
                torch.testing.assert_close(logits, full[:, p:p + 1], rtol=1e-12, atol=1e-12)
        # greedy tokens against the module carrying its own state (RWKV's way)
        prompt_ids = tokens[:, :3]
        got = run.generate(prompt_ids, 5)
        out, state = lm.run(prompt_ids)
        want = [prompt_ids]
        for _ in range(5):
            nxt = out[:, -1:].argmax(-1)
            want.append(nxt)
            out, state = lm.run(nxt, state)
        assert torch.equal(got, torch.cat(want, dim=1))
        # the states, value for value and byte for byte
        logits, caches = run.prefill(tokens[:, :5])
        _, state = lm.run(tokens[:, :5])
        for ours, theirs in zip(caches, state):
            torch.testing.assert_close(ours[:, 0], theirs, rtol=1e-12, atol=1e-12)
    held = sum(t.numel() * t.element_size() for t in state) // len(prompt_ids)
    assert d.state_bytes(dtype="float64") == held and str(d.state_formula()) == "24*q"
    assert len(run._steps) == 1


def test_a_shift_that_reads_later_positions_is_refused() -> None:
    class Ahead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(30, 8)
            self.shift = torch.nn.ZeroPad2d((0, 0, -1, 1))  # x_{t+1}: not causal

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            x = self.emb(ids)
            return x + self.shift(x)

    d = ncd.trace(Ahead().eval(), torch.randint(0, 30, (2, 5)), axes={"ids": "b ~t"})
    with pytest.raises(DecodeError, match="pad"):
        ncd.decode(d).step  # noqa: B018


def test_a_model_reading_a_fixed_token_position_is_refused_by_name() -> None:
    class First(torch.nn.Module):  # every position reads the second token: no step (as an unrolled loop over positions)
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(30, 8)
            self.shift = torch.nn.ZeroPad2d((0, 0, 1, -1))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            x = self.emb(ids)
            return self.shift(x) + x[:, 1:2]

    d = ncd.trace(First().eval(), torch.randint(0, 30, (2, 5)), axes={"ids": "b ~t"})
    with pytest.raises(DecodeError, match="fixed token position|mixes the token positions"):
        ncd.decode(d).step  # noqa: B018
