"""``ncd.decode`` of a traced ``transformers`` Mamba (tiny config, random weights): the causal depthwise convolution
keeps a window of ``kernel-1`` past positions (``W``), the selective scan its state (``S``); prefill then steps equal
the full forward (float64), greedy tokens equal ``generate`` with the library's cache, and the states equal the tensors
the library's cache holds."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers as T  # noqa: N812  (a test dependency: its absence must fail, not skip)

import ncd

warnings.filterwarnings("ignore", message=".*(causal_conv1d|mamba_ssm|selective_scan).*")

LAYERS, WIDTH, INNER, STATE, KERNEL = 2, 16, 32, 4, 4


@pytest.fixture(scope="module")
def mamba() -> tuple[torch.nn.Module, ncd.TracedDiagram]:
    torch.manual_seed(0)
    config = T.MambaConfig(vocab_size=50, hidden_size=WIDTH, state_size=STATE, num_hidden_layers=LAYERS, expand=2,
                           conv_kernel=KERNEL, time_step_rank=2, use_cache=False)
    model = T.MambaForCausalLM(config).eval()
    ids = torch.randint(0, 50, (3, 6))  # batch 3: no other axis has that size, so the traced state's batch is told apart
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diagram = ncd.trace(model, ids, axes={"input_ids": "b ~t"})
    return model, diagram


def test_traced_mamba_has_no_opaque_box_and_equals_the_library(mamba: tuple[torch.nn.Module, ncd.TracedDiagram]) -> None:
    model, diagram = mamba
    assert diagram.opaque_count == 0, diagram.opaque  # dt_proj.weight @ x: a linear box, the time loop: one scan
    ops = [b.prim.op for b in diagram.boxes()]
    assert ops.count("scan") == 1 and ops.count("conv") == 1  # in the repeated layer
    ids = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(diagram.to_torch()(ids), model(ids).logits, rtol=1e-5, atol=1e-6)


def test_prefill_and_steps_equal_the_full_forward(mamba: tuple[torch.nn.Module, ncd.TracedDiagram]) -> None:
    model, diagram = mamba
    d = ncd.decode(diagram)
    assert [(s.key, s.is_state, tuple(int(a.size) for a in s.per_sequence().axes)) for s in d.sites] == \
        [("W", True, (INNER, KERNEL - 1)), ("S", True, (INNER, STATE))]
    run = d.lower(dtype=torch.float64)
    tokens = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = run.prefill(tokens)  # the whole sequence at once, in float64
        # the library computes its scan in float32 even for a float64 model: agreement to that precision
        torch.testing.assert_close(full, model.double()(tokens).logits.double(), rtol=1e-5, atol=1e-6)
        model.float()
        for prompt in (2, 5):  # 2 < kernel-1: the window starts with zeros
            logits, caches = run.prefill(tokens[:, :prompt])
            assert [tuple(c.shape) for c in caches] == [(3, INNER, KERNEL - 1), (3, INNER, STATE)] * LAYERS
            torch.testing.assert_close(logits, full[:, :prompt], rtol=1e-12, atol=1e-12)
            for p in range(prompt, 9):
                logits, caches = run.step(tokens[:, p:p + 1], caches)
                torch.testing.assert_close(logits, full[:, p:p + 1], rtol=1e-12, atol=1e-12)
    assert len(run._steps) == 1  # states do not grow: one lowered step for every position
    step = [b.prim for b in d.step.boxes() if b.prim.op == "conv"]
    assert all(p.padding == (0,) and p.dom_axes.axes[1].size == KERNEL and p.cod_axes.axes[1].size == 1 for p in step)


def test_greedy_tokens_and_states_equal_the_librarys_cache(mamba: tuple[torch.nn.Module, ncd.TracedDiagram]) -> None:
    model, diagram = mamba
    d = ncd.decode(diagram)
    run = d.lower()
    prompt = torch.randint(0, 50, (3, 5), generator=torch.Generator().manual_seed(2))
    ours = run.generate(prompt, 4)
    with torch.no_grad():
        theirs = model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True, pad_token_id=0)
        cache = model(theirs, use_cache=True).cache_params
    assert ours.tolist() == theirs.tolist()
    logits, caches = run.prefill(theirs[:, :5])
    for p in range(5, theirs.shape[-1]):
        logits, caches = run.step(theirs[:, p:p + 1], caches)
    held = 0
    for i, layer in enumerate(cache.layers):
        conv, ssm = layer.conv_states[0], layer.recurrent_states[0]
        # the library keeps `kernel` positions; the step reads the last kernel-1 (its first is never read)
        torch.testing.assert_close(caches[2 * i], conv[..., 1:], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(caches[2 * i + 1], ssm, rtol=1e-5, atol=1e-6)
        held += conv[..., 1:].numel() * conv.element_size() + ssm.numel() * ssm.element_size()
    assert d.state_bytes(dtype="float32") * len(prompt) == held
    assert str(d.state_formula()) == f"{LAYERS * INNER * (KERNEL - 1 + STATE)}*q"
    assert d.cache_bytes(dtype="float32") == 0 and d.cache_bytes_at(100, dtype="float32") == held // len(prompt)


def test_the_command_line_reports_mambas_states(mamba: tuple[torch.nn.Module, ncd.TracedDiagram], tmp_path,  # type: ignore[no-untyped-def]
                                               capsys) -> None:
    from ncd.cli import main

    path = tmp_path / "mamba.json"
    path.write_text(mamba[1].to_json(), encoding="utf-8")
    assert main(["decode", str(path), "--dtype", "float32", "--context", "64", "--size", "b=3"]) == 0  # prompt: traced t
    out = " ".join(capsys.readouterr().out.split())
    assert "prefill of 6 tokens" in out and "recurrent state 1.79 kB per" in out  # 2 x 32 x (3 + 4) x 4 bytes
