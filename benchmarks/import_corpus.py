"""The import corpus: ``ncd.trace`` on every model type of the installed ``transformers``, and on plain PyTorch.

Every model type of ``transformers``' auto model mapping is built from its config with tiny sizes
(layers, widths, heads, experts, vocabulary, image size shrunk generically, sub-configs too) and
random weights — no downloads —, plus the heads that change the graph (tied LM heads,
encoder–decoder LMs, classification heads, an explicit attention mask) and plain-PyTorch models
(LSTM/GRU, FFT and complex tensors, Python-scalar arithmetic, in-place operations, masks as
inputs).  A model type "builds" when its tiny model constructs and runs on the generated inputs;
the others are listed with the reason.  One that does not build gets a second chance first
(``benchmarks/corpus_repair.py``): its config rebuilt so that the sizes it derives follow the shrunk ones, dependent
sizes kept in agreement, generators for time-series, video and trajectory inputs, audio and video inputs in their other
layouts.  For each model that builds:

* traced, refused (:class:`ncd.TraceError`, by design: control flow on input values) or crashed;
* opaque boxes drawn, boxes drawn, parameter counts (lowered against the original's: every parameter, tied ones
  once, read by the forward or not);
* round-trip max |difference| of the lowered module against the model, on the traced input
  and on a fresh input of the same shapes (equal: ``allclose(atol=1e-4, rtol=1e-4)``);
* a model not equal: the same comparison with the model and the lowered module both run in float64 — a diagram
  equal there computes the model, whose float32 result is unstable at that input (reported apart, still not counted
  equal);
* "silently wrong": traced without any warning, not equal, and not equal in float64 either;
* trace and layout+SVG time, and torchview's time (its graph and Graphviz SVG), measured alike (``corpus_report.TIMING``);
* deterministic: a second trace draws the same SVG, byte for byte.

Each model runs in a forked child with a time limit, so one bad model cannot stop the run.  The child builds the
model and runs it on both inputs; then ncd (trace, drawing, checks) and torchview each run in a process forked from
that child, one after the other, so both tools start from the same state.

    .venv/bin/python benchmarks/import_corpus.py                  # everything; writes docs/import-coverage.md
    .venv/bin/python benchmarks/import_corpus.py gpt2 llama -v    # some models, details printed
    .venv/bin/python benchmarks/import_corpus.py --list           # the names only

Each finished model is appended as one JSON line to a results file (``--results``, by default
``benchmarks/results/import-corpus.jsonl`` on a full run), so a run can be made in pieces:
``--resume`` skips the models already in that file, and the report is rendered from the file
(``--report-only`` renders it without running anything).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import inspect
import json
import math
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

#: ``benchmarks/``: the corpus's own modules beside this file (put on the path once, here)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from corpus_report import _line_of, report, summary  # noqa: E402
from corpus_shrink import COLLIDE, DEPTH, deepen, shrink  # noqa: E402
from corpus_timing import SECOND_CALL_UP_TO, Runs, apply, repeat, target, told  # noqa: E402

BATCH, TOKENS = 2, 8
#: a full run's results file (one JSON line per model; ``out/`` is not committed)
RESULTS = os.path.join(HERE, "..", "out", "import-corpus.jsonl")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- inputs ------------------------------------------------------------------------------------------------------------
def _sub(config: Any, *names: str) -> Any:
    for name in names:
        sub = getattr(config, name, None)
        if sub is not None and not isinstance(sub, (int, float, str, bool, dict, list)):
            return sub
    return config


def _image(config: Any) -> tuple[int, int, int]:
    vision = _sub(config, "vision_config", "backbone_config")
    size = getattr(vision, "image_size", None) or getattr(config, "image_size", None) or 32
    if isinstance(size, (list, tuple)):
        size = size[0]
    if isinstance(size, dict):
        size = size.get("height", 32)
    channels = getattr(vision, "num_channels", None) or getattr(config, "num_channels", None) or 3
    return int(channels), int(size), int(size)


def make_inputs(model: nn.Module, config: Any, seed: int, both: bool = True,
                repaired: bool = False) -> dict[str, torch.Tensor]:
    """Inputs for ``model`` from its forward signature and config (ids avoid the low special tokens).

    The main input (``main_input_name``), every required tensor argument a generator knows, and both halves of a
    vision–language model (``input_ids`` and ``pixel_values`` when its config has a vision part; not if ``both`` is
    false).  ``repaired``: the generators of ``corpus_repair`` too (time series, video)."""
    gen = torch.Generator().manual_seed(seed)
    signature = inspect.signature(model.forward).parameters
    params = set(signature)
    main = getattr(model, "main_input_name", "input_ids")
    text = _sub(config, "text_config", "decoder")
    vocab = int(getattr(text, "vocab_size", None) or getattr(config, "vocab_size", None) or 100)
    hidden = int(getattr(text, "hidden_size", None) or getattr(config, "hidden_size", None) or 32)

    def ids(n: int = TOKENS) -> torch.Tensor:
        return torch.randint(3, max(4, min(vocab, 100)), (BATCH, n), generator=gen)

    def image() -> torch.Tensor:
        c, h, w = _image(config)
        return torch.randn(BATCH, c, h, w, generator=gen)

    def features() -> torch.Tensor:
        mel = int(getattr(config, "num_mel_bins", 0) or getattr(config, "feature_size", 0) or 80)
        frames = 2 * int(getattr(config, "max_source_positions", 16) or 16)
        return torch.randn(BATCH, mel, frames, generator=gen)

    def boxes() -> torch.Tensor:  # (x0, y0, x1, y1) with x0 <= x1, y0 <= y1, in [0, 1000)
        corners = torch.randint(0, 1000, (BATCH, TOKENS, 2, 2), generator=gen).sort(dim=2).values
        return corners.reshape(BATCH, TOKENS, 4)  # corner-major: (x0, y0, x1, y1)

    generators: dict[str, Callable[[], torch.Tensor]] = {
        "input_ids": ids, "decoder_input_ids": lambda: ids(5), "qformer_input_ids": ids, "pixel_values": image,
        "input_values": lambda: torch.randn(BATCH, 1600, generator=gen), "input_features": features, "bbox": boxes,
        "inputs_embeds": lambda: torch.randn(BATCH, TOKENS, hidden, generator=gen),
    }
    if repaired:
        generators = {**generators, **repair_module().generators(config, gen, BATCH)}
    inputs: dict[str, torch.Tensor] = {}
    if main == "input_ids" or (main not in params and "input_ids" in params):
        inputs["input_ids"] = ids()
    elif main in generators:
        inputs[main] = generators[main]()
    else:
        raise LookupError(f"no input generator for main input {main!r}")
    vision = both and any(getattr(config, k, None) is not None for k in ("vision_config", "image_config"))
    wanted = [name for name, p in signature.items() if p.default is inspect.Parameter.empty
              and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if repaired:
        wanted += [name for name in repair_module().ALSO if name in params]
    if vision and "pixel_values" in params and not params & {"image_grid_thw", "grid_thw", "pixel_attention_mask"}:
        wanted.append("pixel_values")
    if vision and "input_ids" in params and main != "input_ids":
        wanted.append("input_ids")
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params:
        wanted.append("decoder_input_ids")
    if "bbox" in params:
        wanted.append("bbox")
    for name in wanted:
        if name not in inputs and name in generators:
            inputs[name] = generators[name]()
    return inputs


# -- the corpus: one entry per model ---------------------------------------------------------------------------------
@dataclass
class Entry:
    name: str
    kind: str  # "base", "head", "mask", "deep" (12 layers), "torch"
    #: the model, its example inputs and fresh inputs of the same shapes
    build: Callable[[], tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]] = field(repr=False)


def _hf_build(model_type: str, mapping: str, mask: bool = False, collide: str = "", layers: int = 0) -> Callable[[], Any]:
    """``layers``: the tiny config with that many layers (every layer count it has) instead of 2."""
    def build() -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        import transformers
        from transformers.models.auto import modeling_auto

        names = getattr(modeling_auto, mapping)
        cls_name = names[model_type]
        cls_name = cls_name[0] if isinstance(cls_name, (list, tuple)) else cls_name
        cls = getattr(transformers, cls_name)
        errors = []
        for attempt in ("tiny", "repaired", "ungrouped", "default"):
            repaired = attempt in ("repaired", "ungrouped")
            if repaired:  # a second chance: derived sizes follow the shrunk ones, inputs in other layouts; a third:
                try:  # as many key/value heads as heads (a model that cannot group them)
                    config = repair_module().rebuilt(model_type, lambda c: shrink(c, collide=collide))
                    config = repair_module().part_for(cls, config)
                    if attempt == "ungrouped" and not repair_module().ungrouped(config):
                        continue  # no grouped heads: the same config as the second chance
                except Exception as error:  # noqa: BLE001 - a config that cannot be constructed so
                    errors.append(f"{attempt}: {type(error).__name__}: {_line(error)}")
                    continue
            else:
                config = transformers.AutoConfig.for_model(model_type)
            if attempt == "tiny":
                shrink(config, collide=collide)
            if layers and attempt != "default":
                deepen(config, layers)
            try:
                config.use_cache = False
                with torch.device("meta"):
                    size = n_params(cls(config))
                if size > 60_000_000:
                    raise ValueError(f"{size / 1e6:.0f} M parameters")
                torch.manual_seed(0)
                model = cls(config).eval()
                with torch.no_grad():  # away from the initialisation (a norm's weight of ones hides how it is used)
                    for p in model.parameters():
                        p.add_(0.05 * torch.randn_like(p))
                for both in (True, False):  # a vision-language model on text and image, else on its main input
                    pair = [make_inputs(model, config, seed, both, repaired) for seed in (0, 1)]
                    if mask:
                        for inputs in pair:
                            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
                            inputs["attention_mask"][0, :2] = 0
                    try:
                        return model, *_runs(model, pair, config if repaired else None)
                    except Exception:
                        if not both or pair[0].keys() == make_inputs(model, config, 0, False, repaired).keys():
                            raise
            except Exception as error:  # noqa: BLE001 - the corpus records why a type does not build
                errors.append(f"{attempt}: {type(error).__name__}: {_line(error)}")
        raise NotBuilt("; ".join(errors))

    return build


def _runs(model: nn.Module, pair: list[dict[str, torch.Tensor]],
          config: Any = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The pair of inputs if ``model`` runs on the first; with ``config``, else the first of their other layouts
    (``corpus_repair.layouts``) it runs on; else the first error."""
    takes = frozenset(inspect.signature(model.forward).parameters)
    others = zip(*(repair_module().layouts(config, inputs, takes) for inputs in pair)) if config is not None else iter(())
    first: Exception | None = None
    for a, b in [(pair[0], pair[1]), *others]:
        try:
            with torch.no_grad():
                model(**a)
            return a, b
        except Exception as error:  # noqa: BLE001 - the next layout, else the first error
            first = first or error
    assert first is not None
    raise first


def repair_module() -> Any:
    """``benchmarks/corpus_repair.py`` (beside this file): second chances for configs and inputs."""
    return _beside("corpus_repair")


def _beside(name: str) -> Any:
    """The module ``name`` of ``benchmarks/`` (:data:`HERE`, put back on the path if something took it off)."""
    import importlib

    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    return importlib.import_module(name)


class NotBuilt(Exception):
    """The model cannot be built (or run) from a tiny config with the generated inputs."""


def _line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else "")[:160]


HEADS_TO_ADD = [("gpt2", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"), ("llama", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
                ("bert", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"), ("t5", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
                ("bart", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"), ("mixtral", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
                ("vit", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
                ("bert", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES")]
MASKED = ["gpt2", "bert", "llama", "mistral"]
#: tiny widths at a depth users bring (12 layers, as bert-base, gpt2, vit-base): a deep stack of small layers is
#: where trace+draw must stay below torchview's time (issue 11: repeated layers fold, torchview draws each)
DEEP = ["gpt2", "bert", "llama", "vit", "whisper", "t5"]



def hf_entries(collide: str = "") -> list[Entry]:
    """Every model type, the heads and the masked variants; ``collide``: from configs whose roles share sizes."""
    from transformers.models.auto import modeling_auto

    c = collide
    entries = [Entry(t, "base", _hf_build(t, "MODEL_MAPPING_NAMES", collide=c))
               for t in sorted(modeling_auto.MODEL_MAPPING_NAMES)]
    for t, mapping in HEADS_TO_ADD:
        if t in getattr(modeling_auto, mapping):
            head = mapping.removeprefix("MODEL_FOR_").removesuffix("_MAPPING_NAMES").lower().replace("_", "-")
            entries.append(Entry(f"{t}+{head}", "head", _hf_build(t, mapping, collide=c)))
    entries += [Entry(f"{t}+attention_mask", "mask", _hf_build(t, "MODEL_MAPPING_NAMES", mask=True, collide=c))
                for t in MASKED]
    entries += [Entry(f"{t}@{DEPTH}", "deep", _hf_build(t, "MODEL_MAPPING_NAMES", collide=c, layers=DEPTH)) for t in DEEP]
    return entries


# -- plain PyTorch -------------------------------------------------------------------------------------------------------
class LSTMTagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.lstm, self.out = nn.Embedding(50, 16), nn.LSTM(16, 24, batch_first=True), nn.Linear(24, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out(self.lstm(self.embed(ids))[0])
        return out


class GRUEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(16, 24, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.gru(x)[0]
        return out


class FourierMixer(nn.Module):
    """FNet-style token mixing and a spectral filter: real FFT, complex product, inverse FFT."""

    def __init__(self) -> None:
        super().__init__()
        self.filter = nn.Parameter(torch.randn(TOKENS // 2 + 1, 16, dtype=torch.cfloat))
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.fft.fft(torch.fft.fft(x, dim=-1), dim=-2).real
        spectral = torch.fft.irfft(torch.fft.rfft(x, dim=1) * self.filter, n=x.shape[1], dim=1)
        out: torch.Tensor = self.proj(mixed + spectral)
        return out


class ScalarArithmetic(nn.Module):
    """Every binary operator between tensors and Python scalars (int, float, bool), on either side."""

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = (x + 1) * 2 - 0.5
        y = 1 - y
        y = 3.0 / (y.abs() + 1) + y / 4 + 2 ** x.clamp(-2, 2) + x ** 2
        y = y * True + (x > 0) * 1.5
        k = ids * 3 + 1
        k = k // 2 - ids % 3
        return y, k


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.fc(x)
        y.add_(1.0)
        y.mul_(0.5)
        torch.relu_(y)
        y[:, 0] = 0.0
        return y


class MaskedAttention(nn.Module):
    """Attention with a boolean padding mask passed as an input (masked_fill, softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.out = nn.Linear(16, 48), nn.Linear(16, 16)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(-1, -2) * 16 ** -0.5
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        out: torch.Tensor = self.out(scores.softmax(-1) @ v)
        return out


def _torch_build(cls: type[nn.Module], make: Callable[[torch.Generator], dict[str, Any]], perturb: bool = False) -> Any:
    def build() -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
        torch.manual_seed(0)
        model = cls().eval()
        if perturb:  # away from the initialisation (norms' ones and zeros, batch norm's unit statistics hide misuse)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
                for name, b in model.named_buffers():
                    if b.is_floating_point():
                        b.mul_(torch.empty_like(b).uniform_(0.5, 2)) if name.endswith("running_var") \
                            else b.add_(0.1 * torch.randn_like(b))
        return model, make(torch.Generator().manual_seed(0)), make(torch.Generator().manual_seed(1))

    return build


def _mask(g: torch.Generator) -> dict[str, torch.Tensor]:
    mask = torch.rand(BATCH, TOKENS, generator=g) > 0.3
    mask[:, 0] = True
    return {"x": torch.randn(BATCH, TOKENS, 16, generator=g), "mask": mask}


def torch_entries() -> list[Entry]:
    return [
        Entry("torch.lstm", "torch",
              _torch_build(LSTMTagger, lambda g: {"ids": torch.randint(0, 50, (BATCH, TOKENS), generator=g)})),
        Entry("torch.gru", "torch", _torch_build(GRUEncoder, lambda g: {"x": torch.randn(BATCH, TOKENS, 16, generator=g)})),
        Entry("torch.fft", "torch", _torch_build(FourierMixer, lambda g: {"x": torch.randn(BATCH, TOKENS, 16, generator=g)})),
        Entry("torch.scalars", "torch", _torch_build(ScalarArithmetic, lambda g: {
            "x": torch.randn(BATCH, 16, generator=g), "ids": torch.randint(0, 9, (BATCH, 16), generator=g)})),
        Entry("torch.inplace", "torch", _torch_build(InPlace, lambda g: {"x": torch.randn(BATCH, 16, generator=g)})),
        Entry("torch.mask", "torch", _torch_build(MaskedAttention, _mask)),
    ] + [Entry(f"torch.{name}", "torch", _torch_build(cls, make, perturb=True)) for name, cls, make in _zoo()]


def _zoo() -> list[tuple[str, type[nn.Module], Callable[[torch.Generator], dict[str, Any]]]]:
    zoo: list[tuple[str, type[nn.Module], Callable[[torch.Generator], dict[str, Any]]]] = zoo_module().zoo()
    return zoo


def zoo_module() -> Any:
    """The hand-written plain-PyTorch zoo (``benchmarks/corpus_torch.py``, beside this file)."""
    return _beside("corpus_torch")


def all_entries(collide: str = "") -> list[Entry]:
    return torch_entries() + hf_entries(collide)


# -- one model -------------------------------------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    kind: str
    status: str = ""  # "not built", "traced", "refused", "crashed"
    reason: str = ""
    method: str = ""
    opaque: int = 0
    opaque_ops: str = ""
    boxes: int = 0
    warned: bool = False
    failed: str = ""  # conversions that raised (an internal error drawn as an opaque box or a constant), warned about
    equal: bool = False
    diff: float = math.nan
    diff_fresh: float = math.nan
    #: a model not equal in float32: the worst difference of the model and the lowered module both run in float64 (the
    #: same parameters and inputs, widened), and whether that is equal (``None``: not run, or either side failed in
    #: float64) — a diagram equal in float64 computes the model, whose float32 result is unstable at that input
    diff_f64: float = math.nan
    equal_f64: bool | None = None
    lowered: str = ""  # an error lowering or running the lowered module
    params: int = 0
    params_lowered: int = 0
    #: each tool's first call on the model: its median run (``corpus_timing``; ncd's trace and draw of the run whose
    #: trace+draw is the median) ...
    trace_s: float = math.nan
    draw_s: float = math.nan
    torchview_s: float = math.nan
    #: ... and every run, in the order they ran (the first is the single run the corpus took before stop 48)
    trace_runs: list[float] = field(default_factory=list)
    draw_runs: list[float] = field(default_factory=list)
    torchview_runs: list[float] = field(default_factory=list)
    #: CPU seconds the runs after the first cost (their processes' warm-ups included)
    repeats_s: float = 0.0
    #: a second call of each tool on the same model, just after the first (ncd's is the determinism check's trace+draw)
    warm_s: float = math.nan
    torchview_warm_s: float = math.nan
    deterministic: bool | None = None
    layers: int = 0
    wall_s: float = math.nan  # the child's whole time (build, trace, draw, lower, run, torchview)

    @property
    def silently_wrong(self) -> bool:
        return (self.status == "traced" and not self.warned and not self.equal and not self.lowered
                and not self.equal_f64)


def _leaves(value: Any) -> list[torch.Tensor]:
    """The tensors of an output, in order (a plain ``@dataclass``, which pytree keeps whole, by its fields)."""
    out: list[torch.Tensor] = []
    for leaf in torch.utils._pytree.tree_leaves(value):
        if isinstance(leaf, torch.Tensor):
            out.append(leaf.detach())
        elif dataclasses.is_dataclass(leaf) and not isinstance(leaf, type):
            out.extend(_leaves([getattr(leaf, f.name) for f in dataclasses.fields(leaf)]))
    return out


def _max_diff(got: Any, want: Any) -> tuple[float, bool]:
    got, want = _leaves(got), _leaves(want)
    if len(got) != len(want):
        return math.inf, False
    worst, equal = 0.0, True
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return math.inf, False
        if g.is_floating_point() or g.is_complex() or w.is_floating_point():
            g, w = g.to(torch.complex128 if g.is_complex() else torch.float64), w.to(g.dtype if g.is_complex() else torch.float64)
            finite = torch.isfinite(w) & torch.isfinite(g)
            if not torch.equal(torch.isfinite(w), torch.isfinite(g)):
                return math.inf, False
            d = (g - w).abs()[finite]
            worst = max(worst, float(d.max()) if d.numel() else 0.0)
            equal = equal and torch.allclose(g[finite], w[finite], atol=1e-4, rtol=1e-4)
        else:
            same = torch.equal(g, w.to(g.dtype))
            worst = max(worst, 0.0 if same else math.inf)
            equal = equal and same
    return worst, equal


def _layers(model: nn.Module) -> int:
    """The model's depth: its longest list of modules (its layers).  A list of lookup tables is not a stack of
    layers (markuplm's 50 embedding tables, one per depth of an XPath, each reading its own column of ids): an
    embedding reads positions, so none of them can read another's output."""
    lookups = (nn.Embedding, nn.EmbeddingBag)
    lists = [len(m) for m in model.modules() if isinstance(m, nn.ModuleList) and not all(isinstance(x, lookups) for x in m)]
    return max(lists, default=1)


@dataclass
class Built:
    """A model of the corpus, built and run: its inputs, fresh inputs of the same shapes and its outputs on both."""
    model: nn.Module
    inputs: dict[str, torch.Tensor]
    fresh: dict[str, torch.Tensor]
    want: Any
    want_fresh: Any


def build_one(entry: Entry) -> tuple[Result, Built | None]:
    """The entry's model built and run on its inputs (twice: every tool timed later finds its kernels loaded and its
    lazily built parts built), or the result saying why it did not build."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    result = Result(entry.name, entry.kind)
    try:
        model, inputs, fresh = entry.build()
    except Exception as error:  # noqa: BLE001
        result.status = "not built"
        result.reason = _line(error) if isinstance(error, NotBuilt) else f"{type(error).__name__}: {_line(error)}"
        return result, None
    result.params, result.layers = n_params(model), _layers(model)  # every parameter, tied ones once
    with torch.no_grad():
        want, want_fresh = model(**inputs), model(**fresh)
    return result, Built(model, inputs, fresh, want, want_fresh)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (Graphviz's ``dot`` for torchview), as
    ``bench_trace.py --cpu`` counts it: other processes holding the cores do not count."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime  # microseconds (os.times: ticks)


def run_one(entry: Entry, determinism: bool) -> tuple[Result, Any]:
    """The result, and the model with its inputs (for torchview) when it traced."""
    result, built = build_one(entry)
    if built is None:
        return result, None
    return check(result, built, determinism)


def check(result: Result, built: Built, determinism: bool) -> tuple[Result, Any]:
    """Traces and draws the built model (timing both: CPU seconds, each from a collected heap), then checks the drawing's
    determinism, the lowered module against the model and its parameter count."""
    import ncd
    from ncd.render import to_svg

    model, inputs, fresh = built.model, built.inputs, built.fresh
    try:
        d, caught, result.trace_s = _timed_trace(model, inputs)
    except ncd.TraceError as error:
        result.status, result.reason = "refused", _line(error)
        return result, None
    except Exception as error:  # noqa: BLE001
        frame = traceback.extract_tb(error.__traceback__)[-1]
        result.status = "crashed"
        result.reason = f"{type(error).__name__}: {_line(error)} ({os.path.basename(frame.filename)}:{frame.lineno})"
        return result, None
    _count(result, d, caught)
    try:
        svg, result.draw_s = _timed_draw(d)
        if determinism:
            gc.collect()
            start = cpu_seconds()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                again = to_svg(ncd.trace(model, **inputs))
            result.warm_s = cpu_seconds() - start
            result.deterministic = again == svg
    except Exception as error:  # noqa: BLE001
        result.lowered = f"drawing: {type(error).__name__}: {_line(error)}"
    try:
        lowered = d.to_torch()
        result.params_lowered = n_params(lowered)
        with torch.no_grad():  # the lowered module takes the tensors (other arguments are part of the trace)
            got = lowered(*_leaves(list(inputs.values())))  # tensors in lists and dicts are inputs of their own
            got_fresh = lowered(*_leaves(list(fresh.values())))
        result.diff, equal = _max_diff(got, built.want)
        result.diff_fresh, equal_fresh = _max_diff(got_fresh, built.want_fresh)
        result.equal = equal and equal_fresh
    except Exception as error:  # noqa: BLE001
        frame = traceback.extract_tb(error.__traceback__)[-1]
        result.lowered = f"{type(error).__name__}: {_line(error)} ({os.path.basename(frame.filename)}:{frame.lineno})"
        return result, (model, inputs)
    if not result.equal:
        result.diff_f64, result.equal_f64 = _float64_diff(built, lowered)
    return result, (model, inputs)


def _timed_trace(model: nn.Module, inputs: dict[str, Any]) -> tuple[Any, list[warnings.WarningMessage], float]:
    """``ncd.trace`` of the model, its warnings and its CPU seconds, from a collected heap."""
    import ncd

    gc.collect()
    start = cpu_seconds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, **inputs)
    return d, caught, cpu_seconds() - start


def _count(result: Result, d: Any, caught: list[warnings.WarningMessage]) -> None:
    """``result`` takes the traced diagram's capture, warnings, boxes and opaque boxes."""
    from ncd.prims.opaque import OpaqueOp

    result.status, result.method = "traced", d.method
    ours = [w for w in caught if "ncd" in str(w.message) or "opaque" in str(w.message)]
    result.warned = bool(ours)
    failures = [str(w.message).split(": ", 1)[-1] for w in ours if "failed (" in str(w.message)]
    result.failed = "; ".join(f[:200] for f in failures[:3]) + (f" (+{len(failures) - 3})" if len(failures) > 3 else "")
    boxes = list(d.boxes())
    result.boxes = len(boxes)
    result.opaque = sum(isinstance(b.prim, OpaqueOp) for b in boxes)
    result.opaque_ops = ", ".join(f"{n.removeprefix('aten.')}×{k}" for n, k in d.opaque)


def _timed_draw(d: Any) -> tuple[str, float]:
    """The diagram's SVG and its CPU seconds (layout and SVG), from a collected heap."""
    from ncd.render import to_svg

    gc.collect()
    start = cpu_seconds()
    svg = to_svg(d)
    return svg, cpu_seconds() - start


def _timed_again(model: nn.Module, inputs: dict[str, Any]) -> tuple[float, float] | None:
    """One more run of ncd's first call, as :func:`check` times it (trace, the counts between, drawing): CPU seconds of
    the trace and of the drawing, or ``None`` if it failed."""
    try:
        d, caught, traced = _timed_trace(model, inputs)
        _count(Result("", ""), d, caught)
        return traced, _timed_draw(d)[1]
    except Exception:  # noqa: BLE001 - a run that failed is not counted (the first run's result says what happened)
        return None


def _float64_diff(built: Built, lowered: nn.Module) -> tuple[float, bool | None]:
    """The model and its lowered module both run in float64 on the traced and the fresh input (copies: parameters,
    buffers and float inputs widened): the worst difference and whether both inputs are equal (atol 1e-4), or
    ``(nan, None)`` when either side fails in float64 (a float32 constant made in the forward, say)."""
    def wide(value: Any) -> Any:
        return torch.utils._pytree.tree_map(
            lambda t: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, value)

    try:
        model, ours = copy.deepcopy(built.model).double(), copy.deepcopy(lowered).double()
        worst, equal = 0.0, True
        with torch.no_grad():
            for inputs in (built.inputs, built.fresh):
                inputs = wide(copy.deepcopy(inputs))
                diff, same = _max_diff(ours(*_leaves(list(inputs.values()))), model(**inputs))
                worst, equal = max(worst, diff), equal and same
        return worst, equal
    except Exception:  # noqa: BLE001 - no float64 reading: the float32 verdict stands
        return math.nan, None


def _time_torchview(model: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """torchview's graph of the model and its Graphviz SVG: CPU seconds (``dot`` included), from a collected heap."""
    try:
        import torchview  # type: ignore[import-not-found, unused-ignore]

        gc.collect()
        start = cpu_seconds()
        graph = torchview.draw_graph(model, input_data=dict(inputs), save_graph=False, depth=math.inf)
        graph.visual_graph.pipe(format="svg")
        return cpu_seconds() - start
    except Exception:  # noqa: BLE001 - torchview fails on some models: no time to compare
        return math.nan


def _time_torchview_twice(model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[float, float]:
    """torchview's first call on the model and a second one (nothing when the first failed or took longer than
    :data:`SECOND_CALL_UP_TO`)."""
    first = _time_torchview(model, inputs)
    return first, (_time_torchview(model, inputs) if first == first and first <= SECOND_CALL_UP_TO else math.nan)


def _apart(work: Callable[[], int], limit: float) -> int:
    """Runs ``work`` in a forked process (a copy of this one as it is now), waits for it and stops what it left
    running: the exit code ``work`` returned, or 1 when it raised, or the negative number of the signal that stopped it
    (an alarm stops it after ``limit`` seconds, also when this process has been killed meanwhile)."""
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked copy
        code = 1
        try:
            os.setpgid(0, 0)  # a group of its own, with the processes it starts (torchview's ``dot``)
            signal.alarm(max(1, math.ceil(limit)))
            code = work()
        finally:
            os._exit(code)
    status = os.waitpid(pid, 0)[1]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # a ``dot`` left running when the alarm stopped its caller (it ran on, orphaned)
    return os.waitstatus_to_exitcode(status)


def _child(entry: Entry, torchview: bool, determinism: bool, conn: Any, timeout: float = 240.0, repeats: int = 0) -> None:
    """Sends the result, then (if the model traced) each tool's runs (``corpus_timing.Runs``) in a message
    ``(runs, torchview's second call, final)``: once after each tool's first run, and once (``final``) after the runs
    :func:`corpus_timing.repeat` adds (``repeats``: that many runs of each tool; 0: as many as it chooses).

    The model is built and run here; then ncd (tracing, drawing, the checks) and torchview each run in a process
    forked from this one, one after the other: both tools start from the same state (the same heap, frozen out of the
    garbage collector's sight, the same pages shared with the same parent), so neither pays for the other's first
    use of anything nor profits from it.  Each tool's process first repeats the small warm-up (that tool's part):
    a forked process pays again for the first write to every page it shares with its parent, and the tool's own
    pages should not count against the model (about 5,000 page copies for ncd, 3,000 for torchview).  Every further run
    of a tool is one more such process, timed the same way (``corpus_timing``)."""
    started = time.monotonic()
    try:
        result, built = build_one(entry)
    except BaseException as error:  # noqa: BLE001 - the parent records it
        result, built = Result(entry.name, entry.kind, "crashed", f"{type(error).__name__}: {_line(error)} (harness)"), None
    if built is None:
        conn.send(asdict(result))
        return
    gc.collect()
    gc.freeze()  # the model and everything before it: no collection in a tool's process walks (and copies) them
    model = built

    def left() -> float:
        return timeout - (time.monotonic() - started)

    def ours(tell: Callable[[Any], None]) -> int:
        try:
            _warm_up(False)
            checked, out = check(result, model, determinism)
        except Exception as error:  # noqa: BLE001 - the parent records it
            checked, out = Result(entry.name, entry.kind, "crashed", f"{type(error).__name__}: {_line(error)} (harness)"), None
        conn.send(asdict(checked))
        tell((checked.trace_s, checked.draw_s))
        return TRACED if out is not None else 0

    code, first = told(_apart, ours, left())
    if code == -signal.SIGALRM:  # out of time before sending its result
        conn.send(asdict(Result(entry.name, entry.kind, "timeout", f"more than {timeout:.0f} s")))
    elif code not in (0, TRACED):  # it died before sending its result
        why = f"signal {-code}" if code < 0 else f"exit code {code}"
        conn.send(asdict(Result(entry.name, entry.kind, "crashed", f"the process tracing it died ({why})")))
    elif code == TRACED and first is not None:
        runs, second = Runs([first[0]], [first[1]]), math.nan

        def theirs(tell: Callable[[Any], None], twice: bool = False) -> int:
            _warm_up(True, ours=False)
            tell(_time_torchview_twice(model.model, model.inputs) if twice else _time_torchview(model.model, model.inputs))
            return 0

        def again(tell: Callable[[Any], None]) -> int:
            _warm_up(False)
            tell(_timed_again(model.model, model.inputs))
            return 0

        def once(work: Callable[[Callable[[Any], None]], int]) -> Any:
            return told(_apart, work, left())[1]

        if torchview:
            first_tv, second = once(lambda tell: theirs(tell, twice=True)) or (math.nan, math.nan)
            runs.torchview.append(first_tv)
            conn.send((runs, second, False))
        def theirs_again() -> float:
            got = once(theirs)
            return math.nan if got is None else float(got)

        timed_tv = torchview and runs.torchview[0] == runs.torchview[0]
        repeat(runs, lambda: once(again), theirs_again if timed_tv else None, target(result.layers), left, repeats,
               cpu_seconds)
        conn.send((runs, second, True))


#: the exit code of ncd's process when the model traced (torchview's time follows)
TRACED = 3
#: seconds the parent waits past a model's time limit before it kills the model's process: the alarm of the tool's own
#: process (forked from it, in a group of its own) fires first, and the model's process then kills that group — the
#: ``dot`` torchview started included (killed at once by the parent, that process's ``dot`` ran on, orphaned, for
#: up to 20 minutes of CPU beside the run)
GRACE = 15.0


def run_all(entries: list[Entry], jobs: int, timeout: float, torchview: bool, determinism: bool,
            verbose: bool, on_result: Callable[[Result], None] | None = None, repeats: int = 0) -> list[Result]:
    """Each entry in a forked child (at most ``jobs`` at once), killed after ``timeout`` seconds; ``repeats``: runs of
    each tool's first call (0: as many as ``corpus_timing.repeat`` chooses).

    ``on_result`` is called with each result as soon as its model is done (to save it).
    """
    ctx = multiprocessing.get_context("fork")
    pending = list(entries)
    running: list[list[Any]] = []
    results: dict[str, Result] = {}
    while pending or running:
        while pending and len(running) < jobs:
            entry = pending.pop(0)
            recv, send = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_child, args=(entry, torchview, determinism, send, timeout, repeats))
            process.start()
            send.close()
            running.append([entry, process, recv, time.monotonic(), None])
        time.sleep(0.05)
        for item in list(running):
            entry, process, recv, started, result = item
            done = False
            try:
                while recv.poll():
                    message = recv.recv()
                    if isinstance(message, dict):
                        result = item[4] = Result(**message)
                        done = result.status != "traced"  # a traced model's runs follow
                    else:  # each tool's runs so far, torchview's second call, and whether more runs follow
                        runs, result.torchview_warm_s, final = message
                        apply(result, runs)
                        done = final
            except (EOFError, OSError):
                done = True
            if result is None and (done or not process.is_alive()):
                result = Result(entry.name, entry.kind, "crashed", f"the child died (exit code {process.exitcode})")
                done = True
            elif not done and not process.is_alive() and not recv.poll():
                done = True  # it died before its last runs: the runs it sent stand
            elif not done and time.monotonic() - started > timeout + GRACE:
                process.kill()
                if result is None:
                    result = Result(entry.name, entry.kind, "timeout", f"more than {timeout:.0f} s")
                done = True
            if done:
                process.join(5)
                running.remove(item)
                result.wall_s = time.monotonic() - started
                results[entry.name] = result
                if on_result is not None:
                    on_result(result)
                if verbose:
                    print(_line_of(result), flush=True)
                else:
                    print(".", end="", flush=True)
    if not verbose:
        print()
    return [results[e.name] for e in entries]



def _warm_up(torchview: bool, ours: bool = True) -> None:
    """Two small models (an LSTM tagger, masked attention) traced and drawn by ncd (``ours``) and by torchview: before
    the children fork, so that their times exclude imports and first-use costs, and again in each tool's process."""
    import ncd
    import ncd.torch.module  # noqa: F401  (imported lazily by a trace that checks a mask's rows: an import, excluded)
    from ncd.render import to_svg
    from ncd.trace.live_masks import empty_rows_give_zero

    if ours:  # that check itself, once per process (the lowering rules imported, a module generated): excluded too
        empty_rows_give_zero()

    torch.manual_seed(0)
    model, inputs = LSTMTagger().eval(), {"ids": torch.randint(0, 50, (BATCH, TOKENS))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m, i in ((model, inputs), (MaskedAttention(), _mask(torch.Generator()))):
            if ours:
                to_svg(ncd.trace(m, **i)).encode()
            if torchview:
                _time_torchview(m, i)


def save(path: str, result: Result) -> None:
    """Appends ``result`` to the results file ``path`` as one JSON line (flushed: a killed run keeps what it did)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(asdict(result)) + "\n")


def load(path: str) -> dict[str, Result]:
    """The results saved in ``path`` by name (a model saved twice: its last result); none when there is no file."""
    results: dict[str, Result] = {}
    if not os.path.exists(path):
        return results
    known = set(Result.__dataclass_fields__)
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a killed run: that model runs again on --resume
                continue
            result = Result(**{k: v for k, v in data.items() if k in known})
            results[result.name] = result
    return results


def ordered(results: dict[str, Result], entries: list[Entry]) -> list[Result]:
    """``results`` in the corpus' order (names the corpus no longer holds last)."""
    order = {e.name: i for i, e in enumerate(entries)}
    return sorted(results.values(), key=lambda r: (order.get(r.name, len(order)), r.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="only these entries (substrings)")
    parser.add_argument("--exact", action="store_true", help="names are whole entry names, not substrings")
    parser.add_argument("-j", "--jobs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per model")
    parser.add_argument("--no-torchview", action="store_true")
    parser.add_argument("--no-determinism", action="store_true")
    parser.add_argument("--repeats", type=int, default=0,
                        help="runs of each tool's first call per model (default: chosen per model, 3 to 7 on models"
                             " that cost little, see benchmarks/corpus_timing.py; 1: a single run each)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--collide", nargs="?", const="width", default="", choices=sorted(COLLIDE),
                        help="configs whose roles share sizes (width: width = positions = ffn = heads x head features,"
                             " key/value heads = heads; heads: heads = tokens; see COLLIDE); give --results and -o")
    parser.add_argument("--every", type=int, default=1, help="only every k-th transformers model type (a quick sample)")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-o", "--output", default=None, help="the report (default: docs/import-coverage.md on a full run)")
    parser.add_argument("--results", default=None,
                        help=f"the JSON-lines results file, one line per model (default on a full run: {RESULTS})")
    parser.add_argument("--resume", action="store_true", help="skip the models already in the results file")
    parser.add_argument("--report-only", action="store_true", help="render the report from the results file; run nothing")
    args = parser.parse_args()
    full = not args.names and args.every == 1 and not args.collide
    results_path = args.results or (RESULTS if full else None)
    output = args.output or (os.path.join(os.path.dirname(__file__), "..", "docs", "import-coverage.md") if full else None)
    if (args.resume or args.report_only) and not results_path:
        parser.error("--resume and --report-only need --results (or a full run's default results file)")
    import importlib
    import pkgutil

    import transformers  # noqa: F401 - imported once, before the children fork

    import ncd

    entries = all_entries(args.collide)
    if args.every > 1:  # a deterministic sample of the transformers model types (plain PyTorch, heads and masks kept)
        base = [e for e in entries if e.kind == "base"]
        keep = {e.name for e in base[::args.every]}
        entries = [e for e in entries if e.kind != "base" or e.name in keep]
    if args.names:
        entries = [e for e in entries if any(n == e.name or (n in e.name and not args.exact) for n in args.names)]
    if args.list:
        print("\n".join(e.name for e in entries))
        return
    sample = f"every {args.every}-th `transformers` model type (in name order; `--every 1` runs all)" \
        if args.every > 1 else ""
    if args.report_only:
        assert results_path is not None
        saved = ordered(load(results_path), all_entries(args.collide))
        if len(saved) < len(entries):  # a run still going (or stopped): say which part the report covers
            sample = (f"the first {len(saved)} of the {len(entries)} entries (in corpus order: plain PyTorch, model"
                      " types by name, then heads and masks), saved while the run went on")
        _write_report(saved, _collided(sample, args.collide), output)
        return
    if results_path and not args.resume and os.path.exists(results_path):
        os.remove(results_path)  # a fresh run: no stale lines
    done = load(results_path) if results_path and args.resume else {}
    todo = [e for e in entries if e.name not in done]
    if done:
        print(f"resuming: {len(done)} models already in {results_path}, {len(todo)} to run", flush=True)

    for info in pkgutil.walk_packages(ncd.__path__, "ncd."):  # the children run the code as it was at the start
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)

    torch.set_num_threads(1)
    _warm_up(not args.no_torchview)
    on_result = (lambda r: save(results_path, r)) if results_path else None
    results = run_all(todo, args.jobs, args.timeout, not args.no_torchview, not args.no_determinism, args.verbose,
                      on_result, args.repeats)
    if results_path:
        results = ordered(load(results_path), all_entries(args.collide))
    _write_report(results, _collided(sample, args.collide), output)


def _collided(sample: str, collide: str) -> str:
    """What the report covers, saying when the configs' sizes collide."""
    if not collide:
        return sample
    what = {"width": "width = positions = ffn = heads × head features, key/value heads = heads, head features = tokens",
            "heads": "heads = tokens, head features = experts, key/value heads = batch, width = positions = ffn"}[collide]
    what = f"configs whose roles share sizes (`--collide {collide}`: {what})"
    return f"{sample}; {what}" if sample else what


def _write_report(results: list[Result], sample: str, output: str | None) -> None:
    print("\n".join(summary(results)))
    if output:
        with open(output, "w") as f:
            f.write(report(results, sample))
        print(f"wrote {output}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
