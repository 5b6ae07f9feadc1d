"""metrics.csv (gpt2/run/csv_log.py): the rows of metrics.jsonl read back with csv.DictReader, a header
that widens with new keys, and a resume that drops the rows after its checkpoint."""

import csv
import math

from gpt2.config import LoggerConfig
from gpt2.run.csv_log import cell
from gpt2.run.logger import RunLogger, read_metrics

CSV = LoggerConfig(backend="csv")


def read_csv(run_dir) -> tuple[list[str], list[dict]]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def as_cells(rows: list[dict], columns: list[str]) -> list[dict]:
    """The rows as DictReader reads them back: every column, '' where a row has no finite value."""
    return [{key: cell(row.get(key)) for key in columns} for row in rows]


def test_csv_rows_equal_the_metrics_rows(tmp_path):
    rows = [{"iter": 0, "val_loss": 4.2, "lr": 1e-4},
            {"iter": 5, "train_loss": 3.5, "lr": 5e-4, "grad_norm": math.nan},
            {"iter": 10, "train_loss": 3.0, "lr": 1e-3, "grad_norm": 1.2},
            {"iter": 15, "train_loss": 2.9, "lr": 1e-3, "grad_norm": 1.1, "mfu": 0.1 + 0.2}]
    with RunLogger(CSV, tmp_path, {}) as run_log:
        for row in rows:
            run_log.log(row)
            header, _ = read_csv(tmp_path)  # flushed as it goes, widened by new keys
            assert header == ["iter", *dict.fromkeys(k for r in rows[:rows.index(row) + 1] for k in r if k != "iter")]
        run_log.finish({})
    header, read = read_csv(tmp_path)
    assert header == ["iter", "val_loss", "lr", "train_loss", "grad_norm", "mfu"]
    assert read == as_cells(rows, header)
    assert read[1]["grad_norm"] == "" and read[0]["train_loss"] == ""  # NaN is null in metrics.jsonl
    assert float(read[3]["mfu"]) == 0.1 + 0.2 and int(read[2]["iter"]) == 10  # values read back exactly


def test_a_resume_keeps_the_csv_rows_up_to_its_checkpoint(tmp_path):
    first = [{"iter": 0, "val_loss": 4.0}, {"iter": 5, "train_loss": 3.5}, {"iter": 10, "train_loss": 3.0, "mfu": 0.5}]
    with RunLogger(CSV, tmp_path, {}) as run_log:
        for row in first:
            run_log.log(row)
    again = [{"iter": 10, "train_loss": 2.5}, {"iter": 15, "train_loss": 2.0}]
    with RunLogger(CSV, tmp_path, {}, resume_from=5) as run_log:
        assert read_csv(tmp_path) == (["iter", "val_loss", "train_loss"], as_cells(first[:2], ["iter", "val_loss", "train_loss"]))
        for row in again:
            run_log.log(row)
    header, read = read_csv(tmp_path)
    assert header == ["iter", "val_loss", "train_loss"] and read == as_cells(read_metrics(tmp_path), header)
    assert [r["iter"] for r in read] == ["0", "5", "10", "15"]
    with RunLogger(CSV, tmp_path, {}):  # a fresh start: the header alone
        pass
    assert read_csv(tmp_path) == (["iter"], [])
