"""A diagram's sizes by name: which names a call may bind, the defaults a model block records, binding them all.

``Diagram.bind`` substitutes sizes; these are the checks and steps around it that the
interpreters share (``to_torch``/``to_source``, ``ncd.cost``, ``ncd.decode``, the command line):
a misspelt size keyword is refused naming the diagram's sizes, and a diagram is lowered only
once every size is a whole number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ncd.errors import SizeError
from ncd.ir.size import SizeLike

if TYPE_CHECKING:
    from ncd.ir.diagram import Diagram

__all__ = ["check_size_names", "check_option_names", "bind_known", "defaults_of", "bind_all"]


def check_size_names(diagram: Diagram, names: Iterable[str], what: str, known: Iterable[str] = ()) -> None:
    """Refuse size keywords that name no size of ``diagram`` (a misspelt ``heads=4`` would silently do nothing).

    >>> import ncd
    >>> check_size_names(ncd.Linear("m -> h k"), ["h", "heads"], "to_torch")
    Traceback (most recent call last):
    ncd.errors.SizeError: to_torch: heads is not a size of the diagram; its sizes are h, k, m

    A name bound in the diagram is refused at any other value, also when its axes have several sizes (a strided
    convolution's input ``t:8`` and output ``t:2``: any value but the inputs' 8), rather than when the lowered module
    is called:

    >>> check_size_names(ncd.Linear("m:8 -> m:2"), {"m": 9}, "to_torch")
    Traceback (most recent call last):
    ncd.errors.SizeError: to_torch: axis m has the sizes 2, 8 in the diagram (8 on its inputs), so m=9 cannot apply

    So is a name sized by the others (``c:a+b``) at a value the others do not give it:

    >>> check_size_names(ncd.Concat("a, b -> c"), {"a": 1, "b": 1, "c": 5}, "to_torch")
    Traceback (most recent call last):
    ncd.errors.SizeError: to_torch: axis c has size 2 in the diagram, so c=5 cannot apply
    """
    names = dict.fromkeys(names) if not isinstance(names, Mapping) else names
    valid = {str(s) for s in diagram.free_symbols} | set(known)
    if all(n in valid for n in names):
        return
    fixed: dict[str, set[Any]] = {}
    for node in diagram.walk():
        for seg in (*node.dom, *node.cod):
            for a in seg.axes:
                fixed.setdefault(a.name, set()).add(a.size)
    unknown = [n for n in names if n not in valid and n not in fixed]
    bound = {s: names[str(s)] for s in diagram.free_symbols if isinstance(names.get(str(s)), int)}
    for n, value in names.items():
        # an axis sized by the others (Concat's c:a+b, Unbind's m:h*k) at the sizes given with it
        sizes = {s.subs(bound) if bound and not s.is_number else s for s in fixed.get(n, set())}
        if n in valid or value is None or not sizes or not all(s.is_number for s in sizes):
            continue
        given = {a.size.subs(bound) if bound and not a.size.is_number else a.size
                 for seg in diagram.dom for a in seg.axes if a.name == n}  # the inputs' (a call must match)
        if value in (given or sizes):
            continue
        if len(sizes) == 1:
            raise SizeError(f"{what}: axis {n} has size {next(iter(sizes))} in the diagram, so {n}={value} cannot apply")
        on_inputs = f" ({', '.join(str(s) for s in sorted(given, key=int))} on its inputs)" if given else ""
        raise SizeError(f"{what}: axis {n} has the sizes {', '.join(str(s) for s in sorted(sizes, key=int))} in the"
                        f" diagram{on_inputs}, so {n}={value} cannot apply")
    if unknown:
        raise SizeError(f"{what}: {', '.join(sorted(unknown))} {'is' if len(unknown) == 1 else 'are'} not a size of the"
                        f" diagram; its sizes are {', '.join(sorted(valid)) or 'all bound'}")


def check_option_names(diagram: Diagram, what: str, options: Mapping[str, Any], known: Iterable[str] = ()) -> None:
    """Refuse a size of ``diagram`` named like one of the options of the call ``what`` that takes sizes as keywords:
    ``ncd.cost(d, training=4)`` would set the option, not the size (nor could the size be passed at all).
    ``options`` are the options whose values the call would read (``known``: sizes bound otherwise, as defaults).

    >>> import ncd
    >>> try:
    ...     check_option_names(ncd.Linear("m -> training"), "cost", {"training": 4})
    ... except ncd.SizeError as error:
    ...     print(str(error)[:64])
    cost: the diagram has a size named training, which is also cost'
    """
    if not options:
        return
    free = {str(s) for s in diagram.free_symbols} - set(known)
    for name, value in options.items():
        if name in free:
            raise SizeError(f"{what}: the diagram has a size named {name}, which is also {what}'s option ({name}={value!r});"
                            f" bind the size first (diagram.bind({name}=...)) and call {what} on the bound diagram")


def bind_known(diagram: Diagram, sizes: Mapping[str, SizeLike]) -> Diagram:
    """Bind those of ``sizes`` that are unbound sizes of ``diagram``, ignoring the rest (for callers that check the
    names themselves, or give one set of sizes to several diagrams; :meth:`Diagram.bind` refuses unknown names)."""
    free = {str(s) for s in diagram.free_symbols}
    known = {k: v for k, v in sizes.items() if k in free}
    return diagram.bind(**known) if known else diagram


def defaults_of(diagram: Diagram) -> dict[str, int]:
    """Default sizes recorded on a top-level block (``meta['defaults']``)."""
    from ncd.ir.diagram import Block

    if isinstance(diagram, Block):
        return dict(diagram.get("defaults", ()))
    return {}


def bind_all(diagram: Diagram, sizes: Mapping[str, int]) -> Diagram:
    """Bind defaults then ``sizes``; every size must end up a whole number."""
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SizeError(f"size {key}={value!r} must be a positive whole number")
    check_size_names(diagram, sizes, "cannot lower", defaults_of(diagram))
    merged = {**defaults_of(diagram), **sizes}
    bound = bind_known(diagram, merged)  # the names were checked above (defaults may name sizes bound already)
    free = bound.free_symbols
    if free:
        names = ", ".join(sorted(str(s) for s in free))
        raise SizeError(f"cannot lower '{bound.dom}' -> '{bound.cod}': sizes {names} are not bound; pass them as keywords")
    from ncd.limits import check_diagram

    check_diagram(bound)  # repetition counts and the memory budget, before anything is allocated
    return bound
