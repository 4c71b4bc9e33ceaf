"""fastbook: a distributed limit order book — a deterministic Cython matching engine replicated over a
sequenced, journaled MQTT log.

`from fastbook import Edge` gives the Python API of a client's replica (fastbook.edge.client.Edge); the engine
is `fastbook.engine.new_book()` (native `fastbook.engine._engine.Book`,
reference `fastbook.engine.reference.ReferenceBook`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Edge", "__version__"]

if TYPE_CHECKING:
    from fastbook.edge.client import Edge


def __getattr__(name: str) -> Any:
    # Imported lazily so that `import fastbook.engine.types` or the engine does not pull in paho-mqtt.
    if name == "Edge":
        from fastbook.edge.client import Edge

        return Edge
    raise AttributeError(f"module 'fastbook' has no attribute {name!r}")
