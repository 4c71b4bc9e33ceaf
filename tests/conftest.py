"""Shared engine fixtures: every engine test runs against the native book and the reference book."""

from __future__ import annotations

from typing import Any

import pytest

from fastbook.reference import ReferenceBook


def _native_book_cls() -> type[Any]:
    from fastbook._engine import Book  # imported lazily: the reference tests run without the build

    return Book


BOOK_IMPLEMENTATIONS = ["native", "reference"]


def book_class(name: str) -> type[Any]:
    """The book class behind an implementation name ("native" or "reference")."""
    return _native_book_cls() if name == "native" else ReferenceBook


@pytest.fixture(params=BOOK_IMPLEMENTATIONS)
def book_cls(request: pytest.FixtureRequest) -> type[Any]:
    return book_class(request.param)


@pytest.fixture
def book(book_cls: type[Any]) -> Any:
    return book_cls()
