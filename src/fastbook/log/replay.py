"""The sequencer's replay service: a gap or a late joiner's range, answered from the journal.

A request `{"from": a, "to": b, "snapshot": bool}` on `replay/request/<requester>` is answered on
`replay/response/<requester>`: the latest snapshot first if asked, then the journal's runs from
max(a, snapshot version + 1) to b, at most REPLAY_MAX_ENTRIES per request and LOG_CHUNK per
message; a request past the head gets one empty message carrying the head. Only durable entries
exist in the journal, so only durable entries are ever served. Bad requests are logged and dropped.

The answer is private to the requester (only it may read its response topic): its records carry
the requester's own names (its client order ids, its client id on the entry introducing its owner
number) and no one else's, and `"names": true` first sends its names message (its owner number
and open orders, `fastbook.wire.names`), from the sequencer's replica.
"""

from __future__ import annotations

import logging

from fastbook.log.journal import Journal, JournalError
from fastbook.log.replica import Replica
from fastbook.transport.node import Outgoing
from fastbook.wire.fields import REPLAY_MAX_ENTRIES
from fastbook.wire.log import decode_replay_request, encode_log_message
from fastbook.wire.names import OwnNames, encode_names
from fastbook.wire.orders import valid_client_id
from fastbook.wire.topics import Topics

log = logging.getLogger(__name__)

# Entries per log / replay message. A runner's batch is cut at 256 KiB of orders (~2,500 bulk orders),
# so a batch's log is one message: split in two, an edge reads the first part, is behind the head
# for a moment and published two status changes per batch (2,000 did that to every bulk batch).
LOG_CHUNK = 4096


class ReplayService:
    def __init__(
        self, market_name: str, topics: Topics, journal: Journal, replica: Replica | None = None
    ) -> None:
        self.market_name = market_name
        self.topics = topics
        self.journal = journal
        self.replica = replica  # the sequencer's: who is which owner, open orders' names

    def names_message(self, requester: str) -> bytes:
        """The requester's names at the journal's head (the replica's durable state)."""
        replica = self.replica
        owner = None if replica is None else replica.owners.get(requester)
        orders: list[tuple[int, str]] = []
        if replica is not None and owner is not None:
            orders = sorted(((oid, coid) for coid, oid in replica.by_owner.get(owner, {}).items()))
        return encode_names(OwnNames(self.market_name, self.journal.last_seq, owner, orders))

    def serve(self, requester: str, payload: bytes, snapshot: bytes, snapshot_version: int) -> list[Outgoing]:
        """The answer to one request; `snapshot` is the latest published snapshot at `snapshot_version`."""
        if not valid_client_id(requester):
            log.warning("replay request from invalid requester id %r ignored", requester[:70])
            return []
        try:
            request = decode_replay_request(payload)
        except ValueError as exc:
            log.warning("bad replay request from %s ignored: %s", requester, exc)
            return []
        topic = self.topics.replay_response(requester)
        out = []
        first = request.first
        owner = None if self.replica is None else self.replica.owners.get(requester)
        if request.snapshot:
            out.append(Outgoing(topic, snapshot))
            first = max(first, snapshot_version + 1)
        if request.names:
            out.append(Outgoing(topic, self.names_message(requester)))
        head = self.journal.last_seq
        try:
            records = self.journal.read(first, request.last, limit=REPLAY_MAX_ENTRIES)
        except JournalError as exc:
            log.error("replay for %s failed: %s", requester, exc)
            return out
        if not len(records):
            out.append(Outgoing(topic, encode_log_message(self.market_name, head, replay=True)))
        records = records.named_for(owner)  # (only the requester's own names)
        for i in range(0, len(records), LOG_CHUNK):
            chunk = encode_log_message(self.market_name, head, records.cut(i, i + LOG_CHUNK), replay=True)
            out.append(Outgoing(topic, chunk))
        return out
