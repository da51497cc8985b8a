"""What one recording did to the model's parameters and buffers, undone when it fails.

A recording that fails (a value read into Python, the work budget, an operator with no meta kernel) is followed by
another run of the model: without undoing the first, a model that writes into its state (a step counter, running
statistics, ``w.mul_()`` under ``no_grad``, ``self.scale = self.scale * 0.5``) would be traced from the values its
failed runs left, and the user would hold a model run two or three times by one ``ncd.trace``.  The recorder
(:class:`ncd.trace.recording._Recording`) keeps, before the first write into each parameter or buffer, a copy of its
value (:meth:`Undo.keep`, only on calls that write in place), and on failure :meth:`Undo.undo` writes them back and
binds every parameter and buffer to the tensor it was bound to (dropping those the failed run registered); the
contents of the dicts and lists the modules hold (``self.cache[key] = t``, ``self.history.append(...)``) are put back
as :func:`ncd.trace.watched._state_kept` saw them when the trace began (:func:`kept`).
"""

from __future__ import annotations

import threading
from operator import is_not
from typing import TYPE_CHECKING, Any

import torch

from ncd.trace.walk import ClassNames

if TYPE_CHECKING:
    from ncd.trace.walk import _Walk

#: per thread, the modules' public attributes and the contents of the dicts, lists and sets they hold, as each
#: ``_state_kept`` around the running recording saw them (innermost last): a failed attempt puts its model's contents
#: back before the model runs again
_KEPT = threading.local()


def kept() -> list[list[tuple[torch.nn.Module, dict[str, Any], list[tuple[Any, Any]]]]]:
    """This thread's stack of snapshots (:data:`_KEPT`), each the list :func:`attributes_of` made."""
    stack = getattr(_KEPT, "stack", None)
    if stack is None:
        stack = _KEPT.stack = []
    return stack


_CONTAINERS = (dict, list, set)


def _contents(value: Any, found: list[tuple[Any, Any]], seen: set[int], depth: int = 0) -> None:
    """``value`` with a shallow copy of it, into ``found``, when it is a dict, list or set; and so the containers it
    holds (``self.cache = {"k": [], "v": []}``), three deep; tuples are looked into, not copied."""
    kind = type(value)
    if kind in _CONTAINERS:
        if id(value) in seen:
            return
        seen.add(id(value))
        found.append((value, dict(value) if kind is dict else list(value) if kind is list else set(value)))
    elif kind is not tuple:
        return
    if depth < 3 and len(value) <= 256:  # (a vocabulary held as a dict is copied, not looked into)
        for item in value.values() if kind is dict else value:
            if type(item) in _CONTAINERS or type(item) is tuple:
                _contents(item, found, seen, depth + 1)


def attributes_of(model: torch.nn.Module, walk: _Walk | None = None
                  ) -> list[tuple[torch.nn.Module, dict[str, Any], list[tuple[Any, Any]]]]:
    """Each module's public attributes, and the dicts, lists and sets they hold with shallow copies of them (``walk``:
    the model's modules read already)."""
    return snapshot(model, walk)[0]


def snapshot(model: torch.nn.Module, walk: _Walk | None = None
             ) -> tuple[list[tuple[torch.nn.Module, dict[str, Any], list[tuple[Any, Any]]]], list[list[str]]]:
    """:func:`attributes_of`, and the names each module's ``__dict__`` held, in order: :func:`attributes_back` given
    them puts back only the rebound attributes of a module whose names are the same (none added, none dropped)."""
    saved: list[tuple[torch.nn.Module, dict[str, Any], list[tuple[Any, Any]]]] = []
    held: list[list[str]] = []
    seen: set[int] = set()
    modules = [m for _, m in walk.distinct()] if walk is not None and walk.faithful else model.modules()
    # a name is public when it does not start with "_": exactly when it sorts before "_" or from "`" (the character
    # after "_") on; the public ones of a class's modules are picked once while their names are the same, in order
    publics = ClassNames(lambda k: k < "_" or k >= "`")
    containers = _CONTAINERS
    add, keep = saved.append, held.append
    for module in modules:  # (SeamlessM4T: 1,332 modules, most holding no container)
        values = vars(module)
        names = list(values)
        attrs = {k: values[k] for k in publics.picked(module, names)}
        contents: list[tuple[Any, Any]] = []
        for v in attrs.values():
            kind = type(v)
            if kind in containers or kind is tuple:
                _contents(v, contents, seen)
        add((module, attrs, contents))
        keep(names)
    return saved, held


def attributes_back(saved: list[tuple[torch.nn.Module, dict[str, Any], list[tuple[Any, Any]]]],
                    bindings: bool = True, names: list[list[str]] | None = None
                    ) -> list[tuple[torch.nn.Module, str, Any, Any]]:
    """Put back what :func:`attributes_of` saved: the public attributes (``bindings``: added ones dropped, rebound
    ones bound back) and the contents of the dicts, lists and sets; ``names``: each module's names as
    :func:`snapshot` read them (a module holding the same names, in order, added and dropped none).  Gives the
    attributes bound back, each as (module, name, its value saved, its value before it was bound back: None if
    dropped)."""
    rebound: list[tuple[torch.nn.Module, str, Any, Any]] = []
    for j, (module, attrs, contents) in enumerate(saved):
        if bindings:
            now = vars(module)
            if names is None or list(now) != names[j]:
                for k in [k for k in now if (k < "_" or k >= "`") and k not in attrs]:
                    delattr(module, k)
            for k, v in attrs.items():
                if (was := now.get(k)) is not v:
                    rebound.append((module, k, v, was))
                    now[k] = v
        for v, was in contents:
            if type(v) is list:
                v[:] = was
            else:
                v.clear()
                v.update(was)
    return rebound


#: operators that update running statistics (arguments 3 and 4) with a schema that does not say so
STATISTICS = frozenset({"batch_norm", "instance_norm", "native_batch_norm", "_batch_norm_impl_index"})

#: an operator -> the positions and names of the arguments it writes into (``Tensor(a!)``; none: ``()``)
_WRITES: dict[Any, tuple[tuple[int, str], ...]] = {}


#: an operator's id -> the operator and its arguments as (name, keyword only, default) read from its schema, the default
#: :data:`NO_DEFAULT` where it has none (:func:`arguments_of`); the entry holds the operator, so its id is not reused,
#: and is checked to be it
_ARGUMENTS: dict[int, tuple[Any, tuple[tuple[str, bool, Any], ...]]] = {}

#: the default of an argument without one
NO_DEFAULT: Any = object()


def arguments_of(func: Any) -> tuple[tuple[str, bool, Any], ...]:
    """``func``'s arguments as (name, keyword only, default or :data:`NO_DEFAULT`), read from its schema once per
    operator: each read makes torch's Python objects of the schema and of every argument anew (~2 µs, and on a first
    call in a process a page of memory written for each), and the recorder asks at every call of some operators."""
    found = _ARGUMENTS.get(id(func))
    if found is None or found[0] is not func:
        found = _ARGUMENTS[id(func)] = (func, tuple(
            (a.name, bool(a.kwarg_only), a.default_value if a.has_default_value() else NO_DEFAULT)
            for a in func._schema.arguments))
    return found[1]


def writes(func: Any) -> tuple[tuple[int, str], ...]:
    """The positions and names of the arguments ``func`` writes into: its ``self``, ``out=``, running statistics.

    A schema that is not mutable (``FunctionSchema.is_mutable``: an argument whose alias is written, read in C++) has
    none to find: its arguments are not read (each read makes torch's Python objects of every argument anew, ~35 µs an
    operator, paid at the first call of each operator in a process, most of a trace's operators)."""
    schema = func._schema
    statistics = func.overloadpacket.__name__ in STATISTICS
    if not statistics and not schema.is_mutable:
        _WRITES[func] = ()
        return ()
    arguments = schema.arguments
    found = tuple((i, a.name) for i, a in enumerate(arguments) if a.alias_info is not None and a.alias_info.is_write)
    if statistics and len(arguments) > 4:
        found += ((3, arguments[3].name), (4, arguments[4].name))
    _WRITES[func] = found
    return found


def writes_into(func: Any, where: tuple[tuple[int, str], ...], args: tuple[Any, ...], kwargs: dict[str, Any]
                ) -> list[torch.Tensor]:
    """The tensors a call of ``func`` writes into, at ``where`` (:func:`writes`): a statistics operator's running
    statistics only when its flag (argument 5, ``training`` or ``use_input_stats``) is on (off, as in a batch norm in
    eval mode, it reads them)."""
    found: list[torch.Tensor] = []
    if func.overloadpacket.__name__ in STATISTICS and not _updates_statistics(func, args, kwargs):
        where = tuple(w for w in where if w[0] not in (3, 4))
    for i, name in where:
        value = args[i] if i < len(args) else kwargs.get(name)
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(v, torch.Tensor):
                found.append(v)
    return found


def writes_of(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The tensors a call of ``func`` writes into (:func:`writes_into`), each with the tensor whose memory it is (a
    view's ``_base``, else itself): what a write's value before is kept of, by the recorder and the other-sizes
    check's runs."""
    where = _WRITES.get(func)
    if where is None:
        where = writes(func)
    return [(t, t if t._base is None else t._base) for t in writes_into(func, where, args, kwargs)] if where else []


def _updates_statistics(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a call of a :data:`STATISTICS` operator updates its running statistics: unless its flag (argument 5)
    is ``False`` itself (a flag it cannot read: taken to)."""
    arguments = arguments_of(func)
    if len(arguments) <= 5:
        return True
    flag = args[5] if len(args) > 5 else kwargs.get(arguments[5][0], True)
    return flag is not False


def _copy(table: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of a module's table (``dict.copy`` clones a plain dict's table whole: ~3x ``dict(table)``)."""
    return table.copy() if type(table) is dict else dict(table)


class Undo:
    """The model's parameters and buffers as bound before a recording, and the values of those it wrote into."""

    def __init__(self, model: torch.nn.Module, walk: _Walk | None = None) -> None:
        """``walk``: the model's modules read already (each module is kept once, where first met, as ``modules()``
        gives them; asked of ``modules()`` unless the walk is ``faithful`` to torch's own)."""
        if walk is None or not walk.faithful:
            modules = list(model.modules())
        else:
            modules = [m for _, m in walk.distinct()]
        #: every module with its attributes and its tables of parameters and buffers as they were (shallow copies):
        #: ``self.calls += 1`` (a Python number the forward reads) is undone too
        self.tables: list[tuple[torch.nn.Module, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
            (m, _copy(m.__dict__), _copy(m._parameters), _copy(m._buffers)) for m in modules]
        self.kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (the tensor, its value before a write)

    def keep(self, held: torch.Tensor) -> None:
        """Before a write into the parameter or buffer ``held``: its value, the first time."""
        if id(held) not in self.kept and held.device.type != "meta":
            with torch._C._DisablePythonDispatcher():
                self.kept[id(held)] = (held, held.detach().clone())

    def undo(self) -> None:
        """The parameters and buffers as before the recording: values written back, bindings restored."""
        for held, before in self.kept.values():
            held.detach().copy_(before)
        self.kept.clear()
        for module, attributes, parameters, buffers in self.tables:
            pairs: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = (
                (module.__dict__, attributes), (module._parameters, parameters), (module._buffers, buffers))
            for table, was in pairs:  # (bound in another order, same bindings: put back in the order they were)
                if table.keys() != was.keys() or any(map(is_not, table.values(), was.values())):
                    table.clear()
                    table.update(was)
        mine = {id(m) for m, _, _, _ in self.tables}  # the model, or a wrapper around it (its modules)
        for saved in reversed(kept()):  # the dicts and lists as the trace found them (bindings were put back above)
            if saved and id(saved[0][0]) in mine:
                attributes_back(saved, bindings=False)
                break
