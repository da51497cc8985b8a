"""Every primitive, driven from the per-primitive database: types, lowering, source, JSON, errors."""

from __future__ import annotations

import re

import pytest
import torch

import ncd
from ncd.ir.primitive import PRIMITIVES
from ncd.ir.rules import load as _load_all
from ncd.torch.module import compile_source
from tests.opdb import ERRORS, SAMPLES, Sample, load

load()


def _inputs(s: Sample, d: ncd.Diagram) -> tuple[torch.Tensor, ...]:
    xs = s.inputs(s.sizes) if s.inputs else d.example_inputs(*s.batch, **s.sizes)
    return tuple(x.clone().requires_grad_(True) if x.is_floating_point() else x for x in xs)


def _as_tuple(x: object) -> tuple[torch.Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)  # type: ignore[return-value]


def _compare(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...], atol: float, what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} outputs, reference has {len(want)}"
    for g, w in zip(got, want):
        assert g.shape == w.shape, f"{what}: shape {tuple(g.shape)} vs reference {tuple(w.shape)}"
        torch.testing.assert_close(g, w.to(g.dtype), atol=atol, rtol=1e-4, equal_nan=True, msg=what)  # (NaN inputs)


def _run(s: Sample):
    torch.manual_seed(0)
    d = s.build()
    module = d.to_torch(**s.sizes)
    module.train(s.train)
    xs = _inputs(s, d)
    params = dict(module.named_parameters())
    params.update(dict(module.named_buffers()))
    return d, module, xs, params


@pytest.mark.parametrize("s", SAMPLES, ids=lambda s: s.id)
def test_type_rule(s: Sample) -> None:
    d = s.build()
    if s.dom is not None:
        assert str(d.dom) == s.dom
    if s.cod is not None:
        assert str(d.cod) == s.cod


@pytest.mark.parametrize("s", SAMPLES, ids=lambda s: s.id)
def test_lowering_matches_reference(s: Sample) -> None:
    d, module, xs, params = _run(s)
    got = _as_tuple(module(*xs))
    want = _as_tuple(s.reference(params, xs))
    _compare(got, want, s.atol, "forward")
    for g, seg in zip(got, d.bind(**s.sizes).cod):
        assert g.dim() == len(s.batch) + len(seg), "output rank must be batch + the codomain's axes"
    if not s.grad or not got:
        return
    leaves = [x for x in xs if x.requires_grad] + [p for p in module.parameters()]
    if not leaves:
        return
    weights = [torch.randn_like(g) for g in got]
    g1 = torch.autograd.grad(sum((g * w).sum() for g, w in zip(got, weights)), leaves, allow_unused=True)
    want2 = _as_tuple(s.reference(params, xs))
    g2 = torch.autograd.grad(sum((g * w).sum() for g, w in zip(want2, weights)), leaves, allow_unused=True)
    for a, b in zip(g1, g2):
        if a is None or b is None:
            assert a is None and b is None or (a if a is not None else b).abs().max() == 0
            continue
        torch.testing.assert_close(a, b, atol=max(s.atol, 1e-4), rtol=1e-3, msg="gradient")


@pytest.mark.parametrize("s", SAMPLES, ids=lambda s: s.id)
def test_generated_source_runs_identically(s: Sample) -> None:
    d, module, xs, _ = _run(s)
    source = d.to_source(**s.sizes)
    assert source == module.ncd_source
    names = re.findall(r"^class (\w+)\(", source, flags=re.M)
    fresh = compile_source(source)[names[-1]]()
    fresh.load_state_dict(module.state_dict())
    fresh.train(s.train)
    torch.manual_seed(1)
    a = _as_tuple(module(*xs))
    torch.manual_seed(1)
    b = _as_tuple(fresh(*xs))
    _compare(a, b, 0.0, "source")


@pytest.mark.parametrize("s", SAMPLES, ids=lambda s: s.id)
def test_json_round_trip(s: Sample) -> None:
    d = s.build()
    again = ncd.load_json(d.to_json())
    assert again == d
    assert again.to_json() == d.to_json()


@pytest.mark.parametrize("e", ERRORS, ids=lambda e: e.id)
def test_error_inputs(e) -> None:
    with pytest.raises(e.error, match=e.match):
        e.call()


def test_every_elementwise_function_has_a_sample() -> None:
    """One row of ``ROWS`` gives a function to every interpreter; its sample checks them all."""
    from ncd.prims.elementwise import ROWS

    _load_all()
    sampled = {s.name for s in SAMPLES if s.op == "elementwise"}
    assert not set(ROWS) - sampled, f"elementwise functions without samples: {sorted(set(ROWS) - sampled)}"


def test_every_primitive_has_samples_errors_and_rules() -> None:
    _load_all()
    sampled = {s.op for s in SAMPLES}
    errored = {e.op for e in ERRORS}
    ops = set(PRIMITIVES) - {"opaque"}
    assert not ops - sampled, f"primitives without samples: {sorted(ops - sampled)}"
    assert not ops - errored, f"primitives without error samples: {sorted(ops - errored)}"
