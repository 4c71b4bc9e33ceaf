"""Typed surface of the native order reader (src/fastbook/wire/_orderparse.pyx), the sequencer's fast path in
front of wire.decode_orders."""

import numpy as np
import numpy.typing as npt

def parse_orders(
    payload: bytes | bytearray | memoryview,
    tick_places: int,
    tick_units: int,
    lot_places: int,
    lot_units: int,
    max_payload: int = ...,
) -> (
    tuple[
        npt.NDArray[np.void],  # COMMAND_DTYPE commands, owner and order_id 0
        list[str | None],  # client order ids
    ]
    | None
): ...
