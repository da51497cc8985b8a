"""The ``torch.export`` path of :func:`~ncd.trace.capture.capture`: a model the eager recording cannot stand for (or
``capture="export"``) is exported (non-strict); when export fails for a reason other than data-dependent control flow,
a dispatch-mode trace (``make_fx``, fake tensors) over the parameters is used instead.  Data-dependent control flow is
an :class:`~ncd.errors.TraceError`.  The graph is then run once on the real inputs (:func:`_evaluate`): every node
gets its value and whether it depends on the inputs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from typing import Any

import torch
import torch.fx

from ncd.errors import TraceError, user_stacklevel
from ncd.trace.capture import Captured, Node, _first_line, _strip, refs
from ncd.trace.detaching import detaches_seen, warn_detached
from ncd.trace.export_errors import (  # noqa: F401 - the refusals' old home re-exports them
    DATA_DEPENDENT,
    _branching,
    _data_dependent_message,
    _higher_order,
    _higher_order_called,
    _is_data_dependent,
    _line_of_trace,
    _own_failure,
    _raise_own_failure,
    _user_line,
)

#: the inputs that were one tensor passed more than once: their names, the tensors exported (the first, then the
#: copies) and their places among the flattened inputs
_Same = list[tuple[list[str], list[torch.Tensor], list[int]]]


def _distinct(args: tuple[Any, ...], kwargs: dict[str, Any], names: list[str]
              ) -> tuple[tuple[Any, ...], dict[str, Any], _Same]:
    """The inputs with a tensor passed more than once (``labels=input_ids``) a copy of its own at each place after the
    first, as the recording runs the model: each is an input of the diagram.  Given one tensor twice, torch.export
    makes one graph input read for both, and the lowered module ignored the other input (a model ``a * 2 - b`` traced
    on ``(x, x)`` and called on ``(x, y)`` computed ``2y - y``, with no word).  Also the groups of such inputs
    (``names``: each argument's, the recording's ``name_j`` for the tensors in a container).

    A model that tells the copies from one tensor (an ``is`` test, a write into one read through the other) computes
    otherwise on the traced call than the diagram: :func:`~ncd.trace.capture.capture` and :func:`_exported` say so."""
    leaves, spec = torch.utils._pytree.tree_flatten((tuple(args), dict(kwargs)))
    first: dict[int, int] = {}
    groups: dict[int, list[int]] = {}
    for k, leaf in enumerate(leaves):
        if isinstance(leaf, torch.Tensor):
            j = first.setdefault(id(leaf), k)
            if j != k:
                leaves[k] = leaf.detach().clone()
                groups.setdefault(j, [j]).append(k)
    if not groups:
        return args, kwargs, []
    named: list[str] = []  # each leaf's name
    for name, value in zip(names, [*args, *kwargs.values()]):
        inner = torch.utils._pytree.tree_leaves(value)
        if isinstance(value, torch.Tensor):
            named.append(name)
        else:
            tensors = 0
            for leaf in inner:
                named.append(f"{name}_{tensors}")
                tensors += isinstance(leaf, torch.Tensor)
    if len(named) != len(leaves):
        named = [f"input{k}" for k in range(len(leaves))]
    args, kwargs = torch.utils._pytree.tree_unflatten(leaves, spec)
    return args, kwargs, [([named[k] for k in ks], [leaves[k] for k in ks], ks) for ks in groups.values()]


#: torch's loggers that report, at ERROR level, a failure ncd itself reports (as a TraceError) or falls back from
_FAILURE_LOGGERS = ("torch._subclasses.fake_tensor", "torch.export._trace")


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


@contextlib.contextmanager
def _torch_errors_unlogged() -> Iterator[None]:
    """While export or make_fx run: torch's ERROR records of a failing call (a fake tensor's meta kernel logs its whole
    traceback, about 150 lines for one failed ``mm``) are dropped; the loggers' levels, handlers and other records are
    left as the user set them, and the filter is removed after."""
    loggers = [logging.getLogger(name) for name in _FAILURE_LOGGERS]
    for logger in loggers:
        logger.addFilter(_below_error)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_below_error)


@contextlib.contextmanager
def _without_partial_graph() -> Iterator[None]:
    """Around ``torch.export.export``: a failing export prints the partial graph it traced to stderr (once per
    wrapper); that print is dropped, and whatever else was written to stderr meanwhile (warnings) is passed on."""
    stderr, held = sys.stderr, io.StringIO()
    sys.stderr = held
    graph = None
    try:
        yield
    except BaseException as error:
        graph = getattr(error, "partial_fx_graph", None)
        raise
    finally:
        sys.stderr = stderr
        text = held.getvalue()
        if graph is not None:
            text = text.replace(f"{graph}\n", "")
        if text:
            stderr.write(text)


def _exported(model: torch.nn.Module, flat: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
              names: list[str], reads: Exception | None, same: _Same | None = None) -> Captured:
    seen: dict[str, str] = {}  # the model's stop-gradients, which export's graph does not hold
    try:
        with torch.no_grad(), _without_partial_graph(), detaches_seen(seen):
            ep = torch.export.export(flat, tuple(args), dict(kwargs), strict=False)
    except Exception as error:  # noqa: BLE001 - any export failure: classify, then fall back
        if _is_data_dependent(error):
            _raise_own_failure(model, flat, args, kwargs)
            raise TraceError(_data_dependent_message(model, error, reads)) from None
        try:
            state = {**dict(flat.named_parameters()), **dict(flat.named_buffers())}
            versions = {name: t._version for name, t in state.items()}
            with detaches_seen(seen):
                captured = _capture_make_fx(flat, args, kwargs, names)
            warn_detached(model, _undrawn(seen, captured))
            _warn_written(model, [n for n, t in state.items() if t._version != versions[n]],
                          {n for n, _ in flat.named_parameters()}, ran=True)  # (its graph ran on the model's tensors)
            return captured
        except TraceError:
            raise
        except Exception as second:  # noqa: BLE001
            for failure in (error, second):  # torch.cond / while_loop compiled its branches and that failed
                called = _higher_order_called(failure)
                if called is not None:
                    raise _branching(type(model).__name__, *called) from None
            _raise_own_failure(model, flat, args, kwargs)
            if _is_data_dependent(second) or reads is not None:  # the recording saw the model read values
                raise TraceError(_data_dependent_message(model, second, reads)) from None
            raise TraceError(
                f"cannot capture {type(model).__name__}: torch.export failed ({type(error).__name__}: {_first_line(error)})"
                f" and so did a dispatch trace ({type(second).__name__}: {_first_line(second)})"
            ) from None
    if reads is not None and _unbacked(ep):  # the value read sets a shape: export traced it symbolically, not us
        raise TraceError(f"cannot trace {type(model).__name__}: the shapes of its tensors depend on the values of the"
                         f" inputs ({reads}); a neural circuit diagram draws one fixed computation.")
    if _mutates(ep):  # a write in place (through a view): the graph's functional form, whose writes are scatters
        ep = _functional(model, ep)
    written = list(ep.graph_signature.buffers_to_mutate.values())  # (export ran on fake tensors: none was written)
    if same:
        _warn_shared_written(model, ep, same, len(torch.utils._pytree.tree_leaves((tuple(args), dict(kwargs)))))
    captured = _from_export(ep, flat, args, kwargs, names)
    warn_detached(model, _undrawn(seen, captured))
    _warn_written(model, written, {n for n, _ in flat.named_parameters()}, ran=False)
    return captured


def _functional(model: torch.nn.Module, ep: Any) -> Any:
    """The functional form of an exported graph that writes in place; refused, naming the model's line, when torch
    cannot make it (a write into a view whose entries overlap, ``x.unfold(0, 2, 1)[..., 0].mul_(2)``: functionalization
    bans it), where converting the graph call by call would lose the write."""
    try:
        return ep.run_decompositions({})
    except Exception as error:  # noqa: BLE001 - torch's functionalization refused the graph's writes
        line = _line_of_trace(str(error))
        raise TraceError(f"cannot capture {type(model).__name__}: it writes in place{f' at {line}' if line else ''}"
                         f" into a view that torch cannot turn into a functional graph ({type(error).__name__}:"
                         f" {_first_line(error)}); compute the written result out of place (torch.where, index_put,"
                         " torch.cat)") from None


def _undrawn(seen: dict[str, str], captured: Captured) -> dict[str, str]:
    """The stop-gradients of ``seen`` that export's (or make_fx's) graph does not hold: a ``detach()``, ``detach_()`` or
    ``.data`` whose line made a ``detach`` of floats in the graph is drawn (a ``detach`` box,
    :func:`ncd.trace.idioms_wires.alias`), not said."""
    from ncd.trace.registry import op_name

    drawn = {n.line for n in captured.nodes if n.kind == "call" and n.line and op_name(n.target)[0] == "aten.detach"
             and isinstance(n.value, torch.Tensor) and n.value.is_floating_point()}
    return {line: what for line, what in seen.items() if not (what in ("detach", "detach_", ".data") and line in drawn)}


def _warn_shared_written(model: torch.nn.Module, ep: Any, same: _Same, leaves: int) -> None:
    """Warn, as the recording does, that the model writes in place into an input that was one tensor passed more than
    once (``same``, of :func:`_distinct`): exported with a copy of each, the write is not seen through the others, so on
    the traced call (one tensor) the model computes otherwise than the diagram."""
    mutated = set(ep.graph_signature.user_inputs_to_mutate.values())
    if not mutated:
        return
    user = [spec for spec in ep.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    places = {k for k, spec in enumerate(user) if getattr(spec.arg, "name", None) in mutated}
    known = len(user) == leaves  # (one graph input per flattened input: the places are theirs)
    hit = [(group, [n for n, k in zip(group, ks) if k in places]) for group, _, ks in same if not known or places & set(ks)]
    if not hit:
        return
    import warnings

    pairs = "; ".join(" and ".join(group) for group, _ in hit)
    written = ", ".join(n for _, ns in hit for n in ns) or "one of them"
    warnings.warn(f"ncd.trace({type(model).__name__}): inputs that share memory ({pairs}: one tensor passed twice) and"
                  f" the model writes into {written} in place; the diagram takes its inputs as separate tensors (the"
                  " model exported with copies of them), so on this call's aliased inputs its result may differ from"
                  " the model's", RuntimeWarning, stacklevel=user_stacklevel())


def _warn_written(model: torch.nn.Module, written: list[str], learned: set[str], ran: bool) -> None:
    """Warn that the model writes into its parameters or buffers (``written``, by the names of ``_Flat``), as the
    dispatch recording does: the lowered module computes the traced call and never updates them."""
    if not written:
        return
    import warnings

    what = " and ".join(k for k, v in (("parameters", [n for n in written if n in learned]),
                                       ("buffers", [n for n in written if n not in learned])) if v)
    warnings.warn(f"ncd.trace({type(model).__name__}): the model writes into its {what} in place"
                  f" ({', '.join(_strip(n) for n in written)}); the diagram computes the traced call from their values"
                  " before it and the lowered module does not update them, so later calls of the model differ from it"
                  + (" (and tracing ran the model once: they were updated as by one call)" if ran else
                     " (tracing did not update them)"), RuntimeWarning, stacklevel=user_stacklevel())


def _mutates(ep: Any) -> bool:
    """Whether an exported graph (torch's training IR is not functional) writes into a tensor in place: converted call
    by call, the write would be lost (an opaque box computing the written view, its base left as it was)."""
    for node in ep.graph.nodes:
        schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
        if schema is not None and schema.is_mutable:
            return True
    return False


def _unbacked(ep: Any) -> bool:
    """Whether an exported graph has a size that depends on the values of the inputs (an unbacked symbol)."""
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

    return any(free_unbacked_symbols(n.meta["val"]) for n in ep.graph.nodes if n.meta.get("val") is not None)


def _stack_of(node: torch.fx.Node) -> tuple[tuple[str, str], ...]:
    stack = node.meta.get("nn_module_stack") or {}
    out = []
    for value in stack.values():
        path, cls = value
        path = _strip(str(path))
        name = cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
        if not path:
            continue
        out.append((path, name.rsplit(".", 1)[-1]))
    return tuple(out)


def _from_export(ep: Any, flat: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], names: list[str]) -> Captured:
    sig = ep.graph_signature
    params = dict(sig.inputs_to_parameters)
    buffers = dict(sig.inputs_to_buffers)
    consts = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}))
    state: dict[str, torch.Tensor] = dict(flat.named_parameters(remove_duplicate=False))
    state.update(dict(flat.named_buffers(remove_duplicate=False)))
    user = [spec for spec in sig.input_specs if spec.kind.name == "USER_INPUT"]
    flat_inputs = [x for x in torch.utils._pytree.tree_leaves((args, kwargs))]
    user_values = {spec.arg.name: v for spec, v in zip(user, flat_inputs)}
    user_names = {spec.arg.name: (names[k] if k < len(names) else spec.arg.name) for k, spec in enumerate(user)}
    nodes: list[Node] = []
    env: dict[str, Node] = {}
    outputs: list[Any] = []
    for fx_node in ep.graph.nodes:
        if fx_node.op == "placeholder":
            key = fx_node.name
            if key in params:
                node = Node(key, "parameter", value=state[params[key]].detach(), source=_strip(params[key]))
            elif key in buffers:
                node = Node(key, "constant", value=state[buffers[key]].detach(), source=_strip(buffers[key]))
            elif key in consts:
                node = Node(key, "constant", value=ep.constants[consts[key]].detach(), source=consts[key])
            else:
                value = user_values.get(key)
                node = Node(key, "input" if isinstance(value, torch.Tensor) else "constant", value=value,
                            source=user_names.get(key, key), live=isinstance(value, torch.Tensor))
            env[key] = node
            nodes.append(node)
        elif fx_node.op == "call_function":
            node = Node(fx_node.name, "call", fx_node.target, _map(fx_node.args, env), _map(fx_node.kwargs, env),
                        stack=_stack_of(fx_node), line=_line_of_trace(fx_node.meta.get("stack_trace")))
            env[fx_node.name] = node
            nodes.append(node)
        elif fx_node.op == "output":
            outputs = list(_map(fx_node.args[0], env))
            kinds = [spec.kind.name for spec in sig.output_specs]
            if len(kinds) == len(outputs):  # a functional graph returns the buffers it wrote first: not the model's
                outputs = [o for o, kind in zip(outputs, kinds) if kind == "USER_OUTPUT"]
        elif fx_node.op == "get_attr" and any(u.op == "call_function" for u in fx_node.users):
            call = next(u for u in fx_node.users if u.op == "call_function")  # a branch or body of torch.cond, ...
            what, line = getattr(call.target, "__name__", str(call.target)), _line_of_trace(call.meta.get("stack_trace"))
            raise _branching(type(getattr(flat, "model", flat)).__name__, what, line)
        else:
            raise TraceError(f"cannot import graph node {fx_node.name!r} of kind {fx_node.op!r}")
    _evaluate(nodes, getattr(flat, "model", None))
    return Captured(nodes, outputs, "export", [n.source for n in nodes if n.kind == "input"])


def _capture_make_fx(flat: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], names: list[str]) -> Captured:
    from torch.fx.experimental.proxy_tensor import make_fx

    state = {**dict(flat.named_parameters()), **dict(flat.named_buffers())}
    keys = list(state)

    def run(tensors: list[torch.Tensor], *inputs: Any) -> Any:
        return torch.func.functional_call(flat, dict(zip(keys, tensors)), inputs[: len(args)],
                                          dict(zip(kwargs, inputs[len(args):])))

    with torch.no_grad():
        gm = make_fx(run, tracing_mode="fake")([state[k].detach() for k in keys], *args, *kwargs.values())
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    nodes: list[Node] = []
    env: dict[str, Node] = {}
    outputs: list[Any] = []
    inputs = list(args) + list(kwargs.values())
    param_names = {name for name, _ in flat.named_parameters()}
    for k, fx_node in enumerate(placeholders):
        if k < len(keys):
            kind = "parameter" if keys[k] in param_names else "constant"
            node = Node(fx_node.name, kind, value=state[keys[k]].detach(), source=_strip(keys[k]))
        else:
            value = inputs[k - len(keys)]
            is_tensor = isinstance(value, torch.Tensor)
            node = Node(fx_node.name, "input" if is_tensor else "constant", value=value,
                        source=names[k - len(keys)] if k - len(keys) < len(names) else fx_node.name, live=is_tensor)
        env[fx_node.name] = node
        nodes.append(node)
    for fx_node in gm.graph.nodes:
        if fx_node.op == "call_function":
            node = Node(fx_node.name, "call", fx_node.target, _map(fx_node.args, env), _map(fx_node.kwargs, env))
            env[fx_node.name] = node
            nodes.append(node)
        elif fx_node.op == "output":
            outputs = list(torch.utils._pytree.tree_leaves(_map(fx_node.args[0], env)))
        elif fx_node.op == "get_attr":
            node = Node(fx_node.name, "constant", value=getattr(gm, str(fx_node.target)), source=str(fx_node.target))
            env[fx_node.name] = node
            nodes.append(node)
    _evaluate(nodes, getattr(flat, "model", None))
    return Captured(nodes, outputs, "make_fx", [n.source for n in nodes if n.kind == "input"])


def _map(value: Any, env: dict[str, Node]) -> Any:
    if isinstance(value, torch.fx.Node):
        return env[value.name]
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, env) for v in value) if isinstance(value, tuple) else [_map(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _map(v, env) for k, v in value.items()}
    return value


def _values(value: Any) -> Any:
    if isinstance(value, Node):
        return value.value
    if isinstance(value, tuple):
        return tuple(_values(v) for v in value)
    if isinstance(value, list):
        return [_values(v) for v in value]
    if isinstance(value, dict):
        return {k: _values(v) for k, v in value.items()}
    return value


def _evaluate(nodes: list[Node], model: torch.nn.Module | None = None) -> None:
    """Run the graph on the real inputs: every node gets its value and its liveness.  A call that fails on them (the
    model itself fails on these inputs: export and make_fx run on fake tensors, which need not check what the kernel
    does, such as a float weight times integer inputs) raises a ``TraceError`` naming the operator and the line."""
    with torch.no_grad():
        for node in nodes:
            if node.kind != "call":
                continue
            target = node.target
            try:
                node.value = target(*_values(node.args), **_values(node.kwargs))
            except Exception as error:  # noqa: BLE001 - the model's own failure, named (not an internal error of ncd)
                where = f" at {node.line}" if node.line else ""
                modules = f" in {node.stack[-1][0]}: {node.stack[-1][1]}" if node.stack else ""
                raise TraceError(f"cannot trace {type(model).__name__ if model is not None else 'the model'}: its"
                                 f" {getattr(target, '__name__', target)} call{where}{modules} fails on the given"
                                 f" inputs ({type(error).__name__}: {_first_line(error)}); check that the model runs"
                                 " on them (their shapes and dtypes)") from None
            node.live = any(r.live for r in refs((node.args, node.kwargs)))
