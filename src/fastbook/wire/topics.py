"""MQTT topic names. Everything lives under `<prefix>/<market>/`; the prefix defaults to `fastbook`."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "fastbook"


@dataclass(frozen=True, slots=True)
class Topics:
    market: str
    prefix: str = DEFAULT_PREFIX

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.market}"

    def orders(self, client_id: str) -> str:
        """In: a client's orders (JSON object or array). The client id is taken from the topic."""
        return f"{self.base}/orders/{client_id}"

    @property
    def orders_filter(self) -> str:
        return f"{self.base}/orders/+"

    def reports(self, client_id: str) -> str:
        """Out: execution reports for one client."""
        return f"{self.base}/reports/{client_id}"

    @property
    def book(self) -> str:
        """Retained: post-execution book state (top levels, version, hash, last trade)."""
        return f"{self.base}/book"

    @property
    def trades(self) -> str:
        return f"{self.base}/trades"

    @property
    def snapshot(self) -> str:
        """Retained: the latest full snapshot (version + hash)."""
        return f"{self.base}/snapshot"

    @property
    def log(self) -> str:
        """The sequenced log: the only thing replicas apply."""
        return f"{self.base}/log"

    def replica(self, client_id: str) -> str:
        """Retained: one edge's status (online/offline via last will, version, hash, lag)."""
        return f"{self.base}/replicas/{client_id}"

    @property
    def replicas_filter(self) -> str:
        return f"{self.base}/replicas/+"

    def replay_request(self, requester: str) -> str:
        return f"{self.base}/replay/request/{requester}"

    @property
    def replay_request_filter(self) -> str:
        return f"{self.base}/replay/request/+"

    def replay_response(self, requester: str) -> str:
        return f"{self.base}/replay/response/{requester}"

    @property
    def recover_request(self) -> str:
        """The sequencer's request for the records of a damaged journal tail (not retained)."""
        return f"{self.base}/recover/request"

    def recover_answer(self, client_id: str) -> str:
        """An edge's answer to a recover request (only that client may publish here)."""
        return f"{self.base}/recover/answer/{client_id}"

    @property
    def recover_answer_filter(self) -> str:
        return f"{self.base}/recover/answer/+"


def client_from_topic(topic: str) -> str:
    """The last topic level: the client id of an orders/reports/replicas/replay topic."""
    return topic.rsplit("/", 1)[-1]
