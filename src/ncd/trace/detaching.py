"""Where a model cuts values from autograd — ``x.detach()``, ``w.data``, ``with torch.no_grad():``,
``torch.set_grad_enabled(False)``, ``torch.inference_mode()`` — which no diagram draws: the diagram draws the values,
so the lowered module's forward is the model's and its gradients flow where the model's stop.  Both captures name the
model's lines in one warning (:func:`warn_detached`): the recording (:mod:`ncd.trace.record`, which sees the operators)
and the ``torch.export`` path (:func:`detaches_seen` around it: export's graph holds no stop-gradient)."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from ncd.errors import user_stacklevel
from ncd.trace.capture import Node, _internal

if TYPE_CHECKING:
    from ncd.trace.recording import _Recording

#: torch's own files between a model's line and the switch of gradients it asks for (a context, a decorator)
_GRAD_MODES = ("/torch/autograd/grad_mode.py", "/torch/utils/_contextlib.py")


def turned_off(seen: dict[str, str], what: str, forwards: dict[int, str] | None = None) -> None:
    """The model's line turning gradients off (the first frame past ``torch``'s grad-mode contexts and decorators that
    is the model's; the caller of the caller of this), in ``seen``; none when torch or ncd itself turns them off (a
    parametrization's power iteration).  A module's ``forward`` decorated ``@torch.no_grad()``, which ``nn.Module``
    calls, goes in ``forwards`` (by the module's id, its first line) when the module holds parameters taking gradients
    (a frozen target network; HF's rotary tables hold none): the recording says it if its output is a value of the
    inputs."""
    frame = sys._getframe(2)
    decorated = None
    while frame is not None and frame.f_code.co_filename.replace(os.sep, "/").endswith(_GRAD_MODES):
        decorated = frame.f_locals if frame.f_code.co_name == "decorate_context" else decorated
        frame = frame.f_back  # type: ignore[assignment]
    if frame is not None and not _internal(frame.f_code.co_filename):
        seen.setdefault(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}", what)
    elif forwards is not None and decorated is not None:
        code = getattr(decorated.get("func"), "__code__", None)
        args = decorated.get("args") or ()
        if code is not None and code.co_name == "forward" and not _internal(code.co_filename) and args \
                and isinstance(args[0], torch.nn.Module) and any(p.requires_grad for p in args[0].parameters()):
            forwards[id(args[0])] = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"


def warn_detached(model: torch.nn.Module, seen: dict[str, str]) -> None:
    """One ``RuntimeWarning`` naming the model's lines in ``seen`` that cut values from autograd, if any."""
    if seen:  # a stop-gradient (a straight-through estimator, a target network): not drawn
        warnings.warn(f"ncd.trace({type(model).__name__}): the model detaches values from autograd (detach or no_grad at"
                      f" {', '.join(sorted(seen))}); the diagram draws them as the values they are, so the"
                      " lowered module's forward is the model's but its gradients flow through them (the model's stop"
                      " there)", RuntimeWarning, stacklevel=user_stacklevel())


@contextlib.contextmanager
def grad_turned_off(seen: dict[str, str], forwards: dict[int, str] | None = None) -> Iterator[None]:
    """While the model runs (recorded or exported): its lines turning gradients off by every route that reaches
    ``torch._C`` — ``torch.set_grad_enabled(False)`` (a context or a call), ``@torch.no_grad()`` on a function,
    ``torch._C._set_grad_enabled``, ``torch.inference_mode()`` (a context or a decorator) — in ``seen``, and the
    modules whose decorated ``forward`` does it in ``forwards`` (:func:`turned_off`)."""
    set_grad, inference_on = torch._C._set_grad_enabled, torch._C._InferenceMode

    def grad_set(mode: bool) -> None:
        if not mode:
            turned_off(seen, "no_grad", forwards)
        set_grad(mode)

    def inference(mode: bool = True) -> Any:
        if mode:
            turned_off(seen, "inference_mode", forwards)
        return inference_on(mode)

    torch._C._set_grad_enabled, torch._C._InferenceMode = grad_set, inference  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        torch._C._set_grad_enabled, torch._C._InferenceMode = set_grad, inference_on  # type: ignore[misc]


@contextlib.contextmanager
def detaches_seen(seen: dict[str, str]) -> Iterator[None]:
    """While ``torch.export`` runs the model: its lines cutting a floating-point value from autograd (``x.detach()``,
    ``x.detach_()``, ``x.data``) or turning gradients off (:func:`grad_turned_off`), in ``seen``."""
    detach, detach_ = torch.Tensor.detach, torch.Tensor.detach_
    held = torch.Tensor.__dict__.get("data")
    data = held if held is not None else torch._C.TensorBase.__dict__["data"]  # (keeps a watch on assignments)

    def cut(what: str, x: torch.Tensor) -> None:
        frame = sys._getframe(2)
        if x.is_floating_point() and not _internal(frame.f_code.co_filename):
            seen.setdefault(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}", what)

    def detached(self: torch.Tensor) -> torch.Tensor:
        cut("detach", self)
        return detach(self)

    def detached_(self: torch.Tensor) -> torch.Tensor:
        cut("detach_", self)
        return detach_(self)

    def read(self: torch.Tensor) -> torch.Tensor:
        cut(".data", self)
        value: torch.Tensor = data.__get__(self)
        return value

    torch.Tensor.detach, torch.Tensor.detach_ = detached, detached_  # type: ignore[assignment]
    torch.Tensor.data = property(read, data.__set__)  # type: ignore[assignment]
    try:
        with grad_turned_off(seen):
            yield
    finally:
        torch.Tensor.detach, torch.Tensor.detach_ = detach, detach_
        if held is None:
            del torch.Tensor.data
        else:
            torch.Tensor.data = held


def model_region(frame: Any) -> str:
    """The line of the model entering a ``torch.no_grad()`` whose ``__enter__`` ``frame`` calls (its ``with``, or a
    function of the model decorated ``@torch.no_grad()`` it calls, named by the call's line), or of a module's
    ``forward`` so decorated when the module holds parameters taking gradients (a frozen target network, an EMA
    teacher: its first line); ``""`` when torch or ncd enters it, or a module holding no such parameters (HF's rotary
    tables): the values made there are drawn as they are."""
    decorated = None
    while frame is not None and frame.f_code.co_filename.replace(os.sep, "/").endswith(_GRAD_MODES):
        decorated = frame.f_locals if frame.f_code.co_name == "decorate_context" else decorated
        frame = frame.f_back
    if frame is not None and not _internal(frame.f_code.co_filename):
        return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    if decorated is None:
        return ""
    code = getattr(decorated.get("func"), "__code__", None)
    args = decorated.get("args") or ()
    if code is not None and code.co_name == "forward" and not _internal(code.co_filename) and args \
            and isinstance(args[0], torch.nn.Module) and any(p.requires_grad for p in args[0].parameters()):
        return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    return ""


def cut_after(nodes: list[Node], start: int, by_id: dict[int, Node], line: str) -> None:
    """At the end of the model's ``torch.no_grad()`` region (recorded from ``nodes[start]`` on): each floating-point
    value computed there is read from here on through a recorded ``detach`` of it (``by_id``: a tensor's id -> its node),
    which the diagram draws as a stop-gradient box where a gradient would reach it (:mod:`ncd.prims.detach`), so the
    lowered module's gradients stop where the model's do; values no later call reads are pruned with their detach."""
    detach = torch.ops.aten.detach.default
    for node in nodes[start:]:
        value = node.value
        if node.kind != "call" or type(value) is not torch.Tensor or not value.is_floating_point() \
                or by_id.get(id(value)) is not node:
            continue
        cut = Node(f"{node.name}_no_grad", "call", detach, (node,), {}, value=value, stack=node.stack, live=node.live,
                   line=line)
        nodes.append(cut)
        by_id[id(value)] = cut


def noted(seen: dict[str, str], what: str) -> None:
    """The model's line entering a context manager (the caller of the ``__enter__`` that calls this), in ``seen``."""
    frame = sys._getframe(2)
    if not _internal(frame.f_code.co_filename):
        seen.setdefault(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}", what)


@contextlib.contextmanager
def grad_regions(rec: _Recording) -> Iterator[set[str]]:
    """While the model is recorded: its own gradient regions — ``with torch.no_grad():``, ``torch.enable_grad()``,
    ``torch.set_grad_enabled(mode)``, ``torch.inference_mode(mode)`` as contexts (the recording runs in a ``no_grad`` of
    its own) — followed: at the end of the model's outermost region its values are cut (:func:`cut_after`), an
    ``enable_grad`` inside one cuts those made so far.  Yields the lines of the model's regions closed (their values
    are drawn through a detach, so the recording does not warn of them); ``no_grad`` lines go in ``rec.detached``."""
    grad_off, grad_back = torch.no_grad.__enter__, torch.no_grad.__exit__
    regrad, regrad_back = torch.enable_grad.__enter__, torch.enable_grad.__exit__
    switch_on, switch_back = torch.set_grad_enabled.__enter__, torch.set_grad_enabled.__exit__
    infer_on, infer_back = torch.inference_mode.__enter__, torch.inference_mode.__exit__
    regions: list[list[Any]] = []  # the no_grad regions open: [where it starts in rec.nodes, the model's line]
    drawn: set[str] = set()  # the lines of the model's regions closed: their values read through a detach (drawn)
    reopened: list[bool] = []  # the enable_grad regions open: whether each is inside one of the model's no_grad ones

    def opened(frame: Any) -> None:
        regions.append([len(rec.nodes), model_region(frame) if not rec.inside else ""])

    def closed() -> None:
        start, line = regions.pop() if regions else (0, "")
        if line and not any(open_line for _, open_line in regions):  # the model's outermost region: its values cut
            cut_after(rec.nodes, start, rec.by_id, line)
        if line:  # (a region inside another of the model's: cut with it)
            drawn.add(line)

    def regrad_opened() -> None:  # gradients on again inside the model's no_grad: values with gradients
        outer = next((region for region in regions if region[1]), None)
        reopened.append(outer is not None)
        if outer is not None:  # the region's values so far are cut where read from here on (not those made in it)
            cut_after(rec.nodes, outer[0], rec.by_id, outer[1])

    def regrad_closed() -> None:
        if reopened.pop() if reopened else False:
            outer = next((region for region in regions if region[1]), None)
            if outer is not None:  # the region goes on after it
                outer[0] = len(rec.nodes)

    def no_grad(self: Any) -> None:  # the model's own ``with torch.no_grad():`` (the recording runs in one already)
        noted(rec.detached, "no_grad")
        opened(sys._getframe(1))
        grad_off(self)

    def no_grad_exit(self: Any, *exc: Any) -> None:
        closed()
        grad_back(self, *exc)

    def enable_grad(self: Any) -> None:
        regrad_opened()
        regrad(self)

    def enable_grad_exit(self: Any, *exc: Any) -> None:
        regrad_closed()
        regrad_back(self, *exc)

    def switched(self: Any) -> None:  # ``with torch.set_grad_enabled(mode):`` (its __init__ set the mode: warned)
        opened(sys._getframe(1)) if not self.mode else regrad_opened()
        switch_on(self)

    def switched_back(self: Any, *exc: Any) -> None:
        closed() if not self.mode else regrad_closed()
        switch_back(self, *exc)

    def inferred(self: Any) -> None:  # ``with torch.inference_mode():`` (a decorator's too: model_region)
        opened(sys._getframe(1)) if self.mode else regrad_opened()
        infer_on(self)

    def inferred_back(self: Any, *exc: Any) -> None:
        closed() if self.mode else regrad_closed()
        infer_back(self, *exc)

    torch.no_grad.__enter__, torch.no_grad.__exit__ = no_grad, no_grad_exit  # type: ignore[method-assign]
    torch.enable_grad.__enter__, torch.enable_grad.__exit__ = enable_grad, enable_grad_exit  # type: ignore[method-assign]
    torch.set_grad_enabled.__enter__, torch.set_grad_enabled.__exit__ = switched, switched_back  # type: ignore[method-assign]
    torch.inference_mode.__enter__, torch.inference_mode.__exit__ = inferred, inferred_back  # type: ignore[method-assign]
    try:
        yield drawn
    finally:
        torch.no_grad.__enter__, torch.no_grad.__exit__ = grad_off, grad_back  # type: ignore[method-assign]
        torch.enable_grad.__enter__, torch.enable_grad.__exit__ = regrad, regrad_back  # type: ignore[method-assign]
        torch.set_grad_enabled.__enter__, torch.set_grad_enabled.__exit__ = switch_on, switch_back  # type: ignore[method-assign]
        torch.inference_mode.__enter__, torch.inference_mode.__exit__ = infer_on, infer_back  # type: ignore[method-assign]
