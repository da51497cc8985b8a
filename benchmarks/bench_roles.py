"""Audit: do two roles ever share an axis name in a traced diagram?

Each model is traced twice from the same code: once from a config whose sizes collide the way tiny
corpus configs do (4 heads, a window of 4, 4 experts, head dimension 8 = 8 tokens …), once from a config
where every role has a size of its own (12 heads, 3 key/value heads, head dimension 10, 11 tokens, a window
of 7 …).  The two diagrams have the same boxes in the same order, so their axes pair up one to
one; in the second, a size *is* a role.  A name of the first diagram whose paired axes have several sizes
in the second names several roles.  The script prints, per model, the names and the roles each one
covers, and the totals:

    .venv/bin/python benchmarks/bench_roles.py            # the representative set
    .venv/bin/python benchmarks/bench_roles.py --only swin
    .venv/bin/python benchmarks/bench_roles.py --names    # also list each name's roles

Role labels come from the config fields that hold the size (``heads``, ``head_dim``, ``window`` …);
a size that is no field is printed as the number.  An image's rows and the rows of its patch grid are one
role (``side``/``grid``): a convolution keeps the name of the axis it slides along, at the new size.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

warnings.filterwarnings("ignore")

Build = Callable[[bool], tuple[torch.nn.Module, tuple[Any, ...], dict[str, int]]]


#: config fields -> the role they size
ROLE_OF = {"num_local_experts": "experts", "num_experts_per_tok": "top_k", "sliding_window": "window"}


def _ids(distinct: bool, vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 11 if distinct else 8), generator=torch.Generator().manual_seed(0))


def _decoder(cls: str, cfg: str, **extra: Any) -> Build:
    """A decoder-only language model: heads, key/value heads, head dimension, widths, vocabulary, tokens."""

    def build(distinct: bool) -> tuple[torch.nn.Module, tuple[Any, ...], dict[str, int]]:
        import transformers as T

        sizes = (dict(hidden_size=120, num_attention_heads=12, num_key_value_heads=3, intermediate_size=84, vocab_size=130)
                 if distinct else dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                       intermediate_size=64, vocab_size=100))
        more = {k: (v[0] if distinct else v[1]) for k, v in extra.items()}
        named = {ROLE_OF.get(k, k): v for k, v in more.items()}
        config = getattr(T, cfg)(**sizes, **more, num_hidden_layers=2, max_position_embeddings=64, use_cache=False)
        roles = {"batch": 2, "tokens": 11 if distinct else 8, "width": sizes["hidden_size"],
                 "heads": sizes["num_attention_heads"], "kv_heads": sizes["num_key_value_heads"],
                 "head_dim": sizes["hidden_size"] // sizes["num_attention_heads"],
                 "groups": sizes["num_attention_heads"] // sizes["num_key_value_heads"],
                 "rotary_half": sizes["hidden_size"] // sizes["num_attention_heads"] // 2,
                 "ffn": sizes["intermediate_size"], "vocab": sizes["vocab_size"], **named}
        return getattr(T, cls)(config).eval(), (_ids(distinct, sizes["vocab_size"]),), roles

    return build


def _encoder(cls: str, cfg: str, width: str = "hidden_size", heads: str = "num_attention_heads",
             ffn: str = "intermediate_size", layers: str = "num_hidden_layers", **extra: Any) -> Build:
    def build(distinct: bool) -> tuple[torch.nn.Module, tuple[Any, ...], dict[str, int]]:
        import transformers as T

        w, h, f, v = (60, 12, 84, 130) if distinct else (32, 4, 64, 100)
        more = {k: (x[0] if distinct else x[1]) for k, x in extra.items()}
        config = getattr(T, cfg)(**{width: w, heads: h, ffn: f, layers: 2}, vocab_size=v, **more)
        roles = {"batch": 2, "tokens": 11 if distinct else 8, "width": w, "heads": h, "head_dim": w // h, "ffn": f,
                 "vocab": v, **more}
        return getattr(T, cls)(config).eval(), (_ids(distinct, v),), roles

    return build


def _vision(cls: str, cfg: str, image: tuple[int, int], patch: tuple[int, int], **extra: Any) -> Build:
    def build(distinct: bool) -> tuple[torch.nn.Module, tuple[Any, ...], dict[str, int]]:
        import transformers as T

        w, h, f = (60, 12, 84) if distinct else (32, 4, 64)
        side, p = (image[0], patch[0]) if distinct else (image[1], patch[1])
        more = {k: (x[0] if distinct else x[1]) for k, x in extra.items()}
        config = getattr(T, cfg)(hidden_size=w, num_attention_heads=h, intermediate_size=f, num_hidden_layers=2,
                                 image_size=side, patch_size=p, **more)
        roles = {"batch": 2, "width": w, "heads": h, "head_dim": w // h, "ffn": f, "side": side,
                 "grid": side // p, "tokens": (side // p) ** 2, "channels": 3, **more}
        return getattr(T, cls)(config).eval(), (torch.randn(2, 3, side, side),), roles

    return build


def _swin(distinct: bool) -> tuple[torch.nn.Module, tuple[Any, ...], dict[str, int]]:
    import transformers as T

    side, p, window, width, heads = (112, 4, 7, 30, 6) if distinct else (32, 4, 4, 32, 4)
    config = T.SwinConfig(image_size=side, patch_size=p, window_size=window, embed_dim=width, depths=[2],
                          num_heads=[heads])
    grid = side // p
    roles = {"batch": 2, "width": width, "heads": heads, "head_dim": width // heads, "ffn": 4 * width, "side": side,
             "grid": grid, "window": window, "window_tokens": window ** 2, "windows": (grid // window) ** 2,
             "windows_per_side": grid // window, "tokens": grid ** 2, "channels": 3}
    model: torch.nn.Module = T.SwinModel(config)
    return model.eval(), (torch.randn(2, 3, side, side),), roles


def models() -> list[tuple[str, Build]]:
    return [
        ("llama", _decoder("LlamaModel", "LlamaConfig")),
        ("mistral", _decoder("MistralModel", "MistralConfig", sliding_window=(9, 4))),
        ("qwen2", _decoder("Qwen2Model", "Qwen2Config")),
        ("mixtral", _decoder("MixtralModel", "MixtralConfig", num_local_experts=(7, 4), num_experts_per_tok=(6, 2))),
        ("bert", _encoder("BertModel", "BertConfig")),
        ("gpt2", _encoder("GPT2Model", "GPT2Config", width="n_embd", heads="n_head", ffn="n_inner", layers="n_layer")),
        ("vit", _vision("ViTModel", "ViTConfig", (42, 32), (6, 4))),
        ("swin", _swin),
    ]


def _wires(d: Any) -> Iterator[Any]:
    """Every node but the boxes (whose types are their primitives' own, local names: a convolution's ``y̅``)."""
    from ncd.ir.diagram import Box

    for node in d.walk():
        if not isinstance(node, Box):
            yield node


def _axes(d: Any) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for node in _wires(d):
        for typ in (node.dom, node.cod):
            for seg in typ.segments:
                out.extend((a.name.rstrip("ʹ"), a.size) for a in seg.axes)
    return out


def audit(build: Build) -> tuple[dict[str, set[str]], str]:
    """Name (in the colliding trace) -> the roles its axes have (read from the distinct trace)."""
    import ncd

    traced = []
    labels: dict[str, str] = {}
    for distinct in (False, True):
        torch.manual_seed(0)
        model, inputs, roles = build(distinct)
        traced.append(ncd.trace(model, *inputs))
        if distinct:
            for role, size in roles.items():
                labels.setdefault(str(size), role)
    a, b = _axes(traced[0]), _axes(traced[1])
    if len(a) != len(b):
        return {}, f"unpaired ({len(a)} axes vs {len(b)})"
    names: dict[str, set[str]] = {}
    for (name, _), (_, size) in zip(a, b):
        if name == "1" or str(size) == "1":
            continue
        text = str(size)
        role = {"b": "batch", "t": "tokens"}.get(text) or labels.get(text, text)  # symbols: the batch, the tokens
        names.setdefault(name, set()).add("side" if role == "grid" else role)
    return names, ""


#: the letters the paper and the namer keep for a role: a letter naming another role misleads a reader
LETTERS = {"b": "batch", "t": "tokens", "h": "heads", "g": "kv_heads", "r": "groups", "k": "head_dim", "m": "width",
           "f": "ffn", "c": "channels", "w": "window", "s": "windows_per_side", "e": "experts", "v": "vocab"}


#: a letter two roles of different models use (Swin's windows per side, a router's top-k slots)
ALSO = {"s": "top_k"}


def misnamed(names: dict[str, set[str]]) -> dict[str, set[str]]:
    """Names that are a role's letter (:data:`LETTERS`) on axes of another role."""
    return {n: r for n, r in names.items() if n in LETTERS and r - {LETTERS[n], ALSO.get(n)}}


def several_names(names: dict[str, set[str]]) -> dict[str, set[str]]:
    """Roles drawn under several names (the batch as ``b`` and as ``p``)."""
    out: dict[str, set[str]] = {}
    for n, rs in names.items():
        for r in rs:
            out.setdefault(r, set()).add(n)
    return {r: n for r, n in out.items() if len(n) > 1 and not r.isdigit() and r != "side"}  # side: rows and columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="models whose name contains this text")
    parser.add_argument("--names", action="store_true", help="list every name and its roles")
    args = parser.parse_args()
    torch.set_num_threads(1)
    total_names = total_shared = total_wrong = total_split = 0
    print("| model | names | names with several roles | which | role letters on other roles | which |"
          " roles with several names | which |")
    print("|---|---|---|---|---|---|---|---|")
    for name, build in models():
        if args.only.lower() not in name:
            continue
        names, problem = audit(build)
        if problem:
            print(f"| {name} | {problem} | | | | | | |")
            continue
        shared = {n: r for n, r in names.items() if len(r) > 1}
        wrong = misnamed(names)
        split = several_names(names)
        total_split += len(split)
        total_names += len(names)
        total_shared += len(shared)
        total_wrong += len(wrong)

        def text(d: dict[str, set[str]]) -> str:
            return "; ".join(f"{n}: {'/'.join(sorted(r))}" for n, r in sorted(d.items()))

        print(f"| {name} | {len(names)} | {len(shared)} | {text(shared)} | {len(wrong)} | {text(wrong)} | {len(split)} |"
              f" {text(split)} |", flush=True)
        if args.names:
            print(f"| | | | | | | | all: {text(names)} |")
    print(f"\ntotal: {total_shared} of {total_names} names stand for several roles; {total_wrong} are another role's"
          f" letter; {total_split} roles have several names")


if __name__ == "__main__":
    main()
