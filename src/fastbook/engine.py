"""Engine selection for the distributed layer.

The native `fastbook._engine.Book` is the default; `FASTBOOK_ENGINE=reference` selects the pure-Python
`fastbook.reference.ReferenceBook` (same contract, docs/engine.md), so every distributed test can run
on both. The variable is read at each call, so a test can switch engines with monkeypatch.
"""

from __future__ import annotations

import os
from typing import Any

ENV_VAR = "FASTBOOK_ENGINE"
CHOICES = ("native", "reference")


def engine_name() -> str:
    name = os.environ.get(ENV_VAR, "native").strip().lower() or "native"
    if name not in CHOICES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(CHOICES)}, got {name!r}")
    return name


def book_class() -> Any:
    if engine_name() == "reference":
        from fastbook.reference import ReferenceBook

        return ReferenceBook
    try:
        from fastbook._engine import Book
    except ImportError as exc:
        raise ImportError(
            f"the native engine fastbook._engine.Book is not built ({exc}); "
            f"build it with `pip install -e .` or set {ENV_VAR}=reference"
        ) from exc
    return Book


def new_book() -> Any:
    """An empty book of the selected engine."""
    return book_class()()


def restore_book(data: bytes) -> Any:
    """A book of the selected engine rebuilt from canonical snapshot bytes (ValueError if invalid)."""
    return book_class().restore(data)
