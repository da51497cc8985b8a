"""The exceptions by which the eager recording (:mod:`ncd.trace.record`) gives up on a model or on one way of recording it.

:class:`Unsupported` (and :class:`ReadsValue`) leave the model to ``torch.export``; :class:`_NeedValues` and
:class:`_OverBudget` make the recording start again on real values or on the meta device.  They import nothing of
:mod:`ncd`, so every module of the recording can raise them without an import cycle.
"""

from __future__ import annotations

__all__ = ["Unsupported", "ReadsValue"]


class Unsupported(Exception):
    """The eager recording cannot stand for this model; use ``torch.export``."""


class ReadsValue(Unsupported):
    """The model read a value that depends on the inputs into Python (its control flow may depend on it)."""


class _NeedValues(Exception):
    """The recording on the meta device lacks a value it needs: record again on real values."""


class _OverBudget(Exception):
    """The recording on real values has computed more than :data:`ncd.trace.record.WORK_BUDGET`: record again on the
    meta device."""
