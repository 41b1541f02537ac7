"""The prediction journal: one JSON line per finished image, appended as a run goes, so `--resume` skips what is
done and the result files are rebuilt from it.

A kill can cut the last line anywhere. Opening a journal to append first cuts it back to its last whole
line (an entry cut short is redone), so a new entry never lands on the end of a broken one; a line that is
whole but lost only its newline is kept and terminated. Reading keeps the last entry per file, so an image
redone after a kill is neither lost nor counted twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

JOURNAL = ".journal.jsonl"


def journal_paths(out: Path, shards: int) -> list[Path]:
    """One journal per shard: `.journal.jsonl` for a single process, `.journal.shardKofN.jsonl` for N shards."""
    if shards == 1:
        return [out / JOURNAL]
    return [out / f".journal.shard{k}of{shards}.jsonl" for k in range(shards)]


def _entry(line: bytes) -> dict | None:
    try:
        entry = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("file"), str) else None


def read_journal(path: Path) -> dict[str, dict]:
    """Finished images by relative name; a line that is not a whole entry is ignored (that image is redone)."""
    done = {}
    if path.exists():
        for line in path.read_bytes().splitlines():
            entry = _entry(line)
            if entry is not None:
                done[entry["file"]] = entry
    return done


def read_journals(paths: list[Path]) -> dict[str, dict]:
    done: dict[str, dict] = {}
    for path in paths:
        done |= read_journal(path)
    return done


def repair(path: Path) -> None:
    """End the journal at a line boundary: terminate a whole last entry that lost its newline, cut off a partial
    one. Cheap: only the bytes after the last newline are read."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        start = size
        while start > 0:  # find the byte after the last newline, reading back in blocks
            block = min(start, 1 << 16)
            f.seek(start - block)
            chunk = f.read(block)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                start = start - block + newline + 1
                break
            start -= block
        f.seek(start)
        tail = f.read()
        if not tail:
            return
        if _entry(tail) is not None:
            f.write(b"\n")
        else:
            f.truncate(start)


def open_journal(path: Path, *, resume: bool) -> IO[str]:
    """The journal to append to (resuming) or a new one."""
    if resume:
        repair(path)
    return open(path, "a" if resume else "w", encoding="utf-8")
