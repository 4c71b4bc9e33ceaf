"""Shared fixtures. Every piece with a native and a reference implementation is tested on both
through the one backend switch, fastbook.backend:

- `book_cls` / `book`: an engine test gets the book class (or an empty book) of each backend;
- `backend`: a test of the layers above (a module marks itself with
  `pytestmark = pytest.mark.usefixtures("backend")`) runs once per backend, with FASTBOOK_BACKEND
  set, so the books, id maps and run writers it builds are that backend's.
"""

from __future__ import annotations

from typing import Any

import pytest

from fastbook.backend import BACKENDS, ENV_VAR
from tests.support.engine_spec import book_class


@pytest.fixture(params=BACKENDS)
def book_cls(request: pytest.FixtureRequest) -> type[Any]:
    return book_class(request.param)


@pytest.fixture
def book(book_cls: type[Any]) -> Any:
    return book_cls()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV_VAR, request.param)
    return str(request.param)
