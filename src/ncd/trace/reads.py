"""Values the model reads into Python while it is recorded.  Whether a read matters to what it computes: a read to
print a tensor (text only) or by an assertion (it raises or lets the model go on unchanged) does not
(:mod:`ncd.trace.record` asks).  The reads no operator records (``tolist``, ``numpy``, ``data_ptr``, copies,
forward-mode derivatives) are guarded while recording (:func:`_reads_guarded`)."""

from __future__ import annotations

import contextlib
import copy
import dis
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import torch

from ncd.trace.capture import _internal, user_line
from ncd.trace.refusals import ReadsValue
from ncd.trace.watched_layout import laid_as_given, noted

if TYPE_CHECKING:
    from ncd.trace.recording import _Recording


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

    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        name = code.co_filename
        if code.co_name in CHECKS and "/torch/" in name.replace("\\", "/"):
            return True
        if not _internal(name):
            return _may_assert(code) and linecache.getline(name, frame.f_lineno).lstrip().startswith("assert ")
        frame = frame.f_back  # type: ignore[assignment]
    return False


#: ``LOAD_ASSERTION_ERROR``, the instruction every ``assert`` statement compiles to (the error it raises), where this
#: Python has it (else every line is read)
_ASSERTION = bytes([dis.opmap["LOAD_ASSERTION_ERROR"]]) if "LOAD_ASSERTION_ERROR" in dis.opmap else b""
_MAY_ASSERT: dict[int, tuple[Any, bool]] = {}  # id of a code object -> (it, whether :func:`_may_assert`)


def _may_assert(code: Any) -> bool:
    """Whether a line of ``code`` can be an ``assert`` statement: it holds the instruction one compiles to, or names
    ``AssertionError`` (pytest rewrites a test module's statements into ``if not ...: raise AssertionError(...)``),
    or it is a lambda's or comprehension's (``assert all(v.item() > 0 for v in xs)``: the statement is its caller's).
    Asked before the line's source is read (:func:`_asserted`): a file read whole and decoded on its first line
    asked, ~1 ms for transformers' ``modeling_utils.py``, at every model that reads a value."""
    found = _MAY_ASSERT.get(id(code))
    if found is None or found[0] is not code:
        if len(_MAY_ASSERT) > 4096:  # (code made at run time is not kept forever)
            _MAY_ASSERT.clear()
        found = _MAY_ASSERT[id(code)] = (code, not _ASSERTION or code.co_name.startswith("<")
                                           or "AssertionError" in code.co_names or _ASSERTION in code.co_code[::2])
    return found[1]


#: tensor methods that read values into Python without an ATen call the recorder would see (``apply_``, ``map_`` and
#: ``map2_`` call a Python function on each entry and write its results in place: no operator records them either, so
#: the diagram dropped the call and the lowered module returned the entries as they were before it)
UNDISPATCHED_READS = ("tolist", "numpy", "__dlpack__", "apply_", "map_", "map2_")  # (__dlpack__: numpy.from_dlpack(x))
#: those of them that write into the tensor's memory, or hand it to Python where the model may write into it
UNDISPATCHED_WRITES = frozenset({"numpy", "__dlpack__", "apply_", "map_", "map2_"})


class _Address:
    """The memory address of a value of the inputs, as the model's ``x.data_ptr()`` answers while it is recorded: it
    compares, hashes, offsets and takes remainders (alignment checks) like the number, but is no number: handed to
    ``ctypes`` (``c_float.from_address``) it raises :class:`~ncd.errors.TraceError` naming the line, since the values read there
    are read without an operator any capture records (the diagram would hold the traced ones)."""

    __slots__ = ("at", "line")

    def __init__(self, at: int, line: str) -> None:
        self.at, self.line = at, line

    def _number(self) -> NoReturn:
        from ncd.errors import TraceError

        raise TraceError(f"cannot trace the model: the address of a value of its inputs (Tensor.data_ptr() at"
                         f" {self.line}) is used as a number, as ctypes reads memory: a read no capture records (the"
                         " diagram would hold the traced values)")

    __index__ = __int__ = _number

    def __mod__(self, other: int) -> int:
        return self.at % other

    def __add__(self, other: int) -> _Address:
        return _Address(self.at + other, self.line)

    __radd__ = __add__

    def __sub__(self, other: Any) -> Any:
        return self.at - other.at if isinstance(other, _Address) else _Address(self.at - other, self.line)

    def __eq__(self, other: object) -> bool:
        return self.at == (other.at if isinstance(other, _Address) else other)

    def __hash__(self) -> int:
        return hash(self.at)

    def __lt__(self, other: Any) -> bool:
        return self.at < (other.at if isinstance(other, _Address) else other)

    def __le__(self, other: Any) -> bool:
        return self.at <= (other.at if isinstance(other, _Address) else other)

    def __gt__(self, other: Any) -> bool:
        return self.at > (other.at if isinstance(other, _Address) else other)

    def __ge__(self, other: Any) -> bool:
        return self.at >= (other.at if isinstance(other, _Address) else other)

    def __repr__(self) -> str:
        return hex(self.at)


@contextlib.contextmanager
def _reads_guarded(rec: _Recording) -> Iterator[None]:
    """While recording: ``t.tolist()`` / ``t.numpy()`` of a tensor that depends on the inputs raise :class:`ReadsValue`.

    They copy the values out in C++ without dispatching an operator, so the recording alone would not know that the
    model went on with those values as Python numbers (JetMoE's ``expert_size.tolist()`` sets split sizes): the
    diagram would freeze them and be wrong on other inputs."""
    saved = {name: getattr(torch.Tensor, name) for name in UNDISPATCHED_READS}

    def guard(name: str) -> Any:
        method = saved[name]

        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if rec.pending:
                rec.check_writes()
            read_from = [self, *(a for a in args if isinstance(a, torch.Tensor))]  # (map_(other, f) reads other too)
            nodes = [rec.by_id.get(id(t)) for t in read_from]
            if any(n is not None and n.live for n in nodes) and not _asserted() and not _printing():
                raise ReadsValue(f"Tensor.{name}() reads a value that depends on the inputs into Python at"
                                 f" {user_line() or '?'}")
            if name in UNDISPATCHED_WRITES:  # the model may write into its state through it: undone if this fails
                rec.keep_memory(self)
            return method(self, *args, **kwargs)

        return read

    for name in UNDISPATCHED_READS:
        setattr(torch.Tensor, name, guard(name))
    deepcopy = torch.Tensor.__deepcopy__

    def copied_by_call(self: torch.Tensor, memo: dict[int, Any]) -> Any:
        """``copy.deepcopy`` of a value of the inputs: a ``clone`` (recorded); torch's copies its memory without an
        operator, so the copy would be a constant frozen at the traced values."""
        node = rec.by_id.get(id(self))
        if node is None or not node.live or type(self) is not torch.Tensor or id(self) in memo:
            return deepcopy(self, memo)  # type: ignore[no-untyped-call]
        out = memo[id(self)] = self.clone()
        return out

    shallow = torch.Tensor.__dict__.get("__copy__")

    def aliased_by_call(self: torch.Tensor) -> Any:
        """``copy.copy`` of a tensor the recording holds: torch's rebuilds a tensor on the same memory, cut from
        autograd (a write through either is seen by the other), which is ``detach`` (recorded); torch's own failed
        on the recording's tensors."""
        if type(self) is not torch.Tensor or id(self) not in rec.by_id:
            if shallow is not None:
                return shallow(self)
            return copy._reconstruct(self, None, *self.__reduce_ex__(4))  # type: ignore[attr-defined, no-untyped-call]
        return self.detach()

    address = torch._C.TensorBase.data_ptr

    def data_ptr(self: torch.Tensor) -> Any:
        """``x.data_ptr()`` of a value of the inputs, asked by the model: an :class:`_Address` (its alignment and
        comparisons, not a number ``ctypes`` reads memory at: a read no capture sees)."""
        at: int = address(self)
        if _internal(sys._getframe(1).f_code.co_filename):
            return at
        node = rec.by_id.get(id(self))
        if node is None or not node.live:
            return at
        addressed.append(user_line() or "?")
        if laid_as_given(self, lambda t: rec.by_id.get(id(t))):
            noted(".data_ptr()", addressed[-1])
        return _Address(at, addressed[-1])

    addressed = rec.addressed  # (said with inputs that share memory: :func:`~ncd.trace.record_warnings.warn_recorded`)
    stored = torch.UntypedStorage.data_ptr

    def storage_address(storage: torch.UntypedStorage, at: int) -> Any:
        if storage.device.type == "meta" or not storage.nbytes() or not rec._live_memory(at):
            return at
        addressed.append(user_line() or "?")
        noted(".untyped_storage().data_ptr()", addressed[-1])
        return _Address(at, addressed[-1])

    def storage_ptr(self: torch.UntypedStorage) -> Any:
        """``x.untyped_storage().data_ptr()`` of a value of the inputs' memory, asked by the model: an :class:`_Address`."""
        at: int = stored(self)
        return at if _internal(sys._getframe(1).f_code.co_filename) else storage_address(self, at)

    typed = torch.TypedStorage.__dict__["data_ptr"]

    def typed_ptr(self: torch.TypedStorage) -> Any:
        at: int = typed(self)
        return at if _internal(sys._getframe(1).f_code.co_filename) else storage_address(self._untyped_storage, at)

    from torch.autograd import forward_ad

    enter_dual_level = forward_ad.enter_dual_level

    def dual_level_refused() -> int:
        """Forward-mode derivatives (``torch.func.jvp``, ``jacfwd``, ``forward_ad.dual_level``): autograd computes the
        tangents in its own kernels, below any operator a capture records, and ``jvp`` hands back new tensors for its
        outputs, so the diagram held the traced values of both as constants (the lowered module returned them
        whatever its input).  Under ``make_fx`` (``torch.func.linearize`` traces its derivative so) the tangents are
        operators of the graph it makes, which the recording sees when the graph runs."""
        from ncd.errors import TraceError

        if torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.PROXY) is not None:  # make_fx's (the recording
            level: int = enter_dual_level()  # type: ignore[no-untyped-call]  # is a mode of the pre-dispatch stack)
            return level
        raise TraceError(f"cannot trace {type(rec.root).__name__}: it computes forward-mode derivatives (torch.func.jvp,"
                         f" jacfwd or torch.autograd.forward_ad) at {user_line() or '?'}: autograd computes"
                         " their tangents in its own kernels, which no capture records (the diagram would hold the"
                         " traced values); compute the derivative with operators in the forward instead")

    forward_ad.enter_dual_level = dual_level_refused
    torch.Tensor.__deepcopy__ = copied_by_call  # type: ignore[method-assign]
    torch.Tensor.__copy__ = aliased_by_call  # type: ignore[attr-defined]
    torch.Tensor.data_ptr = data_ptr  # type: ignore[method-assign, assignment]
    torch.UntypedStorage.data_ptr = storage_ptr  # type: ignore[method-assign, assignment]
    torch.TypedStorage.data_ptr = typed_ptr  # type: ignore[method-assign]
    try:
        yield
    except TypeError:  # (``ctypes`` takes no _Address: "integer expected")
        if addressed:
            _Address(0, addressed[-1])._number()
        raise
    finally:
        forward_ad.enter_dual_level = enter_dual_level
        del torch.Tensor.data_ptr
        del torch.UntypedStorage.data_ptr
        torch.TypedStorage.data_ptr = typed  # type: ignore[method-assign]
        torch.Tensor.__deepcopy__ = deepcopy  # type: ignore[method-assign]
        if shallow is None:
            del torch.Tensor.__copy__  # type: ignore[attr-defined]
        else:
            torch.Tensor.__copy__ = shallow  # type: ignore[attr-defined]
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)
