"""Second chances for the import corpus's tiny models (``benchmarks/import_corpus.py``): configs and inputs that build.

A model type whose tiny model (``corpus_shrink.shrink``) does not construct or run on the generated inputs is tried
again here before the corpus gives up on it; a model that already builds is never touched, so its figures stay as they
were.  Nothing here changes what is measured: the same model class, random weights, and inputs of the shapes its
forward documents.

* :func:`rebuilt`: the config built afresh from the fields the shrink changed, so that the sizes a config derives from
  others in its ``__init__`` (``attention_hidden_size = 2 * hidden_size``, ``head_dim = hidden_size // heads``,
  ``context_length = prediction_length``) follow the shrunk ones; then :func:`repair`.
* :func:`repair`: sizes that must agree kept in agreement (a Mamba mixer's heads x head features = expand x width, a
  rotary slice no wider than a head, top-k slots no more than the experts, a detector's encoder inputs as wide as its
  shrunk backbone's outputs and its queries no more than a small image's anchors, a depthwise convolution's groups
  the shrunk width, a codec's filters, a head's input width named after another part: :func:`_matched`) and a default
  for a size left ``None`` (:func:`_unset`: LFM2-MoE's layer kinds, Qwen4-Exp's indexer, DBRX's rotary base); a
  detector whose default backbone is timm's gets the library's own (:func:`_in_library`).
* :func:`ungrouped`: a third chance, as many key/value heads as heads.
* ``corpus_inputs``' :func:`generators`, :func:`layouts` and :func:`parts` (re-exported here): inputs the corpus has
  no generator for by name (time series, video, trajectories, a Q-Former's queries, …), and the other layouts an
  audio or video input can take, tried in turn when the first does not run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from corpus_inputs import ALSO, FRAMES, _int, generators, layouts, parts  # noqa: F401 - re-exported: the corpus's second chances

#: sizes the shrink does not know by name: a predictor's (V-JEPA 2), a latent array's (Perceiver)
SMALL = {"pred_hidden_size": 32, "pred_num_hidden_layers": 2, "pred_num_attention_heads": 4, "d_latents": 32,
         "num_latents": 32, "base_channels": 32}  # (a VQ-GAN's first convolution, 32 groups normed: Chameleon's 128)


def _changed(base: Any, small: Any) -> dict[str, Any]:
    """The fields of ``small`` that differ from ``base`` (sub-configs as dicts of their own changed fields)."""
    from transformers import PretrainedConfig

    out: dict[str, Any] = {}
    for key, value in small.__dict__.items():
        if key.startswith("_"):
            continue
        old = base.__dict__.get(key)
        if isinstance(value, PretrainedConfig) and isinstance(old, PretrainedConfig):
            sub = _changed(old, value)
            if sub and isinstance(getattr(value, "out_features", None), list):
                sub["out_features"] = value.out_features  # a backbone's outputs: built from a dict, only its last
            if sub:  # with its type: a backbone's config is built from the dict's ``model_type``
                out[key] = {"model_type": value.model_type, **sub} if getattr(value, "model_type", "") else sub
        elif not isinstance(value, PretrainedConfig) and value != old:
            out[key] = value
    return out


def rebuilt(model_type: str, shrink: Callable[[Any], Any]) -> Any:
    """The tiny config of ``model_type`` constructed again from the fields ``shrink`` changed, shrunk and repaired."""
    import transformers

    extra = _in_library(model_type)
    base = transformers.AutoConfig.for_model(model_type, **extra)
    small = repair(shrink(transformers.AutoConfig.for_model(model_type, **extra)))
    try:
        config = transformers.AutoConfig.for_model(model_type, **extra, **_changed(base, small))
    except Exception:  # noqa: BLE001 - a config whose checks forbid grouped key/value heads (ESM C): ungrouped
        if not ungrouped(small):
            raise
        config = transformers.AutoConfig.for_model(model_type, **extra, **_changed(base, small))
    if _named(config, base):  # then built again, so that what derives from those sizes follows them too
        config = transformers.AutoConfig.for_model(model_type, **extra, **_changed(base, config))
    return repair(shrink(config))


def ungrouped(config: Any, depth: int = 0) -> bool:
    """``config`` with as many key/value heads as heads, where the shrink grouped them (2 for 4): a model that reshapes
    its keys by the query heads, or rotates across heads (Granite Speech 5, NeuCodec); whether any changed."""
    from transformers import PretrainedConfig

    d, changed = config.__dict__, False
    for value in list(d.values()):
        if isinstance(value, PretrainedConfig) and depth < 3:
            changed = ungrouped(value, depth + 1) or changed
    heads = d.get("num_attention_heads")
    if _int(d.get("num_key_value_heads")) and _int(heads) and d["num_key_value_heads"] < heads:
        d["num_key_value_heads"], changed = heads, True
    return changed


def part_for(cls: type, config: Any) -> Any:
    """``config``, or the sub-config of it that ``cls`` is built from (MusicGen's base model is its decoder: it takes
    the ``decoder`` config of the composite one its type names)."""
    wanted = getattr(cls, "config_class", None)
    if wanted is None or isinstance(config, wanted):
        return config
    return next((v for v in config.__dict__.values() if isinstance(v, wanted)), config)


def _in_library(model_type: str) -> dict[str, Any]:
    """Construction arguments that give ``model_type`` its default backbone of the library (a ResNet, a Swin) instead
    of a timm one (timm is not a dependency): ``use_timm_backbone=False`` where the config takes it."""
    import transformers

    backbone = getattr(transformers.AutoConfig.for_model(model_type), "backbone_config", None)
    if getattr(backbone, "model_type", "") != "timm_backbone":
        return {}
    config = transformers.AutoConfig.for_model(model_type, use_timm_backbone=False)
    timm = getattr(getattr(config, "backbone_config", None), "model_type", "timm_backbone") == "timm_backbone"
    return {} if timm else {"use_timm_backbone": False}


def _named(config: Any, base: Any, depth: int = 0) -> bool:
    """Cap the sizes named like the shrink's but not listed there (a second vocabulary: entities, per-layer inputs; a
    part's width: a decoder's, an expert's) that the rebuild left at their default, so not derived from the shrunk
    ones (zamba's ``attention_hidden_size`` follows the width: left alone); whether any was capped."""
    from transformers import PretrainedConfig

    d, old, capped = config.__dict__, base.__dict__, False
    for key, value in list(d.items()):
        if isinstance(value, PretrainedConfig) and isinstance(old.get(key), PretrainedConfig) and depth < 3:
            capped = _named(value, old[key], depth + 1) or capped
        if not _int(value) or key.startswith("_") or value != old.get(key):
            continue
        cap = (128 if "vocab" in key else 32 if key.endswith("hidden_size")
               else 64 if key.endswith(("intermediate_size", "ffn_hidden_size")) else None)
        width, was = d.get("hidden_size"), old.get("hidden_size")
        if key in PROPORTIONAL and _int(width) and _int(was) and width < was and value % was == 0:
            cap = value // was * width  # a multiple of the width (NeuCodec: the semantic and acoustic widths joined)
        if cap is not None and value > cap:
            d[key], capped = cap, True
            if key == "vocab_size" and _int(d.get("pad_token_id")) and d["pad_token_id"] >= cap:
                d["pad_token_id"] = None  # the padding row of the default vocabulary (Kimi Linear's 163,839): no row
    return capped


#: sizes that are a multiple of the width in the default config, kept that multiple of the shrunk one
PROPORTIONAL = ("quantization_dim",)


def repair(config: Any, depth: int = 0) -> Any:
    """``config`` (a shrunk one) with dependent sizes in agreement and a default for a size left ``None``."""
    from transformers import PretrainedConfig

    d = config.__dict__
    for value in list(d.values()):
        if isinstance(value, PretrainedConfig) and depth < 3:
            repair(value, depth + 1)
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    head = hidden // heads if _int(hidden) and _int(heads) and heads > 0 else None
    if heads == 0 and _int(hidden) and hidden > 0:  # heads derived as the width // 64 (Granite 4 Vision's Q-Former)
        d["num_attention_heads"] = heads = 1
        head = hidden
    if "head_dim" in d and d["head_dim"] is None and head:
        d["head_dim"] = head
    if "num_key_value_heads" in d and d["num_key_value_heads"] is None and _int(heads):
        d["num_key_value_heads"] = heads  # left None: one key/value head a query head, as the config documents
    if "vocab_size" in d and d["vocab_size"] is None:  # a tokenizer's to set (ESM): the shrink's vocabulary, and the
        d["vocab_size"] = 128  # special tokens below the ids generated
        for token, value in (("pad_token_id", 1), ("mask_token_id", 2)):
            if token in d and d[token] is None:
                d[token] = value
    width = d.get("head_dim") if _int(d.get("head_dim")) else head
    if _int(d.get("rotary_dim")) and width and d["rotary_dim"] > width:
        d["rotary_dim"] = width  # a rotary slice of each head
    if d.get("num_time_features") == 0 and "lags_sequence" in d:
        d["num_time_features"] = 1  # a forecast's time features (its age): an input axis of size 0 otherwise
    if "prediction_length" in d and d["prediction_length"] is None:
        d["prediction_length"] = 4
    if "context_length" in d and d["context_length"] is None and _int(d.get("prediction_length")):
        d["context_length"] = d["prediction_length"]
    experts = next((d[k] for k in ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
                    if _int(d.get(k))), None)
    if experts:
        for key in ("num_experts_per_tok", "moe_k", "moe_topk", "top_k", "num_experts_per_token"):
            if key in d and (d[key] is None or (_int(d[key]) and d[key] > experts)):
                d[key] = min(2, experts)
        group = d.get("n_group")
        if _int(group) and group > 1 and (experts % group or experts // group < 2):  # groups of experts (A.X K1's 8
            d["n_group"] = 1  # of 4), each ranked by its top 2: one group, of all of them
            if _int(d.get("topk_group")):
                d["topk_group"] = 1
    if _int(d.get("crop_size")) and d["crop_size"] > 32:
        d["crop_size"] = 32  # a video model's image side, as ``image_size``
    tubelet = d.get("tubelet_size")
    tubelet = tubelet[0] if isinstance(tubelet, (list, tuple)) else tubelet
    for key in ("num_frames", "frames_per_clip"):
        if _int(d.get(key)) and d[key] > FRAMES:
            d[key] = max(FRAMES, int(tubelet or 0))  # a clip of one tubelet
    for key, cap in SMALL.items():
        if _int(d.get(key)) and d[key] > cap:
            d[key] = cap
    layers = getattr(config, "num_hidden_layers", None)
    for key in ("layers_block_type", "layer_types", "block_types"):
        types = d.get(key)
        if isinstance(types, (list, tuple)) and types and _int(layers) and len(types) > layers:
            kinds = list(dict.fromkeys(types))  # every kind of layer, in order of first appearance
            d[key] = (kinds + [kinds[-1]] * layers)[:layers] if len(kinds) <= layers else list(types[:layers])
    _per_layer(d, layers)
    _mamba(d)
    _stages(d)
    _matched(d)
    _unset(config, layers, heads, hidden)
    ratios = next((d[k] for k in ("downsampling_ratios", "upsampling_ratios") if isinstance(d.get(k), (list, tuple))), ())
    for key in ("num_filters", "n_filters"):  # a codec's filters, doubled at each of its strided stages
        if ratios and _int(d.get(key)) and d[key] << len(ratios) > 1024:  # VibeVoice's 6 stages: 2048 wide
            d[key] = max(1, 256 >> len(ratios))
    if _int(hidden):
        for key in [k for k in d if k.endswith("groups") and _int(d[k]) and d[k] > hidden]:
            d[key] = hidden  # a depthwise convolution (one group a channel of the default width)
    if _int(d.get("num_queries")) and d["num_queries"] > QUERIES and d.get("backbone_config") is not None:
        d["num_queries"] = QUERIES  # a detector's top-k queries: no more than the anchors of a small image's features
    _backbone(d)
    return config


#: a detector's object queries: its top-k picks that many of the anchors of a 32 x 32 image's feature maps (21 or more)
QUERIES = 8


def _matched(d: dict[str, Any]) -> None:
    """A part's input width named after another part (a head's ``audio_hidden_size``) as wide as that part's config
    (``audio_config.hidden_size``), which the shrink narrowed: the config's own check demands they agree."""
    from transformers import PretrainedConfig

    for part in [v for v in d.values() if isinstance(v, PretrainedConfig)]:
        sub = part.__dict__
        for key in [k for k in sub if k.endswith("_hidden_size") and _int(sub[k])]:
            other = d.get(key.removesuffix("_hidden_size") + "_config")
            if isinstance(other, PretrainedConfig) and _int(getattr(other, "hidden_size", None)):
                sub[key] = other.hidden_size


def _hiera(d: dict[str, Any]) -> None:
    """SAM 2's image encoder: the neck takes the Hiera stages' widths (deepest first) at the sizes of the prompt
    encoder's image (a stride of 4, then halved a stage), which the backbone is built for too."""
    vision, prompt = d.get("vision_config"), d.get("prompt_encoder_config")
    backbone = getattr(vision, "backbone_config", None)
    widths, side = getattr(backbone, "embed_dim_per_stage", None), getattr(prompt, "image_size", None)
    sizes = getattr(vision, "backbone_feature_sizes", None)
    if not isinstance(widths, (list, tuple)) or not _int(side) or not isinstance(sizes, (list, tuple)):
        return
    vision.backbone_channel_list = list(reversed(widths))
    vision.backbone_feature_sizes = [[side // 4 >> i] * 2 for i in range(len(sizes))]
    backbone.image_size = [side, side]
    prompt.patch_size = 4 << (len(sizes) - 1)  # the image embedding's stride: the deepest level the neck keeps


#: a sliding attention's window (shorter than the generated tokens)
WINDOW = 4


#: a token indexer's sizes (Qwen4-Exp's QSA: all set or none), small: 2 query heads of 8 features, one key head, a
#: budget of 4 tokens picked in blocks of 2
INDEXER = {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 8, "indexer_budget": 4,
           "indexer_compress_ratio": 2}


def _unset(config: Any, layers: Any, heads: Any, hidden: Any) -> None:
    """Sizes a model reads but its default config leaves ``None`` or does not define, or that must agree with the
    shrunk ones: the layer kinds of a hybrid of short convolutions and attention (LFM2-MoE: a convolution, then
    attention), an indexed attention's indexer (Qwen4-Exp), a window, a decoder's key/value heads, an encoder's
    dropout, a box's embedding widths, an attention context, a latent attention's rotary fraction (Mistral 4), the
    rotary base and the clipping a DBRX attention config is read for (the model's own, the released checkpoint's)."""
    d = config.__dict__
    if "layer_types" in d and d["layer_types"] is None and "conv_L_cache" in d and _int(layers):
        d["layer_types"] = (["conv", "full_attention"] * layers)[:layers]
    if "mlp_layer_types" in d and d["mlp_layer_types"] is None and _int(layers):
        d["mlp_layer_types"] = (["dense", "sparse"] * layers)[:layers]  # a dense MLP, then experts (DeepSeek-OCR 2)
    if "indexed_attention" in (d.get("layer_types") or ()) and all(k in d and d[k] is None for k in INDEXER):
        d.update(INDEXER)
    if "sliding_window" in d and d["sliding_window"] is None and isinstance(d.get("layer_types"), list) \
            and "use_sliding_window" not in d:  # (a switch that is off: Qwen2's, None is its window's "none")
        d["sliding_window"] = WINDOW  # the window of the sliding layers a model masks for (Step3p7 always does)
    if _int(d.get("context_size")) and _int(d.get("max_position_embeddings")):
        d["context_size"] = min(d["context_size"], d["max_position_embeddings"])  # attention context (Granite Speech)
    encoder, fields = d.get("encoder_config"), getattr(type(config), "__dataclass_fields__", {})
    if "num_key_value_heads" not in fields and _int(heads) and "num_key_value_heads" in getattr(encoder, "__dict__", {}):
        d["num_key_value_heads"] = heads  # read by the decoder (one a query head), a field of the encoder's config
        # only (Moonshine streaming)
    text = d.get("text_config")
    if str(getattr(text, "model_type", "")).startswith("t5gemma2") and "dropout_rate" not in text.__dict__:
        text.__dict__["dropout_rate"] = d.get("dropout_rate", 0.0)  # what the composite config copies in (T5Gemma2)
    if _int(d.get("coordinate_size")) and _int(d.get("shape_size")) and _int(hidden):
        d["shape_size"] = hidden // 8  # 4 coordinates and 2 shape sizes of a box concatenated: the width (LayoutLMv3)
        d["coordinate_size"] = (hidden - 2 * d["shape_size"]) // 4
    if _int(d.get("channel_shrink_ratio")) and "max_2d_position_embeddings" in d and _int(hidden) and hidden % 6:
        d["hidden_size"] = 48  # 6 box embeddings of width // 6 each, concatenated: the width (LiLT), and // 4 layout
    vision, prompt = d.get("vision_config"), d.get("prompt_encoder_config")
    width = getattr(prompt, "hidden_size", None)
    if _int(width) and _int(getattr(vision, "output_channels", None)) and _int(getattr(vision, "num_pos_feats", None)):
        vision.output_channels = width  # SAM: the image encoder's neck gives what the prompt encoder and mask decoder
        vision.num_pos_feats = width // 2  # take, and its positional features are half of it (sines and cosines)
    _hiera(d)
    rope, rotary = d.get("rope_parameters"), d.get("qk_rope_head_dim")
    if isinstance(rope, dict) and _int(rotary) and _int(d.get("head_dim")) and "partial_rotary_factor" in rope:
        rope["partial_rotary_factor"] = rotary / d["head_dim"]  # the rotary part of a latent attention's head
    if "deepstack_layer_map" in d and d["deepstack_layer_map"] is None and "downsample_rate" in d:
        d["deepstack_layer_map"] = [(-1, 0)]  # Granite 4 Vision's injections (none by default): the last vision
        if d["downsample_rate"] is None:  # layer's features into the first text layer, its windows halved a side
            d["downsample_rate"] = "1/2"
    if "vocabulary_map" in d and d["vocabulary_map"] is None:  # a tokenizer's table of image tokens (Chameleon, Emu3)
        vocab = getattr(d.get("text_config"), "vocab_size", None) or d.get("vocab_size")
        d["vocabulary_map"] = {"<image>": int(vocab) - 1}  # the image placeholder only, above the ids generated
    if "n_routed_experts" in d and d["n_routed_experts"] is None and "moe_intermediate_size" in d:
        d["n_routed_experts"] = 4  # experts left unset (dots.llm1): the shrink's 4, top-2 and one shared expert
        for key, value in (("num_experts_per_tok", 2), ("n_shared_experts", 1)):
            if key in d and d[key] is None:
                d[key] = value
    types = d.get("layer_types")
    kinds = list(dict.fromkeys(types)) if isinstance(types, list) else []
    if isinstance(rope, dict) and "mrope_section" in rope and kinds and rope.keys() - {"mrope_section"} <= set(kinds):
        sections = rope.pop("mrope_section")  # the shrink's, beside rotations read a layer kind each (Cohere Compass:
        for kind in kinds:  # none by default, {}): the default rotation, in those sections
            rope.setdefault(kind, {"rope_type": "default", "rope_theta": 10000.0})["mrope_section"] = sections
    if _int(d.get("spec_size")) and _int(d.get("patch_embeds_hidden_size")) and isinstance(d.get("depths"), list):
        _spectrogram(d)
    if _int(d.get("visual_prompt_size")) and _int(d.get("max_img_size")) and d["max_img_size"] > 128:
        d["max_img_size"], d["visual_prompt_size"] = 128, 8  # a video's frames and the prompt padded around them
        # (TVP's 448 and 96): a 2 x 2 grid after its ResNet's stride of 32 and a pooling
    if _int(d.get("dim_bbox_sinusoid_emb_2d")) and _int(d.get("dim_bbox")) and \
            d["dim_bbox_sinusoid_emb_2d"] // d["dim_bbox"] < 2:  # BROS: a box's coordinates' sines and cosines
        d["dim_bbox_sinusoid_emb_2d"], d["dim_bbox_sinusoid_emb_1d"] = 4 * d["dim_bbox"], 4  # 4 a coordinate (24 by default)
    if _int(d.get("latent_query_num")) and d["latent_query_num"] > 4:
        d["latent_query_num"] = 4  # the image's latent queries in the text (Kosmos-2's 64): fewer than its tokens
    attn = d.get("attn_config")
    if attn is not None and "kv_n_heads" in attn.__dict__ and isinstance(rope, dict) and "rope_theta" in rope:
        attn.__dict__.setdefault("rope_theta", rope["rope_theta"])
        if attn.__dict__.get("clip_qkv") is None:
            attn.__dict__["clip_qkv"] = 8.0  # read unguarded (a clamp of neither bound fails): DBRX-Instruct's own


def _per_layer(d: dict[str, Any], layers: Any) -> None:
    """Sizes given a layer each: a feed-forward width per layer capped as the shrink caps one for all (Gemma 3n's
    16,384s), one a layer kept; and where the last layers reuse the keys and values of earlier ones of their kind, as many layers as
    each kind needs to have one that makes them and one that reuses them (Gemma 3n's 15 of 35 reuse: 2 of 4, one a
    kind), the lists of one entry a layer repeated to the new count; a layer count that counts stages listed (their
    widths and patch sizes) kept at theirs; two hybrid layers to share an attention block."""
    sizes = d.get("intermediate_size")
    if isinstance(sizes, list) and sizes and all(_int(v) for v in sizes) and _int(layers):
        d["intermediate_size"] = [min(v, 64) for v in sizes[:layers]]  # the first layers' (as the layer kinds)
    depths = d.get("depths")
    stages = [d.get(k) for k in ("hidden_sizes", "patch_sizes")]
    if isinstance(depths, (list, tuple)) and _int(layers) and layers < len(depths) \
            and all(isinstance(v, (list, tuple)) and len(v) == len(depths) for v in stages):
        d["num_hidden_layers"] = len(depths)  # a layer a stage (MuseSpark's audio encoder): every stage kept
    blocks = d.get("layers_block_type")
    if isinstance(blocks, list) and blocks.count("hybrid") == 1 and len(blocks) == layers and "attn_layer_period" in d:
        d["layers_block_type"], d["num_hidden_layers"] = blocks * 2, 2 * len(blocks)  # Zamba's one attention block
        # shared by its hybrid layers (tied from the first to the others): two of them
    shared, types = d.get("num_kv_shared_layers"), d.get("layer_types")
    if not (_int(shared) and _int(layers) and shared >= layers > 0 and isinstance(types, list) and types):
        return
    kinds = list(dict.fromkeys(types))
    count = 2 * len(kinds)
    for key, value in list(d.items()):
        if isinstance(value, list) and len(value) == layers:
            d[key] = (value * count)[:count]
    d["layer_types"], d["num_hidden_layers"], d["num_kv_shared_layers"] = kinds * 2, count, len(kinds)


def _spectrogram(d: dict[str, Any]) -> None:
    """A Swin on a spectrogram folded into a square image (CLAP's audio part): a side of 128 in windows of 4 (the
    deepest stage's 4 x 4 patches are split into as many frequency bins as the fold's ratio, 4), the mel bins a fourth
    of the side, and the width the deepest stage's (the first stage's doubled at each later one, as the default's 96
    x 8 = 768), which the projection reads."""
    d["spec_size"], d["window_size"], d["num_mel_bins"] = 128, 4, 32
    d["hidden_size"] = d["patch_embeds_hidden_size"] << (len(d["depths"]) - 1)


def _stages(d: dict[str, Any]) -> None:
    """A backbone whose stages' widths are listed apart from ``hidden_sizes`` (HGNet-V2: stem, stage input, middle and
    output channels) narrowed as the shrink narrows ``hidden_sizes`` (by 8), which then name the stages' outputs."""
    lists = ("stem_channels", "stage_in_channels", "stage_mid_channels", "stage_out_channels")
    if not all(isinstance(d.get(k), (list, tuple)) for k in (*lists, "hidden_sizes")):
        return
    if len(d["stage_out_channels"]) != len(d["hidden_sizes"]) or d["hidden_sizes"] == list(d["stage_out_channels"]):
        return
    for key in lists:
        first = 1 if key == "stem_channels" else 0  # the image's channels
        d[key] = [*d[key][:first], *(max(4, int(v) // 8) for v in d[key][first:])]
    d["hidden_sizes"] = list(d["stage_out_channels"])


def _backbone(d: dict[str, Any]) -> None:
    """A detector's encoder inputs as wide as its backbone's outputs (the shrink narrows the backbone's stages): the
    channels of the backbone built from its config (on the meta device)."""
    backbone = d.get("backbone_config")
    widths = d.get("encoder_in_channels")
    if backbone is None or not isinstance(widths, (list, tuple)):
        return
    import transformers

    try:
        with torch.device("meta"):
            channels = list(transformers.AutoBackbone.from_config(backbone).channels)
    except Exception:  # noqa: BLE001 - a backbone the auto class does not build: left as it is
        return
    if len(channels) >= len(widths):  # the encoder takes the deepest maps; a mask head the first (PP-DocLayout-V3)
        d["encoder_in_channels"] = channels[len(channels) - len(widths):]
        if len(channels) > len(widths) and _int(d.get("x4_feat_dim")):
            d["x4_feat_dim"] = channels[0]


#: (heads, head features, expand) field names of a Mamba-2 mixer, by model family
MAMBA = (("num_heads", "head_dim", "expand"), ("mamba_n_heads", "mamba_d_head", "mamba_expand"),
         ("n_mamba_heads", "mamba_headdim", "mamba_expand"))


def _mamba(d: dict[str, Any]) -> None:
    """A Mamba-2 mixer's heads x head features = expand x width (its inner width), head features at most 8."""
    hidden = d.get("hidden_size")
    for heads, features, expand in MAMBA:
        if not all(_int(d.get(k)) for k in (heads, features, expand)) or not _int(hidden):
            continue
        if heads == "num_heads" and "num_attention_heads" in d:
            continue  # an attention model's heads
        inner = d[expand] * hidden
        d[features] = min(d[features], 8)
        while inner % d[features]:
            d[features] //= 2
        d[heads] = inner // d[features]
        for groups in ("n_groups", "mamba_n_groups", "mamba_ngroups"):
            if _int(d.get(groups)) and d[heads] % d[groups]:
                d[groups] = 1
