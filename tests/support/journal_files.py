"""Reading a journal file's frames in tests (one frame per sequencer batch)."""

from __future__ import annotations

from pathlib import Path

from fastbook.log.journal import FILE_MAGIC, FRAME_HEAD


def last_frame(path: Path) -> int:
    """The file offset of the last frame of a journal whose frame lengths are sound."""
    data = path.read_bytes()
    offset, last = len(FILE_MAGIC), 0
    while offset < len(data):
        last = offset
        offset += FRAME_HEAD.size + FRAME_HEAD.unpack_from(data, offset)[0]
    return last
