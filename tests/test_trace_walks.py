"""The module walks read from the recording's :class:`ncd.trace.walk._Walk` equal torch's own (``parameters()``,
``named_parameters``, ``modules()``), on models sharing modules and parameters and on classes overriding the walks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from ncd.trace.other_sizes import _state
from ncd.trace.params import unread
from ncd.trace.undo import Undo
from ncd.trace.walk import _Walk


class Shared(torch.nn.Module):
    """A block used twice, a weight tied across two layers, a buffer, a module held under two names."""

    def __init__(self) -> None:
        super().__init__()
        block = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
        self.first, self.again = block, block
        self.head = torch.nn.Linear(4, 4)
        self.tail = torch.nn.Linear(4, 4)
        self.tail.weight = self.head.weight
        self.nested = torch.nn.ModuleList([self.head, torch.nn.Linear(4, 2)])
        self.register_buffer("scale", torch.ones(4))


class OnlySome(Shared):
    """Its class hides a parameter from ``parameters()``: read through torch's methods, not the walk."""

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        return (p for p in super().parameters(recurse) if p.dim() == 2)


class Tells(torch.nn.Linear):
    """Modules equal by their shape (a hash of its own): ``modules()`` keeps one of each."""

    def __hash__(self) -> int:
        return hash((self.in_features, self.out_features))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tells) and (self.in_features, self.out_features) == (other.in_features, other.out_features)


def _models() -> list[torch.nn.Module]:
    told = torch.nn.Sequential(Tells(3, 3), Tells(3, 3), torch.nn.Linear(3, 3))
    return [Shared(), OnlySome(), told, torch.nn.Linear(2, 2)]


def test_state_from_the_walk_is_parameters_then_buffers_as_torch_gives_them() -> None:
    for model in _models():
        want = tuple(id(t) for t in (*model.parameters(), *model.buffers()))
        assert _state(model, _Walk(model)) == want
        assert _state(model) == want


def test_unread_from_the_walk_names_what_named_parameters_names() -> None:
    for model in _models():
        named = list(model.named_parameters(remove_duplicate=False))
        got = unread(model, ((named[0][1],),), _Walk(model))
        assert [(n, id(p)) for n, p in got] == [(n, id(p)) for n, p in named if p is not named[0][1]]


def test_undo_keeps_the_modules_modules_gives() -> None:
    for model in _models():
        want = list(model.modules())
        got = [m for m, *_ in Undo(model, _Walk(model)).tables]
        assert len(got) == len(want) and all(a is b for a, b in zip(got, want))


def test_distinct_is_named_modules() -> None:
    for model in _models():
        walk = _Walk(model)
        if walk.faithful:
            want = list(model.named_modules())
            got = walk.distinct()
            assert [p for p, _ in got] == [p for p, _ in want] and all(a is b for (_, a), (_, b) in zip(got, want))


def test_readers_of_the_walk_read_what_they_read_without_it() -> None:
    """The attributes put back, the experts looked at, the attributes kept live: the same with the shared walk as with
    each reader's own walk of torch's methods (and a class hashing its modules by shape keeps torch's reading)."""
    from ncd.trace.moe_dense import _readings
    from ncd.trace.undo import attributes_of

    for model in [*_models(), torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())]:
        model.note, model.cache = 3, {"k": [1]}  # type: ignore[assignment]
        walk = _Walk(model)
        a, b = attributes_of(model, walk), attributes_of(model)
        assert [(id(m), attrs, [(id(v), c) for v, c in got]) for m, attrs, got in a] == \
            [(id(m), attrs, [(id(v), c) for v, c in got]) for m, attrs, got in b]
        assert list(_readings(model, walk)) == list(_readings(model))


class Attached(torch.nn.Module):
    """Attaches a module holding a value of its input while it runs: the walk after the run must see it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        self.late = torch.nn.Module()
        self.late.seen = y.detach()  # type: ignore[assignment]
        return y * 2


def test_a_module_attached_while_the_model_runs_is_read_after_it() -> None:
    import warnings

    import ncd

    model = Attached().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, torch.randn(2, 3))
    assert any("late.seen" in str(w.message) for w in caught)
    x = torch.randn(2, 3)
    assert torch.allclose(d.to_torch()(x), model(x))


def test_lacks_answers_as_getattr() -> None:
    """:func:`ncd.trace.moe_routed._lacks` says a module lacks ``router`` exactly where ``getattr`` raises (a property,
    a class attribute, a submodule, a parameter, a buffer, an instance attribute, a class answering by ``__getattr__``)."""
    from ncd.trace.moe_routed import _lacks

    class Prop(torch.nn.Module):
        @property
        def router(self) -> int:
            return 1

    class Attr(torch.nn.Module):
        router = None

    class Asks(torch.nn.Module):
        def __getattr__(self, name: str) -> object:
            return 1 if name == "router" else super().__getattr__(name)

    sub, par, buf, inst = torch.nn.Module(), torch.nn.Module(), torch.nn.Module(), torch.nn.Module()
    sub.router = torch.nn.Linear(2, 2)
    par.router = torch.nn.Parameter(torch.ones(1))
    buf.register_buffer("router", torch.ones(1))
    inst.__dict__["router"] = 5
    for module in (Prop(), Attr(), Asks(), sub, par, buf, inst, torch.nn.Linear(2, 2), torch.nn.Module()):
        assert not (hasattr(module, "router") and _lacks(module, "router")), type(module).__name__
    # told without raising exactly when lookups are torch's own (a tracer of torch's that failed in another test of this
    # worker may have left Module.__getattr__ wrapped: then the slow way, never a wrong answer)
    assert _lacks(torch.nn.Linear(2, 2), "router") == _lacks(torch.nn.Module(), "router") == _plain_lookup(), \
        torch.nn.Module.__getattr__


def _plain_lookup() -> bool:
    """Whether ``torch.nn.Linear`` looks attributes up as torch's ``Module`` does, in this process now."""
    from ncd.trace.moe_routed import _is_torch_getattr

    cls = torch.nn.Linear
    return (_is_torch_getattr(cls.__getattr__) and cls.__getattribute__ is object.__getattribute__
            and not any("router" in vars(c) for c in cls.__mro__))


class Hides(torch.nn.Sequential):
    """A submodule whose class walks its own submodules (hides its last): the walk is torch's, not one of its own."""

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):  # type: ignore[no-untyped-def]
        yield from list(super().named_modules(memo, prefix, remove_duplicate))[:-1]


def test_the_walk_is_named_modules() -> None:
    """The walk's modules are ``named_modules(remove_duplicate=False)`` exactly (paths, order, repeats), also with a
    submodule's class walking its own way."""
    hiding = torch.nn.Sequential(torch.nn.Linear(2, 2), Hides(torch.nn.ReLU(), torch.nn.Linear(2, 2)))
    for model in [*_models(), hiding]:
        want = list(model.named_modules(remove_duplicate=False))
        got = _Walk(model).modules
        assert [p for p, _ in got] == [p for p, _ in want] and all(a is b for (_, a), (_, b) in zip(got, want))
    assert not _Walk(hiding).faithful and len(_Walk(hiding).modules) == 4


class Early(torch.nn.Linear):
    """Binds attributes before torch's own (object.__setattr__ before Module.__init__) and after them."""

    def __init__(self) -> None:
        object.__setattr__(self, "early", 1)
        super().__init__(2, 2)
        self.late, self._private = [torch.ones(1)], 3


def test_attributes_put_back_are_the_public_ones_in_order() -> None:
    """undo.attributes_of keeps each module's public attributes in its ``__dict__``'s order, whether the dict starts
    with torch's own attributes or not, and for modules of one class holding other names (the public names picked
    once a class, while a module's names are the same)."""
    from ncd.trace.undo import attributes_of

    more, again = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    more.note = 1  # type: ignore[assignment]
    model = torch.nn.Sequential(Early(), torch.nn.Linear(2, 2), more, again, Early())
    assert next(iter(vars(model[0]))) == "early" and next(iter(vars(model[1]))) == "training"
    for module, attrs, _ in attributes_of(model):
        want = [(k, v) for k, v in vars(module).items() if not k.startswith("_")]
        assert list(attrs.items()) == want


def test_lacks_knows_torch_s_getattr_even_when_imported_while_it_was_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ncd.trace`` wraps ``Module.__getattr__`` while it reads the order parameters are used in; ``moe_routed`` imported
    inside that window took the wrapper for torch's own (a CI worker then failed the test above): it tells torch's
    function by its name, so a module imported then still answers without raising once the wrapper is gone."""
    import importlib

    routed = importlib.import_module("ncd.trace.moe_routed")  # (``ncd.trace`` the attribute is the function)
    original = torch.nn.Module.__getattr__

    def reading(self: torch.nn.Module, name: str) -> object:
        return original(self, name)

    monkeypatch.setattr(torch.nn.Module, "__getattr__", reading)
    importlib.reload(routed)
    assert not routed._lacks(torch.nn.Linear(2, 2), "router")  # a wrapper: the slow way, never a wrong answer
    monkeypatch.undo()
    assert routed._lacks(torch.nn.Linear(2, 2), "router") == _plain_lookup(), torch.nn.Module.__getattr__
    assert not routed._lacks(torch.nn.Linear(2, 2), "weight")


class Tables(torch.nn.Module):
    """Embedding tables: one only looked up, one tied to an output head, one looked up by two embeddings, one a
    linear's weight reused as a table, an embedding holding a second parameter, a bag; shared twice over."""

    def __init__(self) -> None:
        super().__init__()
        self.lookup = torch.nn.Embedding(50, 4)
        self.tied = torch.nn.Embedding(30, 4)
        self.head = torch.nn.Linear(4, 30, bias=False)
        self.head.weight = self.tied.weight
        self.twice = torch.nn.Embedding(20, 4)
        self.again = torch.nn.Embedding(20, 4)
        self.again.weight = self.twice.weight
        self.proj = torch.nn.Linear(4, 7)
        self.reused = torch.nn.Embedding(7, 4)
        self.reused.weight = self.proj.weight
        self.extra = torch.nn.Embedding(9, 4)
        self.extra.register_parameter("gate", torch.nn.Parameter(torch.ones(4)))
        self.bag = torch.nn.EmbeddingBag(11, 4)
        self.shared = torch.nn.ModuleList([self.lookup, self.head, self.lookup])


def test_computing_from_the_walk_counts_what_counting_through_torch_counts() -> None:
    """:func:`ncd.trace.walk._computing` from the walk (a table counted when the walk holds it more often than lookups
    hold it as their weight) equals it read through torch's ``modules()`` and ``parameters()``, and the count by
    hand."""
    from ncd.trace.walk import _computing

    model = Tables()
    by_hand = 30 * 4 + 7 * 4 + 7 + 4  # the tied head, the linear's weight and bias, the extra gate
    assert _computing(model) == by_hand
    assert _computing(model, _Walk(model)) == by_hand
    for other in [*_models(), torch.nn.Sequential(Tables(), torch.nn.Linear(3, 3))]:
        assert _computing(other, _Walk(other)) == _computing(other)


def test_attributes_put_back_with_the_names_read_are_put_back_as_without_them() -> None:
    """undo.attributes_back given the names :func:`~ncd.trace.undo.snapshot` read (a module holding the same names, in
    order, is not searched for added ones) leaves every module as it leaves it without them: public attributes added
    dropped, rebound or dropped ones bound back, private ones left; and both give the same attributes bound back."""
    from ncd.trace.undo import attributes_back, snapshot

    def run(names: bool) -> tuple[list[dict[str, object]], list[tuple[str, object, object]]]:
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))
        model[0].note, model[1].tag, model[2].count = 1, "x", 7  # type: ignore[assignment]
        saved, held = snapshot(model)
        model[0].note = 2  # rebound: the same names
        model[1].extra = 5  # added
        del model[1].tag  # dropped
        model[1]._private = 3  # private: left
        model[2].count = 8  # rebound ...
        model[2].later = [1]  # ... and one added after it
        rebound = attributes_back(saved, names=held if names else None)
        return [dict(vars(m)) for m in model.modules()], [(type(m).__name__, k, (v, now)) for m, k, v, now in rebound]

    (fast, fast_rebound), (slow, slow_rebound) = run(True), run(False)
    assert [{k: v for k, v in d.items() if not k.startswith("_") or k == "_private"} for d in fast] == \
        [{k: v for k, v in d.items() if not k.startswith("_") or k == "_private"} for d in slow]
    assert [sorted(k for k in d if not k.startswith("_")) for d in fast][1:] == \
        [["in_features", "note", "out_features", "training"], ["inplace", "tag", "training"],
         ["count", "in_features", "out_features", "training"]]
    assert fast[2]["_private"] == 3 and fast[2]["tag"] == "x" and fast[3]["count"] == 7 and fast[1]["note"] == 1
    assert fast_rebound == slow_rebound == [("Linear", "note", (1, 2)), ("ReLU", "tag", ("x", None)),
                                            ("Linear", "count", (7, 8))]


def test_the_arity_read_once_a_class_is_each_module_s_own() -> None:
    """moe_readings._class_arity, the count of a forward's parameters read once for a class, is each module's own
    :func:`~ncd.trace.moe_readings._arity` wherever it gives one (and None where a module must be asked itself)."""
    import functools

    from ncd.trace.moe_readings import _arity, _class_arity

    class Three(torch.nn.Module):
        def forward(self, x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            return x

    class Stars(torch.nn.Module):
        def forward(self, x: torch.Tensor, *args: object, scale: float = 1.0, **kwargs: object) -> torch.Tensor:
            return x

    class Wrapped(torch.nn.Module):
        @functools.wraps(Three.forward)
        def forward(self, *args: object) -> torch.Tensor:
            return args[0]  # type: ignore[return-value]

    class Odd(torch.nn.Module):
        def __getattribute__(self, name: str) -> object:
            return super().__getattribute__(name)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    own = Three()
    own.forward = lambda x: x  # type: ignore[method-assign]  # (its own: not its class's)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), Three(), Stars(), Wrapped(), Odd(), own, torch.nn.LSTM(2, 2))
    for module in model.modules():
        arity = _class_arity(type(module))
        if arity is not None and "forward" not in vars(module):
            assert arity == _arity(module)
    assert [_class_arity(type(m)) for m in model] == [1, 3, 4, None, None, 3, 2]
    assert _arity(own) == 1


class Walks(torch.nn.Sequential):
    """Walks its submodules its own way: a walk of a model holding one is not faithful."""

    def named_modules(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return super().named_modules(*args, **kwargs)


def _read(walk: _Walk) -> tuple[object, ...]:
    return (walk.faithful, [(n, id(m)) for n, m in walk.modules], [(n, id(t)) for n, t in walk.parameters],
            [(n, id(t)) for n, t in walk.buffers])


def _changes() -> list[tuple[str, object]]:
    """What a call may do to a model's tree after a walk (:func:`_mutated`): each changes what a walk reads but one."""

    def rebind(m: Shared) -> None:
        m.head.bias = torch.nn.Parameter(m.head.bias.detach().clone())

    def register(m: Shared) -> None:
        m.head.register_buffer("late", torch.zeros(1))

    def drop(m: Shared) -> None:
        del m.scale

    def rename(m: Shared) -> None:  # the same objects, in the same order, under another name
        m.nested._modules = {"x" + k: v for k, v in m.nested._modules.items()}

    def rename_parameter(m: Shared) -> None:
        m.nested[1]._parameters = {"w" if k == "weight" else k: v for k, v in m.nested[1]._parameters.items()}

    def replace(m: Shared) -> None:
        m.nested[1] = torch.nn.Linear(4, 2)

    def unset(m: Shared) -> None:
        m.nested[1].bias = None

    def attach(m: Shared) -> None:
        m.late = torch.nn.ReLU()

    def reclass(m: Shared) -> None:
        m.first.__class__ = Walks  # (shared: ``again`` too)

    def buffer_value(m: Shared) -> None:  # a buffer rebound to another tensor: the walk holds the old one
        m.scale = torch.zeros(4)

    def attribute(m: Shared) -> None:  # a plain attribute: no walk reads it
        m.note = 3  # type: ignore[assignment]

    return [(f.__name__, f) for f in (rebind, register, drop, rename, rename_parameter, replace, unset, attach,
                                      reclass, buffer_value, attribute)]


@pytest.mark.parametrize("name, change", _changes())
def test_a_walk_holds_the_model_exactly_when_a_new_walk_reads_the_same(name: str, change: object) -> None:
    """:meth:`_Walk.holds` (the walk after a capture reused): true exactly when a walk of the model now reads the same
    modules, parameters and buffers under the same names, and faithfully."""
    model = Shared()
    walk = _Walk(model)
    assert walk.holds(model) and _read(_Walk(model)) == _read(walk)
    change(model)  # type: ignore[operator]
    now = _Walk(model)
    assert walk.holds(model) == (_read(now) == _read(walk)), name
    assert walk.holds(model) == (name == "attribute"), name
    assert now.holds(model) == now.faithful


def test_a_walk_of_another_model_or_an_unfaithful_one_holds_nothing() -> None:
    for model in _models():
        walk = _Walk(model)
        assert walk.holds(model) == walk.faithful
        assert not walk.holds(Shared())


class ReadsOnce(torch.nn.Module):
    """Reads a value of its input into Python unless exported (as transformers' padding warning does): its first
    recording fails and it is recorded again as exporting (``reads``: else it reads none); ``attach``: the failed run
    registers a module first."""

    def __init__(self, reads: bool = True, attach: bool = False) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.reads, self.attach = reads, attach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reads and not torch.compiler.is_exporting():
            if self.attach:
                self.extra = torch.nn.Linear(3, 3)
            if (x > 100).any().item():
                x = x * 0
        return self.lin(x) * 2


def _walks(monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module) -> tuple[int, torch.nn.Module]:
    """How many walks of ``model`` a recording makes (:class:`ncd.trace.recording._Recording`: none when given one it
    may read) while :func:`ncd.trace` traces it, and its lowered module."""
    import sys
    import warnings

    import ncd

    made = [0]
    init = _Walk.__init__

    def counted(self: _Walk, model: torch.nn.Module) -> None:
        made[0] += sys._getframe(1).f_code.co_filename.endswith("recording.py")
        init(self, model)

    monkeypatch.setattr(_Walk, "__init__", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(2, 3))
    monkeypatch.setattr(_Walk, "__init__", init)
    return made[0], d.to_torch()


def test_a_recording_again_after_a_failed_one_walks_again_only_when_the_model_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The recording after one that failed (undone) reads the first one's walk when the model holds just what it did
    (:meth:`_Walk.holds`): it walks the model no more than a model recorded once; one whose failed run registered a
    module is walked again, and its lowered module computes the model."""
    model = ReadsOnce().eval()
    once, lowered = _walks(monkeypatch, model)
    assert once == 0, once
    x = torch.randn(2, 3)
    assert torch.equal(lowered(x), model(x))
    model = ReadsOnce(attach=True).eval()
    again, lowered = _walks(monkeypatch, model)
    assert again > once
    assert torch.equal(lowered(x), model(x))
