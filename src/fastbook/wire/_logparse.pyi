"""Typed surface of the native log reader (src/fastbook/wire/_logparse.pyx), used by wire.read_log_batch."""

import numpy as np
import numpy.typing as npt

def parse_log_message(
    payload: bytes | bytearray | memoryview,
) -> (
    tuple[
        str,  # market
        int,  # head
        bool,  # replay
        npt.NDArray[np.int64],  # seqs
        npt.NDArray[np.uint64],  # post-state hashes
        npt.NDArray[np.void],  # COMMAND_DTYPE commands
        list[str],  # client ids
        list[str | None],  # client order ids
    ]
    | None
): ...
