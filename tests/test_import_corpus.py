"""A fast, representative subset of the import corpus (``benchmarks/import_corpus.py``), run as the full corpus runs it.

Every model here is built from a tiny config with random weights; the lowered diagram must equal the model on
the traced input and on a fresh one, and a model drawn without warning is never wrong.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import warnings

import pytest
import torch

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "import_corpus.py"
_spec = importlib.util.spec_from_file_location("import_corpus", _PATH)
assert _spec is not None and _spec.loader is not None
corpus = sys.modules["import_corpus"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

#: one model of each kind the corpus holds: a plain-PyTorch model per idiom, a norm that is not the class name's
#: (Gemma: ``(1 + w)``), absolute positions from a cumulative sum (RoBERTa), a tied LM head, an encoder–decoder,
#: a vision encoder, a mixture of experts, an explicit attention mask and a branch on padding (FSMT: run-time guarded)
SUBSET = ["torch.scalars", "torch.inplace", "torch.mask", "torch.lstm", "gemma", "roberta", "gpt2+causal-lm", "t5", "vit",
          "mixtral", "bert+attention_mask", "fsmt"]


@pytest.fixture(scope="module")
def entries() -> dict[str, object]:
    return {e.name: e for e in corpus.all_entries() if e.name in SUBSET}


@pytest.mark.parametrize("name", SUBSET)
def test_corpus_model_round_trips(name: str, entries: dict[str, object]) -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, _ = corpus.run_one(entries[name], determinism=False)
    assert result.status == "traced", result.reason
    assert not result.lowered, result.lowered
    assert result.equal, (result.diff, result.diff_fresh, result.opaque_ops)
    assert result.params_lowered == result.params  # every parameter of the model, tied ones once


def test_the_corpus_enumerates_every_model_type_of_transformers() -> None:
    from transformers.models.auto import modeling_auto

    names = {e.name for e in corpus.all_entries()}
    assert set(modeling_auto.MODEL_MAPPING_NAMES) <= names
    assert {"torch.lstm", "torch.gru", "torch.fft", "torch.scalars", "torch.inplace", "torch.mask"} <= names


def test_shrink_makes_configs_tiny_and_keeps_special_tokens_in_the_vocabulary() -> None:
    import transformers

    config = corpus.shrink(transformers.AutoConfig.for_model("llama"))
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == (2, 32, 4, 64)
    assert config.vocab_size > max(config.bos_token_id, config.eos_token_id)


#: model types that build only on the corpus's second chance (``benchmarks/corpus_repair.py``): a Mamba-2 mixer whose
#: heads x head features must equal its inner width, a time series (``past_values``), audio features frames-first, a
#: trajectory (states, and the actions, rewards and returns its forward has defaults for), a detector on a backbone of
#: the library instead of timm's (DETR), one whose encoder takes the shrunk backbone's channels and fewer queries than
#: its small image's anchors (RT-DETR), a depthwise convolution of the default width (Pocket-TTS's upsampling), a
#: composite config's decoder part (MusicGen, ids one row a codebook), a spectrogram as `input_values` (AST), sizes left
#: None (ESM's vocabulary, Nemotron's key/value heads), a codec's encoder on a waveform as `hidden_states` (VibeVoice),
#: features of 128 mel bins the config does not name (Gemma 4's audio, whose chunks are windows its stride does not
#: divide: 1 window of 24 every 12 over 31 padded frames), layer kinds left None (LFM2-MoE), a head's input width
#: matched to the shrunk encoder's (Nemotron diarization), ids one column a codebook (Kyutai STT), a Q-Former's
#: queries and what they attend to (BLIP-2), a features mask (Fun-ASR), fields a model reads that its config does not
#: set (T5Gemma2's encoder dropout, Moonshine streaming's key/value heads, Step3p7's window), a box's coordinate and shape
#: embeddings as wide as the shrunk width together (LayoutLMv3), a latent attention's rotary fraction of the shrunk head
#: (Mistral 4), top-k under its other name (Kimi Linear), a language for X-MOD's adapters, a features mask the forward
#: defaults to None but reads (Audio Flamingo 3), a prompt above the image (SegGPT), a width 6 box embeddings divide
#: (LiLT), SAM's neck as wide as its prompt encoder, key/value heads ungrouped (Granite Speech 5's blocked attention),
#: experts left None (dots.llm1), an image-token table (Chameleon), inputs of a part the forward takes as optional (CLAP's
#: folded spectrogram, Kosmos-2's image and where its queries go, Voxtral Realtime's frames a token, TVP's one clip),
#: a rotation a layer kind (Cohere Compass), reused keys and values (Gemma 3n), a layer a stage (MuseSpark audio), two
#: hybrid layers sharing a block (Zamba), Granite 4 Vision's injections, boxes as fractions of the page (UDOP), one
#: group of the 4 experts (A.X K1), heads ungrouped where the config's own check demands it (ESM C), an image of two
#: sides (MGP-STR), a block drafter's noised block and the target's states (MuseGlimmer's assistant), a box's
#: coordinates' sines and cosines 4 wide each (BROS), hidden states in and out of an encoder-decoder without
#: pre-nets (SpeechT5), audio codes one column a channel (Dia)
REPAIRED = ["mamba2", "patchtsmixer", "parakeet_encoder", "decision_transformer", "detr", "rt_detr",
            "pocket_tts_audio_tokenizer", "musicgen", "audio-spectrogram-transformer", "esm", "nemotron",
            "vibevoice_acoustic_tokenizer_encoder", "gemma4_audio", "lfm2_moe", "nemotron3_diarization",
            "kyutai_speech_to_text", "blip_2_qformer", "fun_asr_nano_encoder", "t5gemma2_encoder",
            "moonshine_streaming", "step3p7", "layoutlmv3", "mistral4", "kimi_linear", "xmod",
            "audioflamingo3_encoder", "seggpt", "lilt", "sam", "granite_speech5_encoder", "dots1", "chameleon", "clap",
            "kosmos-2", "voxtral_realtime", "cohere_compass_text", "gemma3n_text", "muse_spark_audio", "zamba",
            "granite4_vision", "tvp", "udop", "axk1", "esmc", "mgp-str", "muse_glimmer_assistant", "bros", "speecht5", "dia"]


@pytest.mark.parametrize("name", REPAIRED)
def test_a_model_whose_tiny_config_does_not_build_is_rebuilt_and_traced_equal(name: str) -> None:
    entry = next(e for e in corpus.hf_entries() if e.name == name)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, _ = corpus.run_one(entry, determinism=False)
    assert result.status == "traced", result.reason
    assert result.equal, (result.diff, result.diff_fresh, result.opaque_ops)
    assert result.params_lowered == result.params


def test_repair_keeps_dependent_sizes_in_agreement() -> None:
    import transformers

    repair = corpus.repair_module()
    mamba = repair.rebuilt("mamba2", corpus.shrink)
    assert mamba.num_heads * mamba.head_dim == mamba.expand * mamba.hidden_size == 64
    zamba = repair.rebuilt("zamba", corpus.shrink)  # derived in the config's __init__: 2 x the width
    assert zamba.hidden_size == 32 and zamba.attention_hidden_size == 64
    assert len(zamba.layers_block_type) == zamba.num_hidden_layers == 4  # two hybrid layers share its attention
    assert zamba.layers_block_type.count("hybrid") == 2
    series = repair.repair(corpus.shrink(transformers.AutoConfig.for_model("time_series_transformer")))
    assert series.prediction_length == series.context_length == 4  # None in the default config
    luke = repair.rebuilt("luke", corpus.shrink)  # a second vocabulary (entities: 500,000 x the width)
    assert luke.entity_vocab_size == 128
    gptj = repair.repair(corpus.shrink(transformers.AutoConfig.for_model("gptj")))
    assert gptj.rotary_dim == gptj.n_embd // gptj.n_head  # a rotary slice no wider than a head
    detr = repair.rebuilt("detr", corpus.shrink)  # timm's ResNet-50 by default: timm is not a dependency
    assert detr.backbone_config.model_type == "resnet"
    rt = repair.rebuilt("rt_detr", corpus.shrink)  # three feature maps, as wide as the shrunk backbone's stages
    with torch.device("meta"):
        channels = transformers.AutoBackbone.from_config(rt.backbone_config).channels
    assert rt.backbone_config.out_features == ["stage2", "stage3", "stage4"]
    assert list(rt.encoder_in_channels) == list(channels) and rt.num_queries <= 8
    hgnet = repair.rebuilt("d_fine", corpus.shrink).backbone_config  # stage widths listed apart from hidden_sizes
    assert hgnet.hidden_sizes == list(hgnet.stage_out_channels) and max(hgnet.hidden_sizes) <= 256
    assert list(hgnet.stage_in_channels[1:]) == list(hgnet.stage_out_channels[:-1])
    assert hgnet.stem_channels[-1] == hgnet.stage_in_channels[0]
    doc = repair.rebuilt("pp_doclayout_v3", corpus.shrink)  # 4 maps: the encoder takes the deepest 3, a mask head the 1st
    with torch.device("meta"):
        channels = transformers.AutoBackbone.from_config(doc.backbone_config).channels
    assert list(doc.encoder_in_channels) == list(channels[1:]) and doc.x4_feat_dim == channels[0]
    mimi = repair.rebuilt("mimi", corpus.shrink)  # one group a channel
    assert mimi.upsample_groups == mimi.hidden_size == 32
    lfm = repair.rebuilt("lfm2_moe", corpus.shrink)  # layer kinds None by default: a convolution, then attention
    assert lfm.layer_types == ["conv", "full_attention"]
    qwen = repair.rebuilt("qwen4_exp_text", corpus.shrink)  # an indexed attention's indexer: every size or none
    assert qwen.indexer_budget % qwen.indexer_compress_ratio == 0 and qwen.indexer_kv_heads == 1
    deepseek = repair.rebuilt("deepseek_v32", corpus.shrink)  # a model without those fields does not get them
    assert "indexer_budget" not in deepseek.__dict__
    dbrx = repair.rebuilt("dbrx", corpus.shrink)  # read by the attention, not set by its config: the model's own
    assert dbrx.attn_config.rope_theta == dbrx.rope_parameters["rope_theta"] and dbrx.attn_config.clip_qkv == 8
    diarization = repair.rebuilt("nemotron3_diarization", corpus.shrink)  # the head reads the shrunk encoder
    assert diarization.head_config.audio_hidden_size == diarization.audio_config.hidden_size == 32
    gemma3n = repair.rebuilt("gemma3n_text", corpus.shrink)  # reused keys/values: a maker and a user of each kind
    assert gemma3n.layer_types[:2] == gemma3n.layer_types[2:] and gemma3n.num_kv_shared_layers == 2
    assert gemma3n.intermediate_size == [64] * gemma3n.num_hidden_layers == [64] * 4  # one a layer, capped
    assert gemma3n.kv_sharing_modes == ["store", "store", "reuse", "reuse"]
    clap = repair.rebuilt("clap", corpus.shrink).audio_config  # the projection reads the deepest stage's width
    assert clap.hidden_size == clap.patch_embeds_hidden_size * 2 ** (len(clap.depths) - 1)
    assert clap.spec_size // clap.num_mel_bins == 4 and clap.spec_size // 4 // 8 >= 4  # folded 4 x, 4 bins deepest
    compass = repair.rebuilt("cohere_compass_text", corpus.shrink)  # a rotation a layer kind, none by default
    assert set(compass.rope_parameters) == set(compass.layer_types) == {"full_attention"}
    axk1 = repair.rebuilt("axk1", corpus.shrink)  # 8 groups of 4 experts, each group ranked by its top 2: one group
    assert (axk1.n_group, axk1.topk_group) == (1, 1)
    esmc = repair.rebuilt("esmc", corpus.shrink)  # constructed ungrouped: its config's check refuses grouped heads
    assert repair.ungrouped(esmc) and esmc.num_key_value_heads == esmc.num_attention_heads  # (the third chance's)
    dots = repair.rebuilt("dots1", corpus.shrink)  # experts left None
    assert (dots.n_routed_experts, dots.num_experts_per_tok, dots.n_shared_experts) == (4, 2, 1)
    step = repair.rebuilt("step3p7", corpus.shrink).text_config  # masks for its sliding layers: has a window
    assert step.sliding_window == 4
    assert repair.rebuilt("qwen2", corpus.shrink).sliding_window is None  # switched off: no window
    layout = repair.rebuilt("layoutlmv3", corpus.shrink)  # x0 y0 x1 y1 h w embeddings concatenated: the width
    assert 4 * layout.coordinate_size + 2 * layout.shape_size == layout.hidden_size
    mistral = repair.rebuilt("mistral4", corpus.shrink)  # rotary on qk_rope_head_dim of each head's features
    assert mistral.rope_parameters["partial_rotary_factor"] * mistral.head_dim == mistral.qk_rope_head_dim
    kimi = repair.rebuilt("kimi_linear", corpus.shrink)  # num_experts_per_token: no more than the experts
    assert kimi.num_experts_per_token <= kimi.num_experts and kimi.pad_token_id is None  # 163,839: no such row
    sam = repair.rebuilt("sam", corpus.shrink)  # the image encoder's neck gives the prompt encoder's width
    assert sam.vision_config.output_channels == sam.prompt_encoder_config.hidden_size == 2 * sam.vision_config.num_pos_feats
    sam2 = repair.rebuilt("sam2", corpus.shrink)  # the neck takes the Hiera stages, deepest first, at their sizes
    stages = sam2.vision_config.backbone_config.embed_dim_per_stage
    assert sam2.vision_config.backbone_channel_list == list(reversed(stages))
    assert sam2.vision_config.backbone_feature_sizes == [[8, 8], [4, 4], [2, 2]] and sam2.prompt_encoder_config.patch_size == 16
    assert repair.rebuilt("lilt", corpus.shrink).hidden_size % 6 == 0
    granite = repair.rebuilt("granite_speech5_encoder", corpus.shrink)  # a third chance: no grouped key/value heads
    assert granite.num_key_value_heads < granite.num_attention_heads and repair.ungrouped(granite)
    assert granite.num_key_value_heads == granite.num_attention_heads and not repair.ungrouped(granite)
    codec = repair.rebuilt("neucodec", corpus.shrink)  # the semantic and acoustic widths joined
    assert codec.quantization_dim == codec.hidden_size + codec.semantic_model_config.hidden_size == 64


class _Cached(torch.nn.Module):
    """Caches a tensor computed from a parameter on its first call in eval mode (as LeViT's attention biases do)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(3, 4))
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "bias" not in self.cache:
            self.cache["bias"] = self.table[:, :2].sum(0)
        return torch.stack([x, x * 2], dim=-1).sum(-1) * self.cache["bias"]


def test_tracing_twice_draws_the_same_diagram_even_when_the_model_fills_a_cache() -> None:
    import ncd

    torch.manual_seed(0)
    model, x = _Cached().eval(), torch.randn(5, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, second = ncd.trace(model, x), ncd.trace(model, x)
    assert first == second
    assert model.cache == {}  # put back as it was
    assert torch.allclose(first.to_torch()(x), model(x))


class _Tanh(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x))


def test_a_failing_rule_is_an_opaque_box_and_a_warning_naming_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    import ncd
    from ncd.trace.convert import RULES
    from ncd.trace.idioms import load_rules

    load_rules()

    def broken(conv: object, node: object) -> None:
        raise RuntimeError("a bug in a rule")

    monkeypatch.setitem(RULES, "aten.tanh", broken)
    model, x = _Tanh().eval(), torch.randn(3, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, x)
    messages = [str(w.message) for w in caught]
    assert any("aten.tanh" in m and "a bug in a rule" in m and "test_import_corpus.py" in m for m in messages), messages
    assert d.opaque_count == 1
    assert torch.allclose(d.to_torch()(x), model(x), atol=1e-6)


def test_results_are_saved_one_line_per_model_and_a_resumed_run_reads_them(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "results.jsonl")
    first = corpus.Result("torch.lstm", "torch", "traced", diff=1e-7, params=10, params_lowered=10, wall_s=1.5)
    corpus.save(path, first)
    corpus.save(path, corpus.Result("gpt2", "base", "not built", "tiny: ValueError"))
    corpus.save(path, corpus.Result("torch.lstm", "torch", "traced", diff=2e-7))  # run again: the last line wins
    with open(path, "a") as f:
        f.write('{"name": "cut')  # a line cut by a killed run is skipped (that model runs again)
    loaded = corpus.load(path)
    assert sorted(loaded) == ["gpt2", "torch.lstm"]
    assert loaded["torch.lstm"].diff == 2e-7 and loaded["gpt2"].reason == "tiny: ValueError"
    entries = corpus.all_entries()
    assert [r.name for r in corpus.ordered(loaded, entries)] == ["torch.lstm", "gpt2"]  # the corpus' order
    assert "| torch.lstm | traced |" in corpus.report(list(loaded.values()))


def _shadowing(source: str) -> list[str]:
    """Names the generated ``source`` binds in a function that are builtins or names the module defines or imports."""
    import ast
    import builtins

    tree = ast.parse(source)
    module_names = {a.asname or a.name.split(".")[0] for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in n.names}
    module_names |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    module_names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    bound: set[str] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            bound |= {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
            bound |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    # ``_`` is a builtin only once an interactive display (a doctest run earlier in the same process) has set it
    return sorted(b for b in bound if (b in dir(builtins) and b != "_") or b in module_names)


@pytest.mark.parametrize("name", SUBSET)
def test_generated_identifiers_shadow_no_builtin_and_no_name_the_code_uses(name: str, entries: dict[str, object]) -> None:
    import ncd
    from ncd.torch.codegen import to_source

    model, inputs, _ = entries[name].build()  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, **inputs)
    assert _shadowing(to_source(d.as_block())) == []
    assert _shadowing("import torch\ndef f(x):\n    slice = x\n    torch = 1\n    return slice\n") == ["slice", "torch"]


def test_grouped_query_heads_batch_and_key_value_heads_have_names_of_their_own() -> None:
    """Llama with 4 query heads, 2 key/value heads and a batch of 2: heads ``h``, key/value heads ``g`` (not the
    batch's ``b`` primed, as when names came from sizes), the heads each key/value head serves ``r``."""
    import ncd

    entry = next(e for e in corpus.all_entries() if e.name == "llama")
    model, inputs, _ = entry.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, **inputs)
    segments = {" ".join(s.names) for b in d.boxes() for t in (b.dom, b.cod) for s in t}
    # the queries split straight into key/value heads g and the heads each serves r (the rotary box woven over g r,
    # ``ncd.trace.crossings_through``), the keys into g
    assert {"b t g r k", "b t g k"} <= segments, sorted(segments)
    sizes: dict[str, set[str]] = {}  # batch and tokens are symbols (traced sizes as defaults)
    for b in d.boxes():
        for t in (b.dom, b.cod):
            for s in t:
                for a in s.axes:
                    sizes.setdefault(a.name.rstrip("\u02b9"), set()).add(str(a.size))
    assert sizes["g"] == {"2"} and sizes["r"] == {"2"} and sizes["b"] == {"b"} and sizes.get("h", {"4"}) == {"4"}
    assert all(len(v) == 1 for k, v in sizes.items() if k != "1"), sizes  # a name never means two sizes


_ROLES = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_roles.py"
_rspec = importlib.util.spec_from_file_location("bench_roles", _ROLES)
assert _rspec is not None and _rspec.loader is not None
roles = sys.modules["bench_roles"] = importlib.util.module_from_spec(_rspec)
_rspec.loader.exec_module(roles)


@pytest.mark.parametrize("name", ["swin", "vit", "llama", "mixtral"])
def test_two_roles_never_share_a_name(name: str) -> None:
    """Traced from a config whose sizes collide (Swin: a window of 4, 4 heads, head dimension 8 = 8 patches a
    side) and from one where every role has a size of its own, axis by axis: every name of the first stands for one
    role of the second (windows, positions in a window, tokens, heads, head features, channels are apart).  Mixtral
    with 4 experts used to name its flattened tokens like its key/value width (both 16): its two layers then differed
    and did not fold, so the two traces did not even pair up."""
    names, problem = roles.audit(dict(roles.models())[name])
    assert not problem
    assert {n: r for n, r in names.items() if len(r) > 1} == {}, names
    assert roles.misnamed(names) == {}, names  # no role's letter (h, k, f, w …) on another role's wires
    if name == "swin":  # the window partition reads as which window (s), where in it (w), heads h of k features
        assert names["s"] == {"windows_per_side"} and names["w"] == {"window"}
        assert names["h"] == {"heads"} and names["k"] == {"head_dim"} and names["t"] == {"tokens"}
        assert "heads" not in roles.several_names(names)  # the relative-position table's heads are h too
    if name == "mixtral":  # the router's output is the experts axis, its top-k the slots each token is sent to
        assert names["e"] == {"experts"} and names["s"] == {"top_k"}


def test_the_attention_scale_is_the_head_dimension_s_symbol() -> None:
    """Llama's scores are scaled by ``k**-0.5`` (a symbol, the traced 8 among the defaults), not 0.35355339…;
    the diagram lowers to the model, and lowering at another head dimension is refused (the weights hold k = 8)."""
    import sympy

    import ncd
    from ncd.ir.size import symbol
    from ncd.prims.elementwise import ScaleOp

    entry = next(e for e in corpus.all_entries() if e.name == "llama")
    model, inputs, _ = entry.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, **inputs)
    factors = {b.prim.factor for b in d.boxes() if isinstance(b.prim, ScaleOp)}
    assert factors == {symbol("k") ** sympy.Rational(-1, 2)}, factors
    assert dict(d.get("defaults"))["k"] == model.config.head_dim
    want = model(**inputs).last_hidden_state
    assert torch.allclose(d.to_torch()(inputs["input_ids"]), want, atol=1e-5)
    with pytest.raises(ncd.TraceError, match="k=8"):
        d.to_torch(k=16)


@pytest.mark.parametrize("name", ["bloom", "sew-d"])
def test_custom_functions_proven_exact_are_drawn_as_their_operations_with_the_originals_gradients(name: str) -> None:
    """BLOOM's GeLUFunction and SEW-D's XSoftmax: their backward is their forward's gradient (told while tracing), so
    they are drawn as their operations, and the lowered module's parameter gradients are the original's."""
    from torch.utils._pytree import tree_leaves

    import ncd

    torch.manual_seed(0)
    entry = next(e for e in corpus.all_entries() if e.name == name)
    model, inputs, fresh = entry.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, **inputs)
    assert d.opaque_count == 0
    lowered = d.to_torch()

    def grads(module: torch.nn.Module) -> tuple[list[torch.Tensor], dict[tuple[tuple[int, ...], float], torch.Tensor]]:
        module.zero_grad()
        out = module(**fresh) if module is model else module(*corpus._leaves(list(fresh.values())))
        outs = [o for o in tree_leaves(out) if isinstance(o, torch.Tensor) and o.is_floating_point()]
        g = torch.Generator().manual_seed(1)
        sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs).backward()  # type: ignore[union-attr]
        # parameters found by shape and value (the lowered module names them its own way)
        by_value = {(tuple(p.shape), float(p.detach().double().sum())): p.grad for p in module.parameters()
                    if p.grad is not None}
        return [o.detach() for o in outs], by_value

    want_out, want = grads(model)
    got_out, got = grads(lowered)
    assert len(got_out) == len(want_out)
    for a, b in zip(got_out, want_out):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert want and set(got) == set(want)
    for k, g in want.items():
        torch.testing.assert_close(got[k], g, atol=1e-5, rtol=1e-4)


def test_the_round_trip_compares_a_dataclass_output_field_by_field() -> None:
    """A model returning a plain ``@dataclass`` (pytree keeps it whole) is compared by its fields' tensors, so a
    lowered module returning them as a tuple is equal, and one wrong field is not."""
    import dataclasses

    @dataclasses.dataclass
    class Out:
        logits: torch.Tensor
        hidden: torch.Tensor

    a, b = torch.randn(2, 3), torch.randn(2, 4)
    assert corpus._max_diff((a, b), Out(a, b)) == (0.0, True)
    diff, equal = corpus._max_diff((a, b + 1.0), Out(a, b))
    assert not equal and abs(diff - 1.0) < 1e-6


def test_a_model_unstable_in_float32_is_checked_in_float64_and_a_wrong_one_stays_wrong() -> None:
    """The float64 reading separates rounding from error: ``(x + 1e8) - 1e8`` rounds x to a multiple of 8 in float32,
    so a lowered module computing ``x`` differs there but equals it in float64, while one computing ``x + 1e-3`` differs
    in both and still counts as silently wrong."""
    class Model(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x + 1e8) - 1e8

    class Same(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    class Off(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1e-3

    model, inputs, fresh = Model(), {"x": torch.randn(4, 5) * 3}, {"x": torch.randn(4, 5) * 3}
    built = corpus.Built(model, inputs, fresh, model(**inputs), model(**fresh))
    assert not corpus._max_diff(Same()(inputs["x"]), built.want)[1]  # float32: not equal
    diff, equal = corpus._float64_diff(built, Same())
    assert equal and diff < 1e-6
    diff, equal = corpus._float64_diff(built, Off())
    assert equal is False and abs(diff - 1e-3) < 1e-6
    wrong = corpus.Result("m", "torch", status="traced", equal=False, equal_f64=False)
    unstable = corpus.Result("m", "torch", status="traced", equal=False, equal_f64=True)
    assert wrong.silently_wrong and not unstable.silently_wrong


def test_the_corpus_s_own_modules_examples_run() -> None:
    """The examples in the docstrings of the modules the corpus is split into (``--doctest-modules`` sees ``src`` and
    ``tests`` only): shrinking a config, generating a second chance's inputs, the report's counts, the median run."""
    import doctest

    import corpus_inputs
    import corpus_report
    import corpus_shrink
    import corpus_timing

    for module in (corpus_shrink, corpus_inputs, corpus_report, corpus_timing):
        failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert failed == 0 and attempted > 0, (module.__name__, failed, attempted)
