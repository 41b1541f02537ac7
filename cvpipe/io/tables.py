"""CSV that is safe to open in a spreadsheet: written by the csv module (quoting commas, quotes and line breaks in
names), with OWASP's rule against formula injection: a text cell that begins with `=`, `+`, `-`, `@`, a tab or a
carriage return gets a leading `'`, so Excel and LibreOffice show it as text instead of running it. Numbers
are written as they are (a negative score stays a number)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import IO, Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class SafeWriter:
    """`csv.writer` with every text cell passed through `safe_cell`."""

    def __init__(self, f: IO[str], **options):
        self._writer = csv.writer(f, **options)

    def writerow(self, row: Iterable[Any]):
        return self._writer.writerow([safe_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(f: IO[str]) -> SafeWriter:
    return SafeWriter(f)


def csv_dict_writer(f: IO[str], fields: Sequence[str], **options) -> csv.DictWriter:
    """`csv.DictWriter` whose rows go through `SafeWriter`."""
    writer = csv.DictWriter(f, fields, **options)
    writer.writer = SafeWriter(f)
    return writer
