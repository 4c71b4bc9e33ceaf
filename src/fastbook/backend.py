"""One switch for every piece that has a native and a reference implementation (like pyzmq's
backend selection).

`FASTBOOK_BACKEND=native` (the default) or `reference` selects, for every piece at once, the Cython
implementation or its pure-Python twin; both implement the same contract, and tests run each
piece on both through this switch (tests/conftest.py). The variable is read at each `select`, so
a test switches with `monkeypatch.setenv` and the objects it builds afterwards use the choice.

A piece is registered once here, by name, as "module:attribute" for each backend; the modules are
imported only when selected, so the reference engine, replica and run writer run without the build.
(The sequencer's order reader has no Python twin to switch to: `wire.orders.decode_orders` is the
one decoder that names rejects, and bench/orderparse_bench.py shows the native reader pays.)
"""

from __future__ import annotations

import importlib
import os
from typing import Any

ENV_VAR = "FASTBOOK_BACKEND"
BACKENDS = ("native", "reference")

PIECES: dict[str, tuple[str, str]] = {
    # the matching engine (docs/engine.md)
    "Book": ("fastbook.engine._engine:Book", "fastbook.engine.reference:ReferenceBook"),
    # a replica's id-map changes per applied batch
    "MapChanges": ("fastbook.log._idmaps:MapChanges", "fastbook.log.replica:_MapChanges"),
    # the sequencer's writer of a run of new orders' log entries and reports
    "write_news_run": ("fastbook.log.runwriter:write_news_run_native",
                       "fastbook.log.runwriter:write_news_run_reference"),
}


def backend_name() -> str:
    """The selected backend ("native" unless FASTBOOK_BACKEND says otherwise)."""
    name = os.environ.get(ENV_VAR, "native").strip().lower() or "native"
    if name not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name


def select(piece: str, backend: str | None = None) -> Any:
    """The implementation of `piece` in `backend` (default: the selected one)."""
    name = backend_name() if backend is None else backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    target = PIECES[piece][BACKENDS.index(name)]
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"the native {piece} ({module_name}) is not built ({exc}); "
            f"build it with `pip install .` or set {ENV_VAR}=reference"
        ) from exc
    return getattr(module, attribute)
