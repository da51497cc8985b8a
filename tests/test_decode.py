"""ncd.decode: prefill then one-token steps equal the full forward at every position; caches and their bytes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import ncd
from ncd.inference import DecodeError
from ncd.inference.costs import Roofline
from ncd.inference.examples import gqa_decoder
from ncd.inference.policy import Policy, unpack_int4
from ncd.render.check import problems
from ncd.render.model import Text
from ncd.zoo.heads import heads_attention

GPT2 = dict(v=50, m=16, k=4, h=4, N=2, n=32)


def _check_against_full(model: ncd.Block, prompt: int, total: int, vocab: int, batch: tuple[int, ...] = (2,)) -> None:
    """Prefill ``prompt`` tokens, then step one token at a time; every output equals the full forward's (float64)."""
    d = ncd.decode(model)
    run = d.lower(dtype=torch.float64)
    full = model.to_torch(t=total)
    full.load_state_dict(run.weights)
    full = full.double().eval()
    tokens = torch.randint(0, vocab, (*batch, total), generator=torch.Generator().manual_seed(0))
    reference = full(tokens)
    logits, caches = run.prefill(tokens[..., :prompt])
    torch.testing.assert_close(logits, reference[..., :prompt, :], rtol=1e-12, atol=1e-12)
    for p in range(prompt, total):
        logits, caches = run.step(tokens[..., p:p + 1], caches)
        torch.testing.assert_close(logits, reference[..., p:p + 1, :], rtol=1e-12, atol=1e-12)
    # the caches hold exactly every position's keys and values
    assert all(c.shape[len(batch)] == total for c in caches)
    # one lowered step for every cache length where the length only sizes the caches; learned positions: one per length
    assert len(run._steps) == (1 if run.one_step() else total - prompt)


def test_gpt2_prefill_and_steps_equal_the_full_forward() -> None:
    _check_against_full(ncd.zoo.gpt2(**GPT2, t=4), prompt=4, total=8, vocab=50)


def test_gpt2_unbatched_one_token_prompt() -> None:
    _check_against_full(ncd.zoo.gpt2(**GPT2, t=1), prompt=1, total=4, vocab=50, batch=())


def test_grouped_query_decoder_equals_the_full_forward_and_caches_key_value_heads_only() -> None:
    model = gqa_decoder(v=40, m=24, k=4, g=2, r=3, f=32, N=3)
    _check_against_full(model, prompt=3, total=7, vocab=40)
    d = ncd.decode(model)
    assert d.lower().one_step()  # no absolute positions: the step is one program for every cache length
    assert not ncd.decode(ncd.zoo.gpt2(**GPT2, t=5)).lower().one_step()  # a learned position row at c
    assert [str(s.segment) for s in d.sites] == ["x̅:t k g", "x̅:t k g"]
    assert str(d.cache_formula()) == "2*N*g*k*q"
    assert d.state_bytes() == 0 and d.state_formula() == 0  # no recurrence: nothing held per sequence but the caches


def test_cache_bytes_equal_the_bytes_of_the_caches_the_lowered_prefill_returns() -> None:
    for model in (ncd.zoo.gpt2(**GPT2, t=5), gqa_decoder(N=3)):
        d = ncd.decode(model)
        run = d.lower(dtype=torch.bfloat16)
        tokens = torch.arange(5) % 40
        _, caches = run.prefill(tokens)
        held = sum(c.numel() * c.element_size() for c in caches)
        assert held == 5 * d.cache_bytes(dtype="bfloat16")
        assert len(caches) == len(d.slots) == 2 * dict(model.get("defaults"))["N"]


def test_llama_8b_shaped_cache_is_131072_bytes_per_token() -> None:
    d = ncd.decode(gqa_decoder(v=128256, m=4096, k=128, g=8, r=4, f=14336, N=32))
    assert d.cache_bytes(dtype="bfloat16") == 131072
    assert d.cache_bytes_per_layer(dtype="bfloat16") == 4096
    assert d.cache_bytes(dtype="int4") == 32768
    assert d.cache_bytes(dtype="float32", g=32) == 4 * 131072 * 2


def test_gpt2_small_cache_formula_and_bytes() -> None:
    d = ncd.decode(ncd.zoo.gpt2())
    assert str(d.cache_formula()) == "2*N*h*k*q"
    assert d.cache_bytes(dtype="float16") == 2 * 12 * 12 * 64 * 2
    assert d.slots[:3] == [("K", 0), ("V", 0), ("K", 1)]


def test_greedy_generation_equals_argmax_of_the_full_forward() -> None:
    model = ncd.zoo.gpt2(**GPT2, t=3)
    run = ncd.decode(model).lower(dtype=torch.float64)
    prompt = torch.tensor([7, 3, 11])
    generated = run.generate(prompt, 4)
    tokens = prompt
    for _ in range(4):
        full = model.to_torch(t=len(tokens))
        full.load_state_dict(run.weights)
        nxt = full.double().eval()(tokens)[-1].argmax()
        tokens = torch.cat([tokens, nxt[None]])
    assert generated.tolist() == tokens.tolist()


def test_step_and_prefill_are_ordinary_diagrams() -> None:
    d = ncd.decode(ncd.zoo.gpt2(**GPT2, t=4))
    assert str(d.step.dom).startswith("t̅:1 [v], x̅:c k h")
    assert str(d.step.cod).endswith("x̅:c+1 k h")
    drawing = ncd.render.layout(d.step, depth=3)
    assert problems(drawing) == []
    texts = {"".join(run.text for run in item.runs) for item in drawing.items if isinstance(item, Text)}
    assert {"Ki →", "→ Ki", "Vi →", "→ Vi", "x = c", "x = c + 1", "[c:c + 1]"} <= texts
    again = ncd.load_json(d.step.to_json())
    assert again == d.step


def test_not_causal_or_unbound_repetitions_are_errors() -> None:
    with pytest.raises(DecodeError, match="no causal mask"):
        ncd.decode(ncd.zoo.vit())
    layer = (ncd.Identity.of("~t m") >> heads_attention(self_attention=True, mask="causal", tokens="t")).block("L")
    with pytest.raises(DecodeError, match="bind the repetition count N"):
        ncd.decode(ncd.repeat(layer, "i", 0, "N"))
    with pytest.raises(DecodeError, match="rename one of them"):  # the encoder-decoder: source x, decoder keys x
        ncd.decode(ncd.zoo.transformer(), tokens="y")
    both = (ncd.Identity.of("~t m") >> heads_attention(self_attention=True, mask="causal", tokens="t")
            >> heads_attention(self_attention=True, mask=None, tokens="t"))  # a bidirectional one after it
    with pytest.raises(DecodeError, match="2 softmaxes over the key axes x but 1 causal mask"):
        ncd.decode(both.block("Mixed", defaults=(("m", 8), ("k", 2), ("h", 4), ("t", 3))))
    with pytest.raises(DecodeError, match="no item axis"):
        ncd.decode(ncd.Identity.of("t m") >> ncd.Linear("m -> m") >> layer)


def _counted(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    return counter.get_total_flops()


@pytest.mark.parametrize("model", [ncd.zoo.gpt2(**GPT2, t=6), gqa_decoder(N=3)], ids=["gpt2", "gqa"])
def test_prefill_and_step_flops_equal_the_flop_counter_on_the_lowered_modules(model: ncd.Block) -> None:
    d = ncd.decode(model)
    costs = d.costs(t=6, c=9)
    run = d.lower()
    assert costs.prefill_matmul == _counted(run.prefill_module(6), torch.arange(6) % 40)
    caches = [torch.randn(9, *c.shape[1:]) for c in run.prefill(torch.arange(6) % 40)[1]]
    assert costs.step_matmul == _counted(run.step_module(9), torch.tensor([3]), *caches)
    # a step reads every weight once (looked-up rows aside) and the whole past cache
    assert costs.cache_read_bytes == 9 * d.cache_bytes(dtype="bfloat16")
    assert costs.step_bytes == costs.weight_bytes + costs.cache_read_bytes
    assert costs.intensity == costs.step_flops / costs.step_bytes


def test_gpt2_small_step_reads_its_weights_once_and_the_cache() -> None:
    d = ncd.decode(ncd.zoo.gpt2())
    costs = d.costs(c=1000, t=128)
    # 124,439,808 parameters; the position table (1024 x 768) is read at one row
    assert costs.params == 124_439_808
    assert costs.weight_bytes == 2 * (124_439_808 - 1024 * 768 + 768)
    assert costs.cache_per_token == 36_864 and costs.cache_read_bytes == 36_864_000
    fast = Roofline("test", flops_per_second=1e15, bytes_per_second=1e12)
    assert d.costs(c=1000, t=128, roofline=fast).bound == "memory"
    assert d.costs(c=1000, t=128, roofline=Roofline("slow", 1e9, 1e12)).bound == "compute"


def test_element_type_policies_are_held_as_costed() -> None:
    d = ncd.decode(gqa_decoder(N=2))
    tokens = torch.arange(6) % 40
    plain = d.lower(dtype=torch.float64)
    reference, _ = plain.prefill(tokens)
    for kind in ("bfloat16", "float16", "float8", "int8"):
        policy = Policy("float64", cache=kind)
        run = d.lower(dtype=torch.float64, policy=policy, weights=plain.weights)
        logits, caches = run.prefill(tokens)
        logits, caches = run.step(torch.tensor([5]), caches)
        assert run.held_bytes(caches) == 7 * policy.cache_bytes(d), kind
        held = {t.dtype for c in caches for t in (c if isinstance(c, tuple) else (c,))}
        assert held == {"bfloat16": {torch.bfloat16}, "float16": {torch.float16}, "float8": {torch.float8_e4m3fn},
                        "int8": {torch.int8, torch.float16}}[kind]
    # rounding the caches changes the outputs a little, and the wider types less
    errors = {}
    for kind in ("bfloat16", "float8"):
        run = d.lower(dtype=torch.float64, policy=Policy("float64", cache=kind), weights=plain.weights)
        _, caches = run.prefill(tokens[:5])
        logits, _ = run.step(tokens[5:6], caches)
        errors[kind] = (logits - reference[5:6]).abs().max().item()
    assert 0 < errors["bfloat16"] < errors["float8"] < 1
    # int4 is held two values per byte (packed uint8), as costed: half a byte per element plus the scales
    int4 = Policy("float64", cache="int4")
    run = d.lower(dtype=torch.float64, policy=int4, weights=plain.weights)
    _, caches = run.prefill(tokens)
    logits, caches = run.step(torch.tensor([5]), caches)  # the step unpacks and packs again
    want, _ = plain.step(torch.tensor([5]), plain.prefill(tokens)[1])
    assert 0 < (logits - want).abs().max().item() < 1  # rounded through 4 bits, and close
    assert all(c[0].dtype == torch.uint8 for c in caches)
    assert run.held_bytes(caches) == 7 * int4.cache_bytes(d)
    unpacked = [unpack_int4(c[0], c[2]) for c in caches]
    assert all(int(v.min()) >= -8 and int(v.max()) <= 7 for v in unpacked)


def test_weights_in_a_block_follow_its_element_type() -> None:
    d = ncd.decode(gqa_decoder(v=1000, m=256, k=16, g=4, r=4, f=512, N=3))
    plain = d.costs(c=10, t=4)
    projections = 3 * 256 * (256 + 2 * 64)  # L^Q, L^K, L^V of every layer
    fp8 = d.costs(c=10, t=4, policy=Policy("bfloat16", blocks={"Linear": "float8"}))
    assert plain.weight_bytes - fp8.weight_bytes == projections


def test_cli_prints_the_decode_table(capsys: pytest.CaptureFixture[str]) -> None:
    from ncd.cli import main

    assert main(["decode", "gpt2", "--size", "N=2", "--prompt", "16", "--context", "100",
                 "--peak-flops", "1e15", "--bandwidth", "1e12", "--formulas"]) == 0
    out = capsys.readouterr().out
    costs = ncd.decode(ncd.zoo.gpt2(N=2)).costs(t=16, c=100)
    assert f"{costs.step_flops:,}" in out and f"{costs.prefill_flops:,}" in out
    assert "memory-bound" in out and "2*N*h*k*q" in out
    assert main(["decode", "vit"]) == 2
    assert "no causal mask" in capsys.readouterr().err


def test_cli_default_context_is_capped_by_the_position_table(capsys: pytest.CaptureFixture[str]) -> None:
    """GPT-2's table of 1024 positions lets a step follow at most 1023 cached ones: the default (1024) is capped
    there, while an explicit ``--context 1024`` is still refused, naming the slice."""
    from ncd.cli import main

    assert main(["decode", "gpt2", "--size", "N=2"]) == 0
    out = capsys.readouterr().out
    costs = ncd.decode(ncd.zoo.gpt2(N=2)).costs(c=1023)
    assert "step after 1023 cached positions" in out and f"{costs.step_flops:,}" in out
    assert main(["decode", "gpt2", "--size", "N=2", "--context", "1024"]) == 2
    assert "past the size 1024" in capsys.readouterr().err


def test_the_inference_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "inference.md").read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for k, block in enumerate(re.findall(r"```python\n(.*?)```", page, flags=re.S)):
        exec(compile(block, f"docs/inference.md (example {k + 1})", "exec"), namespace)  # noqa: S102 - our own docs


def test_sliding_window_caches_are_bounded_and_decoding_equals_the_full_forward() -> None:
    model = gqa_decoder(v=40, m=24, k=4, g=2, r=3, f=32, N=2, window=3)
    d = ncd.decode(model)
    assert str(d.step.dom).split(", ")[1] == "x̅:Min(2,c) k g"  # the last window-1 positions
    run = d.lower(dtype=torch.float64)
    full = model.to_torch(t=9)
    full.load_state_dict(run.weights)
    tokens = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(3))
    reference = full.double().eval()(tokens)
    logits, caches = run.prefill(tokens[:, :4])
    torch.testing.assert_close(logits, reference[:, :4], rtol=1e-12, atol=1e-12)
    for p in range(4, 9):
        logits, caches = run.step(tokens[:, p:p + 1], caches, past=p)
        torch.testing.assert_close(logits, reference[:, p:p + 1], rtol=1e-12, atol=1e-12)
        assert all(c.shape[1] == 2 for c in caches)
    with pytest.raises(DecodeError, match="past="):
        run.step(tokens[:, :1], caches)
    assert d.cache_bytes_at(1000, dtype="float32") == 2 * d.cache_bytes(dtype="float32")
    assert d.costs(c=1000, t=4).cache_read_bytes == 2 * d.cache_bytes()
    assert run.generate(tokens[0, :4], 3).tolist()[:4] == tokens[0, :4].tolist()


def test_a_policy_puts_its_casts_on_the_cache_wires_as_boxes() -> None:
    """Where a policy changes a wire's element type, the prefill and step diagrams carry a box (``fp8``, ``int8``...);
    lowered, it is a real torch cast, and the values it leaves are exactly what the decoder then holds."""
    from ncd.prims.precision import PrecisionWarning

    d = ncd.decode(gqa_decoder(N=2))
    tokens = torch.arange(6) % 40
    prefill, step = Policy("float64", caches={"K": "float8"}).typed(d)
    boxes = [(b.text(), str(b.dom)) for b in step.boxes() if b.prim.op == "precision"]
    assert boxes == [("fp8", "x̅:c+1 k g")]  # K only: V keeps the default type, so no box
    assert [b.text() for b in prefill.boxes() if b.prim.op == "precision"] == ["fp8"]
    for kind, torch_type in (("float8", "torch.float8_e4m3fn"), ("bfloat16", "torch.bfloat16"), ("int8", "torch.int8")):
        policy = Policy("float64", cache=kind)
        run = d.lower(dtype=torch.float64, policy=policy)
        assert f".to({torch_type})" in run.step_module(6).ncd_source, kind
        out = run.prefill_module(6)(tokens)
        for value, site in zip(out[1:], run._keys()):  # the lowered module's rounding is the policy's, exactly
            assert torch.equal(Policy.load(Policy.store(value, kind, int(site.segment.index(site.axis)) - 3),
                                           torch.float64), value), kind
    with pytest.warns(PrecisionWarning, match="'x̅:6 k:8 g:2' is held as int4, which torch has no type for"):
        d.lower(dtype=torch.float64, policy=Policy("float64", cache="int4")).prefill(tokens)
