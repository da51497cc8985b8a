"""The walk that lowers a diagram (:class:`Codegen`, an :class:`~ncd.ir.interpreter.Interpreter`): one class per block,
each box's rule in place or over a moved layout, recorded in the program as its schedule.  :mod:`ncd.torch.codegen`
holds the entry points (``to_source``, ``to_program``, ``lower``) and still answers ``Codegen``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import sympy

from ncd.errors import LoweringError
from ncd.ir.axes import Axis, Type
from ncd.ir.diagram import Block, Box, Diagram, Repeat, Weave
from ncd.ir.interpreter import Interpreter
from ncd.ir.names import class_name
from ncd.ir.program import Expr, Op, Program, Step, StepKind, Value, layout_comment
from ncd.ir.size import SymbolicSize, evaluate, symbol
from ncd.ir.weaving import lowers_in_place
from ncd.prims.linear import EinsumOp
from ncd.prims.structure import LoadOp, SaveOp
from ncd.torch.emitter import ClassEmitter, NamedSizes, identifier
from ncd.torch.fusion import fuse_attention
from ncd.torch.rules import NotWeaveAware, RuleContext, Woven, rule_for

__all__ = ["Codegen"]


class Codegen(Interpreter[Value, "ClassEmitter"]):
    """Walks a fully bound diagram and writes classes (an :class:`~ncd.ir.interpreter.Interpreter`)."""

    def __init__(self, named: NamedSizes | None = None) -> None:
        self.named = named
        self.classes: dict[Diagram, str] = {}
        self.class_names: set[str] = set()
        self.store_classes: set[str] = set()
        self.saved: dict[str, Type] = {}
        self.class_saves: dict[str, dict[str, Type]] = {}
        self.program = Program()
        #: the woven axes the enclosing class moved in front while a sub-diagram is lowered on its own axes
        self.frame: tuple[Axis, ...] = ()
        #: layouts chosen for learned maps, shared by every class (a choice may look across a block's boundary)
        self.rows: dict[int, tuple[str, ...]] = {}
        self.cols: dict[int, tuple[str, ...]] = {}
        self.program.rows, self.program.cols = self.rows, self.cols
        if named is not None:
            self.program.sizes = named.used

    # -- classes -------------------------------------------------------------------
    def class_for(self, body: Diagram, title: str) -> str:
        if body in self.classes:
            self.saved.update(self.class_saves[self.classes[body]])
            return self.classes[body]
        before = dict(self.saved)
        name = self._class_name(title)
        em = ClassEmitter(name, f"{title}: {body.dom} -> {body.cod}", rows=self.rows, cols=self.cols, named=self.named)
        inputs = [Value(em.fresh(_input_name(len(body.dom), j)), seg.axes, seg.dtype) for j, seg in enumerate(body.dom)]
        em.values.update((v.var, v) for v in inputs)
        em.function.inputs = inputs  # known while the body is lowered (an operand given by the caller keeps its layout)
        frame, self.frame = self.frame, ()
        try:
            outputs = self.lower(body, em, inputs)
        finally:
            self.frame = frame
        self.classes[body] = name
        self.class_saves[name] = {k: v for k, v in self.saved.items() if before.get(k) is not v}
        if em.uses_store:
            self.store_classes.add(name)
        em.function.inputs, em.function.outputs = inputs, outputs
        self.program.functions.append(em.function)
        return name

    def _class_name(self, title: str) -> str:
        base = class_name(title)
        name, k = base, 2
        while name in self.class_names:
            name, k = f"{base}{k}", k + 1
        self.class_names.add(name)
        return name

    # -- the walk (ncd.ir.interpreter: the traversal the cost analysis shares) -----------------
    def lower(self, node: Diagram, em: ClassEmitter, values: list[Value]) -> list[Value]:
        self._step(em, "enter", (), values, len(em.function.ops))
        results = self.run(node, values, em)
        self._step(em, "exit", results, (), len(em.function.ops))
        return results

    def _step(self, em: ClassEmitter, kind: StepKind, inputs: Sequence[Value], outputs: Sequence[Value], start: int,
              **what: Any) -> None:
        """Record what lowering did (:class:`~ncd.ir.program.Step`): the schedule the cost analysis reads."""
        em.function.steps.append(Step(kind, tuple(inputs), tuple(outputs), self.frame,
                                      ops=tuple(em.function.ops[start:]), **what))

    def _box_step(self, box: Box, em: ClassEmitter, values: list[Value], woven: tuple[Woven, ...],
                  lower: Callable[[], list[Value]], cod: Type | None = None) -> list[Value]:
        """Lower one box, recording it as a step (with the steps of any sub-diagram its rule lowered inline)."""
        start, mark = len(em.function.ops), len(em.function.steps)
        results = lower()
        inner = tuple(em.function.steps[mark:])
        del em.function.steps[mark:]
        self._step(em, "box", values, results, start, box=box, woven=woven, inner=inner, cod=cod)
        if isinstance(box.prim, EinsumOp):  # it may close an attention: the rewrite on the steps (ncd.torch.fusion)
            fused = fuse_attention(self, em)
            if fused is not None:
                return fused
        return results

    def rewrite(self, parts: Sequence[Diagram], k: int, values: list[Value], em: ClassEmitter
                ) -> tuple[int, list[Value]] | None:
        """No part is rewritten here; the layouts of learned maps around an attention are chosen
        (:func:`ncd.prims.patterns.chosen_rows`).  Fusion rewrites the program's steps (:meth:`_box_step`)."""
        from ncd.torch.fusion import chosen_columns, chosen_rows

        em.rows.update(chosen_rows(parts, k))
        em.cols.update(chosen_columns(parts, k))
        return None

    def box(self, box: Box, values: list[Value], woven: tuple[Weave, ...], em: ClassEmitter) -> list[Value]:
        recorded, cod = _record(woven), woven[0].cod if woven else box.cod  # the step keeps these, not the diagram's nodes
        return self._box_step(box, em, values, recorded,  # the interpreter asked in_place
                              lambda: self.lower_box(box, em, values, recorded, in_place=True, cod=cod), cod)

    def weave(self, inner: Diagram, woven: tuple[Weave, ...], values: list[Value], cod: Type, em: ClassEmitter
              ) -> list[Value]:
        if isinstance(inner, Box):
            return self.lower_box(inner, em, values, _record(woven), in_place=False)
        return self.lower_weave_generic(inner, em, values, _record(woven), cod)

    def block(self, node: Block, values: list[Value], em: ClassEmitter) -> list[Value]:
        start = len(em.function.ops)
        results = self.call_block(node.body, node.name, em, values)
        self._step(em, "call", values, results, start, callees=(self.classes[node.body],), names=(node.name,))
        return results

    def repeat(self, node: Repeat, values: list[Value], em: ClassEmitter) -> list[Value]:
        return self.lower_repeat(node, em, values)

    def call_block(self, body: Diagram, title: str, em: ClassEmitter, values: list[Value], attr: str | None = None) -> list[Value]:
        cls = self.class_for(body, title)
        target = attr or em.attr(title, f"{cls}()")
        return self._call(target, cls, em, values, body.cod, title)

    def _call(self, target: str, cls: str, em: ClassEmitter, values: list[Value], cod: Type, title: str) -> list[Value]:
        args = [v.var for v in values]
        if cls in self.store_classes:
            args.append("store=store")
            em.uses_store = True
        call = f"{target}({', '.join(args)})"
        reads = tuple(em.values.get(v.var, v) for v in values)
        # a block with no outputs (it only deletes wires) is called, nothing bound
        names = [em.fresh(title)] if len(cod) == 1 else [em.fresh(f"{title}_{j}") for j in range(len(cod))]
        outputs = tuple(Value(n, em.leading + seg.axes, seg.dtype) for n, seg in zip(names, cod))
        comment = layout_comment(em.leading + cod[0].axes) if len(cod) == 1 else ""
        em.emit(Op("block", target, reads, outputs, call, comment, callee=cls))
        return [Value(n, seg.axes, seg.dtype) for n, seg in zip(names, cod)]

    def lower_repeat(self, node: Repeat, em: ClassEmitter, values: list[Value]) -> list[Value]:
        start = evaluate(node.start, what=f"start of repeat {node.var}")
        stop = evaluate(node.stop, what=f"stop of repeat {node.var}")
        title = node.name or (node.body.name if isinstance(node.body, Block) else "layer")
        count: int | SymbolicSize = stop - start
        bodies = []
        names: list[str | None] = []  # the block each layer runs under
        begin = len(em.function.ops)
        if isinstance(count, SymbolicSize):  # a program on symbolic sizes: one class, ``count`` times
            if symbol(node.var) in node.body.free_symbols or not all(a.same(b) for a, b in zip(node.dom, node.cod)):
                raise LoweringError(f"repeat {node.var}: its layers differ, so their count {count} must be bound")
            bodies.append(node.body.body if isinstance(node.body, Block) else node.body)
            names.append(node.body.name if isinstance(node.body, Block) else None)
        for i in range(start, stop) if not bodies else ():
            body = node.iteration(i)
            bodies.append(body.body if isinstance(body, Block) else body)
            names.append(body.name if isinstance(body, Block) else None)
        class_title = node.body.name if isinstance(node.body, Block) else title
        classes = [self.class_for(b, class_title) for b in bodies]
        if len(set(classes)) == 1:
            layers_count = count if isinstance(count, SymbolicSize) else len(classes)
            modules = f"nn.ModuleList([{classes[0]}() for _ in range({layers_count})])"
        else:
            modules = "nn.ModuleList([" + ", ".join(f"{c}()" for c in classes) + "])"
        layers = em.attr(identifier(title) + "s" if not identifier(title).endswith("s") else identifier(title), modules)
        if len(set(classes)) == 1 and len(values) == len(node.cod) and all(
            a.same(b) for a, b in zip(node.dom, node.cod)
        ):
            loop_vars = [em.fresh(identifier(title) + ("" if len(values) == 1 else f"_{j}")) for j in range(len(values))]
            carried = [Value(var, em.leading + seg.axes, seg.dtype) for var, seg in zip(loop_vars, node.cod)]
            for out, v in zip(carried, values):
                em.emit(Op("alias", "", (em.values.get(v.var, v),), (out,), v.var))
            layer = em.fresh("layer")
            call_args = ", ".join(loop_vars) + (", store=store" if classes[0] in self.store_classes else "")
            if classes[0] in self.store_classes:
                em.uses_store = True
            lhs = f"{', '.join(loop_vars)}{',' if len(loop_vars) == 1 and len(node.cod) > 1 else ''}"
            runs = count.expr if isinstance(count, SymbolicSize) else sympy.Integer(len(classes))
            em.emit(Op("loop", layers, tuple(carried), tuple(carried),
                       f"for {layer} in {layers}:\n    {lhs} = {layer}({call_args})", callee=classes[0], count=runs))
            results = [Value(var, seg.axes, seg.dtype) for var, seg in zip(loop_vars, node.cod)]
        else:
            results = values
            for k, (cls, body) in enumerate(zip(classes, bodies)):
                results = self._call(f"{layers}[{k}]", cls, em, results, body.cod, title)
        label = node.name or (node.body.name if isinstance(node.body, Block) else node.var)
        self._step(em, "call", values, results, begin, callees=tuple(classes), names=tuple(names),
                   count=count.expr if isinstance(count, SymbolicSize) else None, label=label)
        return results

    def lower_box(self, box: Box, em: ClassEmitter, values: list[Value], woven: tuple[Woven, ...],
                  in_place: bool | None = None, cod: Type | None = None) -> list[Value]:
        """Lower one box (``cod``: its codomain with the woven axes in place, when the caller knows it)."""
        entry = rule_for(box.prim)
        self._track_store(box)
        em.uses_store = em.uses_store or isinstance(box.prim, (SaveOp, LoadOp))
        out_types = cod if cod is not None else _woven_cod(box, woven)
        if in_place if in_place is not None else lowers_in_place(box, woven):
            ctx = RuleContext(box, list(values), woven, [seg.axes for seg in out_types], em)
            em.current = box
            try:
                return self._bind_outputs(box, em, entry.fn(ctx), out_types)
            except NotWeaveAware:
                raise LoweringError(f"the lowering rule of {box.prim.op!r} refused the woven layout its primitive's"
                                    " weave_policy accepts") from None
            finally:
                em.current = None
        return self.lower_weave_generic(box, em, values, woven, out_types)

    def _track_store(self, box: Box) -> None:
        """Check statically that every load finds a save of the same type before it."""
        prim = box.prim
        if isinstance(prim, SaveOp):
            self.saved[_slot_name(prim.key, prim.index)] = prim.type
        elif isinstance(prim, LoadOp):
            slot = _slot_name(prim.key, prim.index)
            where = f" (built at {box.source})" if box.source else ""
            if slot not in self.saved:
                raise LoweringError(f"load {slot}{where}: nothing is saved under {slot!r} before it")
            if not self.saved[slot].same(prim.type):
                raise LoweringError(f"load {slot}{where}: {slot!r} holds '{self.saved[slot]}' but is loaded as '{prim.type}'")

    def _bind_outputs(self, box: Box, em: ClassEmitter, exprs: Sequence[str | Expr], out_types: Type) -> list[Value]:
        if len(exprs) != len(out_types):
            raise LoweringError(f"lowering rule for {box.prim.op} gave {len(exprs)} outputs, expected {len(out_types)}")
        hint = box.label.lower() if box.label else box.prim.hint()
        results = []
        for e, seg in zip(exprs, out_types):
            count = len(em.function.ops)
            var = em.assign(hint, e, seg.axes)
            made = em.function.ops[-1].outputs[0] if len(em.function.ops) > count else None  # the value the op binds
            # the step shares it when it says the same (no woven axes in front): a program keeps one value, not two
            results.append(made if made is not None and not em.leading and made.dtype == seg.dtype else
                           Value(var, seg.axes, seg.dtype))
        return results

    def lower_weave_generic(
        self, inner: Diagram, em: ClassEmitter, values: list[Value], woven: tuple[Woven, ...], out_types: Type
    ) -> list[Value]:
        """Move woven axes to the front, lower ``inner`` on its own axes, move them back."""
        begin = len(em.function.ops)
        moved: list[Value] = []
        unsqueezed = False
        kept = _zero_dim_kept(inner, woven)
        for j, (v, seg) in enumerate(zip(values, inner.dom)):
            if j in kept:  # a 0-dim operand of an entrywise box: broadcast (and promoted) by torch as it is
                moved.append(Value(v.var, seg.axes, seg.dtype))
                continue
            layout = _markers(len(seg), [w.dom_pos[j] for w in woven])
            carried = [w for w in range(len(woven)) if woven[w].dom_pos[j] is not None]
            var = v.var
            n = len(layout)
            src = [layout.index(("woven", w)) - n for w in carried]
            dst = [k - n for k in range(len(carried))]
            if src != dst:  # the comment shows the layout after the move: woven axes first
                front = tuple(woven[w].axis for w in carried) + seg.axes
                var = em.assign(f"{v.var}_moved", f"torch.movedim({var}, {tuple(src)}, {tuple(dst)})", front,
                                kind="view")
            present = list(carried)
            for w in range(len(woven)):
                if w in present:
                    continue
                index = sum(1 for p in present if p < w)
                total = len(present) + len(seg)
                present = sorted(present + [w])
                front = tuple(woven[p].axis.resized(1) if p == w or woven[p].dom_pos[j] is None else woven[p].axis
                              for p in present) + seg.axes
                var = em.assign(f"{v.var}_shared", f"{var}.unsqueeze({index - total - 1})", front, kind="view")
                unsqueezed = True
            moved.append(Value(var, seg.axes, seg.dtype))
        self._step(em, "weave", values, moved, begin, woven=woven)
        frame, self.frame = self.frame, self.frame + tuple(w.axis for w in woven)
        try:
            if isinstance(inner, Box):
                results = self._box_step(inner, em, moved, (), lambda: self._lower_moved(inner, em, moved, woven))
            else:
                outer = em.leading
                em.leading = outer + tuple(w.axis for w in woven)
                try:
                    results = self.lower(inner, em, moved)
                finally:
                    em.leading = outer
        finally:
            self.frame = frame
        begin = len(em.function.ops)
        out: list[Value] = []
        for j, (v, seg) in enumerate(zip(results, out_types)):
            layout = _markers(len(inner.cod[j]), [w.cod_pos[j] for w in woven])
            n = len(layout)
            var = v.var
            if unsqueezed:
                sizes = ", ".join(str(evaluate(w.axis.size)) for w in woven) + ", " + ", ".join(["-1"] * len(inner.cod[j]))
                front = tuple(w.axis for w in woven) + inner.cod[j].axes
                var = em.assign(f"{v.var}_full", f"{var}.expand(*{var}.shape[:-{n}], {sizes.rstrip(', ')})"
                                if n else var, front, kind="view")
            src = [k - n for k in range(len(woven))]
            dst = [layout.index(("woven", w)) - n for w in range(len(woven))]
            if src != dst:
                var = em.assign(v.var, f"torch.movedim({var}, {tuple(src)}, {tuple(dst)})", seg.axes, kind="view")
            out.append(Value(var, seg.axes, seg.dtype))
        self._step(em, "unweave", results, out, begin, woven=woven, cod=out_types)
        return out

    def _lower_moved(self, inner: Box, em: ClassEmitter, moved: list[Value], woven: tuple[Woven, ...]) -> list[Value]:
        """A box on its own axes, the woven ones moved in front of its operands."""
        entry = rule_for(inner.prim)
        self._track_store(inner)
        em.uses_store = em.uses_store or isinstance(inner.prim, (SaveOp, LoadOp))
        ctx = RuleContext(inner, moved, (), [seg.axes for seg in inner.cod], em)
        # comments show the woven axes in front, where they are while the box runs
        front_cod = Type(tuple(seg.with_axes(tuple(w.axis for w in woven) + seg.axes) for seg in inner.cod))
        em.current = inner
        try:
            return self._bind_outputs(inner, em, entry.fn(ctx), front_cod)
        finally:
            em.current = None


def _zero_dim_kept(inner: Diagram, woven: tuple[Woven, ...]) -> frozenset[int]:
    """The operands of ``inner`` lowered as they are, 0-dim: those with no axes of their own and none woven, of a box
    whose lowering broadcasts (:attr:`~ncd.ir.primitive.Primitive.zero_dim_operands`), when another operand has axes
    (a float32 number added to float16 values keeps them float16, as in the model; unsqueezed it would widen them)."""
    if not isinstance(inner, Box) or not type(inner.prim).zero_dim_operands:
        return frozenset()
    bare = frozenset(j for j, seg in enumerate(inner.dom)
                     if not seg.axes and all(w.dom_pos[j] is None for w in woven))
    return bare if len(bare) < len(inner.dom) else frozenset()


def _markers(n_own: int, positions: list[int | None]) -> list[tuple[str, int]]:
    layout: list[tuple[str, int]] = [("own", k) for k in range(n_own)]
    for w in reversed(range(len(positions))):
        if positions[w] is not None:
            layout.insert(positions[w], ("woven", w))  # type: ignore[arg-type]
    return layout


def _record(woven: tuple[Weave, ...]) -> tuple[Woven, ...]:
    return _records(tuple((w.axis, w.dom_pos, w.cod_pos) for w in woven)) if woven else ()


@functools.lru_cache(maxsize=4096)
def _records(keys: tuple[tuple[Axis, tuple[int | None, ...], tuple[int, ...]], ...]) -> tuple[Woven, ...]:
    """One shared record per distinct woven layout (the steps of a long chain keep one, not one per box)."""
    return tuple(Woven(*key) for key in keys)


def _woven_cod(box: Box, woven: tuple[Woven, ...]) -> Type:
    segs = list(box.cod)
    for w in reversed(woven):
        segs = [s.insert(p, w.axis) for s, p in zip(segs, w.cod_pos)]
    return Type(tuple(segs))


def _slot_name(key: str, index: object) -> str:
    return key if index is None else f"{key}_{evaluate(index, what=f'index of {key}')}"


def _input_name(count: int, j: int) -> str:
    return "x" if count == 1 else f"x{j}"
