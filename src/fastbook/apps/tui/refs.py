"""Short refs for this client's orders: `#1`, `#2`, ... instead of 18-character client order ids."""

from __future__ import annotations

from fastbook.apps.cli.commands import is_ref


class UnknownRef(KeyError):
    """A typed `#N` that names no order of this session."""

    def __str__(self) -> str:
        return f"no order {self.args[0]} (type 'orders' to see the refs of your open orders)"


class OrderRefs:
    """Numbers client order ids in the order they are first seen; a number is never reused, so
    `#2` names the same order for the whole session. Ids of finished orders are forgotten (a
    long-running edge must not grow without bound); their numbers stay retired."""

    def __init__(self) -> None:
        self._number_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._number_of)

    def number(self, client_order_id: str) -> int:
        """The ref of an id, assigning the next one if it has none."""
        number = self._number_of.get(client_order_id)
        if number is None:
            number = self._next
            self._next += 1
            self._number_of[client_order_id] = number
            self._id_of[number] = client_order_id
        return number

    def label(self, client_order_id: str) -> str:
        return f"#{self.number(client_order_id)}"

    def known(self, client_order_id: str) -> str | None:
        """The label of an id that already has a ref, without assigning one."""
        number = self._number_of.get(client_order_id)
        return None if number is None else f"#{number}"

    def resolve(self, text: str) -> str:
        """A typed `#N` to its client order id (UnknownRef if none); any other text is an id."""
        if not is_ref(text):
            return text
        client_order_id = self._id_of.get(int(text[1:]))
        if client_order_id is None:
            raise UnknownRef(text)
        return client_order_id

    def forget(self, client_order_id: str) -> None:
        number = self._number_of.pop(client_order_id, None)
        if number is not None:
            del self._id_of[number]
