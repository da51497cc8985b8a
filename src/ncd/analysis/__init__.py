"""Analysis interpreters: exact costs (:func:`cost`) and reverse-mode diagrams (:func:`backward`).

Rules live in one module per primitive family (``ncd.analysis.elementwise``, ``.linear``,
``.softmax``, ``.structure``, ``.derivative``), registered in ``ncd.analysis.tables``.
"""

from __future__ import annotations

from ncd.analysis.backward import Plan, backward, plan
from ncd.analysis.cost import BoxCost, CostReport, Metrics, cost
from ncd.analysis.tables import AnalysisError

__all__ = ["cost", "CostReport", "Metrics", "BoxCost", "AnalysisError", "backward", "plan", "Plan"]
