"""The prediction journal: one JSON line per finished image, appended as a run goes, so `--resume` skips what is
done and the result files are rebuilt from it.

A kill can cut the last line anywhere. Opening a journal to append first cuts it back to its last whole
line (an entry cut short is redone), so a new entry never lands on the end of a broken one; a line that is
whole but lost only its newline is kept and terminated. Reading keeps the last entry per file, so an image
redone after a kill is neither lost nor counted twice.

A journal's first line says what made it (`{"made_by": {pipeline, task, classes, weights}}`); resuming with
anything else is refused, since the entries of another model would be written out as this one's.

Reading indexes the journals rather than holding them: where each image's last entry lies, and why it was
skipped where it was. That is about 200 bytes an image where the parsed entries of a detector are several KB,
so the result files of a run of millions of images are written one entry at a time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from cvpipe.errors import CvpipeError

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


class JournalIndex:
    """The finished images of one or more journals (later journals and later lines win): `name in index`,
    `len(index)`, `index.skipped` (name → why), and `entries(names)` to read the entries back in a given order."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self._where: dict[str, tuple[int, int, int]] = {}  # name → (journal, offset, length)
        self.skipped: dict[str, str] = {}
        for k, path in enumerate(paths):
            if path.exists():
                self._add(k, path)

    def _add(self, k: int, path: Path) -> None:
        with open(path, "rb") as f:
            offset = 0
            for line in f:
                entry = _entry(line)
                if entry is not None:  # a line that is not a whole entry is ignored: that image is redone
                    name = entry["file"]
                    self._where[name] = (k, offset, len(line))
                    if "skipped" in entry:
                        self.skipped[name] = str(entry["skipped"])
                    else:
                        self.skipped.pop(name, None)
                offset += len(line)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def __len__(self) -> int:
        return len(self._where)

    def entries(self, names: Iterable[str]) -> Iterator[tuple[str, dict | None]]:
        """(name, its entry, or None where the journals have none) for each of `names`, read one at a time."""
        files = [open(path, "rb") if path.exists() else None for path in self.paths]
        try:
            for name in names:
                where = self._where.get(name)
                if where is None:
                    yield name, None
                    continue
                k, offset, length = where
                files[k].seek(offset)
                yield name, json.loads(files[k].read(length))
        finally:
            for f in files:
                if f is not None:
                    f.close()


class Finished:
    """The images the model saw, as (image id, name, entry) in the order of `names`, the id being the 1-based
    place in it; read from the journals again each time it is iterated, so a task can make two passes."""

    def __init__(self, index: JournalIndex, names: list[str]):
        self.index, self.names = index, names

    def __iter__(self) -> Iterator[tuple[int, str, dict]]:
        for image_id, (name, entry) in enumerate(self.index.entries(self.names), start=1):
            if entry is not None and "skipped" not in entry:
                yield image_id, name, entry


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


def made_by(path: Path) -> dict | None:
    """What a journal's first line says made it, or None (no journal, or one from before journals said)."""
    try:
        with open(path, "rb") as f:
            first = json.loads(f.readline(1 << 20))
    except (OSError, ValueError):
        return None
    return first.get("made_by") if isinstance(first, dict) and isinstance(first.get("made_by"), dict) else None


def check_made_by(paths: list[Path], wanted: dict) -> None:
    """Refuse to add to journals that another pipeline, task, class list or set of weights made."""
    for path in paths:
        found = made_by(path)
        if found is None:
            continue
        differ = [f"{key}: {_short(found.get(key))} there, {_short(wanted.get(key))} now" for key in wanted
                  if found.get(key) != wanted.get(key)]
        if differ:
            raise CvpipeError(f"--out {path.parent}: an earlier run of another model wrote this folder; its results "
                              "would be mixed with this one's. Choose a new --out (or run without --resume to "
                              "start over there)", differ)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "…"


def open_journal(path: Path, *, resume: bool, made_by: dict) -> IO[str]:
    """The journal to append to (resuming) or a new one, whose first line says what made it."""
    if resume:
        repair(path)
    f = open(path, "a" if resume else "w", encoding="utf-8")
    if f.tell() == 0:
        f.write(json.dumps({"made_by": made_by}) + "\n")
        f.flush()
    return f
