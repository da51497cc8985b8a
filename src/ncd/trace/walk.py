"""The model's state read in one walk of its module tree (:class:`_Walk`), for the recording (:mod:`ncd.trace.record`)
and the readers after it: the arithmetic its parameters do (:func:`_computing`) and the parameters and buffers a traced
call rebinds (:func:`_warn_rebound`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from ncd.errors import user_stacklevel
from ncd.trace.tensors import _same


class _Walk:
    """The model's modules, parameters and buffers by name (``named_modules``, ``named_parameters``, ``named_buffers``,
    each with ``remove_duplicate=False``), read in one walk of the module tree: a recording asks for them several
    times (its module paths and state, the state bound before and after, the arithmetic of :func:`_computing`).

    A model whose class reads its state another way (overrides one of :data:`GATHERS`, or a module's class overrides
    ``named_modules`` or ``__hash__``, by which torch tells modules met twice apart) is asked through torch's methods,
    here and by every reader of the walk (``faithful`` is false)."""

    __slots__ = ("modules", "parameters", "buffers", "used", "faithful", "after", "_distinct")

    #: the methods by which torch gathers a model's modules, parameters and buffers
    GATHERS = ("modules", "named_modules", "_named_members", "parameters", "named_parameters", "buffers",
               "named_buffers")

    def __init__(self, model: torch.nn.Module) -> None:
        self.used = False  # a recording read it: another one walks again (the one before may have rebound state)
        #: the walk after the recording that read this one ran the model (:func:`ncd.trace.record_warnings.warn_recorded`), for
        #: the readers of the state it left (:func:`_warn_rebound`)
        self.after: _Walk | None = None
        self._distinct: list[tuple[str, torch.nn.Module]] | None = None
        cls, base = type(model), torch.nn.Module
        self.modules: list[tuple[str, torch.nn.Module]] = []
        _named(model, "", self.modules)  # (torch's named_modules while every class walks as torch's: checked below)
        self.parameters: list[tuple[str, torch.Tensor]] = []
        self.buffers: list[tuple[str, torch.Tensor]] = []
        plain = all(c.named_modules is base.named_modules and c.__hash__ is base.__hash__
                    for c in {id(type(m)): type(m) for _, m in self.modules}.values())  # (each class once)
        if not plain:  # a class walks its submodules, or tells modules apart, its own way: as torch gives them
            self.modules = list(model.named_modules(remove_duplicate=False))
        #: the walk holds the state as torch's own methods give it (no class reads it another way)
        self.faithful = plain and all(getattr(cls, name) is getattr(base, name) for name in self.GATHERS)
        if not self.faithful:
            self.parameters.extend(model.named_parameters(remove_duplicate=False))
            self.buffers.extend(model.named_buffers(remove_duplicate=False))
            return
        for prefix, module in self.modules:  # as torch's _named_members walks them
            held, kept = module._parameters, module._buffers
            if not held and not kept:  # (most modules: no name made)
                continue
            dot = f"{prefix}." if prefix else ""
            for k, v in held.items():
                if v is not None:
                    self.parameters.append((dot + k, v))
            for k, u in kept.items():
                if u is not None:
                    self.buffers.append((dot + k, u))

    def distinct(self) -> list[tuple[str, torch.nn.Module]]:
        """Each module once, where first met, with its path: as ``named_modules()`` gives them (a module met again is
        skipped with its submodules, all met already), for a faithful walk."""
        if self._distinct is None:
            first: dict[int, tuple[str, torch.nn.Module]] = {}
            for path, module in self.modules:
                first.setdefault(id(module), (path, module))
            self._distinct = list(first.values())
        return self._distinct

    def holds(self, model: torch.nn.Module) -> bool:
        """Whether a walk of ``model`` now would read what this faithful one holds: the same modules, parameters and
        buffers (the very objects) under the same names, in the same order, every class still walking as torch's.
        It makes no lists (~half a walk's time): the walk after a capture reuses the one its recording made after the
        model ran, proven unchanged since (nothing rebound, registered or dropped in between)."""
        if not self.faithful or any(getattr(type(model), n) is not getattr(torch.nn.Module, n) for n in self.GATHERS):
            return False
        at = [0, 0, 0]
        classes: dict[type[torch.nn.Module], None] = {}
        if not _as_walked(model, "", self, at, classes) or at != [len(self.modules), len(self.parameters), len(self.buffers)]:
            return False
        base = torch.nn.Module
        return all(c.named_modules is base.named_modules and c.__hash__ is base.__hash__ for c in classes)

    def bound(self) -> dict[str, torch.Tensor]:
        """The parameters and buffers by name (a buffer's name after a parameter's)."""
        return {**dict(self.parameters), **dict(self.buffers)}


class ClassNames:
    """The names of a module's ``__dict__`` that ``keep`` picks, picked once a class while its modules hold the same
    names in order (the modules of a class mostly do; one holding others is read anew)."""

    def __init__(self, keep: Callable[[str], bool]) -> None:
        self.keep = keep
        self.known: dict[type, tuple[list[str], tuple[str, ...]]] = {}

    def picked(self, module: torch.nn.Module, names: list[str]) -> tuple[str, ...]:
        """Those of ``names`` (``list(vars(module))``) that ``keep`` picks."""
        known = self.known.get(type(module))
        if known is None or known[0] != names:
            known = self.known[type(module)] = (names, tuple(k for k in names if self.keep(k)))
        return known[1]


def _named(module: torch.nn.Module, prefix: str, out: list[tuple[str, torch.nn.Module]]) -> None:
    """``module.named_modules(prefix=prefix, remove_duplicate=False)`` into ``out``, for modules whose classes walk as
    ``torch.nn.Module`` does: one call a module, not a generator resumed at every level above it (~2x faster)."""
    out.append((prefix, module))
    for name, child in module._modules.items():
        if child is not None:
            _named(child, f"{prefix}.{name}" if prefix else name, out)


def _as_walked(module: torch.nn.Module, prefix: str, walk: _Walk, at: list[int],
               classes: dict[type[torch.nn.Module], None]) -> bool:
    """Whether ``module``, under ``prefix``, and its submodules are where ``walk`` holds them, from the positions ``at``
    (of its modules, parameters and buffers; moved past them), with their parameters and buffers, as :class:`_Walk`
    reads them (:meth:`_Walk.holds`); their classes into ``classes``."""
    modules, i = walk.modules, at[0]
    if i >= len(modules) or modules[i][1] is not module or modules[i][0] != prefix:
        return False
    at[0] = i + 1
    classes[type(module)] = None
    held, kept = module._parameters, module._buffers
    if held or kept:
        dot = f"{prefix}." if prefix else ""
        for table, slot, read in ((held, 1, walk.parameters), (kept, 2, walk.buffers)):
            j = at[slot]
            for k, v in table.items():
                if v is not None:
                    if j >= len(read) or read[j][1] is not v or read[j][0] != dot + k:
                        return False
                    j += 1
            at[slot] = j
    for name, child in module._modules.items():
        if child is not None and not _as_walked(child, f"{prefix}.{name}" if prefix else name, walk, at, classes):
            return False
    return True


#: the arithmetic kind of a module's class (:func:`_kind`): a lookup table, a transposed convolution, or else
_KINDS: dict[type, int] = {}
_OTHER, _LOOKUP, _TRANSPOSED = 0, 1, 2


def _kind(cls: type) -> int:
    """Whether modules of ``cls`` look their weight up (an embedding), spread each position they read over several (a
    transposed convolution), or else: asked once a class."""
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _KINDS[cls] = _LOOKUP if issubclass(cls, (torch.nn.Embedding, torch.nn.EmbeddingBag)) else \
            _TRANSPOSED if issubclass(cls, torch.nn.modules.conv._ConvTransposeNd) else _OTHER
    return kind


def _computing(model: torch.nn.Module, walk: _Walk | None = None) -> int:
    """The model's parameters but the tables of its embeddings that no other layer uses (a tied output head does)."""
    tables: set[int] = set()
    used: set[int] = set()
    if walk is None or not walk.faithful:
        for module in model.modules():
            lookup = _kind(type(module)) == _LOOKUP
            for p in module.parameters(recurse=False):
                (tables if lookup and p is getattr(module, "weight", None) else used).add(id(p))
        return sum(p.numel() for p in model.parameters() if id(p) not in tables or id(p) in used)
    # a table is counted when something other than a lookup's weight holds it too: when the walk's parameters (every
    # module's, each time held) hold it more often than lookups hold it as their weight
    kinds = _KINDS
    weights: dict[int, int] = {}  # a lookup's weight: the times lookups hold it as one
    for _, module in walk.modules:
        cls = type(module)
        if (kinds[cls] if cls in kinds else _kind(cls)) == _LOOKUP:
            weight = getattr(module, "weight", None)
            for w in module._parameters.values():
                if w is not None and w is weight:
                    weights[id(w)] = weights.get(id(w), 0) + 1
    counted: dict[int, torch.Tensor] = {}  # each parameter once (tied ones under several names)
    held: dict[int, int] = {}  # the times the walk holds each table
    for _, t in walk.parameters:
        i = id(t)
        if i in weights:
            held[i] = held.get(i, 0) + 1
        counted[i] = t
    return sum(t.numel() for i, t in counted.items() if i not in weights or held[i] > weights[i])


def _spread(model: torch.nn.Module, walk: _Walk | None = None) -> int:
    """How many more positions the model's last layers compute on than its inputs hold, at most: the product of the
    strides of its transposed convolutions (each makes ``stride`` positions of every one it reads; 1: none).  A decoder
    of a few latent frames into audio or an image does most of its arithmetic on positions its input does not have."""
    spread = 1
    kinds = _KINDS
    modules = [m for _, m in walk.modules] if walk is not None and walk.faithful else model.modules()
    for module in modules:  # (a class's kind looked up, asked once a class)
        cls = type(module)
        if (kinds[cls] if cls in kinds else _kind(cls)) == _TRANSPOSED:
            stride = getattr(module, "stride", 1)
            for s in stride if isinstance(stride, tuple) else (stride,):
                if isinstance(s, int) and s > 1:
                    spread *= s
    return spread


def _bound_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers by name, as bound now."""
    return _Walk(model).bound()


def _warn_rebound(model: torch.nn.Module, before: dict[str, torch.Tensor], after: _Walk | None = None) -> None:
    """Warn if the traced call bound a parameter or buffer to another value (``self.steps = self.steps + 1``).

    A rebinding to an equal tensor (a cache rebuilt the same) says nothing; one to other values means the model's
    later calls differ from the lowered module, which computes the traced call from the values before it (``after``:
    the state read already since the call)."""
    now = after.bound() if after is not None else _bound_state(model)
    changed = []
    for name, old in before.items():
        new = now.get(name)
        if new is None or new is old:
            continue
        if new.device != old.device or new.is_meta or not _same(new, old):
            changed.append(name)
    blank = [name for name in changed if now[name].is_meta and not before[name].is_meta]
    for name in blank:  # recorded on the meta device: a new value of no entries (the model's next call would raise)
        _rebind(model, name, before[name])
    if changed:
        updated = [name for name in changed if name not in blank]
        said = [] if not updated else [f"{', '.join(updated)} updated as by its call"]
        if blank:
            said.append(f"{', '.join(blank)} recorded on the meta device, without values: put back as before it")
        warnings.warn(f"ncd.trace({type(model).__name__}): the model binds its {', '.join(changed)} to new values"
                      " while it runs; the diagram computes the traced call from their values before it and the"
                      " lowered module does not update them, so later calls of the model differ from it (and tracing"
                      f" ran the model: {'; '.join(said)})", RuntimeWarning, stacklevel=user_stacklevel())


def _rebind(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    """Bind the parameter or buffer ``name`` (a dotted path) of ``model`` to ``value`` again."""
    path, _, attr = name.rpartition(".")
    module = model.get_submodule(path) if path else model
    for table in (module._parameters, module._buffers):
        if attr in table:
            table[attr] = value  # type: ignore[assignment]
            return
