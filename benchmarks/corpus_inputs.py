"""Inputs the import corpus (``benchmarks/import_corpus.py``) generates on a second chance (``corpus_repair``).

* :func:`generators`: inputs the corpus has no generator for by name (time series, video, trajectories, a Qwen-VL
  vision tower's flattened patches and their grid, a Q-Former's queries, a features mask), made also where the
  forward has a default for them (:data:`ALSO`).
* :func:`layouts`: the other layouts an audio or video input can take, tried in turn when the first does not run.
* :func:`parts`: the inputs of a model that takes only some of them.

    >>> from transformers import AutoConfig
    >>> g = generators(AutoConfig.for_model("patchtst"), torch.Generator().manual_seed(0), 2)
    >>> tuple(g["past_values"]().shape)
    (2, 32, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

#: the length of a generated time series when the config's own is long, and of a generated clip
SERIES, FRAMES = 32, 2


#: optional inputs generated whenever the forward takes them: the parts of one input (a trajectory, a series)
#: a vocoder's noise (drawn inside the forward when not given: the model's two runs would differ), an X-MOD's language
#: (its adapters raise without one)
ALSO = ("past_time_features", "past_observed_mask", "actions", "rewards", "returns_to_go", "timesteps", "noise_sequence",
        "lang_ids")


def _int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _series_length(config: Any) -> int:
    length = getattr(config, "context_length", None) or SERIES
    patch = getattr(config, "patch_length", None)
    if length > 64 and patch:
        length = 2 * int(patch)
    lags = getattr(config, "lags_sequence", None)
    return int(length) + (max(lags) if lags else 0)


def frames(config: Any) -> int:
    """The frames of a generated clip: the config's own (see :func:`repair`), else :data:`FRAMES`."""
    vision = getattr(config, "vision_config", None) or config
    return int(getattr(vision, "num_frames", 0) or getattr(vision, "frames_per_clip", 0) or FRAMES)


def _first(value: Any) -> int:
    """A size given as a number or per axis (the first)."""
    return int(value[0] if isinstance(value, (list, tuple)) else value or 0)


def _find(config: Any, *names: str, depth: int = 0) -> Any:
    """The first of ``names`` set in ``config``, else in its sub-configs (an audio encoder's mel bins)."""
    from transformers import PretrainedConfig

    for name in names:
        if getattr(config, name, None):
            return getattr(config, name)
    for value in config.__dict__.values():
        found = _find(value, *names, depth=depth + 1) if isinstance(value, PretrainedConfig) and depth < 3 else None
        if found:
            return found
    return None


def generators(config: Any, gen: torch.Generator, batch: int) -> dict[str, Callable[[], torch.Tensor]]:
    """Generators of the inputs of time-series and video models, from their config, and of audio features whose
    width a sub-config holds."""
    length = _series_length(config)
    channels = int(getattr(config, "num_input_channels", 0) or getattr(config, "input_size", 0) or 1)
    lagged = getattr(config, "lags_sequence", None) is not None

    def values() -> torch.Tensor:
        shape = (batch, length) if lagged and channels == 1 else (batch, length, channels)
        if not lagged and getattr(config, "num_input_channels", None) is None:
            shape = (batch, length)
        return torch.randn(*shape, generator=gen)

    def time_features() -> torch.Tensor:
        return torch.randn(batch, length, int(getattr(config, "num_time_features", 0) or 0), generator=gen)

    def video() -> torch.Tensor:
        vision = getattr(config, "vision_config", None) or config
        size = getattr(vision, "image_size", None) or getattr(vision, "crop_size", None) or 32
        size = size[0] if isinstance(size, (list, tuple)) else size
        c = int(getattr(vision, "num_channels", None) or 3)
        return torch.randn(batch, frames(config), c, int(size), int(size), generator=gen)

    def features() -> torch.Tensor:  # a projection's input width (Wav2Vec2-BERT: 2 stacked frames), or mel bins
        stacked = int(_find(config, "num_stacked_frames") or 1)  # (Fun-ASR: 7 frames a row)
        mel = int(_find(config, "feature_projection_input_dim") or stacked * (_find(config, "num_mel_bins", "feature_size") or 80))
        frames = 2 * int(getattr(config, "max_source_positions", 16) or 16)
        return torch.randn(batch, mel, frames, generator=gen)

    def steps(width: Any) -> Callable[[], torch.Tensor]:  # a trajectory's states, actions, rewards, returns
        return lambda: torch.randn(batch, SERIES // 4, int(width or 1), generator=gen)

    vision = getattr(config, "vision_config", None) or config
    side = int(getattr(vision, "spatial_merge_size", 0) or 1) * 2  # patches a side, whole merge windows

    def grid() -> torch.Tensor:  # (frames, rows, columns) of patches per image
        return torch.tensor([[1, side, side]] * batch)

    def patches() -> torch.Tensor:  # every image's patches flattened, one row a patch (Qwen-VL vision towers)
        patch = _first(getattr(vision, "patch_size", None)) or 4
        temporal = _first(getattr(vision, "temporal_patch_size", None)) or 1
        channels = int(getattr(vision, "in_channels", 0) or getattr(vision, "num_channels", 0) or 3)
        return torch.randn(batch * side * side, channels * temporal * patch * patch, generator=gen)

    episode = int(getattr(config, "max_ep_len", 0) or SERIES // 4)
    width = getattr(config, "d_model", None) or getattr(config, "hidden_size", None) or 32
    def noise() -> torch.Tensor:  # one row a frame of the features (see ``features``)
        frames = 2 * int(getattr(config, "max_source_positions", 16) or 16)
        return torch.randn(batch, frames, int(getattr(config, "model_in_channels", 0) or 1), generator=gen)

    def features_mask() -> torch.Tensor:  # every frame of the generated features (see ``features``) a real one
        return torch.ones(batch, 2 * int(getattr(config, "max_source_positions", 16) or 16), dtype=torch.long)

    def queries() -> torch.Tensor:  # a Q-Former's learned queries (BLIP-2): its query tokens x its width
        tokens = int(getattr(config, "num_query_tokens", 0) or SERIES // 4)
        return torch.randn(batch, tokens, int(width), generator=gen)

    def prompt() -> torch.Tensor:  # SegGPT's prompt image and its mask: the image's shape
        side = _first(getattr(config, "image_size", None)) or 32
        return torch.randn(batch, int(getattr(config, "num_channels", 0) or 3), side, side, generator=gen)

    def mel() -> torch.Tensor:  # Gemma 3n's audio encoder: frames x mel bins
        return torch.randn(batch, SERIES, int(getattr(config, "input_feat_size", 0) or 80), generator=gen)

    def drafted() -> torch.Tensor:  # a block drafter's (DFlash, MuseGlimmer's assistant) noised block of embeddings
        return torch.randn(batch, int(getattr(config, "block_size", 0) or SERIES // 4), int(width), generator=gen)

    def context() -> torch.Tensor:  # and the target model's states it drafts from, its chosen layers' joined
        layers = len(getattr(config, "target_layer_ids", None) or [0])
        return torch.randn(batch, SERIES // 4, int(width) * layers, generator=gen)

    return {"noise_embeds": drafted, "context_hidden_states": context,
            "prompt_pixel_values": prompt, "prompt_masks": prompt, "audio_mel": mel,
            "audio_mel_mask": lambda: torch.zeros(batch, SERIES, dtype=torch.bool),  # no frame padded
            "lang_ids": lambda: torch.zeros(batch, dtype=torch.long), "input_features_mask": features_mask, "query_embeds": queries,
            "noise_sequence": noise, "grid_thw": grid, "image_grid_thw": grid, "hidden_states": patches,
            "states": steps(getattr(config, "state_dim", 1)), "actions": steps(getattr(config, "act_dim", 1)),
            "rewards": steps(1), "returns_to_go": steps(1),
            "timesteps": lambda: torch.randint(0, episode, (batch, SERIES // 4), generator=gen),
            "inputs": lambda: torch.randn(batch, SERIES // 4, int(width), generator=gen),
            "input_features": features, "past_values": values, "past_time_features": time_features,
            "past_observed_mask": lambda: torch.ones(batch, length, dtype=torch.bool)
            if lagged or getattr(config, "num_input_channels", None) is None else torch.ones(batch, length, channels),
            "past_values_padding": lambda: torch.zeros(batch, length, dtype=torch.long),
            "freq": lambda: torch.zeros(batch, 1, dtype=torch.long), "pixel_values_videos": video,
            "latents": lambda: torch.randn(batch, int(width), SERIES // 4, generator=gen)}  # a codec decoder's frames


def layouts(config: Any, inputs: dict[str, torch.Tensor],
            takes: frozenset[str] = frozenset()) -> Iterator[dict[str, torch.Tensor]]:
    """``inputs`` in the other layouts an audio or video input can take, one change at a time; then token ids one row a
    codebook (MusicGen) and a spectrogram of the config's frames x mel bins (AST) given as ``input_values``; last the
    inputs of another part the forward takes (``takes``: its parameters) but documents as optional (:func:`parts`)."""
    features = inputs.get("input_features")
    if features is not None and features.dim() == 3:
        yield {**inputs, "input_features": features.transpose(1, 2).contiguous()}  # frames x features
    values = inputs.get("input_values")
    if values is not None and values.dim() == 2:
        yield {**inputs, "input_values": values[:, None]}  # a mono channel axis
    pixels = inputs.get("pixel_values")
    if pixels is not None and pixels.dim() == 4:
        n = frames(config)
        yield {**inputs, "pixel_values": pixels[:, None] + 0.1 * torch.arange(n).view(1, n, 1, 1, 1)}  # a clip
    ids, books = inputs.get("input_ids"), getattr(config, "num_codebooks", None)
    if ids is not None and ids.dim() == 2 and _int(books) and books > 1:  # one row a codebook (MusicGen's decoder)
        vocab = int(getattr(config, "vocab_size", 0) or 100)
        yield {**inputs, "input_ids": torch.cat([3 + (ids + k - 3) % (vocab - 3) for k in range(books)])}
    length, bins = getattr(config, "max_length", None), getattr(config, "num_mel_bins", None)
    if values is not None and values.dim() == 2 and _int(length) and _int(bins):  # a spectrogram (AST): frames x bins
        yield {**inputs, "input_values": _like(values, (values.shape[0], length, bins))}
    states = inputs.get("hidden_states")
    ratios = getattr(config, "downsampling_ratios", None) or getattr(config, "upsampling_ratios", None)
    if states is not None and isinstance(ratios, (list, tuple)) and _int(getattr(config, "hidden_size", None)):
        # a codec's part (VibeVoice's tokenizer): its encoder takes a waveform of one frame, its decoder latents
        batch = next((v.shape[0] for k, v in inputs.items() if k != "hidden_states" and v.dim()), 2)
        hop, channels = int(torch.tensor(ratios).prod()), int(getattr(config, "channels", 0) or 1)
        yield {**inputs, "hidden_states": _like(states, (batch, channels, hop))}
        yield {**inputs, "hidden_states": _like(states, (batch, config.hidden_size, SERIES // 4))}
    text = getattr(config, "vocab_size", None)
    audio = getattr(config, "codebook_vocab_size", None)
    if ids is not None and ids.dim() == 2 and _int(books) and _int(text) and _int(audio):  # a text stream and the
        top = min(text, audio)  # audio codebooks' streams, one column each (Kyutai STT: b x t x (1 + codebooks))
        yield {**inputs, "input_ids": torch.stack([3 + (ids + k - 3) % (top - 3) for k in range(books + 1)], -1)}
    if features is not None and features.dim() == 3 and MEL not in features.shape[1:]:  # bins the config does not name
        yield {**inputs, "input_features": _like(features, (features.shape[0], features.shape[2], MEL))}  # (Gemma 4)
    if features is not None and features.dim() == 3 and values is not None and values.dim() == 2:  # both at once: a codec of
        # a semantic encoder on features and an acoustic one on the waveform (NeuCodec, XCodec2)
        yield {**inputs, "input_features": features.transpose(1, 2).contiguous(), "input_values": values[:, None]}
        hop = getattr(config, "hop_length", None)
        if _int(hop):  # as many waveform hops as feature frames (XCodec2 joins the two streams frame by frame)
            yield {**inputs, "input_features": features.transpose(1, 2).contiguous(),
                   "input_values": _like(values, (values.shape[0], 1, features.shape[2] * hop))}
    window, mask = getattr(config, "n_window", None), inputs.get("input_features_mask")
    if features is not None and mask is not None and _int(window):  # whole chunks of 2 x n_window frames (Qwen3-ASR)
        n = features.shape[0]
        yield {**inputs, "input_features": _like(features, (n, features.shape[1], 2 * window)),
               "input_features_mask": torch.ones(n, 2 * window, dtype=mask.dtype)}
    hop = _find(config, "hop_length")
    if values is not None and values.dim() == 2 and _int(hop) and values.shape[1] < 8 * hop:  # a mono waveform of 8
        yield {**inputs, "input_values": _like(values, (values.shape[0], 1, 8 * hop))}  # frames (PE Audio's DAC)
    mel = _find(config, "num_mel_bins")
    if features is not None and features.dim() == 3 and _int(mel) and features.shape[1] == mel:  # frames stacked (x
        for k in (2, 4):  # 2) after delta features (x 2): Granite Speech 5's 4 x the mel bins
            yield {**inputs, "input_features": _like(features, (features.shape[0], features.shape[2], k * mel))}
    if features is not None and features.dim() == 3 and "input_features_mask" not in inputs:  # a mask the forward
        n = features.shape[0]  # defaults to None but reads (Audio Flamingo 3): every frame real, either layout
        yield {**inputs, "input_features_mask": torch.ones(n, features.shape[-1], dtype=torch.long)}
        yield {**inputs, "input_features_mask": torch.ones(n, features.shape[1], dtype=torch.long)}
    if pixels is not None and pixels.dim() == 4 and ids is not None and getattr(config, "perceiver_config", None):
        n, t = ids.shape  # IDEFICS: one image a text, every token attending to it
        yield {**inputs, "pixel_values": pixels[:, None], "image_attention_mask": torch.ones(n, t, 1, dtype=ids.dtype)}
    prompts = inputs.get("prompt_pixel_values")
    if pixels is not None and prompts is not None and pixels.dim() == 4:  # SegGPT: the prompt above the image make one
        names = ("pixel_values", "prompt_pixel_values", "prompt_masks")  # of the config's size
        half = {k: v[:, :, : v.shape[2] // 2].contiguous() for k, v in inputs.items() if k in names}
        yield {**inputs, **half}
    feats, pos = getattr(config, "visual_feat_dim", None), getattr(config, "visual_pos_dim", None)
    if ids is not None and _int(feats) and _int(pos):  # a detector's region features and boxes (LXMERT)
        n, regions = ids.shape[0], SERIES // 4
        yield {**inputs, "visual_feats": _like(ids.float(), (n, regions, feats)) / 100,
               "visual_pos": _like(ids.float(), (n, regions, pos)) / 100}
    queries, width = inputs.get("query_embeds"), getattr(config, "encoder_hidden_size", None)
    if queries is not None and "encoder_hidden_states" not in inputs and _int(width):  # what a Q-Former attends to
        yield {**inputs, "encoder_hidden_states": _like(queries, (queries.shape[0], SERIES // 4, width))}
    patches = getattr(config, "patch_sizes", None)
    if values is not None and values.dim() == 2 and isinstance(patches, (list, tuple)) and all(map(_int, patches)):
        hop = int(torch.tensor(patches).prod())  # a waveform of whole patches of every stage (MuseSpark: 1920 samples)
        yield {**inputs, "input_values": _like(values, (values.shape[0], 2 * hop))}
    sides = getattr(config, "image_size", None)
    if pixels is not None and pixels.dim() == 4 and isinstance(sides, (list, tuple)) and len(set(sides)) == 2:
        yield {**inputs, "pixel_values": _like(pixels, (*pixels.shape[:2], *sides))}  # an image of two sides (MGP-STR)
    boxes = inputs.get("bbox")
    if boxes is not None and not boxes.is_floating_point():  # boxes as fractions of the page (UDOP), not per mille
        yield {**inputs, "bbox": boxes.float() / 1000}
    side = getattr(config, "max_img_size", None)
    if "pixel_values" in takes and ids is not None and _int(side):  # one clip of RGB frames of the side padded with
        one = {k: v[:1] for k, v in inputs.items() if k != "pixel_values"}  # the prompt (TVP: its grid's positions
        yield {**one, "pixel_values": _like(ids.float(), (1, frames(config), 3, side, side)) / 50 - 1}  # are shaped
        # for one clip only)
    yield from parts(config, inputs, takes)


def parts(config: Any, inputs: dict[str, torch.Tensor], takes: frozenset[str]) -> Iterator[dict[str, torch.Tensor]]:
    """``inputs`` with what the forward takes as optional but a model of text and an image or audio reads, made from
    the ids (the pair of inputs stays a pair): the image of a config with no vision part (ViLT's patches are its own),
    where in the text the image's latent queries go (Kosmos-2: after the first token), and the audio features of a
    config's audio part: a spectrogram of one channel, frames x mel bins, of the side its Swin reads (CLAP), or the
    frames a token of which the audio embeddings are added to the text's (Voxtral Realtime)."""
    ids = inputs.get("input_ids")
    if ids is None:  # the main input then (a vision tower's image), as the source of the entries
        ids = next((v for v in inputs.values() if v.dim() >= 2), None)
        if ids is None:
            return
        ids = ids.reshape(ids.shape[0], -1)[:, :8] * 50
    n, t = ids.shape
    vision = getattr(config, "vision_config", None) or config
    side, out = _first(getattr(vision, "image_size", None)), dict(inputs)
    if "pixel_values" in takes and "pixel_values" not in out and side:
        channels = int(getattr(vision, "num_channels", 0) or 3)
        out["pixel_values"] = _like(ids.float(), (n, channels, side, side)) / 50 - 1
    queries = getattr(config, "latent_query_num", None)
    if "image_embeds_position_mask" in takes and "pixel_values" in out and _int(queries) and queries < t:
        out["image_embeds_position_mask"] = torch.zeros(n, t, dtype=torch.long)
        out["image_embeds_position_mask"][:, 1: 1 + queries] = 1
    audio = getattr(config, "audio_config", None)
    mel, spec = getattr(audio, "num_mel_bins", None), getattr(audio, "spec_size", None)
    per_token = getattr(config, "audio_length_per_tok", None)
    if "input_features" in takes and "input_features" not in out and _int(mel) and _int(spec):
        out["input_features"] = _like(ids.float(), (n, 1, spec * (spec // mel), mel)) / 50 - 1
    elif "input_features" in takes and "input_features" not in out and _int(mel) and _int(per_token):
        out["input_features"] = _like(ids.float(), (n, mel, t * per_token)) / 50 - 1
    patch = _first(getattr(vision, "patch_size", None))
    if "spatial_shapes" in takes and "pixel_values" in takes and patch:  # an image of any shape in patches (SigLIP
        channels, side = int(getattr(vision, "num_channels", 0) or 3), 4  # 2's NaFlex): 4 x 4 of them, each flat,
        out["pixel_values"] = _like(ids.float(), (n, side * side, channels * patch * patch)) / 50 - 1  # all real
        out["pixel_attention_mask"] = torch.ones(n, side * side, dtype=torch.long)
        out["spatial_shapes"] = torch.tensor([[side, side]] * n)
    decoder, channels = inputs.get("decoder_input_ids"), getattr(getattr(config, "decoder_config", None), "num_channels", 0)
    if decoder is not None and decoder.dim() == 2 and _int(channels) and channels > 1:  # audio codes one column a
        top = min(100, int(getattr(config.decoder_config, "vocab_size", 0) or 100))  # channel (Dia's 9 codebooks),
        codes = [3 + (decoder + k - 3) % (top - 3) for k in range(channels)]  # each column other codes
        yield {**inputs, "decoder_input_ids": torch.stack(codes, -1)}
    values, width = inputs.get("input_values"), getattr(config, "hidden_size", None)
    if values is not None and values.dim() == 2 and "decoder_input_values" in takes and _int(width):
        yield {**inputs, "input_values": _like(values, (n, SERIES // 4, width)),  # an encoder-decoder of no pre-nets
               "decoder_input_values": _like(values, (n, 5, width))}  # (SpeechT5's base model): hidden states, both
    if out.keys() != inputs.keys():
        yield out


#: the mel bins of a spectrogram whose config does not name them (Whisper large-v3's, Gemma 4's)
MEL = 128


def _like(value: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of ``shape`` with the entries of ``value`` (repeated as needed): inputs of another layout that differ
    as their source does (the pair of example inputs stays a pair)."""
    flat = value.reshape(-1)
    n = int(torch.tensor(shape).prod())
    return flat.repeat(n // flat.numel() + 1)[:n].reshape(shape).clone()
