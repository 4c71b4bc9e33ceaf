"""A journal of the previous format (FBJOURN1, JSON entries) is refused by the sequencer with a
message naming `fastbook journal migrate DIR`; the converter rewrites it in the binary format and
the sequencer then recovers exactly the state the old journal held."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from fastbook.apps.cli.main import main
from fastbook.log.journal import Journal, JournalError
from fastbook.log.journal_migrate import BACKUP_NAME, migrate_journal
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.log import LogEntry
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

SPEC = MarketSpec.parse("BTC-USD")
T = Topics("BTC-USD")

pytestmark = pytest.mark.usefixtures("backend")


def old_record(entry: LogEntry) -> bytes:
    """A record as the previous journal wrote it: u32 len | u32 crc32(seq + payload) | u64 seq | JSON."""
    fields = [entry.seq, f"{entry.hash:016x}", *entry[2:]]
    payload = json.dumps(fields, separators=(",", ":")).encode()
    seq = struct.pack("<Q", entry.seq)
    return struct.pack("<II", len(payload), zlib.crc32(payload, zlib.crc32(seq))) + seq + payload


def flow(node: SequencerNode, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(count):
        client = rng.choice(["alice", "bob", "carol"])
        side = rng.choice(["buy", "sell"])
        order = {"op": "new", "id": f"o{i}", "side": side, "price": f"{rng.randint(95, 105)}", "qty": "1"}
        if i % 9 == 8:
            order = {"op": "cancel_all"}
        node.on_messages([(T.orders(client), json.dumps(order).encode())])


@pytest.fixture
def old_dir(tmp_path: Path) -> tuple[Path, int, int]:
    """A data dir whose journal.log is in the previous format (written from a real run's entries),
    with its market.json and no snapshot; and the version and hash it holds."""
    source = tmp_path / "source"
    node = SequencerNode(SequencerConfig(SPEC, source))
    flow(node, 300, 1)
    version, state_hash = node.version, node.state_hash
    entries = node.journal.entries()
    node.close()
    assert len(entries) == version and all(e.client_id for e in entries)
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(source / "market.json", old / "market.json")
    (old / Journal.FILE_NAME).write_bytes(b"FBJOURN1" + b"".join(old_record(e) for e in entries))
    return old, version, state_hash


def test_the_sequencer_refuses_the_old_format_naming_the_converter(old_dir: tuple[Path, int, int]) -> None:
    data_dir, _version, _hash = old_dir
    before = (data_dir / Journal.FILE_NAME).read_bytes()
    with pytest.raises(JournalError, match=f"fastbook journal migrate {data_dir}"):
        SequencerNode(SequencerConfig(SPEC, data_dir))
    assert (data_dir / Journal.FILE_NAME).read_bytes() == before  # untouched


def test_migrate_then_the_sequencer_recovers_the_same_state(
    old_dir: tuple[Path, int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, version, state_hash = old_dir
    original = (data_dir / Journal.FILE_NAME).read_bytes()
    assert main(["journal", "migrate", str(data_dir)]) == 0
    assert f"migrated {version} entries" in capsys.readouterr().out
    assert (data_dir / BACKUP_NAME).read_bytes() == original
    node = SequencerNode(SequencerConfig(SPEC, data_dir))
    try:
        assert (node.version, node.state_hash) == (version, state_hash)
        # The client ids survive (named on each owner's first entry) and the dedupe window too.
        assert {e.client_id for e in node.journal.entries()} == {"alice", "bob", "carol"}
        assert "o0" in node.seen[node.replica.clients[node.journal.entries(1, 1)[0].owner]]
        flow(node, 20, 2)  # and it goes on from there
        assert node.version > version
    finally:
        node.close()
    # A second run is refused: the journal is already binary.
    assert main(["journal", "migrate", str(data_dir)]) == 1
    assert "already in the binary format" in capsys.readouterr().err


def test_migrate_drops_a_torn_tail_and_refuses_corruption_before_valid_records(
    old_dir: tuple[Path, int, int],
) -> None:
    data_dir, version, _hash = old_dir
    path = data_dir / Journal.FILE_NAME
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])  # the last record torn
    assert migrate_journal(data_dir) == version - 1
    path.write_bytes(bytearray(whole[:40]) + bytes([whole[40] ^ 1]) + whole[41:])  # record 1 damaged
    (data_dir / BACKUP_NAME).unlink()
    with pytest.raises(JournalError, match="valid records follow"):
        migrate_journal(data_dir)


def test_migrate_refuses_while_a_sequencer_holds_the_lock(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    try:
        with pytest.raises(JournalError, match="locked"):
            migrate_journal(tmp_path)
    finally:
        journal.close()


class Crash(BaseException):
    """The process dies here (nothing after this point runs)."""


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_crash_during_the_swap_leaves_a_whole_journal(
    old_dir: tuple[Path, int, int], monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    """The swap renames twice (the backup's name, then the new journal over the old): a crash before
    either leaves journal.log the old journal, byte for byte, and the conversion runs again."""
    data_dir, version, state_hash = old_dir
    path = data_dir / Journal.FILE_NAME
    original = path.read_bytes()
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def crashing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == crash_at:
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(Crash):
        migrate_journal(data_dir)
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls[-1][1] == (BACKUP_NAME if crash_at == 1 else Journal.FILE_NAME)
    assert path.read_bytes() == original  # still the whole old journal
    assert migrate_journal(data_dir) == version  # and the conversion simply runs again
    assert (data_dir / BACKUP_NAME).read_bytes() == original
    assert not (data_dir / (Journal.FILE_NAME + ".new")).exists()
    node = SequencerNode(SequencerConfig(SPEC, data_dir))
    try:
        assert (node.version, node.state_hash) == (version, state_hash)
    finally:
        node.close()
