"""Equality and repr over named fields, for the few value classes on the start-up path of
extract and make (formats/index.Index, operations/assemble.ExtractStats).

Why not ``dataclasses``: each decorated class compiles generated source when its module is
imported (about half a millisecond a class), on a path where every millisecond before the
workers start counts (issue 14). ``dataclasses`` itself is still imported on that path
(config, stores/options), so only that per-class cost is saved. A class lists its fields
once, in ``_FIELDS`` (constructor order), and may use it as its ``__slots__``. No page: see
this docstring.
"""

from __future__ import annotations


class FieldsEqual:
    """Instances equal when they are of the same class with equal ``_FIELDS`` values, shown
    as ``Name(field=value, ...)``; unhashable, as a mutable dataclass is."""

    __slots__ = ()
    _FIELDS: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, FieldsEqual)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__name__}({values})"
