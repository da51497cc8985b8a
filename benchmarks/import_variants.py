"""``ncd.trace`` on ``transformers`` models called the way users call them: the variants the corpus never measured.

:mod:`import_corpus` builds every model type once, in eval mode, on ``input_ids`` (or its main input) at batch 2 and
8 tokens.  Users call models otherwise: with a padded ``attention_mask``, ``token_type_ids``, ``position_ids``,
``inputs_embeds``, ``labels`` (a loss; QA spans past the end too), ``use_cache=True`` (a key/value cache returned),
``output_attentions``, ``output_hidden_states``, ``return_dict=False``, ``decoder_input_ids`` and its mask,
``head_mask``, shuffled ``position_ids``; through task heads (sequence and token classification, question answering,
masked and causal LMs, image classification, seq2seq, multiple choice, pretraining, audio classification, semantic
segmentation, CTC); with ``attn_implementation`` eager or sdpa; in float64 or bfloat16; at batch 1, length 1 or odd
lengths; in training mode; ``input_ids`` as int32; a generation step (a cache passed back in, a left-padded mask over it,
positions counted from the mask, ``cache_position``), ``logits_to_keep``, packed sequences (a 4-D mask), a sliding
window shorter than the input, ``labels`` without ``decoder_input_ids``, Longformer's ``global_attention_mask``, an
image larger than the position table (``interpolate_pos_encoding``); on encoder-decoder, vision, audio, MoE and
hybrid/recurrent families.

Each case is a model type, a head (an auto mapping) and a variant.  For each: traced / refused (``ncd.TraceError``) /
crashed, opaque boxes, the round trip on the traced input and on a fresh input of the same shapes and different values
(a different padding too; atol 1e-4, bfloat16 3e-2), parameter counts, and "silently wrong" (traced with no warning but
not equal).  A model in training mode is compared under the same random seed (dropout drawn alike) and must not be
silently wrong.  The machinery (building, shrinking, inputs, forked children with a time limit) is
:mod:`import_corpus`'s.

    .venv/bin/python benchmarks/import_variants.py                 # every case; prints the table and the counts
    .venv/bin/python benchmarks/import_variants.py bert gpt2 -v    # cases whose name contains one of the words
    .venv/bin/python benchmarks/import_variants.py --list
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

_HERE = os.path.dirname(os.path.abspath(__file__))
if "import_corpus" in sys.modules:
    corpus = sys.modules["import_corpus"]
else:
    _spec = importlib.util.spec_from_file_location("import_corpus", os.path.join(_HERE, "import_corpus.py"))
    assert _spec is not None and _spec.loader is not None
    corpus = sys.modules["import_corpus"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(corpus)

Inputs = dict[str, Any]


@dataclass(frozen=True)
class Variant:
    """How the model is called: extra or replaced arguments, its element type, mode, attention and sizes."""

    name: str
    kwargs: Callable[[Inputs, Any, torch.Generator, int], Inputs] | None = None  # (inputs, config, generator, seed)
    dtype: torch.dtype | None = None
    train: bool = False
    attn: str | None = None
    batch: int = corpus.BATCH
    tokens: int = corpus.TOKENS
    past: int = 0  # a key/value cache of this many earlier tokens passed as ``past_key_values`` (a decoding step)
    config: tuple[tuple[str, Any], ...] = ()  # config fields set before the model is built (a sliding window)


def _mask(left: bool, traced_pads: bool = True) -> Callable[[Inputs, Any, torch.Generator, int], Inputs]:
    """A padded attention mask: a row with zeros at its end (its start when ``left``); the fresh input pads otherwise.
    ``traced_pads`` false: the traced mask is all ones (a model may skip an all-ones mask), the fresh one pads."""

    def add(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
        ids = inputs.get("input_ids", inputs.get("inputs_embeds"))
        b, t = ids.shape[0], ids.shape[1]
        mask = torch.ones(b, t, dtype=torch.long)
        pad = min(t - 1, 2 + seed) if seed or traced_pads else 0  # a different number of pads in the fresh input
        if pad:
            if left:
                mask[0, :pad] = 0
            else:
                mask[0, t - pad:] = 0
        if b > 1 and t > 2 and seed:
            mask[-1, -1] = 0
        return {**inputs, "attention_mask": mask}

    return add


def _flags(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    b, t = inputs["input_ids"].shape
    return {**inputs, "token_type_ids": torch.randint(0, max(1, int(getattr(config, "type_vocab_size", 2) or 2)), (b, t),
                                                      generator=gen)}


def _positions(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    b, t = inputs["input_ids"].shape
    start = torch.randint(0, 5, (b, 1), generator=gen)  # shifted positions, as after a prefix
    positions = start + torch.arange(t)
    if seed and t > 3:  # the fresh input packs two sequences in its first row (positions restart)
        positions[0, t // 2:] = torch.arange(t - t // 2)
    return {**inputs, "position_ids": positions}


def _embeds(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    ids = inputs.pop("input_ids")
    width = int(getattr(config, "hidden_size", None) or getattr(config, "d_model", None) or config.n_embd)
    return {"inputs_embeds": torch.randn(*ids.shape, width, generator=gen), **inputs}


def _labels(kind: str) -> Callable[[Inputs, Any, torch.Generator, int], Inputs]:
    def add(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
        main = next(iter(inputs.values()))
        b = main.shape[0]
        if kind in ("tokens", "token classes"):  # a label per token (LMs shift them themselves), some ignored
            target = inputs.get("decoder_input_ids", inputs.get("input_ids"))
            high = int(config.vocab_size) if kind == "tokens" else int(getattr(config, "num_labels", 2))
            labels = torch.randint(0 if kind == "token classes" else 3, high, target.shape, generator=gen)
            labels[0, -1] = -100
        else:  # a class per sequence or image
            labels = torch.randint(0, int(getattr(config, "num_labels", 2)), (b,), generator=gen)
        return {**inputs, "labels": labels}

    return add


def _spans(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """A QA head's ``start_positions``/``end_positions``, some past the end (the head clamps them to its length and
    ignores them: ``ignore_index`` is that length)."""
    b, t = inputs["input_ids"].shape
    return {**inputs, "start_positions": torch.randint(0, t + 3, (b,), generator=gen),
            "end_positions": torch.randint(0, t + 3, (b,), generator=gen)}


def _flag(**flags: Any) -> Callable[[Inputs, Any, torch.Generator, int], Inputs]:
    def add(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
        return {**inputs, **flags}

    return add


def _then(*steps: Callable[[Inputs, Any, torch.Generator, int], Inputs]) -> Callable[[Inputs, Any, torch.Generator, int],
                                                                                      Inputs]:
    def add(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
        for step in steps:
            inputs = step(inputs, config, gen, seed)
        return inputs

    return add


def _head_mask(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """Some heads of some layers masked out (``head_mask``, layers × heads of 0/1)."""
    mask = (torch.rand(config.num_hidden_layers, config.num_attention_heads, generator=gen) > 0.4).float()
    return {**inputs, "head_mask": mask}


def _choices(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """Three choices per example (``(b, c, t)`` inputs) and the right one as the label."""
    out = {k: v.unsqueeze(1).expand(v.shape[0], 3, *v.shape[1:]).contiguous() for k, v in inputs.items()}
    out["input_ids"] = torch.randint(5, 90, out["input_ids"].shape, generator=gen)
    return {**out, "labels": torch.randint(0, 3, (inputs["input_ids"].shape[0],), generator=gen)}


def _pretraining(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """Masked-token labels (half of them -100) and a next-sentence label."""
    ids = inputs["input_ids"]
    labels = torch.randint(0, config.vocab_size, ids.shape, generator=gen)
    labels[torch.rand(ids.shape, generator=gen) < 0.5] = -100
    return {**inputs, "labels": labels, "next_sentence_label": torch.randint(0, 2, (ids.shape[0],), generator=gen)}


def _example_labels(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """One class per example, whatever the main input is (audio, pixels)."""
    first = next(iter(inputs.values()))
    return {**inputs, "labels": torch.randint(0, config.num_labels, (first.shape[0],), generator=gen)}


def _pixel_labels(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """A class per pixel, a fifth of them 255 (a segmentation head's ignored label)."""
    px = inputs["pixel_values"]
    labels = torch.randint(0, config.num_labels, (px.shape[0], px.shape[2], px.shape[3]), generator=gen)
    labels[torch.rand(labels.shape, generator=gen) < 0.2] = 255
    return {**inputs, "labels": labels}


def _decoder_mask(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    ids = inputs.get("decoder_input_ids")
    if ids is None:
        return inputs
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    return {**inputs, "decoder_attention_mask": mask}


def _shuffled_positions(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    b, t = inputs["input_ids"].shape
    return {**inputs, "position_ids": torch.stack([torch.randperm(t, generator=gen) for _ in range(b)])}


def _prompt_labels(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """The tokens as labels, the first three (a prompt) -100."""
    labels = inputs["input_ids"].clone()
    labels[:, :3] = -100
    return {**inputs, "labels": labels}


def _int32(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """Token ids as ``int32`` (what a tokenizer's numpy output or an ONNX-minded pipeline hands over)."""
    return {k: v.int() if k.endswith("input_ids") else v for k, v in inputs.items()}


def _past_mask(past: int) -> Callable[[Inputs, Any, torch.Generator, int], Inputs]:
    """A generation step after a left-padded prompt: the mask covers the cache and the new tokens (the first row's
    first ``2 + seed`` cached positions are padding), positions counted from the mask as ``generate`` does, and
    ``cache_position``."""

    def add(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
        b, t = inputs["input_ids"].shape
        mask = torch.ones(b, past + t, dtype=torch.long)
        mask[0, :2 + seed] = 0
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, past:]
        return {**inputs, "attention_mask": mask, "position_ids": positions, "use_cache": True,
                "cache_position": torch.arange(past, past + t)}

    return add


def _packed(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """Two sequences packed in each row: a 4-D float mask, causal within each (``0``/``-inf``), and positions that
    restart where the second begins (the fresh input splits elsewhere)."""
    b, t = inputs["input_ids"].shape
    cut = t // 2 + seed
    doc = (torch.arange(t) >= cut).long()
    allowed = (doc[:, None] == doc[None, :]) & torch.ones(t, t, dtype=torch.bool).tril()
    mask = torch.zeros(t, t).masked_fill(~allowed, torch.finfo(torch.float32).min)
    positions = torch.cat([torch.arange(cut), torch.arange(t - cut)])
    return {**inputs, "attention_mask": mask.expand(b, 1, t, t).clone(), "position_ids": positions.expand(b, t).clone()}


def _labels_only(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """A seq2seq model given ``labels`` (some -100) and no ``decoder_input_ids``: it shifts the labels right itself."""
    out = dict(inputs)
    target = out.pop("decoder_input_ids")
    labels = torch.randint(3, int(config.vocab_size), target.shape, generator=gen)
    labels[0, -2:] = -100
    return {**out, "labels": labels}


def _global(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """Longformer's ``global_attention_mask``: the first token (and another in the fresh input) attends everywhere."""
    g = torch.zeros_like(inputs["input_ids"])
    g[:, 0] = 1
    if seed:
        g[-1, 3] = 1
    return {**inputs, "global_attention_mask": g}


def _ctc_labels(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """CTC targets of different lengths (padded with -100), as a speech recogniser is fine-tuned on."""
    b = inputs["input_values"].shape[0]
    labels = torch.randint(1, int(config.vocab_size), (b, 4), generator=gen)
    labels[0, 2 + seed % 2:] = -100
    return {**inputs, "labels": labels}


def _bigger_image(inputs: Inputs, config: Any, gen: torch.Generator, seed: int) -> Inputs:
    """An image larger than the one the position table was made for, ``interpolate_pos_encoding=True``."""
    px = inputs["pixel_values"]
    side = px.shape[-1] * 3 // 2
    return {**inputs, "pixel_values": torch.randn(px.shape[0], px.shape[1], side, side, generator=gen),
            "interpolate_pos_encoding": True}


V = Variant
PLAIN = V("plain")
MASK_R, MASK_L = V("mask-right", _mask(False)), V("mask-left", _mask(True))
FLAGS, POSITIONS, EMBEDS = V("token_type_ids", _flags), V("position_ids", _positions), V("inputs_embeds", _embeds)
CACHE, ATTENTIONS = V("use_cache", _flag(use_cache=True)), V("output_attentions", _flag(output_attentions=True))
HIDDEN, TUPLE = V("output_hidden_states", _flag(output_hidden_states=True)), V("return_dict=False", _flag(return_dict=False))
LABEL_TOKENS, LABEL_CLASS = V("labels", _labels("tokens")), V("labels", _labels("class"))
LABEL_TAGS = V("labels", _labels("token classes"))
SPANS = V("start/end_positions", _spans)
EAGER, SDPA = V("eager", attn="eager"), V("sdpa", attn="sdpa")
F64, BF16 = V("float64", dtype=torch.float64), V("bfloat16", dtype=torch.bfloat16)
B1, T1, T7 = V("batch1", batch=1), V("length1", tokens=1), V("length7", tokens=7)
TRAIN = V("train", train=True)
PAST = V("past_key_values", _flag(use_cache=True), past=5, tokens=3)
PAST1 = V("past_key_values+length1", _flag(use_cache=True), past=5, tokens=1)
MASK_ONES_R, MASK_ONES_L = V("mask-ones-then-right", _mask(False, False)), V("mask-ones-then-left", _mask(True, False))
EMBEDS_MASK = V("inputs_embeds+mask-left", _then(_embeds, _mask(True)))
MASK_CACHE = V("mask-left+use_cache", _then(_mask(True), _flag(use_cache=True)))
HEADS, CHOICES, PRETRAIN = V("head_mask", _head_mask), V("choices+labels", _choices), V("pretraining labels", _pretraining)
EXAMPLE_LABELS, PIXEL_LABELS = V("labels", _example_labels), V("labels (255 ignored)", _pixel_labels)
DECODER_MASK, SHUFFLED = V("decoder_attention_mask", _decoder_mask), V("position_ids shuffled", _shuffled_positions)
PROMPT_LABELS = V("labels (prompt -100)", _prompt_labels)
INT32 = V("input_ids int32", _int32)
LOGITS1 = V("logits_to_keep=1", _flag(logits_to_keep=1))
STEP = V("generation step", _past_mask(5), past=5, tokens=1)
PACKED = V("packed (4-D mask, positions restart)", _packed)
LABELS_ONLY = V("labels, no decoder_input_ids", _labels_only, config=(("decoder_start_token_id", 0),))
GLOBAL = V("global_attention_mask", _global)
CTC = V("labels (CTC)", _ctc_labels)
BIGGER = V("interpolate_pos_encoding", _bigger_image)
WINDOW = V("sliding_window=4", _mask(True), config=(("sliding_window", 4), ("use_sliding_window", True)))
EVERYTHING = V("use_cache+output_attentions+output_hidden_states",
               _flag(use_cache=True, output_attentions=True, output_hidden_states=True))

BASE, CAUSAL, MASKED = "MODEL_MAPPING_NAMES", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"
SEQ_CLS, TOK_CLS = "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"
QA, IMG_CLS = "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"
SEQ2SEQ, SPEECH2TEXT = "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"

#: (model type, auto mapping, variants)
CASES: list[tuple[str, str, list[Variant]]] = [
    ("bert", BASE, [MASK_ONES_R, MASK_R, FLAGS, POSITIONS, EMBEDS, ATTENTIONS, HIDDEN, TUPLE, EAGER, SDPA, F64, BF16, B1, T1,
                    T7, TRAIN]),
    ("bert", SEQ_CLS, [PLAIN, LABEL_CLASS, MASK_R]),
    ("bert", TOK_CLS, [PLAIN, LABEL_TAGS]),
    ("bert", QA, [PLAIN, MASK_R, SPANS]),
    ("t5", QA, [SPANS]),
    ("mt5", QA, [SPANS]),
    ("umt5", QA, [SPANS]),
    ("bert", MASKED, [PLAIN, LABEL_TOKENS]),
    ("roberta", MASKED, [MASK_R, EMBEDS]),
    ("roberta", SEQ_CLS, [PLAIN]),
    ("gpt2", CAUSAL, [PAST, PAST1, MASK_ONES_L, PLAIN, MASK_L, MASK_R, POSITIONS, EMBEDS, CACHE, LABEL_TOKENS, ATTENTIONS,
                      EAGER, F64, BF16, B1, T1, TRAIN, MASK_CACHE]),
    ("gpt2", SEQ_CLS, [PLAIN]),
    ("llama", CAUSAL, [PAST, PAST1, MASK_ONES_L, EMBEDS_MASK, PLAIN, MASK_L, POSITIONS, EMBEDS, CACHE, LABEL_TOKENS, HIDDEN,
                       TUPLE, EAGER, F64, BF16, B1, T1, T7, MASK_CACHE]),
    ("llama", SEQ_CLS, [PLAIN]),
    ("mistral", CAUSAL, [MASK_ONES_L, MASK_L, CACHE]),
    ("qwen2", CAUSAL, [PAST1, MASK_ONES_L, PLAIN, MASK_L, CACHE, EAGER]),
    ("t5", SEQ2SEQ, [PLAIN, MASK_ONES_R, MASK_R, LABEL_TOKENS, CACHE, EAGER, T1]),
    ("bart", SEQ2SEQ, [PLAIN, MASK_ONES_R, MASK_R, LABEL_TOKENS, CACHE]),
    ("bart", SEQ_CLS, [PLAIN]),
    ("vit", IMG_CLS, [PLAIN, LABEL_CLASS, ATTENTIONS, HIDDEN, EAGER, F64, B1]),
    ("whisper", BASE, [PLAIN, CACHE]),
    ("whisper", SPEECH2TEXT, [PLAIN]),
    ("clip", BASE, [PLAIN, MASK_R]),
    ("mamba", CAUSAL, [PLAIN, CACHE, T7]),
    ("distilbert", SEQ_CLS, [MASK_R]),
    ("electra", TOK_CLS, [MASK_R]),
    ("gemma", CAUSAL, [MASK_L]),
    ("phi3", CAUSAL, [MASK_L, CACHE]),
    ("opt", CAUSAL, [MASK_L, HEADS, PROMPT_LABELS]),
    ("bert", BASE, [HEADS]),
    ("bert", "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES", [CHOICES]),
    ("bert", "MODEL_FOR_PRETRAINING_MAPPING_NAMES", [PRETRAIN]),
    ("wav2vec2", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES", [EXAMPLE_LABELS]),
    ("segformer", "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES", [PIXEL_LABELS]),
    ("t5", SEQ2SEQ, [DECODER_MASK]),
    ("bart", SEQ2SEQ, [DECODER_MASK]),
    ("llama", CAUSAL, [SHUFFLED, PROMPT_LABELS, EVERYTHING]),
    ("gpt_neox", CAUSAL, [SHUFFLED]),
    # families and calls added later: MoE, hybrid/recurrent, sliding windows, generation steps, int32 ids, more heads
    ("bert", BASE, [INT32]),
    ("gpt2", CAUSAL, [INT32, STEP, LOGITS1]),
    ("llama", CAUSAL, [INT32, STEP, PACKED, LOGITS1]),
    ("t5", SEQ2SEQ, [INT32, LABELS_ONLY, PAST]),
    ("bart", SEQ2SEQ, [LABELS_ONLY, PAST1]),
    ("whisper", SPEECH2TEXT, [LABELS_ONLY, PAST1]),
    ("marian", SEQ2SEQ, [MASK_R]),
    ("mixtral", CAUSAL, [MASK_L, CACHE, PAST, STEP, TRAIN, BF16]),
    ("qwen2_moe", CAUSAL, [MASK_L, PAST1]),
    ("olmoe", CAUSAL, [MASK_L, CACHE]),
    ("mistral", CAUSAL, [WINDOW, PAST, STEP]),
    ("qwen2", CAUSAL, [WINDOW]),
    ("gemma2", CAUSAL, [MASK_L, WINDOW, PAST]),
    ("gemma3_text", CAUSAL, [MASK_L, STEP]),
    ("jamba", CAUSAL, [MASK_L] + [dataclasses.replace(v, config=(("attn_layer_offset", 1), ("attn_layer_period", 2)))
                                  for v in (CACHE, PAST1)]),  # an attention layer among the 2: a cache to pass
    ("recurrent_gemma", CAUSAL, [MASK_L, T7]),
    ("falcon_h1", CAUSAL, [MASK_L]),
    ("mamba", CAUSAL, [LABEL_TOKENS, B1]),
    ("longformer", BASE, [MASK_R, GLOBAL]),
    ("convnext", IMG_CLS, [LABEL_CLASS, B1, F64]),
    ("vit", IMG_CLS, [BIGGER]),
    ("wav2vec2", "MODEL_FOR_CTC_MAPPING_NAMES", [PLAIN, CTC]),
]


@dataclass
class Case:
    name: str
    model_type: str
    mapping: str
    variant: Variant = field(repr=False)


def cases() -> list[Case]:
    out = []
    for model_type, mapping, variants in CASES:
        head = "" if mapping == BASE else "+" + mapping.removeprefix("MODEL_FOR_").removesuffix("_MAPPING_NAMES").lower()
        out += [Case(f"{model_type}{head}:{v.name}", model_type, mapping, v) for v in variants]
    return out


def build(case: Case) -> tuple[nn.Module, Inputs, Inputs]:
    """The case's model (tiny config, random weights away from their initialisation) and two calls' arguments."""
    import transformers
    from transformers.models.auto import modeling_auto

    v = case.variant
    names = getattr(modeling_auto, case.mapping)
    cls = getattr(transformers, names[case.model_type] if isinstance(names[case.model_type], str)
                  else names[case.model_type][0])
    config = corpus.shrink(transformers.AutoConfig.for_model(case.model_type))
    config.use_cache = False
    for key, value in v.config:
        setattr(config, key, value)
    if getattr(config, "pad_token_id", None) is None and case.mapping == SEQ_CLS:
        config.pad_token_id = 0  # sequence classification over a batch needs one (ids avoid it)
    kwargs = {"attn_implementation": v.attn} if v.attn else {}
    torch.manual_seed(0)
    model = cls._from_config(config, **kwargs) if kwargs else cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    if v.dtype is not None:
        model = model.to(v.dtype)
    model.train(v.train)
    pair = []
    for seed in (0, 1):
        sizes = corpus.BATCH, corpus.TOKENS
        corpus.BATCH, corpus.TOKENS = v.batch, v.tokens  # make_inputs reads them
        try:
            inputs = corpus.make_inputs(model, config, seed, both=True)
        finally:
            corpus.BATCH, corpus.TOKENS = sizes
        if case.mapping == SEQ_CLS and inputs.pop("decoder_input_ids", None) is not None:
            inputs["input_ids"][:, -1] = config.eos_token_id  # an encoder-decoder classifier reads its ids' last <eos>
        if v.kwargs is not None:
            inputs = v.kwargs(inputs, config, torch.Generator().manual_seed(100 + seed), seed)
        if v.past:
            prefix = torch.randint(3, 100, (v.batch, v.past), generator=torch.Generator().manual_seed(200 + seed))
            start = {"input_ids": prefix}  # the earlier tokens; an encoder-decoder's decoder's, on the same source
            if "decoder_input_ids" in inputs:
                start = {"decoder_input_ids": prefix, **{k: inputs[k] for k in ("input_ids", "input_features")
                                                          if k in inputs}}
            with torch.no_grad():
                inputs["past_key_values"] = model(**start, use_cache=True).past_key_values
        if v.dtype is not None:
            inputs = {k: t.to(v.dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                      for k, t in inputs.items()}
        pair.append(inputs)
    return model, pair[0], pair[1]


@dataclass
class Outcome:
    name: str
    status: str = ""  # "not built", "traced", "refused", "crashed"
    reason: str = ""
    opaque: int = 0
    boxes: int = 0
    warned: str = ""
    equal: bool = False
    diff: float = math.nan
    diff_fresh: float = math.nan
    lowered: str = ""
    params: int = 0
    params_lowered: int = 0

    @property
    def silently_wrong(self) -> bool:
        return self.status == "traced" and not self.warned and not self.equal and not self.lowered

    @property
    def crashed(self) -> bool:
        return self.status in ("crashed", "timeout") or bool(self.lowered)


def tensors(value: Any, inside: bool = True) -> list[torch.Tensor]:
    """Every tensor ``value`` holds: its pytree leaves and, when ``inside``, in an object such as a key/value cache, its
    attributes' (the contract: a cache passed in is inputs, and outputs when returned; one the call starts is not)."""
    out: list[torch.Tensor] = []
    for leaf in torch.utils._pytree.tree_leaves(value):
        if isinstance(leaf, torch.Tensor):
            out.append(leaf)
        elif inside and type(leaf).__module__.startswith("transformers") and hasattr(leaf, "__dict__"):
            out += tensors(list(vars(leaf).values()))
    return out


def _close(got: Any, want: Any, atol: float, state: bool) -> tuple[float, bool]:
    got, want = tensors(got), tensors(want, inside=state)
    if len(got) != len(want):
        return math.inf, False
    worst, equal = 0.0, True
    for g, w in zip(got, want):
        if g.shape != w.shape or g.dtype.is_floating_point != w.dtype.is_floating_point:
            return math.inf, False
        if not g.is_floating_point():
            same = torch.equal(g, w)
            worst, equal = max(worst, 0.0 if same else math.inf), equal and same
            continue
        g64, w64 = g.double(), w.double()
        if not torch.equal(torch.isfinite(g64), torch.isfinite(w64)):
            return math.inf, False
        finite = torch.isfinite(w64)
        d = (g64 - w64).abs()[finite]
        worst = max(worst, float(d.max()) if d.numel() else 0.0)
        equal = equal and torch.allclose(g64[finite], w64[finite], atol=atol, rtol=atol)
    return worst, equal


def run_case(case: Case) -> Outcome:
    import ncd

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    out = Outcome(case.name)
    try:
        model, inputs, fresh = build(case)
        torch.manual_seed(7)
        with torch.no_grad():  # each call on its own copy: a model may write into its inputs (a cache grows)
            want = model(**copy.deepcopy(inputs))
            torch.manual_seed(8)
            want_fresh = model(**copy.deepcopy(fresh))
    except Exception as error:  # noqa: BLE001 - the table says why
        out.status, out.reason = "not built", f"{type(error).__name__}: {corpus._line(error)}"
        return out
    out.params = corpus.n_params(model)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d = ncd.trace(model, **copy.deepcopy(inputs))
    except ncd.TraceError as error:
        out.status, out.reason = "refused", corpus._line(error)
        return out
    except Exception as error:  # noqa: BLE001
        frame = traceback.extract_tb(error.__traceback__)[-1]
        out.status = "crashed"
        out.reason = f"{type(error).__name__}: {corpus._line(error)} ({os.path.basename(frame.filename)}:{frame.lineno})"
        return out
    out.status = "traced"
    ours = [str(w.message) for w in caught if "ncd" in str(w.message) or "opaque" in str(w.message)]
    out.warned = "; ".join(m[:160] for m in ours[:2])
    out.boxes = len(list(d.boxes()))
    out.opaque = d.opaque_count
    atol = 3e-2 if case.variant.dtype == torch.bfloat16 else 1e-4
    try:
        lowered = d.to_torch()
        out.params_lowered = corpus.n_params(lowered)
        with torch.no_grad():
            torch.manual_seed(7)
            got = lowered(*tensors(list(inputs.values())))
            torch.manual_seed(8)
            got_fresh = lowered(*tensors(list(fresh.values())))
        state = bool(case.variant.past)  # a cache passed in, returned grown
        out.diff, equal = _close(got, want, atol, state)
        out.diff_fresh, equal_fresh = _close(got_fresh, want_fresh, atol, state)
        out.equal = equal and equal_fresh
    except Exception as error:  # noqa: BLE001
        frame = traceback.extract_tb(error.__traceback__)[-1]
        out.lowered = f"{type(error).__name__}: {corpus._line(error)} ({os.path.basename(frame.filename)}:{frame.lineno})"
    return out


def _in_child(case: Case, timeout: float) -> Outcome:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send(run_case(case))
        except BaseException as error:  # noqa: BLE001
            send.send(Outcome(case.name, "crashed", f"{type(error).__name__}: {corpus._line(error)} (harness)"))

    process = ctx.Process(target=child)
    process.start()
    send.close()
    if recv.poll(timeout):
        try:
            result: Outcome = recv.recv()
        except EOFError:
            result = Outcome(case.name, "crashed", f"the child died (exit code {process.exitcode})")
    else:
        result = Outcome(case.name, "timeout", f"more than {timeout:.0f} s")
    process.kill()
    process.join(5)
    return result


def line(r: Outcome) -> str:
    if r.status != "traced":
        return f"| {r.name} | {r.status} | | | | | {r.reason[:200]} |"
    eq = "yes" if r.equal else ("**WRONG (silently)**" if r.silently_wrong else "no")
    note = r.lowered or (r.warned[:200] if not r.equal or r.opaque else "")
    return (f"| {r.name} | traced | {eq} | {r.diff:.1e} / {r.diff_fresh:.1e} | {r.opaque} / {r.boxes} |"
            f" {r.params_lowered:,} / {r.params:,} | {note} |")


def counts(results: list[Outcome]) -> str:
    built = [r for r in results if r.status != "not built"]
    return (f"cases {len(results)}, built {len(built)}: traced {sum(r.status == 'traced' for r in built)},"
            f" refused {sum(r.status == 'refused' for r in built)}, crashed {sum(r.crashed for r in built)},"
            f" silently wrong {sum(r.silently_wrong for r in built)}, equal {sum(r.equal for r in built)},"
            f" params equal {sum(r.params_lowered == r.params for r in built if r.status == 'traced')},"
            f" opaque {sum(r.opaque for r in built)} / {sum(r.boxes for r in built)} boxes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="cases whose name contains one of these")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="each case's line as it finishes")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    chosen = [c for c in cases() if not args.only or any(w in c.name for w in args.only)]
    if args.list:
        print("\n".join(c.name for c in chosen))
        return
    results = []
    for case in chosen:
        results.append(_in_child(case, args.timeout))
        if args.verbose:
            print(line(results[-1]), flush=True)
    print("| case | status | equal | max diff (traced / fresh) | opaque / boxes | params (lowered / original) | notes |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(line(r) for r in results))
    print()
    print(counts(results))


if __name__ == "__main__":
    main()
