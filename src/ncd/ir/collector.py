"""The cyclic garbage collector paused around work that allocates many small acyclic records.

Lowering, costing, laying out and painting a diagram of thousands of boxes allocate hundreds of thousands of
records (types, values, ops, tensors, items) that hold no reference cycles; every full pass of the collector
walks all of them and everything else the process holds, so with it running those stages were superlinear in
the diagram's size (at 10,000 boxes about a third of lowering's and costing's time was the collector's).  What
they allocate is freed by reference counting; the collector runs again when the outermost pause ends.

>>> import gc
>>> with no_collector():
...     gc.isenabled()
False
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["no_collector"]


@contextmanager
def no_collector() -> Iterator[None]:
    """The cyclic garbage collector paused for the ``with`` body (nested pauses: the outermost re-enables it).

    Lowering, costing, laying out and painting allocate many small acyclic records; collector passes over them (and
    over everything else the process holds) made large diagrams superlinear."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
