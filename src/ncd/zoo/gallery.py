"""Write the gallery: for every zoo model its JSON, its generated PyTorch source, its picture and its cost.

Optional interpreters (the renderer ``ncd.draw``, the cost model ``ncd.cost``) are used when they
exist; when one is missing or fails, the entry records what was skipped and why, and the
gallery carries on.  ``write_page`` turns the entries into the Markdown gallery page.
"""

from __future__ import annotations

import inspect
import os
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import ncd
from ncd.ir.diagram import Block
from ncd.zoo import MODELS

__all__ = ["Entry", "REFERENCES", "build_gallery", "write_page"]


#: The independent implementation each model is proven equal to (values, gradients, parameter counts).
REFERENCES: dict[str, str] = {
    "mlp": "`nn.Sequential` of `nn.Linear`, `nn.ReLU`, `nn.Softmax` — `tests/test_zoo_attention.py`",
    "attention": "`F.scaled_dot_product_attention` (with and without the causal mask) — `tests/test_zoo_attention.py`",
    "multi_head_attention": "`nn.MultiheadAttention`: self and cross attention, with and without bias, causal and padding"
                            " masks — `tests/test_zoo_attention.py`",
    "transformer": "`nn.Transformer` (post-norm) with embeddings, sinusoidal positions and an output projection around it"
                   " — `tests/test_zoo_transformer.py`",
    "gpt2": "transformers' `GPT2LMHeadModel` from a small `GPT2Config` (tied output embedding) — `tests/test_zoo_transformer.py`",
    "convolution": "`nn.Conv1d`, `nn.Conv2d` (stride, padding, dilation, groups, depthwise, 1×1) and `nn.ConvTranspose2d`"
                   " — `tests/test_zoo_convolution.py`",
    "resnet": "a hand-written pre-activation bottleneck ResNet — `tests/test_zoo_convnets.py`",
    "unet": "a hand-written U-Net, end to end — `tests/test_zoo_convnets.py`",
    "vit": "transformers' `ViTForImageClassification` from a small `ViTConfig` — `tests/test_zoo_vision.py`",
    "visual_attention": "hand-written 1×1 `nn.Conv2d`s around `F.scaled_dot_product_attention` — `tests/test_zoo_vision.py`",
}


@dataclass
class Entry:
    """What the gallery produced for one model: files written, one cost line, steps skipped."""

    name: str
    title: str
    files: dict[str, str] = field(default_factory=dict)
    cost: str | None = None
    skipped: list[str] = field(default_factory=list)
    source: str = ""
    error: str | None = None


def build_gallery(out: str, names: Iterable[str] | None = None, *, pictures: bool = True, costs: bool = True) -> list[Entry]:
    """Write each model's files into ``out`` and return what was done."""
    os.makedirs(out, exist_ok=True)
    chosen = list(names) if names else list(MODELS)
    unknown = [n for n in chosen if n not in MODELS]
    if unknown:
        raise ncd.NCDError(f"unknown zoo model(s) {', '.join(unknown)}; the zoo has {', '.join(MODELS)}")
    return [_build_one(name, MODELS[name], out, pictures, costs) for name in chosen]


def _build_one(name: str, factory: Callable[..., Block], out: str, pictures: bool, costs: bool) -> Entry:
    entry = Entry(name, name)
    try:
        diagram = factory()
        if not isinstance(diagram, Block):
            raise ncd.NCDError(f"ncd.zoo.{name}() returned {type(diagram).__name__}, not a Block")
        entry.title = diagram.name
        json_text, entry.source = diagram.to_json(indent=1), diagram.to_source()
    except Exception as error:  # reported as a failed model; the other models are still written
        entry.error = f"{type(error).__name__}: {' '.join(str(error).split())}"
        return entry
    entry.files["json"] = _write(out, f"{name}.json", json_text)
    entry.files["py"] = _write(out, f"{name}.py", entry.source)
    if pictures:
        _draw(diagram, name, out, entry)
    if costs:
        _cost(diagram, entry)
    return entry


def _write(out: str, filename: str, text: str) -> str:
    path = os.path.join(out, filename)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _nested(diagram: Block) -> bool:
    """Whether the model has blocks within its blocks (then an overview with its blocks closed is drawn too)."""
    fences = [node for node in diagram.body.walk() if isinstance(node, (Block, ncd.Repeat))]
    return any(isinstance(inner, Block) for fence in fences for inner in list(fence.walk())[1:])


def _draw(diagram: Block, name: str, out: str, entry: Entry) -> None:
    draw = getattr(ncd, "draw", None)
    if draw is None:
        entry.skipped.append("pictures: the renderer (ncd.draw) is not available")
        return
    # the full expansion, and for models with inner blocks an overview with them drawn as component boxes
    views: list[tuple[str, dict[str, int]]] = [("", {})] + ([("-overview", {"depth": 1})] if _nested(diagram) else [])
    for suffix, options in views:
        for fmt in ("svg", "png"):
            path = os.path.join(out, f"{name}{suffix}.{fmt}")
            try:
                draw(diagram, path, **options)
            except Exception as error:  # an optional interpreter must never stop the gallery
                message = str(error).splitlines()[0] if str(error) else ""
                entry.skipped.append(f"{name}{suffix}.{fmt}: {type(error).__name__}: {message}")
            else:
                entry.files[f"{suffix[1:]}{'-' if suffix else ''}{fmt}"] = path


def _cost(diagram: Block, entry: Entry) -> None:
    cost = getattr(ncd, "cost", None)
    if cost is None:
        entry.skipped.append("cost: the cost model (ncd.cost) is not available")
        return
    try:
        entry.cost = " ".join(str(cost(diagram)).split())
    except Exception as error:  # as above: report, do not crash
        entry.skipped.append(f"cost: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")


def write_page(entries: list[Entry], path: str, picture_dir: str) -> str:
    """The Markdown gallery: per model its picture, the code that builds it, its cost and its generated source."""
    lines = [
        "# Gallery",
        "",
        "Every architecture of `ncd.zoo`, generated by `ncd gallery --out docs/gallery --page docs/gallery.md`.",
        "Each is proven equal to an independent PyTorch implementation (forward values, gradients and",
        "parameter counts) by `tests/test_zoo_*.py`.",
        "",
    ]
    lines += [f"* [{e.title}](#{e.name.replace('_', '-')}) — `ncd.zoo.{e.name}()`" for e in entries if not e.error]
    rel = os.path.relpath(picture_dir, os.path.dirname(os.path.abspath(path)) or ".")
    for e in entries:
        if e.error:
            continue
        factory = MODELS[e.name]
        lines += ["", f"## {e.name.replace('_', '-')}", "", f"**{e.title}** — {_summary(factory)}", ""]
        if e.name in REFERENCES:
            lines += [f"Proven equal to {REFERENCES[e.name]}.", ""]
        if "overview-svg" in e.files:
            lines += ["Overview (inner blocks closed):", "", f"![{e.title} overview]({rel}/{e.name}-overview.svg)", "",
                      "Every wire:", ""]
        if "svg" in e.files:
            lines += [f"![{e.title}]({rel}/{e.name}.svg)", ""]
        else:
            lines += ["*(picture not rendered: " + "; ".join(s for s in e.skipped if not s.startswith("cost")) + ")*", ""]
        why = "; ".join(s.removeprefix("cost: ") for s in e.skipped if s.startswith("cost")) or "not requested"
        lines += ["Cost (at the default sizes): " + (e.cost if e.cost else f"*not computed — {why}*"), ""]
        lines += ["The code that builds it:", "", "```python", textwrap.dedent(inspect.getsource(factory)).rstrip(), "```", ""]
        lines += ["<details><summary>Generated PyTorch source (default sizes)</summary>", "", "```python", e.source.rstrip(),
                  "```", "", "</details>"]
    return _write(os.path.dirname(path) or ".", os.path.basename(path), "\n".join(lines) + "\n")


def _summary(factory: Callable[..., Block]) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.split("\n\n")[0].replace("\n", " ")
