"""A replica of one market: the engine book plus the id maps, advanced only by sequenced log entries.

`Replica` is shared by the sequencer (which executes commands on it tentatively, then sequences what
the engine accepted) and by every edge (which applies log entries and checks each post-state hash).
The edge side of the log protocol (order, gaps, replays, resync) is `fastbook.log.follower`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from fastbook import backend
from fastbook.engine import EventTuple, OrderBook, new_book, restore_book
from fastbook.engine.types import EventType, Op, event_rows_to_tuples
from fastbook.wire._snapshotrows import snapshot_order_rows
from fastbook.wire.fields import hash_hex
from fastbook.wire.log import LogBatch, LogEntry, LogRun
from fastbook.wire.market import MarketSpec
from fastbook.wire.names import OwnNames
from fastbook.wire.snapshot import SnapshotData

log = logging.getLogger(__name__)

_REJECTED = int(EventType.REJECTED)
_TRADE = int(EventType.TRADE)
_CANCELLED = int(EventType.CANCELLED)
_DONE = int(EventType.DONE)
_NEW, _CANCEL, _AMEND, _CANCEL_ALL = int(Op.NEW), int(Op.CANCEL), int(Op.AMEND), int(Op.CANCEL_ALL)

_Ints = Sequence[int] | np.ndarray  # an integer column of the id-map changes


class HashMismatch(Exception):
    """A log entry produced a different state than the sequencer's: this replica has diverged."""


class Replica:
    def __init__(
        self,
        market: MarketSpec,
        book: OrderBook | None = None,
        own_client: str | None = None,
    ) -> None:
        """`own_client`: an edge's replica. The public log is anonymous (engine order ids and
        owner numbers only), so it keeps the order maps (`orders`, `by_owner`) for that client's
        orders only, named with what the client learnt privately (`learn_names`,
        `learn_seq_name`, its replay answers' records); every other order is in the engine all
        the same, so the book and the state hash are whole. None: every order whose entry names
        it: the sequencer's replica (its journal and snapshot files have every name, as its
        reports need); on the public log, an observer's, which maps none (it sees every order's
        owner number in the engine, `book.order(id)`, and no names)."""
        # apply_batch's id-map changes: the selected backend's (native fastbook.log._idmaps, or the
        # Python reference _MapChanges below, with the same semantics)
        self.map_changes: type[_MapChanges] = backend.select("MapChanges")
        self.market = market
        self.book = new_book() if book is None else book
        self.own_client = own_client
        self.version = 0
        self.state_hash: int = self.book.state_hash()
        self.owners: dict[str, int] = {}  # client id -> engine owner (an edge: its own client only)
        self.clients: dict[int, str] = {}  # engine owner -> client id (likewise)
        self._owner_count = 0  # owner numbers 1..this are assigned (see owner_count)
        # An edge's names learnt privately for entries it has not applied yet: seq -> client order
        # id of its own new / cancel_all there (its reports' seqs), engine id -> client order id
        # of its own orders placed later than this replica's version (a names message).
        self.seq_names: dict[int, str | None] = {}
        self.id_names: dict[int, str] = {}
        # Set once this edge's client has sent orders while its owner number is unknown: an entry
        # introducing an owner number may then be its own, and waits until a replay answer (which
        # names its requester's introduction) said; owners up to `_checked_owner` are others'.
        self.expect_owner = False
        self._checked_owner = 0
        self.orders: dict[int, tuple[int, str]] = {}  # resting engine order id -> (owner, client order id)
        self.by_owner: dict[int, dict[str, int]] = {}  # owner -> {client order id: resting engine order id}
        self.next_order_id = 1
        # Orders that left the maps during the last execute(): reports still need their client ids.
        self.removed: dict[int, tuple[int, str]] = {}

    # -- lookups ---------------------------------------------------------------------------

    def next_owner(self) -> int:
        return len(self.owners) + 1

    @property
    def owner_count(self) -> int:
        """How many owner numbers the log has introduced (1..owner_count): the sequencer assigns
        them in order of each client's first sequenced command, so a record's owner is at most
        one more (and then introduces it)."""
        return max(self._owner_count, len(self.clients))

    @property
    def own_owner(self) -> int | None:
        return None if self.own_client is None else self.owners.get(self.own_client)

    def keeps(self, owner: int) -> bool:
        """Whether the maps hold the orders of `owner` (see `own_client`)."""
        return self.own_client is None or self.clients.get(owner) == self.own_client

    def resting_id(self, owner: int, client_order_id: str) -> int | None:
        by_id = self.by_owner.get(owner)
        return None if by_id is None else by_id.get(client_order_id)

    def describe(self, order_id: int) -> tuple[int, str] | None:
        """(owner, client order id) of an order that is resting or left during the last execute()."""
        found = self.orders.get(order_id)
        return found if found is not None else self.removed.get(order_id)

    # -- state changes ---------------------------------------------------------------------

    def execute(
        self,
        client_id: str | None,
        client_order_id: str | None,
        op: int,
        order_id: int,
        owner: int,
        side: int = 0,
        order_type: int = 0,
        tif: int = 0,
        stp: int = 0,
        post_only: int = 0,
        price: int = 0,
        qty: int = 0,
    ) -> Sequence[EventTuple]:
        """Run one engine command and keep the maps in step. If the engine rejects the command
        (a single REJECTED event) nothing changed, the maps included. Does not touch version/hash.
        `client_id` None: the owner number is already known (a log record that does not introduce
        it); ValueError if it is not, or if a client id contradicts the maps."""
        self.removed = {}
        book = self.book
        if op not in (_NEW, _CANCEL, _AMEND, _CANCEL_ALL):
            raise ValueError(f"unknown op {op}")
        new_owner = self._check_owner(client_id, owner)
        mapped = op == _NEW and (self.keeps(owner) or (new_owner and client_id == self.own_client))
        if mapped and client_order_id is None:
            if self.own_client is not None:
                raise ValueError(f"new order {order_id}: this client's order has no client order id")
            mapped = False  # (an observer of the anonymous log)
        if op == _NEW and order_id in self.orders:
            raise ValueError(f"new order {order_id}: the id is already open")
        if new_owner:
            assert client_id is not None
            self.owners[client_id] = owner
            self.clients[owner] = client_id
        if mapped:
            self.orders[order_id] = (owner, client_order_id)  # type: ignore[assignment]
            self.by_owner.setdefault(owner, {})[client_order_id] = order_id  # type: ignore[index]
        if op == _NEW:
            events = book.new(order_id, owner, side, price, qty, order_type, tif, bool(post_only), stp)
        elif op == _CANCEL:
            events = book.cancel(order_id, owner)
        elif op == _AMEND:
            events = book.amend(order_id, owner, price, qty)
        else:
            events = book.cancel_all(owner)
        if len(events) == 1 and events[0][0] == _REJECTED:
            if mapped:
                del self.orders[order_id]
                del self.by_owner[owner][client_order_id]  # type: ignore[arg-type]
            if new_owner:
                del self.owners[client_id]  # type: ignore[arg-type]  # new_owner: client_id is set
                del self.clients[owner]
            return events
        if op == _NEW:
            self.next_order_id = order_id + 1
        if owner > self._owner_count:
            self._owner_count = owner
        for event in events:
            kind = event[0]
            if kind == _DONE or kind == _CANCELLED:
                gone = self.orders.pop(event[1], None)
                if gone is not None:
                    self.removed[event[1]] = gone
                    del self.by_owner[gone[0]][gone[1]]
        return events

    def _check_owner(self, client_id: str | None, owner: int) -> bool:
        """Whether (client_id, owner) introduces a new client to the maps; ValueError if it
        contradicts them, or if `owner` skips an owner number."""
        if owner > self.owner_count + 1:
            raise ValueError(f"owner {owner} has no client (the entry introducing it is missing)")
        if client_id is None:  # (the public log names no client: an edge knows only its own)
            return False
        known = self.owners.get(client_id)
        if known is None:
            if owner in self.clients:
                raise ValueError(f"owner {owner} is {self.clients[owner]!r}'s, not {client_id!r}'s")
            return True
        if known != owner:
            raise ValueError(f"client {client_id!r} is owner {known}, not {owner}")
        return False

    def apply(self, entry: LogEntry, resolved: bool = False) -> Sequence[EventTuple]:
        """Apply the next log entry; raises HashMismatch if the result differs from the sequencer's.
        `resolved`: the caller already passed it through `resolve` (the follower does: a second
        look-up of the same entry would find nothing more)."""
        if entry.seq != self.version + 1:
            raise ValueError(f"entry {entry.seq} applied at version {self.version}")
        own = self.own_client
        if not resolved and own is not None and entry.client_order_id is None and entry.client_id is None:
            named = self.resolve(entry)  # (a resolved entry names its client: a cancel_all may lack an id)
            if named is None:
                raise ValueError(f"seq {entry.seq}: this client's entry has no client order id")
            entry = named
        events = self.execute(*entry[2:])
        if len(events) == 1 and events[0][0] == _REJECTED:
            reason = events[0][10]
            raise HashMismatch(f"seq {entry.seq}: the engine rejected a sequenced command (reason {reason})")
        self.version = entry.seq
        self.state_hash = self.book.state_hash()
        if self.state_hash != entry.hash:
            ours, theirs = hash_hex(self.state_hash), hash_hex(entry.hash)
            raise HashMismatch(f"seq {entry.seq}: post-state hash {ours} != sequencer's {theirs}")
        return events

    def apply_batch(
        self,
        batch: LogBatch,
        on_applied: Callable[[LogEntry, Sequence[EventTuple]], None] | None = None,
        interest: Callable[[], int | None] | None = None,
    ) -> None:
        """Apply a whole log message with one `Book.apply_batch` call; the same result, entry by
        entry, as `apply` on each (state, maps, hash checks, `on_applied` calls).

        `batch` must start at version + 1 with consecutive seqs. `on_applied(entry, events)` is
        called for every entry, or, with `interest`, only for the entries that may concern the
        owner it returns (checked once the batch's clients are known): that owner's own commands
        and trades against its orders (None: no entry). Raises HashMismatch at the first entry that
        is rejected or hashes differently; the entries before it are applied and reported, version
        and maps are left as `apply` leaves them, the book has run the whole batch, and the
        replica, like after a failed `apply`, must then be replaced (resync)."""
        n = len(batch)
        seqs = batch.seqs
        if n == 0:
            return
        if int(seqs[0]) != self.version + 1 or not batch.consecutive():
            raise ValueError(f"entries {int(seqs[0])}..{int(seqs[-1])} applied at version {self.version}")
        self._check_owners_known(batch)
        unnamed = self.first_unnamed(batch.run)
        if unnamed is not None:
            raise ValueError(f"seq {int(seqs[unnamed])}: this client's entry has no client order id")
        commands = batch.commands()
        post = np.empty(n, dtype=np.uint64)
        events = self.book.apply_batch(commands, post)
        kinds = events["type"]
        # The first entry that diverged: a different post-state hash, or rejected by the engine.
        failed = n
        differ = np.flatnonzero(post != batch.hashes)
        if len(differ):
            failed = int(differ[0])
        rejected = np.flatnonzero(kinds == _REJECTED)
        refused = len(rejected) > 0 and int(events["cmd"][rejected[0]]) <= failed
        if refused:
            failed = int(events["cmd"][rejected[0]])
        # As `apply`: an entry the engine refused changed nothing; one that hashed differently was
        # applied (maps and version included) before the check failed.
        applied = failed if refused or failed == n else failed + 1
        # Clients introduced by the batch get their owner numbers (the records that carry a client
        # id); every other entry's owner must be known by then (checked before the book runs).
        records = batch.run.records
        if applied:
            self._owner_count = max(self._owner_count, int(records["owner"][:applied].max()))
        introduced = np.flatnonzero(records["client_len"][:applied]).tolist()
        for i in introduced:
            client = batch.run.names_of(i)[0]
            owner = int(records["owner"][i])
            if self._check_owner(client, owner):
                self.owners[client] = owner  # type: ignore[index]
                self.clients[owner] = client  # type: ignore[assignment]
        # Map changes in entry order: news join the maps, DONE/CANCELLED orders leave them.
        all_news = is_new = commands["op"][:applied] == _NEW
        ends = ((kinds == _DONE) | (kinds == _CANCELLED)) & (events["cmd"] < applied)
        if self.own_client is not None:  # only that client's orders are mapped
            own = self.owners.get(self.own_client, -1)  # (-1: no owner number matches)
            is_new = is_new & (commands["owner"][:applied] == own)
            ends &= events["owner"] == own
        else:  # every order whose entry names it (the sequencer's: all; an observer's: none)
            is_new = is_new & (records["coid_len"][:applied] > 0)
        news = np.flatnonzero(is_new)
        gone = np.flatnonzero(ends)
        coids = batch.run.client_order_ids_at(news)
        named: dict[int, LogEntry] = {}  # entries named from what this edge learnt privately
        if self.own_client is not None:
            mine = self.own_owner
            fill = (
                news if mine is None else np.union1d(news, np.flatnonzero(records["owner"][:applied] == mine))
            )
            for i in fill.tolist():
                if coids[i] is None:
                    entry = self.resolve(batch.entry(i))
                    assert entry is not None  # (first_unnamed found none unnamed)
                    coids[i] = entry.client_order_id
                    named[i] = entry
        # (numpy columns: the native class reads them in C, without lists of ints)
        maps = self.map_changes(
            self,
            news,
            commands["order_id"][news],
            commands["owner"][news],
            coids,
            events["cmd"][gone],
            events["order_id"][gone],
        )
        stops: list[int] = []  # the entries on_applied is called for
        if on_applied is not None:
            mine = None if interest is None else interest()
            if interest is None:
                stops = list(range(failed))
            elif mine is not None:
                trades = (kinds == _TRADE) & (events["other_owner"] == mine) & (events["cmd"] < failed)
                concerned = np.union1d(
                    np.flatnonzero(commands["owner"][:failed] == mine), events["cmd"][trades]
                )
                stops = concerned.tolist()
        for i in stops:
            self.removed = maps.advance(i)
            lo, hi = np.searchsorted(events["cmd"], [i, i + 1])
            entry = named.get(i) or batch.entry(i, self.clients)
            on_applied(entry, event_rows_to_tuples(events[lo:hi]))  # type: ignore[misc]  # stops == [] if None
        self.removed = maps.advance(applied - 1) if applied else {}
        last_new = np.flatnonzero(all_news)[-1:]
        if len(last_new):
            self.next_order_id = int(commands["order_id"][last_new[0]]) + 1
        if applied:
            self.version = int(seqs[applied - 1])
            self.state_hash = int(post[applied - 1])
        if failed < n:
            seq = int(seqs[failed])
            if refused:
                reason = int(events["reason"][rejected[0]])
                raise HashMismatch(f"seq {seq}: the engine rejected a sequenced command (reason {reason})")
            ours, theirs = hash_hex(int(post[failed])), hash_hex(int(batch.hashes[failed]))
            raise HashMismatch(f"seq {seq}: post-state hash {ours} != sequencer's {theirs}")

    def _check_owners_known(self, batch: LogBatch) -> None:
        """ValueError (before anything is applied) if an entry's owner number is neither known nor
        introduced by an entry at or before it: new owner numbers appear in order, one more than
        the last."""
        records = batch.run.records
        column = records["owner"]
        count = self.owner_count
        if int(column.max()) <= count:  # the usual case: only known owners
            return
        later = np.flatnonzero(column > count)
        owners, firsts = np.unique(column[later], return_index=True)
        at = later[firsts]  # where each new owner first appears, by owner number
        expected = np.arange(count + 1, count + 1 + len(owners))
        bad = None
        if not np.array_equal(owners, expected) or (np.diff(at) < 0).any():
            differs = np.flatnonzero(owners != expected)
            bad = int(at[differs[0]]) if len(differs) else int(at[np.flatnonzero(np.diff(at) < 0)[0] + 1])
        if bad is not None:
            seq, owner = int(batch.seqs[bad]), int(column[bad])
            raise ValueError(f"seq {seq}: owner {owner} has no client (the entry introducing it is missing)")

    # -- names learnt privately (an edge's) ----------------------------------------------------

    def learn_seq_name(self, seq: int, client_order_id: str | None) -> None:
        """This client's new or cancel_all at `seq` had `client_order_id` (its report said so)."""
        if seq > self.version:
            self.seq_names[seq] = client_order_id

    def learn_names(self, names: OwnNames) -> None:
        """This client's owner number and open orders (engine id -> client order id) at the
        sequencer's version `names.version`, which may be ahead of or behind this replica's: an
        order resting here is mapped now, one placed later when its entry is applied. ValueError
        if the names contradict the maps."""
        own, owner = self.own_client, names.owner
        if own is None or owner is None:
            return
        known = self.owners.get(own)
        if known is not None and known != owner or self.clients.get(owner, own) != own:
            raise ValueError(f"names say {own!r} is owner {owner}, the maps say otherwise")
        self.owners[own] = owner
        self.clients[owner] = own
        by_id = self.by_owner.setdefault(owner, {})
        for order_id, coid in names.orders:
            if order_id in self.orders or coid in by_id:
                continue
            info = self.book.order(order_id)
            if info is not None:
                if info[1] != owner:
                    raise ValueError(f"names: order {order_id} is owner {info[1]}'s, not {owner}'s")
                self.orders[order_id] = (owner, coid)
                by_id[coid] = order_id
            elif order_id >= self.next_order_id:
                self.id_names[order_id] = coid

    def learn_replayed(self, run: LogRun) -> None:
        """`run` is of a replay answer to this client: its own entries carry every name they have,
        so its cancel_alls without a client order id have none (not one still to learn)."""
        own = self.own_client
        if own is None:
            return
        records = run.records
        if len(records):
            self._checked_owner = max(self._checked_owner, int(records["owner"].max()))
        if own not in self.owners:
            for i in np.flatnonzero(records["client_len"]).tolist():
                client = run.names_of(i)[0]
                owner = int(records["owner"][i])
                if client == own and owner not in self.clients:
                    self.owners[own] = owner
                    self.clients[owner] = own
        mine = self.own_owner
        if mine is None:
            return
        bare = (records["owner"] == mine) & (records["op"] == _CANCEL_ALL) & (records["coid_len"] == 0)
        for seq in records["seq"][bare].tolist():
            self.learn_seq_name(seq, None)

    def _learn_owner_from_seqs(self, run: LogRun) -> None:
        """An edge that does not know its owner number yet learns it from the entry at a seq its
        reports named (that entry is its own)."""
        if self.own_client is None or self.own_client in self.owners or not self.seq_names:
            return
        seqs = run.records["seq"]
        hits = np.flatnonzero(np.isin(seqs, np.fromiter(self.seq_names, np.int64, len(self.seq_names))))
        if len(hits):
            owner = int(run.records["owner"][hits[0]])
            if owner not in self.clients:
                self.owners[self.own_client] = owner
                self.clients[owner] = self.own_client

    def first_unnamed(self, run: LogRun) -> int | None:
        """The first entry of `run` that is this edge's own new or cancel_all and whose client
        order id it does not know yet (the public log carries none): it cannot be applied (its
        reports and maps need the name) until the name is learnt. None: every one is named."""
        if self.own_client is None:
            return None
        self._learn_owner_from_seqs(run)
        mine = self.own_owner
        records = run.records
        if mine is None:
            if not self.expect_owner:
                return None
            new = np.flatnonzero(records["owner"] > max(self.owner_count, self._checked_owner))
            return int(new[0]) if len(new) else None
        ops = records["op"]
        need = (
            (records["owner"] == mine) & (records["coid_len"] == 0) & ((ops == _NEW) | (ops == _CANCEL_ALL))
        )
        if not need.any():
            return None
        seq_names, id_names = self.seq_names, self.id_names
        for i in np.flatnonzero(need).tolist():
            seq = int(records["seq"][i])
            if seq not in seq_names and not (int(ops[i]) == _NEW and int(records["order_id"][i]) in id_names):
                return int(i)
        return None

    def resolve(self, entry: LogEntry) -> LogEntry | None:
        """`entry` (of an edge's replica, about to be applied) with the client order id this edge
        learnt for it; None if it is its own new or cancel_all and the name is not known."""
        if entry.client_order_id is not None:
            return entry
        own = self.own_client
        if own is not None and own not in self.owners and entry.seq in self.seq_names:
            if entry.owner not in self.clients:  # its report named this seq: the entry is ours
                self.owners[own] = entry.owner
                self.clients[entry.owner] = own
        mine = self.own_owner
        if mine is None and self.expect_owner and entry.owner > max(self.owner_count, self._checked_owner):
            return None  # a new owner number, maybe ours: a replay answer will say
        if mine is not None and entry.owner == mine and entry.op in (_NEW, _CANCEL_ALL):
            if entry.seq in self.seq_names:
                coid = self.seq_names.pop(entry.seq)
            elif entry.op == _NEW and entry.order_id in self.id_names:
                coid = self.id_names.pop(entry.order_id)
            else:
                return None
            self._prune_names(entry.seq)
            return entry._replace(client_order_id=coid, client_id=self.own_client)
        return entry

    def _prune_names(self, seq: int) -> None:
        """Forget learnt names of entries already applied (a report that came after its entry)."""
        if len(self.seq_names) > 64:
            for stale in [s for s in self.seq_names if s <= seq]:
                del self.seq_names[stale]
        if len(self.id_names) > 64:
            for stale in [i for i in self.id_names if i < self.next_order_id]:
                del self.id_names[stale]

    # -- snapshots -------------------------------------------------------------------------

    def snapshot_data(self, seen: dict[str, dict[str, int]] | None = None, rows: bool = True) -> SnapshotData:
        """`rows=False` leaves `orders` empty, for a caller that encodes them straight from the map
        (`encode_snapshot(snap, orders=replica.orders)`). ValueError on a replica that maps only
        its own client's orders: its snapshot would lack the others' client order ids."""
        if self.own_client is not None:
            raise ValueError(f"replica of {self.own_client!r} maps only that client's orders: no snapshot")
        orders = snapshot_order_rows(self.orders) if rows else []  # sorted by id (native)
        return SnapshotData(
            self.market,
            self.version,
            self.state_hash,
            self.book.snapshot(),
            self.next_order_id,
            dict(self.owners),
            orders,
            seen,
        )

    @classmethod
    def from_snapshot(cls, snap: SnapshotData, own_client: str | None = None) -> Replica:
        """ValueError if the engine bytes are invalid or do not hash to the snapshot's hash, or
        the maps do not match the book. Every order row is checked; with `own_client`, only
        that client's orders are mapped (see __init__). An anonymous snapshot (the published
        one) has no names: an edge learns its own (`learn_names`); the sequencer needs a named
        one (its files)."""
        book = restore_book(snap.engine)
        replica = cls(snap.market, book, own_client)
        if replica.state_hash != snap.state_hash:
            raise ValueError(
                f"snapshot {snap.version}: engine state hashes to {hash_hex(replica.state_hash)}, "
                f"snapshot says {hash_hex(snap.state_hash)}"
            )
        replica.version = snap.version
        replica.next_order_id = snap.next_order_id
        replica._owner_count = snap.owners_assigned
        if not snap.named:
            return replica
        for client, owner in snap.owners.items():
            replica.owners[client] = owner
            replica.clients[owner] = client
        if len(replica.clients) != len(replica.owners):
            raise ValueError(f"snapshot {snap.version}: two clients share an owner number")
        listed: set[int] = set()
        open_ids: set[tuple[int, str]] = set()
        own = replica.owners.get(own_client, -1) if own_client is not None else None
        for order_id, owner, coid in snap.orders:
            info = book.order(order_id)
            if info is None or info[1] != owner:
                raise ValueError(f"snapshot {snap.version}: order {order_id} of the maps is not in the book")
            if owner not in replica.clients:
                raise ValueError(f"snapshot {snap.version}: order {order_id} has owner {owner} of no client")
            if order_id >= snap.next_order_id:
                raise ValueError(f"snapshot {snap.version}: order {order_id} is not below next_order_id")
            if order_id in listed:
                raise ValueError(f"snapshot {snap.version}: order {order_id} listed twice")
            if (owner, coid) in open_ids:
                raise ValueError(f"snapshot {snap.version}: two open orders of owner {owner} share {coid!r}")
            listed.add(order_id)
            open_ids.add((owner, coid))
            if own is None or owner == own:
                replica.orders[order_id] = (owner, coid)
                replica.by_owner.setdefault(owner, {})[coid] = order_id
        if len(listed) != len(book):
            counts = f"maps hold {len(listed)} orders, book {len(book)}"
            raise ValueError(f"snapshot {snap.version}: {counts}")
        return replica


def _int_list(values: _Ints) -> list[int]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


class _MapChanges:
    """The id-map changes of a batch (Replica.apply_batch), made in entry order up to a given
    entry: an entry's `new` joins the maps before the orders its events finish leave them, as in
    Replica.execute.

    The Python reference of the native `fastbook.log._idmaps.MapChanges` (fastbook.backend): entry
    index, order id and owner of each new; the client order id of each entry; entry index and
    order id of each order gone (an id not in the maps is skipped). The integer columns may be
    lists or numpy arrays. ValueError if the columns of the news, or those of the orders gone,
    differ in length, or a new's entry index is not one of `client_order_ids`'."""

    def __init__(
        self,
        replica: Replica,
        new_at: _Ints,
        new_ids: _Ints,
        new_owners: _Ints,
        client_order_ids: Sequence[str | None],
        gone_at: _Ints,
        gone_ids: _Ints,
    ) -> None:
        self.replica = replica
        self.new_at, self.new_ids = _int_list(new_at), _int_list(new_ids)
        self.new_owners = _int_list(new_owners)
        self.client_order_ids = client_order_ids
        self.gone_at, self.gone_ids = _int_list(gone_at), _int_list(gone_ids)
        lengths = len(self.new_at), len(self.new_ids), len(self.new_owners)
        if len(set(lengths)) != 1:
            raise ValueError("new_at, new_ids, new_owners have lengths {}, {}, {}".format(*lengths))
        if len(self.gone_at) != len(self.gone_ids):
            raise ValueError(f"gone_at, gone_ids have lengths {len(self.gone_at)}, {len(self.gone_ids)}")
        n_ids = len(client_order_ids)
        for k, at in enumerate(self.new_at):
            if not 0 <= at < n_ids:
                raise ValueError(f"new_at[{k}] = {at} is not an entry index (client_order_ids has {n_ids})")
        self.next_new = 0
        self.next_gone = 0

    def advance(self, upto: int) -> dict[int, tuple[int, str]]:
        """Make the changes of the entries up to index `upto`; returns the orders that entry
        `upto` took out of the maps (what `Replica.removed` holds after executing it)."""
        orders, by_owner = self.replica.orders, self.replica.by_owner
        new_at, new_ids, new_owners, coids = self.new_at, self.new_ids, self.new_owners, self.client_order_ids
        gone_at, gone_ids = self.gone_at, self.gone_ids
        k, j = self.next_new, self.next_gone
        nk, nj = len(new_at), len(gone_at)
        removed: dict[int, tuple[int, str]] = {}
        while True:
            if k < nk and new_at[k] <= upto and (j >= nj or new_at[k] <= gone_at[j]):
                order_id, owner, coid = new_ids[k], new_owners[k], coids[new_at[k]]
                orders[order_id] = (owner, coid)  # type: ignore[assignment]
                by_id = by_owner.get(owner)
                if by_id is None:
                    by_owner[owner] = by_id = {}
                by_id[coid] = order_id  # type: ignore[index]
                k += 1
            elif j < nj and gone_at[j] <= upto:
                order_id = gone_ids[j]
                gone = orders.pop(order_id, None)
                if gone is not None:
                    del by_owner[gone[0]][gone[1]]
                    if gone_at[j] == upto:
                        removed[order_id] = gone
                j += 1
            else:
                break
        self.next_new, self.next_gone = k, j
        return removed
