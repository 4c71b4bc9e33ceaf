"""What one sequencer `on_messages` call produces before the journal commit decides its fate."""

from __future__ import annotations

from typing import Any

from fastbook.wire.fields import dumps
from fastbook.wire.log import LogEntry, LogRun


class Batch:
    """The sequenced records, the reports by client, the rejections and the public trades of one
    batch: intake and the executor add to it, `BatchCommit` journals and publishes it."""

    def __init__(self) -> None:
        # The sequenced records, in seq order: runs, and the per-command path's entries not yet
        # made into one (see `run`). The journal and the log get them as one LogRun.
        self._runs: list[LogRun] = []
        self._entries: list[LogEntry] = []
        self.count = 0  # records sequenced
        # (client, client order ids, op) of the sequenced commands, in order (a run's news are one
        # item): a failed commit answers each of them.
        self.sequenced: list[tuple[str, list[str | None], int]] = []
        # client -> the compact JSON text of every report to it, in order: what a committed batch
        # publishes (one reports message per client) ...
        self.texts: dict[str, list[str]] = {}
        # ... and (client, text) of the rejections, in order: what a batch whose commit failed
        # publishes (nothing was sequenced, so nothing else happened).
        self.rejections: list[tuple[str, str]] = []
        self.trades: list[str] = []  # public trades, JSON text

    def add_entry(self, entry: LogEntry) -> None:
        self._entries.append(entry)
        self.count += 1

    def add_run(self, run: LogRun) -> None:
        if self._entries:
            self._runs.append(LogRun.from_entries(self._entries))
            self._entries = []
        self._runs.append(run)
        self.count += len(run)

    def run(self) -> LogRun:
        """Every record of the batch, in order."""
        if self._entries:
            self._runs.append(LogRun.from_entries(self._entries))
            self._entries = []
        self._runs = [LogRun.concat(self._runs)]
        return self._runs[0]

    def add(self, client: str, texts: list[str]) -> None:
        """Report texts to `client`, in order (the list is kept: the caller must not change it)."""
        got = self.texts.get(client)
        if got is None:
            self.texts[client] = texts
        else:
            got.extend(texts)

    def reject(self, client: str, report: dict[str, Any]) -> None:
        text = dumps(report).decode()
        self.add(client, [text])
        self.rejections.append((client, text))
