"""Shrinking a ``transformers`` config generically, for the import corpus (``benchmarks/import_corpus.py``).

Layers, widths, heads, key/value heads, feed-forward widths, experts, head features, image and patch sizes, positions and
the vocabulary are capped (:data:`CAPS`; sub-configs too), and the sizes a config derives from them kept in agreement
(latent attention's heads, rotary sections, per-stage widths, layer types).  ``--collide`` caps (:data:`COLLIDE`) make
the sizes of several roles equal, so that no role can be told from another by its size.

    >>> from transformers import LlamaConfig
    >>> c = shrink(LlamaConfig())
    >>> (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.vocab_size)
    (2, 32, 4, 2, 128)
    >>> deepen(c, 12).num_hidden_layers
    12
"""

from __future__ import annotations

from typing import Any

# -- caps ---------------------------------------------------------------------------------
LAYERS = {"num_hidden_layers", "num_layers", "n_layer", "n_layers", "num_decoder_layers", "encoder_layers",
          "decoder_layers", "num_encoder_layers", "num_text_layers", "num_vision_layers", "text_layers", "vision_layers",
          "num_self_attends_per_block", "num_blocks", "depth"}
HIDDEN = {"hidden_size", "d_model", "n_embd", "embed_dim", "d_embed", "word_embed_proj_dim", "embedding_size",
          "hidden_dim", "dim", "emb_dim", "d_hidden", "embedding_dim", "projection_dim", "text_embed_dim",
          "vision_embed_dim"}
HEADS = {"num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", "decoder_attention_heads", "n_heads",
         "attention_heads"}
KV_HEADS = {"num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num"}
FFN = {"intermediate_size", "ffn_dim", "d_ff", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim", "ffn_hidden_size",
       "moe_intermediate_size", "shared_expert_intermediate_size", "shared_experts_intermediate_size", "moe_hidden_size",
       "inner_dim", "d_inner", "mlp_dim"}
EXPERTS = {"num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"}
MAX_WIDTH, MAX_FFN = 32, 64
# the largest value each size field keeps (the groups are disjoint)
CAPS = {key: cap for keys, cap in (
    (LAYERS, 2), (HIDDEN, MAX_WIDTH), (HEADS, 4), (KV_HEADS, 2), (FFN, MAX_FFN), (EXPERTS, 4),
    ({"num_experts_per_tok", "moe_topk", "top_k"}, 2), ({"head_dim", "d_kv", "attention_head_size", "kv_channels"}, 8),
    ({"image_size"}, 32), ({"patch_size"}, 4),
    # multi-head latent attention (its rotary part is ``head_dim`` wide) and its sparse indexer
    ({"qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "index_head_dim"}, 8), ({"kv_lora_rank", "q_lora_rank"}, 16),
    ({"index_n_heads", "linear_num_heads"}, 4), ({"linear_head_dim"}, 8),
    ({"max_position_embeddings", "n_positions", "max_source_positions", "max_target_positions"}, 64),
) for key in keys}
POSITIONS = ("max_position_embeddings", "n_positions", "max_source_positions", "max_target_positions")
HEAD_DIM = ("head_dim", "d_kv", "attention_head_size", "kv_channels")
#: ``--collide``: caps under which the sizes of several roles are equal, so that no role can be told from another by its
#: size.  ``width``: the width is the number of positions (32), heads x head features (4 x 8) and the feed-forward
#: width; key/value heads are the heads (4, and the experts); head features are the tokens (8), the top-k slots the batch
#: (2), the image side the width.  ``heads``: 8 heads as many as the tokens, head features 4 as many as the experts,
#: key/value heads 2 as many as the batch and the top-k slots; width = positions = ffn = 32.
COLLIDE = {
    "width": {**CAPS, **dict.fromkeys(FFN, MAX_WIDTH), **dict.fromkeys(KV_HEADS, 4), **dict.fromkeys(POSITIONS, MAX_WIDTH)},
    "heads": {**CAPS, **dict.fromkeys(FFN, MAX_WIDTH), **dict.fromkeys(POSITIONS, MAX_WIDTH), **dict.fromkeys(HEADS, 8),
              **dict.fromkeys(HEAD_DIM, 4), **dict.fromkeys(("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"), 4),
              **dict.fromkeys(("index_n_heads", "linear_num_heads"), 8), "linear_head_dim": 4},
}


def shrink(config: Any, depth: int = 0, collide: str = "") -> Any:
    """``config`` with small sizes: 2 layers, width 32, 4 heads (2 key/value), ffn 64, 4 experts, a small vocabulary.

    ``collide``: the caps of that name in :data:`COLLIDE` instead (``"width"``: width = positions = ffn = heads x head
    features, key/value heads = heads); a size below its cap is left as it is."""
    from transformers import PretrainedConfig

    caps = COLLIDE[collide] if collide else CAPS
    d = config.__dict__
    full = [k for k in KV_HEADS if "kv_lora_rank" in d and d.get(k) is not None  # latent attention: no grouping
            and d.get(k) == d.get("num_attention_heads")]
    for key, value in list(d.items()):
        if isinstance(value, PretrainedConfig) and depth < 3:
            shrink(value, depth + 1, collide)
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        cap = caps.get(key)
        if cap is not None and value > cap:
            d[key] = cap
    for key in full:  # latent attention expands its keys and values to every head
        d[key] = d["num_attention_heads"]
    if isinstance(d.get("qk_head_dim"), int) and isinstance(d.get("qk_nope_head_dim"), int):
        d["qk_head_dim"] = d["qk_nope_head_dim"] + int(d.get("qk_rope_head_dim") or 0)  # a sum, not a cap
    for key in ("depths", "blocks_per_stage"):
        if isinstance(d.get(key), (list, tuple)):
            d[key] = [min(int(v), 1) for v in d[key]]
    widths = d.get("embed_dim_per_stage")
    if isinstance(widths, (list, tuple)) and isinstance(d.get("hidden_size"), int) and widths and widths[0] > d["hidden_size"]:
        d["embed_dim_per_stage"] = [int(w) * d["hidden_size"] // int(widths[0]) for w in widths]  # stage 0 is the width
    if isinstance(d.get("image_size"), (list, tuple)) and all(isinstance(v, int) and v > 64 for v in d["image_size"]):
        d["image_size"] = [64] * len(d["image_size"])  # per-side sizes: square, small
    for key in ("hidden_sizes", "embed_dims", "dims", "channels"):
        if isinstance(d.get(key), (list, tuple)) and all(isinstance(v, int) for v in d[key]):
            d[key] = [max(8, int(v) // 8) for v in d[key]]
    if isinstance(d.get("num_heads"), (list, tuple)):
        d["num_heads"] = [2] * len(d["num_heads"])
    layers = next((d[k] for k in LAYERS if isinstance(d.get(k), int) and not isinstance(d.get(k), bool)), None)
    types = d.get("layer_types")
    if isinstance(types, (list, tuple)) and types and isinstance(layers, int) and len(types) > layers:
        kinds = list(dict.fromkeys(types))  # every kind of layer the model has, in order of first appearance
        d["layer_types"] = (kinds + [kinds[-1]] * layers)[:layers] if len(kinds) <= layers else list(types[:layers])
    for key in ("rope_parameters", "rope_scaling"):
        rope = d.get(key)
        mrope = "mrope_section" in getattr(type(config), "ignore_keys_at_rope_validation", ())  # a default in the model
        if isinstance(rope, dict) and (isinstance(rope.get("mrope_section"), (list, tuple)) or mrope):
            rope["mrope_section"] = _sections(config, rope)
    vocab = d.get("vocab_size")
    if isinstance(vocab, int) and vocab > 128:
        special = [v for k, v in d.items() if isinstance(v, int) and not isinstance(v, bool)
                   and (k.endswith("token_id") or k.endswith("token_index"))]
        d["vocab_size"] = max([128] + [v + 1 for v in special])
    return config


def _sections(config: Any, rope: dict[str, Any]) -> list[int]:
    """Multimodal rotary sections rescaled to the shrunk head: they sum to half its rotary width."""
    d = config.__dict__
    head = d.get("head_dim") or (d.get("hidden_size", 0) // max(1, d.get("num_attention_heads", 1) or 1))
    partial = float(rope.get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0)) or 1.0)
    target = int(int(head) * partial) // 2
    old = [max(1, int(v)) for v in rope.get("mrope_section") or (16, 24, 24)]
    new = [v * target // sum(old) for v in old]  # a section may be empty
    new[0] += target - sum(new)
    return new


DEPTH = 12


def deepen(config: Any, layers: int) -> Any:
    """``config`` (a shrunk one) with ``layers`` layers in every stack it has (sub-configs too)."""
    from transformers import PretrainedConfig

    d = config.__dict__
    for key, value in list(d.items()):
        if isinstance(value, PretrainedConfig):
            deepen(value, layers)
        elif key in LAYERS and isinstance(value, int) and not isinstance(value, bool) and value > 0:
            d[key] = layers
    types = d.get("layer_types")
    if isinstance(types, (list, tuple)) and types:
        d["layer_types"] = [types[k % len(types)] for k in range(layers)]
    return config
