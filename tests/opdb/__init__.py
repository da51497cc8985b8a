"""The per-primitive database (after PyTorch's OpInfo): samples, error inputs, references.

Each family module registers, for each primitive ``op``:

* :class:`Sample`\\ s — a diagram, sizes, and an *independent* reference written with
  ``torch`` / ``torch.nn`` (it receives the lowered module's parameters by name, so learned
  boxes can be checked with the same weights); tests lower the diagram, run it on random
  inputs with an extra leading batch axis, and compare values and gradients;
* :class:`ErrorSample`\\ s — a call that must raise an ``ncd`` error whose message matches a
  regex naming the axes/sizes involved.

``tests/test_opdb.py`` drives every interpreter from these tables; a coverage test fails if
a declared primitive has no sample, no error sample or no lowering rule.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ncd.ir.diagram import Diagram

Reference = Callable[[dict[str, torch.Tensor], tuple[torch.Tensor, ...]], Any]


@dataclass
class Sample:
    op: str
    name: str
    build: Callable[[], Diagram]
    sizes: dict[str, int]
    reference: Reference
    dom: str | None = None
    cod: str | None = None
    batch: tuple[int, ...] = (2,)
    atol: float = 1e-5
    grad: bool = True
    inputs: Callable[[dict[str, int]], tuple[torch.Tensor, ...]] | None = None
    train: bool = False

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}"


@dataclass
class ErrorSample:
    op: str
    name: str
    call: Callable[[], Any]
    match: str
    error: type[Exception] = field(default=Exception)

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}"


SAMPLES: list[Sample] = []
ERRORS: list[ErrorSample] = []


def sample(op: str, name: str, build: Callable[[], Diagram], sizes: dict[str, int], reference: Reference, **kw: Any) -> None:
    SAMPLES.append(Sample(op, name, build, sizes, reference, **kw))


def error(op: str, name: str, call: Callable[[], Any], match: str, error: type[Exception] | None = None) -> None:
    from ncd.errors import NCDError

    ERRORS.append(ErrorSample(op, name, call, match, error or NCDError))


def load() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
