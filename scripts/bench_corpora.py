"""scripts/prepare.py on corpora in rows: MB/s per worker and peak memory, for each input format.

Usage: python scripts/bench_corpora.py [--workdir DIR] [--mb 2000] [--workers 2]
           [--formats parquet,jsonl,jsonl.gz,jsonl.zst,hf,text] [--row-group 1000] [--mirror DIR]

Writes --mb MB of text (documents of 1-12 KB cut from Tiny Shakespeare at random places, as a web
corpus's rows are) once per format into --workdir, then prepares each in its own process with
--workers. Prints, per format: the input's size on disk, the wall time, MB of text per second in all
and per worker, the main process's peak RSS and the largest worker's (VmHWM, polled from /proc: a
forked worker's count includes the pages it shares with the main process). Parquet is written with
--row-group rows per row group (datatrove, which wrote FineWeb's shards, uses 1000-row groups); `hf` is
a dataset saved with save_to_disk (the rows pass through the main process).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from gpt2.data.tokenfiles import read_manifest
from gpt2.run.script import (comma_choices, nonempty_path, nonempty_str, positive_float, positive_int, run_script,
                             script_parser)

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("parquet", "jsonl", "jsonl.gz", "jsonl.zst", "hf", "text")


def documents(text: str, megabytes: float, batch: int = 2000) -> Iterator[list[str]]:
    """Batches of documents summing to about `megabytes` MB."""
    rng, total, limit = np.random.default_rng(0), 0, megabytes * 1e6
    while total < limit:
        starts = rng.integers(0, len(text) - 12_000, batch)
        lengths = rng.integers(1_000, 12_000, batch)
        docs = [text[s: s + n] for s, n in zip(starts, lengths)]
        total += sum(lengths)
        yield docs


def dataset_rows(text: str, megabytes: float) -> Iterator[dict]:
    for docs in documents(text, megabytes):
        yield from ({"text": doc} for doc in docs)


def write_corpus(fmt: str, text: str, megabytes: float, row_group: int, root: Path) -> Path:
    """The corpus in `fmt` under root (written once: reused when there)."""
    path = root / f"corpus-{megabytes:g}mb.{fmt}"
    if path.exists():
        return path
    tmp = Path(tempfile.mkdtemp(dir=root))
    target = tmp / path.name
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        target.mkdir()
        with pq.ParquetWriter(target / "part-0.parquet", pa.schema([("text", pa.string())])) as writer:
            for docs in documents(text, megabytes, row_group):
                writer.write_table(pa.table({"text": docs}), row_group_size=row_group)
    elif fmt == "hf":
        import datasets
        datasets.Dataset.from_generator(dataset_rows, gen_kwargs={"text": text, "megabytes": megabytes},
                                        cache_dir=str(tmp / "cache")).save_to_disk(str(target))
    elif fmt == "text":
        target.mkdir()
        for i, docs in enumerate(documents(text, megabytes)):
            (target / f"{i:05d}.txt").write_text("\n\n".join(docs))
    else:
        write_jsonl(target, fmt, text, megabytes)
    os.replace(target, path)
    shutil.rmtree(tmp)
    return path


def write_jsonl(target: Path, fmt: str, text: str, megabytes: float) -> None:
    if fmt == "jsonl.zst":
        import zstandard
        stream = zstandard.ZstdCompressor(level=3).stream_writer(open(target, "wb"))
    else:
        stream = gzip.open(target, "wb", compresslevel=1) if fmt == "jsonl.gz" else open(target, "wb")
    with stream:
        for docs in documents(text, megabytes):
            stream.write("".join(json.dumps({"text": d}) + "\n" for d in docs).encode())


def vmhwm_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def run_prepare(corpus: Path, fmt: str, workers: int, workdir: Path, mirror) -> dict:
    """scripts/prepare.py in its own process, its memory polled: wall time, peaks, manifest."""
    inputs = ["--hf-dataset", str(corpus)] if fmt == "hf" else [str(corpus)]
    with tempfile.TemporaryDirectory(dir=workdir) as out:
        command = [sys.executable, str(ROOT / "scripts" / "prepare.py"), *inputs, "--out", out, "--workers",
                   str(workers), "--data-dir", str(workdir / "data"), *(["--mirror", mirror] if mirror else [])]
        start, main, worker = time.perf_counter(), 0.0, 0.0
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        while proc.poll() is None:
            main = max(main, vmhwm_mb(proc.pid))
            worker = max([worker, *(vmhwm_mb(child) for child in children(proc.pid))])
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        stdout, stderr = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"prepare failed on {corpus}: {stderr.strip()}")
        manifest = read_manifest(Path(out))
    text_mb = sum(s.get("text_bytes", s["bytes"]) for s in manifest["sources"]) / 1e6
    return {"seconds": seconds, "text_mb": text_mb, "main_mb": main, "worker_mb": worker,
            "tokens": sum(f["tokens"] for f in manifest["files"].values())}


def disk_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def build_parser():
    parser = script_parser(__doc__)
    parser.add_argument("--workdir", type=nonempty_path, default=None,
                        help="where the corpora are written (default: a temp dir)")
    parser.add_argument("--mb", type=positive_float, default=2000, help="MB of text in each corpus")
    parser.add_argument("--workers", type=positive_int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--formats", type=comma_choices(*FORMATS), default=list(FORMATS))
    parser.add_argument("--row-group", type=positive_int, default=1000, help="rows per Parquet row group")
    parser.add_argument("--mirror", type=nonempty_str, default=os.environ.get("GPT2_DATA_MIRROR") or None)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-corpora-"))
    workdir.mkdir(parents=True, exist_ok=True)
    text = (Path(args.mirror or "data") / "tinyshakespeare" / "input.txt").read_text()
    print("| format | on disk | text | wall time | MB/s | MB/s per worker | peak RSS main | peak RSS largest worker |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for fmt in args.formats:
        corpus = write_corpus(fmt, text, args.mb, args.row_group, workdir)
        r = run_prepare(corpus, fmt, args.workers, workdir, args.mirror)
        rate = r["text_mb"] / r["seconds"]
        print(f"| {fmt} | {disk_mb(corpus):,.0f} MB | {r['text_mb']:,.0f} MB, {r['tokens'] / 1e6:,.0f}M tokens | "
              f"{r['seconds']:.0f} s | {rate:.1f} | {rate / args.workers:.1f} | {r['main_mb']:,.0f} MB | "
              f"{r['worker_mb']:,.0f} MB |", flush=True)


if __name__ == "__main__":
    run_script(main)
