"""The benchmark scripts the tests read (``benchmarks/`` is no package): each loaded once per process, by name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: where the scripts are
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as the module ``name``: registered in ``sys.modules`` before it runs (its dataclasses
    look their module up), the one already loaded if there is one."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module
