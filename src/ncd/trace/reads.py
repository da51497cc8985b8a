"""Whether a value the model reads into Python matters to what it computes: a read to print a tensor (text only) or
by an assertion (it raises or lets the model go on unchanged) does not (:mod:`ncd.trace.record` asks)."""

from __future__ import annotations


def _printing() -> bool:
    """Whether values are read to print a tensor (``f"negative values {x}"`` in a check's message): for text only."""
    import sys

    frame = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            return False
        if frame.f_code.co_filename.replace("\\", "/").endswith("torch/_tensor_str.py"):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


#: torch's checks that read a value only to raise when it is false
CHECKS = frozenset({"_check_with", "_check_tensor_all_with"})


def _asserted() -> bool:
    """Whether a value read into Python is read by an assertion (``torch._check…``, an ``assert`` statement), which
    raises or lets the model go on unchanged: what the model computes does not depend on it."""
    import linecache
    import sys

    from ncd.trace.capture import _internal

    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if frame.f_code.co_name in CHECKS and "/torch/" in name.replace("\\", "/"):
            return True
        if not _internal(name):
            return linecache.getline(name, frame.f_lineno).lstrip().startswith("assert ")
        frame = frame.f_back  # type: ignore[assignment]
    return False
