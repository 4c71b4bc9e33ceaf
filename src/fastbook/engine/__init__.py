"""The matching engine: one deterministic limit order book per market (docs/engine.md).

`new_book()` / `restore_book(data)` build a book of the backend `fastbook.backend` selects: the
native `fastbook.engine._engine.Book` (Cython, top-level engine/) or the pure-Python
`fastbook.engine.reference.ReferenceBook`, which implement the same contract. Nothing in this layer
knows MQTT, JSON or files.
"""

from __future__ import annotations

from typing import Any

from fastbook import backend


def book_class() -> Any:
    """The selected backend's book class."""
    return backend.select("Book")


def new_book() -> Any:
    """An empty book of the selected backend."""
    return book_class()()


def restore_book(data: bytes) -> Any:
    """A book of the selected backend rebuilt from canonical snapshot bytes (ValueError if invalid)."""
    return book_class().restore(data)
