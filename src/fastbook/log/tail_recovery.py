"""Recovering a damaged journal tail from the replicas (issue 15, D2).

A journal whose last frame is whole but fails its CRC (`CorruptTail`) may hold commands that were
accepted and published: cutting it would give their seqs to other commands. The sequencer opens
such a journal with the tail held aside (nothing on disk changed), recovers its state up to the
last good seq and, before it accepts any order, asks the replicas for the records from the first
lost seq N on (`recover/request`, docs/wire.md). Each edge answers on `recover/answer/<client>`
(only that client may publish there) with the raw log records it applied from N on (its
`RecentRecords` ring) and the client order ids of its own news and cancel_alls there.

The published log is anonymous, the journal is not: the frame is rebuilt from the replicas'
records, and the names from (in this order) the answer of the entry's owner (an owner number the
journal introduced is the client's whose topic answered; a new one is the answerer's that claims
it), the sequencer's own maps at N - 1 (the client order id a cancel or amend names is its
order's), and the damaged frame itself. A rebuilt frame is taken only if it is the frame that was
written: its run matches the CRC the damaged frame carries (or the damaged run's bytes, when the
damage is in the frame's head), it has the damaged frame's size, and every record re-executes on
the state at N - 1 to the post-state hash it carries. Only then is the tail rewritten
(`Journal.rewrite_tail`: the damaged bytes kept aside, the frame written in place). With no such
frame by the deadline the sequencer refuses to start (`TailNotRecovered`), naming seq N, what it
asked and who answered, and leaves the journal as it was: `fastbook journal repair` is the
operator's tool then.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

import numpy as np

from fastbook.engine.types import Op
from fastbook.log.journal import FRAME_HEAD, Journal, JournalError
from fastbook.log.replica import HashMismatch, Replica
from fastbook.transport.node import NodeRefused, Outgoing
from fastbook.wire.log import LOG_RECORD_DTYPE, RUN_HEAD, LogRun
from fastbook.wire.recover import RecoverAnswer, RecoverRequest, decode_recover_answer, encode_recover_request
from fastbook.wire.topics import Topics

log = logging.getLogger(__name__)

RESEND_INTERVAL = 1.0  # seconds between requests (an edge that connects late still hears one)
_RECORD = LOG_RECORD_DTYPE.itemsize
_NEW, _CANCEL_ALL = int(Op.NEW), int(Op.CANCEL_ALL)


class TailNotRecovered(JournalError, NodeRefused):
    """No replica gave the damaged tail's records (with their names) by the deadline: start-up
    refuses; the journal is unchanged."""


@dataclass(slots=True)
class _Answered:
    client: str
    owner: int | None
    records: int  # how many records from the first lost seq on
    names: int


@dataclass(slots=True)
class Rebuilt:
    frame: bytes
    run: LogRun
    how: str  # what verified it (for the log line)


@dataclass
class TailRecovery:
    """The protocol's state in the sequencer: what was asked, who answered, the frame once found."""

    topics: Topics
    journal: Journal
    replica: Replica  # the sequencer's, at the last good seq (not changed here)
    timeout: float  # seconds from the first request (sent once connected) to the refusal
    deadline: float | None = None
    answers: dict[str, RecoverAnswer] = field(default_factory=dict)
    answered: dict[str, _Answered] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    requests: int = 0
    _next_request: float = 0.0

    def __post_init__(self) -> None:
        damage = self.journal.damaged
        assert damage is not None
        self.first = damage.last_seq + 1
        self.tail = self.journal.damaged_bytes()

    @property
    def answer_prefix(self) -> str:
        return self.topics.recover_answer("")

    def request(self, now: float) -> list[Outgoing]:
        """The request, again every RESEND_INTERVAL until the deadline."""
        if now < self._next_request:
            return []
        if self.deadline is None:
            self.deadline = now + self.timeout
        self._next_request = now + RESEND_INTERVAL
        self.requests += 1
        payload = encode_recover_request(RecoverRequest(self.topics.market, self.first))
        return [Outgoing(self.topics.recover_request, payload)]

    def next_deadline(self) -> float | None:
        return None if self.deadline is None else min(self._next_request, self.deadline)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def on_answer(self, client: str, payload: bytes) -> None:
        try:
            answer = decode_recover_answer(payload)
            if answer.market != self.topics.market or answer.first != self.first:
                raise ValueError(f"an answer for market {answer.market!r:.70} from seq {answer.first}")
        except ValueError as exc:
            self.problems.append(f"{client}: {exc}")
            log.warning("recover answer from %s ignored: %s", client, exc)
            return
        self.answers[client] = answer
        self.answered[client] = _Answered(client, answer.owner, len(answer.records), len(answer.names))

    # -- the frame ---------------------------------------------------------------------------------

    def _records(self) -> np.ndarray | None:
        """The records first.. that the answers hold, consecutive (None: none, or answers disagree)."""
        by_seq: dict[int, bytes] = {}
        for client, answer in self.answers.items():
            raw = np.ascontiguousarray(answer.records).copy()
            raw["coid_len"] = 0
            raw["client_len"] = 0
            for seq, row in zip(raw["seq"].tolist(), raw.view(np.uint8).reshape(-1, _RECORD), strict=True):
                data = row.tobytes()
                if by_seq.setdefault(seq, data) != data:
                    self.problems.append(f"answers disagree on record {seq} ({client}'s differs)")
                    return None
        rows = []
        seq = self.first
        while seq in by_seq:
            rows.append(by_seq[seq])
            seq += 1
        if not rows:
            return None
        records: np.ndarray = np.frombuffer(b"".join(rows), LOG_RECORD_DTYPE).copy()
        return records

    def _owner_clients(self) -> dict[int, str]:
        """owner -> client: the journal's, and new owner numbers their answerers claim (unless two
        claim one, or a client the journal knows claims another)."""
        clients = dict(self.replica.clients)
        claims: dict[int, set[str]] = {}
        for client, answer in self.answers.items():
            if answer.owner is not None and answer.owner not in clients and client not in self.replica.owners:
                claims.setdefault(answer.owner, set()).add(client)
        for owner, claimants in claims.items():
            if len(claimants) == 1:
                clients[owner] = next(iter(claimants))
            else:
                self.problems.append(f"owner {owner} claimed by {sorted(claimants)}")
        return clients

    def _damaged_names(self, n: int) -> list[tuple[bytes, bytes]] | None:
        """(client order id, client id) bytes of each of the damaged frame's n records, read as
        its own record lengths say (None: they do not fit)."""
        start = FRAME_HEAD.size + RUN_HEAD.size
        if len(self.tail) < start + n * _RECORD:
            return None
        records = np.frombuffer(self.tail, LOG_RECORD_DTYPE, n, start)
        at = start + n * _RECORD
        out = []
        tail = self.tail
        lengths = zip(records["coid_len"].tolist(), records["client_len"].tolist(), strict=True)
        for coid_len, client_len in lengths:
            mid = at + coid_len
            out.append((tail[at:mid], tail[mid : mid + client_len]))
            at = mid + client_len
        return out if at <= len(self.tail) else None

    def _build(self, records: np.ndarray, use_answers: bool) -> tuple[bytes, bool]:
        """The run of `records` with their names (see the module docstring), and whether every
        name came from an owner's answer or the sequencer's maps (none from the damaged frame)."""
        n = len(records)
        damaged = self._damaged_names(n) or [(b"", b"")] * n
        clients = self._owner_clients() if use_answers else {}
        known = set(self.replica.clients)
        orders = {order_id: coid for order_id, (_owner, coid) in self.replica.orders.items()}
        out = records.copy()
        blob = []
        confirmed = use_answers
        for i, row in enumerate(records.tolist()):
            seq, op, owner, order_id = row[0], row[2], row[10], row[12]
            coid, client = damaged[i]
            if use_answers:
                if owner not in known:
                    if owner in clients:
                        client = clients[owner].encode("ascii")
                    else:
                        confirmed = False
                owner_client = clients.get(owner)
                answer = self.answers.get(owner_client) if owner_client is not None else None
                if op in (_NEW, _CANCEL_ALL) and answer is not None and seq in answer.names:
                    name = answer.names[seq]
                    coid = b"" if name is None else name.encode("ascii")
                elif op not in (_NEW, _CANCEL_ALL) and order_id in orders:
                    coid = orders[order_id].encode("ascii")
                else:
                    confirmed = False
            if owner in known:
                client = b""
            known.add(owner)
            if op == _NEW:
                orders[order_id] = coid.decode("ascii", "replace")
            out["coid_len"][i] = len(coid)
            out["client_len"][i] = len(client)
            blob += [coid, client]
        names = b"".join(blob)
        return RUN_HEAD.pack(n, len(names)) + out.tobytes() + names, confirmed

    def rebuilt(self) -> Rebuilt | None:
        """The damaged frame, rebuilt and verified from the answers so far (None: not yet)."""
        records = self._records()
        if records is None:
            return None
        length, crc = FRAME_HEAD.unpack_from(self.tail) if len(self.tail) >= FRAME_HEAD.size else (0, 0)
        stored_run = self.tail[FRAME_HEAD.size :]
        counts = [len(records)]
        if len(stored_run) >= RUN_HEAD.size:
            count = RUN_HEAD.unpack_from(stored_run)[0]
            if 0 < count < len(records):
                counts.insert(0, count)  # (the damaged frame's own count, if it is not the damage)
        for n in counts:
            for use_answers in (True, False):
                run, confirmed = self._build(records[:n], use_answers)
                if len(run) != len(stored_run):
                    continue
                if zlib.crc32(run) == crc:
                    how = "its CRC"
                elif run == stored_run and confirmed:
                    # (the damage is in the frame head; every name is its owner's word, not the
                    # damaged frame's: a name is in no hash)
                    how = (
                        f"its run's bytes and its owners' names (the frame head is damaged: length "
                        f"{length}, CRC {crc:#x})"
                    )
                else:
                    continue
                try:
                    parsed, _end = LogRun.read(run)
                except ValueError as exc:
                    self.problems.append(f"rebuilt run invalid: {exc}")
                    continue
                return Rebuilt(FRAME_HEAD.pack(len(run), zlib.crc32(run)) + run, parsed, how)
        return None

    def verify(self, rebuilt: Rebuilt) -> None:
        """Re-execute the rebuilt records on the sequencer's replica (at the last good seq; it is
        left at the tail's end): each must reach the post-state hash it carries, the engine
        accepting each command as recorded. TailNotRecovered if one does not (the replica is then
        unusable: start-up stops, nothing written)."""
        for entry in rebuilt.run.entries(self.replica.clients):
            try:
                self.replica.apply(entry)
            except (HashMismatch, ValueError, KeyError) as exc:
                problem = f"the rebuilt record {entry.seq} does not replay: {exc}"
                raise TailNotRecovered(f"{self.describe()}; {problem}") from exc

    def describe(self) -> str:
        damage = self.journal.damaged
        where = ""
        if damage is not None:
            where = f" at offset {damage.offset} ({damage.size - damage.offset} bytes)"
        asked = (
            f"asked {self.topics.recover_request} {self.requests} times for the records from seq {self.first}"
        )
        if self.answered:
            who = "; ".join(
                f"{a.client} (owner {a.owner}, {a.records} records, {a.names} names)"
                for a in self.answered.values()
            )
            heard = f"answers from {who}"
        else:
            heard = "no replica answered"
        problems = f"; problems: {'; '.join(self.problems[-5:])}" if self.problems else ""
        path = self.journal.path
        last = self.first - 1
        return f"journal {path}: damaged last frame{where} after seq {last}: {asked}; {heard}{problems}"

    def refusal(self) -> TailNotRecovered:
        return TailNotRecovered(
            f"{self.describe()}. No answer rebuilt the frame that was written (the replicas' records "
            "with their owners' names, matching its CRC and replaying to their hashes): not "
            f"started, nothing on disk changed. Start again with the replicas connected, restore "
            f"journal.log from a backup, or see `fastbook journal repair {self.journal.data_dir}`"
        )
