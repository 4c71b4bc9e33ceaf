"""Typed surface of the native run writer (_runwriter.pyx beside it), used by runwriter."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from fastbook.wire.market import MarketSpec

def write_news_run(
    market: MarketSpec,
    client: str,
    version: int,
    rows: npt.NDArray[np.void],  # COMMAND_DTYPE, numbered by Book.apply_batch
    coids: list[str | None],
    hashes: npt.NDArray[np.uint64],
    events: npt.NDArray[np.void],  # EVENT_DTYPE
    orders: dict[int, tuple[int, str]],
    clients: dict[int, str],
    reject: Callable[[str | None, int, int], dict[str, Any]],
) -> tuple[
    dict[str, list[str]],  # report texts by client
    list[str],  # rejections (texts)
    list[str],  # public trades (texts)
    list[int],  # accepted ids
    list[str],  # accepted client order ids
    list[int],  # accepted seqs
    list[int],  # gone order ids
    int,  # last seq
    int,  # last hash
]: ...
