"""The sequencer's replay service: a gap or a late joiner's range, answered from the journal.

A request `{"from": a, "to": b, "snapshot": bool}` on `replay/request/<requester>` is answered on
`replay/response/<requester>`: the latest snapshot first if asked, then the journal's runs from
max(a, snapshot version + 1) to b, at most REPLAY_MAX_ENTRIES per request and LOG_CHUNK per
message; a request past the head gets one empty message carrying the head. Only durable entries
exist in the journal, so only durable entries are ever served. Bad requests are logged and dropped.
"""

from __future__ import annotations

import logging

from fastbook.log.journal import Journal, JournalError
from fastbook.transport.node import Outgoing
from fastbook.wire.fields import REPLAY_MAX_ENTRIES
from fastbook.wire.log import decode_replay_request, encode_log_message
from fastbook.wire.orders import valid_client_id
from fastbook.wire.topics import Topics

log = logging.getLogger(__name__)

# Entries per log / replay message. A runner's batch is cut at 256 KiB of orders (~2,500 bulk orders),
# so a batch's log is one message: split in two, an edge reads the first part, is behind the head
# for a moment and published two status changes per batch (2,000 did that to every bulk batch).
LOG_CHUNK = 4096


class ReplayService:
    def __init__(self, market_name: str, topics: Topics, journal: Journal) -> None:
        self.market_name = market_name
        self.topics = topics
        self.journal = journal

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
        if request.snapshot:
            out.append(Outgoing(topic, snapshot))
            first = max(first, snapshot_version + 1)
        head = self.journal.last_seq
        try:
            records = self.journal.read(first, request.last, limit=REPLAY_MAX_ENTRIES)
        except JournalError as exc:
            log.error("replay for %s failed: %s", requester, exc)
            return out
        if not len(records):
            out.append(Outgoing(topic, encode_log_message(self.market_name, head, replay=True)))
        for i in range(0, len(records), LOG_CHUNK):
            chunk = encode_log_message(self.market_name, head, records.cut(i, i + LOG_CHUNK), replay=True)
            out.append(Outgoing(topic, chunk))
        return out
