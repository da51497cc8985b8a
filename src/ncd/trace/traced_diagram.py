"""A traced model as a diagram: :class:`TracedDiagram`, the block :func:`ncd.trace` returns, which also holds the
model's parameter values, so that ``to_torch()`` lowers a module computing what the model computed (at other sizes
where the boxes allow, checked against the model) and ``state_dict`` reads the traced values back under the lowered
module's names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ncd.errors import SizeError, TraceError
from ncd.ir.diagram import Block
from ncd.trace.keywords import TracedMode, TracedTypes, keywords
from ncd.trace.loading import _first_use, _state_for, _typed_as, load_parameters
from ncd.trace.model_names import by_model_name
from ncd.trace.params import HOLDER, freeze, hold, tie
from ncd.trace.shape_expressions import FLOAT_HELD, LEN_HELD

if TYPE_CHECKING:
    from collections.abc import Mapping

    import sympy
    import torch

    from ncd.ir.diagram import Diagram
    from ncd.trace.functions import Boxed


__all__ = ["TracedDiagram"]


@dataclass(frozen=True, repr=False, eq=False)
class TracedDiagram(Block):
    """A traced model's diagram (a block titled with the model's class) plus its parameter values.

    ``tensors`` holds, for every box that owns tensors (learned boxes and constants), the
    values traced from the model, in execution order.  :meth:`to_torch` lowers the diagram
    and copies them in; :meth:`state_dict` gives them keyed by the lowered module's names.
    ``opaque`` counts the operators drawn as opaque boxes, by ATen name; the lowered module
    is put in the mode (``training``) the model was traced in.  ``unused`` holds the model's
    parameters its forward did not read (by name): the lowered module keeps them under
    ``unused`` (:mod:`ncd.trace.params`), so it has the original's parameters.
    """

    tensors: tuple[tuple[torch.Tensor, ...], ...] = field(default=(), compare=False, hash=False)
    example: tuple[torch.Tensor, ...] = field(default=(), compare=False, hash=False)
    opaque: tuple[tuple[str, int], ...] = field(default=(), compare=False, hash=False)
    method: str = field(default="export", compare=False, hash=False)
    training: bool = field(default=False, compare=False, hash=False)
    #: the boxes holding tensors or calls of the traced sizes, each with the sizes it holds (``b``, ``t``)
    fixed: tuple[tuple[tuple[str, ...], str], ...] = field(default=(), compare=False, hash=False)
    constants: tuple[str, ...] = field(default=(), compare=False, hash=False)
    unused: tuple[tuple[str, torch.Tensor], ...] = field(default=(), compare=False, hash=False)
    #: the model and its call (:mod:`ncd.trace.other_sizes`): a module lowered at other sizes is checked against it
    origin: Any = field(default=None, compare=False, hash=False)
    #: the custom autograd.Functions its opaque boxes call (:class:`ncd.trace.functions.Boxed`): defined again where a
    #: pickled diagram is lowered
    functions: tuple[Boxed, ...] = field(default=(), compare=False, hash=False)
    #: ids of the ``tensors`` the forward made from no parameter (:func:`ncd.trace.params.constants`: constants even
    #: where their values equal a parameter's)
    made: frozenset[int] = field(default=frozenset(), compare=False, hash=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and (self.body, self.name, self.meta) == (other.body, other.name, other.meta)

    def __hash__(self) -> int:
        return hash((self.body, self.name, self.meta))

    @property
    def opaque_count(self) -> int:
        return sum(n for _, n in self.opaque)

    def as_block(self) -> Block:
        """The plain diagram, without the traced values (lowered at other sizes, unchecked: :mod:`ncd.torch.read_back`)."""
        return Block(self.body, self.name, self.meta)

    def _own_block(self) -> Block:
        """The plain diagram as this one lowers it: without the meta a diagram away from its model reads."""
        from ncd.torch.read_back import without

        return Block(self.body, self.name, without(self.meta))

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Diagram:
        """As :meth:`Block.subs`, its custom Functions' operators defined first (a diagram pickled in another process:
        a box is rebuilt, and checks its call, when its sizes are bound, as :meth:`to_source` does)."""
        from ncd.trace.functions import registered

        if mapping:
            registered(self.functions, self.name)
        bound = super().subs(mapping)
        if isinstance(bound, Block) and (bound.get("tied") is not None or bound.get("views") is not None):  # (ties
            # are restored on a diagram read back from JSON; a bound one lowers as before: ncd.backward's plan reads no
            # ties, and ncd.cost counts its parameters per box)
            return Block(bound.body, bound.name, tuple((k, v) for k, v in bound.meta
                                                       if k not in ("tied", "views", "shared")))
        return bound

    def to_torch(self, /, **sizes: int) -> torch.nn.Module:
        """Lower to an ``nn.Module`` holding the traced model's parameters."""
        with _random_kept():  # (torch's random state as it was: the layers made first draw their initial weights)
            return self._lowered(**sizes)

    def to_source(self, /, **sizes: int) -> str:
        """Readable PyTorch source for this diagram; sizes the traced model holds (its parameters' widths, a scale
        read from a size, a box recorded at the traced sizes) are refused at other values, as :meth:`to_torch` refuses
        them."""
        from ncd.torch.codegen import defaults_of, typed_source
        from ncd.trace.functions import registered

        other = self._held(sizes, defaults_of(self.as_block()))
        if other:  # checked against the model at these sizes, as to_torch checks (raises where they differ)
            self.to_torch(**sizes)
        registered(self.functions, self.name)
        return typed_source(self._own_block(), self.as_block(), sizes)  # in the model's floating-point types

    def _held(self, sizes: Mapping[str, int], defaults: Mapping[str, Any]) -> dict[str, int]:
        """The sizes given at values other than the traced ones; raises where the traced model holds one, or where a box
        holds tensors or calls recorded at the traced sizes (``fixed``): :meth:`to_torch` and :meth:`to_source` both."""
        other = {k: v for k, v in sizes.items() if defaults.get(k) != v}
        held = sorted(k for k in other if k in self.constants)
        if held:
            raise TraceError(f"cannot lower {self.name} at {', '.join(f'{k}={other[k]}' for k in held)}: the traced model"
                             f" holds {', '.join(f'{k}={defaults[k]}' for k in held)} in its parameters and scales")
        fixed = [(held, box) for held, box in self.fixed if set(held) & set(other)
                 and not (self._model() is not None and _checked_by_model(box))]  # (len(x), math.sqrt(t), a
        # comparison: checked by running the model, :meth:`_lowered`)
        self._fixed_in(fixed, other, defaults)
        if self._model() is None:
            self._branches(other, defaults)
        return other

    def _branches(self, other: Mapping[str, int], defaults: Mapping[str, Any]) -> None:
        """Raise where a comparison of sizes the model made (a guard, :mod:`ncd.trace.size_guards`) comes out otherwise
        at ``other`` sizes than traced and the model cannot be run there to check the branch it takes."""
        from ncd.trace.size_guards import GUARDS, flipped

        flips = flipped(self.get(GUARDS), defaults, other)
        if flips:
            raise TraceError(f"cannot lower {self.name} at {_sizes(other)} (traced at {_sizes(defaults, other)}):"
                             f" {'; '.join(flips[:4])}: it takes another branch there than the traced one, and "
                             + ("the traced model is not at hand to check it" if self._model() is None else
                                "the model could not be run there to check it (warned)")
                             + "; trace at the sizes you run at")

    def _fixed_in(self, fixed: list[tuple[tuple[str, ...], str]], other: Mapping[str, int],
                  defaults: Mapping[str, Any]) -> None:
        """Raise where ``fixed`` holds boxes recorded at the traced sizes of ``other``."""
        if fixed:
            sizes_held = sorted({k for held, _ in fixed for k in held if k in other})
            raise TraceError(f"cannot lower {self.name} at {({k: other[k] for k in sizes_held})} (traced at"
                             f" {({k: defaults[k] for k in sizes_held})}): these boxes hold tensors or calls"
                             " recorded at the traced sizes, which the trace cannot recompute at others (a table computed"
                             " in the model's forward from its input's shape is stored as its values):"
                             f" {'; '.join(box for _, box in fixed[:4])}; other sizes lower: "
                             f"{', '.join(sorted(set(defaults) - set(sizes_held))) or 'none'}")

    def _lowered(self, /, **sizes: int) -> torch.nn.Module:
        from ncd.torch.codegen import defaults_of
        from ncd.torch.module import _InputCheck, to_torch
        from ncd.trace.functions import registered

        registered(self.functions, self.name)  # a diagram pickled in another process: its Functions' operators
        defaults = defaults_of(self._own_block())
        other = self._held(sizes, defaults)
        try:
            module = to_torch(self._own_block(), check_inputs=True, **sizes)
        except SizeError as error:
            if not other or not set(other) <= set(defaults):  # a size the diagram has no symbol for: said as is
                raise
            raise TraceError(f"cannot lower {self.name} at {other} (traced at {({k: defaults.get(k) for k in other})}): a"
                             f" box holds a number of the traced sizes ({error}): a slice, write or view recorded at"
                             " the traced sizes; trace at the sizes you run at") from None
        module.train(self.training)  # the mode the model was traced in
        dtype = self._float_dtype()
        if dtype is not None:  # a model in float64 (or half precision) throughout: the lowered module too
            module.to(dtype)
        if other:  # the first-use order does not depend on sizes: read it at the traced ones
            at_trace = to_torch(self._own_block())
            at_trace.train(self.training)  # a batch norm in training mode reads one more buffer (its batch count)
            if dtype is not None:
                at_trace.to(dtype)
            order = _first_use(at_trace, self.example, self.tensors)
            state = _state_for(at_trace, self.tensors, self.example, order)
            held_here = dict(module.state_dict())
            wrong = [(k, tuple(v.shape), tuple(held_here[k].shape)) for k, v in state.items()
                     if k in held_here and held_here[k].shape != v.shape]
            if wrong:  # a learned box whose weight is sized by one of these sizes (Whisper's mel bins named t)
                k, was, now = wrong[0]
                raise TraceError(f"cannot lower {self.name} at {other} (traced at {({n: defaults[n] for n in other})}):"
                                 f" parameter {k} has shape {was} at the traced sizes but {now} at these; a parameter's"
                                 f" sizes cannot change ({len(wrong)} parameter(s) differ)")
            _typed_as(module, state)
            module.load_state_dict(state, strict=False)
            freeze(module, order, self.tensors, self._model(), self.made)
            tie(module, order, [t for group in self.tensors for t in group])  # tied weights stay tied at any size
        else:
            order = load_parameters(module, self.tensors, self.example, self._model(), self.made)
        hold(module, self.unused)
        by_model_name(module, self._model(), order, [t for group in self.tensors for t in group], self.unused)
        for hook in module._forward_pre_hooks.values():  # the model's inputs' axes exactly, no leading batch of copies
            if isinstance(hook, _InputCheck):
                hook.exact = True
        keywords(module, self.name, self.origin, len(self.dom))  # lowered(**inputs), as the model was called
        module.register_forward_pre_hook(TracedMode(self.name, self.training))  # .eval() changes nothing: said
        module.register_forward_pre_hook(TracedTypes(self.name, tuple((i, str(t.dtype)) for i, t in enumerate(self.example)
                                                                if t.is_floating_point())))  # .double(): said
        if other:
            from ncd.trace.other_sizes import check

            said = [box for held, box in self.fixed if set(held) & set(other) and _checked_by_model(box)]
            try:
                compared = check(self.name, self.origin, module, self._own_block(), self.example, dict(sizes), defaults,
                                 held=bool(said))
            except TraceError as error:  # differs there: name the lines that turned a changed size into a number
                from ncd.trace.size_guards import GUARDS, flipped

                said += flipped(self.get(GUARDS), defaults, other)
                if not said:
                    raise
                raise TraceError(f"{error}; held by the model's Python: {'; '.join(said[:4])}") from None
            if not compared:  # a len(x) of a changed size, held unless the model at these sizes agreed (B = len(x):
                # x.view(B, -1) lowers at every batch; 8 - len(ids[0]) differs from the model and is refused there)
                self._fixed_in([(held, box) for held, box in self.fixed if set(held) & set(other)], other, defaults)
                self._branches(other, defaults)
        return module

    def _model(self) -> torch.nn.Module | None:
        """The traced model, while the diagram holds it (not in one read back)."""
        model: torch.nn.Module | None = getattr(self.origin, "model", None)
        return model

    def _float_dtype(self) -> torch.dtype | None:
        """The one floating-point type of the traced values and inputs when it is not torch's default (else ``None``:
        the lowered module keeps torch's default type, and each value is cast to the type its tensor has there)."""
        return float_type(self.tensors, self.example)

    def state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The traced values keyed by the parameter and buffer names of ``module`` (lowered from this diagram); the
        unread parameters too when ``module`` keeps them (it was lowered by :meth:`to_torch`).  The order the module
        first reads them in is read in the mode the model was traced in (a module read back from JSON is lowered in
        training mode, where a batch norm reads one more buffer: its batch count), and its mode is put back; tied
        parameters get their one value under each name."""
        from ncd.errors import InputError

        was = module.training
        module.train(self.training)
        # a module whose tied parameters are one (lowered by to_torch) reads that one once: the order is read on this
        # diagram lowered untied (the names are the same)
        shared = len(list(module.named_parameters(remove_duplicate=False))) != len(list(module.parameters()))
        try:
            state = self._state_at_trace(module) if shared else _state_for(module, self.tensors, self.example)
        except InputError:  # lowered at other sizes (read back): the order read at the traced ones, as to_torch does
            state = self._state_at_trace(module)
        finally:
            module.train(was)
        if hasattr(module, HOLDER):
            state.update({f"{HOLDER}.{name}": p.detach() for name, p in self.unused})
        return _shared_names(module, state)

    def _state_at_trace(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """:meth:`state_dict` for a module lowered at other sizes than traced (it refuses the traced inputs): the
        first-use order read on this diagram lowered at the traced sizes (its names are the same at any size)."""
        from ncd.torch.module import to_torch

        at_trace = to_torch(self._own_block())
        at_trace.train(self.training)
        dtype = self._float_dtype()
        if dtype is not None:
            at_trace.to(dtype)
        own = module.state_dict()
        return {k: v for k, v in _state_for(at_trace, self.tensors, self.example).items() if k in own}


def _checked_by_model(box: str) -> bool:
    """Whether a ``fixed`` entry is a number the model's Python made from a size (``len(x)``, ``math.sqrt(t)``, a
    comparison of a wire the trace does not name) that a run of the model at other sizes checks."""
    from ncd.trace.size_guards import COMPARED_HELD

    return LEN_HELD in box or FLOAT_HELD in box or COMPARED_HELD in box


def _sizes(sizes: Mapping[str, Any], keys: Mapping[str, Any] | None = None) -> str:
    """``t=7, b=3`` (of ``keys``' names only, when given)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(sizes.items()) if keys is None or k in keys)


def _shared_names(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with a value for every name of ``module``'s state under which a tied parameter is held and ``state``
    has none: a parameter read as another view of a shared one (:func:`ncd.trace.params.tie`) is held as
    ``<box>.parametrizations.weight.original``, the shared parameter itself, whose value ``state`` has under its own
    name."""
    names: dict[int, str] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        if name in state:
            names.setdefault(id(p), name)
    for name, p in module.named_parameters(remove_duplicate=False):
        if name not in state and id(p) in names:
            state[name] = state[names[id(p)]]
    return state


def float_type(tensors: tuple[tuple[torch.Tensor, ...], ...], example: tuple[torch.Tensor, ...]) -> torch.dtype | None:
    """The one floating-point type of the traced values and inputs when it is not torch's default, else ``None``."""
    import torch

    kinds = {t.dtype for group in (*tensors, example) for t in group if t.is_floating_point() and t.dim()}
    # (a number held as a tensor of no axes, 1.0 in float32 beside float16 weights, decides no type: in torch's
    # promotion it takes the type of the tensors it meets)
    (kind,) = kinds if len(kinds) == 1 else (None,)
    return kind if kind is not None and kind != torch.get_default_dtype() else None


@contextlib.contextmanager
def _random_kept() -> Iterator[None]:
    """torch's global random state as it was (a lowered module's layers draw their placeholder weights)."""
    import torch

    state = torch.random.get_rng_state()
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
