"""Typed surface of the native id-map changes (src/fastbook/log/_idmaps.pyx), used by Replica.apply_batch;
the same constructor and semantics as the Python reference replica._MapChanges."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

from fastbook.log.replica import Replica

_Ints = Sequence[int] | npt.NDArray[np.integer]

# A cdef class lays out its own C struct: a disjoint base (it can be subclassed, unlike the engine's).
@disjoint_base
class MapChanges:
    @property
    def replica(self) -> Replica: ...
    @property
    def next_new(self) -> int:
        """Index of the first new not yet in the maps."""
        ...
    @property
    def next_gone(self) -> int:
        """Index of the first gone order not yet taken out of the maps."""
        ...
    def __init__(
        self,
        replica: Replica,
        new_at: _Ints,
        new_ids: _Ints,
        new_owners: _Ints,
        client_order_ids: Sequence[str | None],
        gone_at: _Ints,
        gone_ids: _Ints,
    ) -> None:
        """ValueError if the columns of the news (or of the orders gone) differ in length or a
        new's entry index is not one of client_order_ids'; TypeError if a column is not integers."""
        ...
    def advance(self, upto: int) -> dict[int, tuple[int, str]]:
        """Make the changes of the entries up to index `upto`; returns the orders that entry
        `upto` took out of the maps (what `Replica.removed` holds after executing it)."""
        ...
