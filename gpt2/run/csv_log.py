"""metrics.csv (logger.backend with csv): the rows of metrics.jsonl as a table for spreadsheets and
pandas, one column per key any row has.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

from gpt2.files import atomic_write_text

CSV_FILE = "metrics.csv"


def cell(value) -> str:
    """A value as its cell: empty for a missing, null or non-finite value (null in metrics.jsonl),
    a float as its shortest exact repr (float(cell) == value)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


class CsvLog:
    """run_dir/metrics.csv: `iter` then every other key in the order rows first had it; a row without
    a key has an empty cell. A row with a key new to the file rewrites it (atomically) with the wider
    header; any other row is appended and flushed. It is built from the rows the run starts with (a
    resumed run's kept rows), so it always holds the rows of metrics.jsonl."""

    def __init__(self, run_dir: Path, rows: Sequence[dict] = ()):
        self.path = Path(run_dir) / CSV_FILE
        self.rows = list(rows)
        self.columns = ["iter"]
        for row in self.rows:
            self.columns += [k for k in row if k not in self.columns]
        self._file = None
        self._rewrite()

    def _cells(self, row: dict) -> list[str]:
        return [cell(row.get(key)) for key in self.columns]

    def _rewrite(self) -> None:
        self.close()
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self._cells(row) for row in self.rows)
        atomic_write_text(self.path, text.getvalue())
        self._file = open(self.path, "a", encoding="utf-8", newline="")

    def log(self, row: dict) -> None:
        self.rows.append(row)
        new = [key for key in row if key not in self.columns]
        if new:
            self.columns += new
            self._rewrite()
        else:
            csv.writer(self._file, lineterminator="\n").writerow(self._cells(row))
            self._file.flush()

    def log_sample(self, row: dict) -> None:
        pass  # samples are in samples.jsonl

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self, summary: dict) -> None:
        self.close()

    def abort(self) -> None:
        self.close()
