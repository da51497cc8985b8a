"""A device mesh: named axes and their sizes, as in ``torch.distributed.device_mesh``.

>>> import ncd
>>> mesh = ncd.Mesh(dp=2, tp=4)
>>> mesh.world_size, mesh["tp"], str(mesh)
(8, 4, 'dp=2 × tp=4')
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ncd.errors import NCDError

__all__ = ["Mesh", "ShardingError"]


class ShardingError(NCDError, ValueError):
    """A placement cannot be honoured: it names the axis, the box and the sizes involved."""


class Mesh(Mapping[str, int]):
    """Named mesh axes in order (outermost first), e.g. ``Mesh(dp=2, tp=4)`` for 8 ranks."""

    def __init__(self, **axes: int) -> None:
        if not axes:
            raise ShardingError("Mesh needs at least one named axis, e.g. Mesh(tp=8)")
        for name, value in axes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ShardingError(f"Mesh: axis {name}={value!r} must be a positive whole number of ranks")
        self._axes = dict(axes)

    def __getitem__(self, name: str) -> int:
        if name not in self._axes:
            raise ShardingError(f"mesh axis {name!r} does not exist; the mesh is {self}")
        return self._axes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._axes)

    def __len__(self) -> int:
        return len(self._axes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._axes.values())

    @property
    def world_size(self) -> int:
        size = 1
        for value in self._axes.values():
            size *= value
        return size

    def items_tuple(self) -> tuple[tuple[str, int], ...]:
        return tuple(self._axes.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mesh) and self.items_tuple() == other.items_tuple()

    def __hash__(self) -> int:
        return hash(self.items_tuple())

    def __str__(self) -> str:
        return " × ".join(f"{k}={v}" for k, v in self._axes.items())

    def __repr__(self) -> str:
        return "Mesh(" + ", ".join(f"{k}={v}" for k, v in self._axes.items()) + ")"

    @staticmethod
    def parse(text: str) -> Mesh:
        """``"dp=2,tp=4"`` (the command line's form)."""
        axes: dict[str, int] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = item.partition("=")
            if not name or not value.strip().isdigit():
                raise ShardingError(f"mesh {text!r}: write axes as name=size separated by commas, e.g. 'dp=2,tp=4'")
            axes[name.strip()] = int(value)
        return Mesh(**axes)
