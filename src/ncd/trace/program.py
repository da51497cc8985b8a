"""A captured graph as a lowered program: the importer's node list in the representation lowering writes.

``ncd.trace`` captures a model as a list of :class:`~ncd.trace.capture.Node`\\ s (ATen calls on real
tensors).  :func:`captured_program` writes that list as an :class:`ncd.ir.program.Program`, the flat,
typed op list that ``to_source`` prints and ``to_torch`` compiles: each call becomes an op
(``kind="call"``, ``target`` the ATen overload, its arguments and outputs typed
:class:`~ncd.ir.program.Value`\\ s with their shapes), inputs the forward's arguments, parameters and
constants the class's parameters and buffers.  :func:`captured_state` gives their tensors, so the
printed program runs and computes what the model computed.

>>> import torch
>>> from ncd.trace.capture import capture
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
>>> captured = capture(model, (torch.randn(2, 4),), {})
>>> program = captured_program(captured)
>>> [op.target for op in program.top.ops]
['aten.linear.default', 'aten.relu.default']
>>> print(program.top.ops[-1].lines()[0])
relu_1 = torch.ops.aten.relu.default(linear_1)  # d0 d1 (2, 3)
>>> from ncd.torch.module import compile_source
>>> module = compile_source(program.to_source())["Captured"]()
>>> _ = module.load_state_dict(captured_state(captured))
>>> x = torch.randn(5, 4)
>>> torch.equal(module(x), model(x))
True
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch

from ncd.ir.axes import Axis
from ncd.ir.names import python_name
from ncd.ir.program import Function, Op, Program, Value, layout_comment
from ncd.prims.opaque_calls import ops_path
from ncd.trace.capture import Captured, Node

__all__ = ["captured_program", "captured_state"]


def _dtype(t: torch.Tensor) -> str:
    return "bool" if t.dtype == torch.bool else "float" if t.is_floating_point() or t.is_complex() else "index"


def _value(var: str, value: Any) -> Value:
    if isinstance(value, torch.Tensor):
        return Value(var, tuple(Axis(f"d{k}", int(n)) for k, n in enumerate(value.shape)), _dtype(value))
    return Value(var, (), "float")  # a tuple of tensors (read through getitem) or a number


class _Names:
    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.of: dict[int, str] = {}

    def __call__(self, node: Node, prefix: str = "") -> str:
        if id(node) not in self.of:
            base = python_name(node.name, "v")
            name, k = base, 2
            while name in self.taken:
                name, k = f"{base}_{k}", k + 1
            self.taken.add(name)
            self.of[id(node)] = prefix + name
        return self.of[id(node)]


def _text(arg: Any, names: _Names, reads: dict[int, Value], values: dict[int, Value]) -> str:
    """An argument as Python text; the values it names are collected into ``reads``."""
    if isinstance(arg, Node):
        reads[id(arg)] = values[id(arg)]
        return values[id(arg)].var
    if isinstance(arg, (list, tuple)):
        inner = ", ".join(_text(a, names, reads, values) for a in arg)
        return f"[{inner}]" if isinstance(arg, list) else f"({inner}{',' if len(arg) == 1 else ''})"
    if isinstance(arg, float) and not math.isfinite(arg):
        return f"float({str(arg)!r})"
    if isinstance(arg, torch.device):
        return f"torch.device({str(arg)!r})"
    if isinstance(arg, (torch.dtype, torch.layout, torch.memory_format)):
        return str(arg)
    if arg is None or isinstance(arg, (bool, int, float, str)):
        return repr(arg)
    raise TypeError(f"captured_program: cannot write the argument {arg!r:.60} of type {type(arg).__name__}")


def captured_program(captured: Captured, name: str = "Captured") -> Program:
    """The captured node list as a one-class :class:`~ncd.ir.program.Program` (see the module doc)."""
    function = Function(name, "a captured graph, one ATen call per op")
    names = _Names()
    values: dict[int, Value] = {}
    for node in captured.nodes:
        if node.kind == "input":
            values[id(node)] = _value(names(node), node.value)
            function.inputs.append(values[id(node)])
        elif node.kind in ("parameter", "constant"):
            var = names(node, "self.")
            values[id(node)] = _value(var, node.value)
            attr = var[len("self."):]
            if node.kind == "parameter":
                ctor = f"nn.Parameter(torch.empty({tuple(node.value.shape)}, dtype={node.value.dtype}))"
                function.init.append(f"self.{attr} = {ctor}")
            else:
                ctor = f"torch.empty({tuple(node.value.shape)}, dtype={node.value.dtype})"
                function.init.append(f"self.register_buffer({attr!r}, {ctor})")
            function.attributes[attr] = ctor
        else:
            reads: dict[int, Value] = {}
            out = _value(names(node), node.value)
            if node.target is operator.getitem:
                source, index = node.args
                code = f"{_text(source, names, reads, values)}[{index}]"
                function.ops.append(Op("expr", "operator.getitem", tuple(reads.values()), (out,), code,
                                       layout_comment(out.axes)))
            else:
                target = str(node.target)
                args = [_text(a, names, reads, values) for a in node.args]
                args += [f"{k}={_text(v, names, reads, values)}" for k, v in node.kwargs.items()]
                comment = layout_comment(out.axes) if isinstance(node.value, torch.Tensor) else ""
                function.ops.append(Op("call", target, tuple(reads.values()), (out,),
                                       f"{ops_path(target)}({', '.join(args)})", comment))
            values[id(node)] = out
    function.outputs = [values[id(ref)] for ref in captured.outputs if isinstance(ref, Node)]
    if len(function.outputs) != len(captured.outputs):
        raise TypeError("captured_program: an output of the captured graph is a constant, not a computed tensor")
    return Program([function])


def captured_state(captured: Captured) -> dict[str, torch.Tensor]:
    """The parameters' and constants' tensors, by the attribute names :func:`captured_program` gives them."""
    names = _Names()
    state: dict[str, torch.Tensor] = {}
    for node in captured.nodes:  # named in the same order as the program names them
        if node.kind in ("parameter", "constant"):
            state[names(node)] = node.value
        else:
            names(node)
    return state
