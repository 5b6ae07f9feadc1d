"""gpt2/data/rows.py: row files and datasets read as documents, and every damaged input one line."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from gpt2.data import rows
from gpt2.data.prepare import Settings, prepare
from gpt2.errors import DataError

from conftest import MIRROR, ROOT


def lines(*records) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def test_formats_are_known_by_their_name():
    assert [rows.row_format(p) for p in ("a.parquet", "A.JSONL", "b.jsonl.gz", "c.jsonl.zst", "d.txt", "e.json")] \
        == ["parquet", "jsonl", "jsonl.gz", "jsonl.zst", None, None]


def test_json_lines_are_cut_between_lines_and_numbered(tmp_path):
    data = lines(*({"text": f"row {i} " + "x" * (i * 7)} for i in range(50)))
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(data))
    chunks = list(rows.jsonl_chunks(str(tmp_path / "a.jsonl.gz"), "jsonl.gz", 500))
    assert len(chunks) > 5 and b"".join(data for _, data in chunks) == data
    assert all(data.endswith(b"\n") for _, data in chunks)
    numbered = [row for line, data in chunks for row in rows.JsonLines("a", data, line, "text").rows()]
    assert [(n, v) for n, v, _ in numbered][:2] == [(1, "row 0 "), (2, "row 1 xxxxxxx")]
    assert numbered[-1][0] == 50


def test_text_that_is_not_utf8_or_half_a_character_is_replaced_and_counted():
    unit = rows.JsonLines("a.jsonl", b'{"text": "caf\xe9"}\n{"text": "a\\ud800b"}\n', 1, "text")
    found = [(value, invalid) for _, value, invalid in unit.rows()]
    assert found[0] == ("caf\ufffd", 1)
    assert rows.clean(found[1][0], "here", "text") == ("a\ufffdb", 1)


def parquet(path, **columns) -> str:
    pq.write_table(pa.table(columns), path, row_group_size=2)
    return str(path)


def damaged_parquet(path) -> str:
    good = open(parquet(path.with_suffix(".ok.parquet"), text=["a", "b", "c"]), "rb").read()
    path.write_bytes(good[: len(good) // 2] + good[-30:])
    return str(path)


# (name, write the input into tmp_path and return prepare's inputs and settings, what the line says)
HOSTILE = [
    ("parquet without the column",
     lambda t: ([parquet(t / "a.parquet", body=["x", "y"])], {}), "a.parquet: no column 'text' (its columns: body)"),
    ("parquet column of numbers",
     lambda t: ([parquet(t / "a.parquet", text=[1, 2])], {}), "a.parquet: column 'text' holds int64, not strings"),
    ("parquet null row",
     lambda t: ([parquet(t / "a.parquet", text=["x", "y", None])], {}), "a.parquet: row group 1 (row 2): the 'text' value is null"),
    ("not parquet at all",
     lambda t: ([str(t / "a.parquet")], (t / "a.parquet").write_bytes(b"PAR1 not really") and {}), "a.parquet: not a readable Parquet file"),
    ("truncated parquet",
     lambda t: ([damaged_parquet(t / "a.parquet")], {}), "a.parquet: not a readable Parquet file"),
    ("jsonl line that is not JSON",
     lambda t: ([str(t / "a.jsonl")], (t / "a.jsonl").write_bytes(lines({"text": "ok"}, "{oops")) and {}), "a.jsonl:2: not JSON"),
    ("jsonl without the key",
     lambda t: ([str(t / "a.jsonl")], (t / "a.jsonl").write_bytes(lines({"text": "ok"}, {"id": 1, "body": "x"})) and {}),
     "a.jsonl:2: no 'text' key (id, body)"),
    ("jsonl line that is no object",
     lambda t: ([str(t / "a.jsonl")], (t / "a.jsonl").write_bytes(lines([1, 2])) and {}), "a.jsonl:1: no 'text' key (a list, not an object)"),
    ("jsonl number",
     lambda t: ([str(t / "a.jsonl")], (t / "a.jsonl").write_bytes(lines({"text": "ok"}, {"text": 7})) and {}),
     "a.jsonl:2: the 'text' value is a int, not a string"),
    ("truncated jsonl.gz",
     lambda t: ([str(t / "a.jsonl.gz")], (t / "a.jsonl.gz").write_bytes(gzip.compress(lines({"text": "ok"}) * 9)[:-12]) and {}),
     "a.jsonl.gz: cannot be decompressed"),
    ("jsonl.zst that is not zstd",
     lambda t: ([str(t / "a.jsonl.zst")], (t / "a.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage") and {}),
     "a.jsonl.zst: cannot be decompressed"),
    ("dataset without the split",
     lambda t: ([], {"hf": saved(t, "validation")}), "has no split 'validation' (its splits: train)"),
    ("saved dataset with a damaged file",
     lambda t: ([], {"hf": damaged_saved(t)}), "data-00000-of-00001.arrow: cannot be read ("),
    ("dataset row that is null",
     lambda t: ([], {"hf": null_row_saved(t), "text_column": "content"}), "row 1: the 'content' value is null"),
    ("every row empty",
     lambda t: ([str(t / "a.jsonl")], (t / "a.jsonl").write_bytes(lines({"text": ""}, {"text": ""})) and {}),
     "the inputs hold no text (every row is empty)"),
]


def null_row_saved(root):
    import datasets
    datasets.Dataset.from_dict({"content": ["a", None]}).save_to_disk(str(root / "nulls"))
    return rows.HFDataset(str(root / "nulls"))


def damaged_saved(root):
    import datasets
    datasets.Dataset.from_dict({"text": ["a" * 100] * 50}).save_to_disk(str(root / "ds"))
    arrow = root / "ds" / "data-00000-of-00001.arrow"
    arrow.write_bytes(arrow.read_bytes()[:-300])
    return rows.HFDataset(str(root / "ds"))


def saved(root, split):
    import datasets
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a", "b"]})}).save_to_disk(str(root / "dd"))
    return rows.HFDataset(str(root / "dd"), split=split)


@pytest.mark.parametrize("name, make, says", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_damaged_input_is_one_line_and_earlier_output_stays(tmp_path, name, make, says):
    out = tmp_path / "out"
    (tmp_path / "good.txt").write_text("Good text. " * 300)
    common = {"data_dir": str(tmp_path / "data"), "mirror": str(MIRROR)}
    prepare([str(tmp_path / "good.txt")], out, Settings(**common))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    inputs, extra = make(tmp_path)
    with pytest.raises(DataError) as caught:
        prepare(inputs, out, Settings(**common, workers=2, **extra))
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def run_prepare(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare.py"), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def test_the_script_ends_a_bad_row_in_one_line(tmp_path):
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines({"text": "x"}, {"text": None})))
    result = run_prepare(str(tmp_path / "a.jsonl.zst"), "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and not (tmp_path / "out").exists()
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'a.jsonl.zst'}:2: the 'text' value is null, "
                                                  f"not a string (each row must hold a document's text: choose the "
                                                  f"column with --text-column)"]


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline", "unreachable hub"])
def test_a_hub_dataset_without_network_is_one_line_saying_what_to_do(tmp_path, env):
    result = run_prepare("--hf-dataset", "nobody/no-such-dataset", "--out", str(tmp_path / "out"),
                         env={"HF_HOME": str(tmp_path / "hf"), **env})
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "the Hugging Face Hub cannot be reached (no network?)" in line and "save_to_disk" in line
    assert "HF_ENDPOINT" in line


def test_without_the_corpora_extra_a_row_file_is_a_one_line_hint(tmp_path, monkeypatch):
    path = parquet(tmp_path / "a.parquet", text=["x"])
    for module in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails, as when it is not installed
    with pytest.raises(DataError, match=r"a.parquet: reading Parquet needs the pyarrow package, which the "
                                        r"corpora extra installs: pip install -e '.\[corpora\]'"):
        prepare([path], tmp_path / "out", Settings(data_dir=str(tmp_path / "data"), mirror=str(MIRROR)))


def test_a_categorical_string_column_is_text_and_row_groups_are_numbered(tmp_path):
    table = pa.table({"text": pa.array(["a", "b", "a", "c", "d"]).dictionary_encode()})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=2)
    assert rows.parquet_groups(str(tmp_path / "d.parquet"), "text") == [2, 2, 1]
    assert list(rows.ParquetGroup(str(tmp_path / "d.parquet"), 1, "text", 2).rows()) == [(2, "a", 0), (3, "c", 0)]
