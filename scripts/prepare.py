"""Tokenize a corpus into token files for `python train.py data=bin data.dir=OUT`.

Usage: python scripts/prepare.py [<file | directory | glob> ...] [--hf-dataset NAME [--hf-config C]
                                 [--split S]] --out OUT [--workers N] [--text-column text]
                                 [--tokenizer gpt2|char] [--train-frac 0.9]
                                 [--split-by auto|documents|tokens]

Inputs: text files (each a document); Parquet files (.parquet), JSON Lines (.jsonl, .jsonl.gz,
.jsonl.zst) and a Hugging Face dataset (a Hub name, a directory saved with save_to_disk, or a directory
of data files), each row a document, its text in --text-column. A directory holding Parquet or JSON
Lines files is read for those alone. Row formats need the corpora extra: pip install -e '.[corpora]'.

Writes OUT/train.bin and OUT/val.bin (uint16 token ids, nanoGPT's layout) and OUT/manifest.json (the
tokenizer, token counts, every source with its size, sha256 and rows, the split rule). Streaming and
multi-process: memory stays bounded whatever the corpus size. Each file is a document; documents are
separated by <|endoftext|>. --split-by documents: each document to train or val whole, by the hash of
its bytes; tokens: that split's stream (train's documents, then val's) cut at train_frac of its tokens,
so val.bin holds the asked share (at most one document cut in two); auto (the default): documents,
unless val.bin's share then misses 1 - train_frac by more than half of it: tokens (said on stderr). A
single document is split by position (its first train_frac of tokens for training). Running it again on
unchanged inputs and settings does nothing once every byte of OUT's token files is checked against the
manifest (a file changed since is written again, said in one line); a stopped run or a full disk leaves
no finished-looking file behind and an earlier OUT as it was.
"""

from __future__ import annotations

from gpt2.signals import STOP

STOP.install()  # before the slow imports: a Ctrl-C or SIGTERM anywhere ends in one line
STOP.context = "before the token files were finished (nothing finished was written): run the command again"

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

from gpt2.data.prepare import SPLIT_BY, Settings, prepare  # noqa: E402
from gpt2.data.rows import HFDataset  # noqa: E402
from gpt2.errors import ConfigError  # noqa: E402
from gpt2.run.script import (fraction, nonempty_path, nonempty_str, positive_int, run_script,  # noqa: E402
                             script_parser)
from gpt2.train.runtime import peak_rss_mb  # noqa: E402


def summary(manifest: dict, out: Path) -> str:
    files = manifest["files"]
    line = ", ".join(f"{name} {f['tokens']:,} tokens ({f['documents']:,} document{'' if f['documents'] == 1 else 's'})"
                     for name, f in files.items())
    if manifest.get("up_to_date"):
        return f"{out} is up to date ({line}): nothing to do"
    megabytes = sum(doc.get("text_bytes", doc["bytes"]) for doc in manifest["sources"]) / 1e6
    notes = [f"{megabytes:,.1f} MB of text in {manifest['seconds']:.1f} s "
             f"({megabytes / max(manifest['seconds'], 1e-9):.1f} MB/s, {manifest['workers']} workers, "
             f"peak RSS {peak_rss_mb():,.0f} MB)"]
    if manifest["replaced_bytes"]:
        bad = [doc["path"] for doc in manifest["sources"] if doc["replaced"]]
        notes.append(f"{manifest['replaced_bytes']:,} bytes that were not UTF-8 replaced by U+FFFD, in "
                     f"{len(bad)} file(s) (first: {bad[0]})")
    for reason in ("empty", "binary (NUL bytes)", "not a row file (beside row files)"):
        paths = [skip["path"] for skip in manifest["skipped"] if skip["reason"] == reason]
        if paths:
            notes.append(f"{len(paths)} {reason.split(' (')[0]} file(s) skipped (first: {paths[0]})")
    empty_rows = sum(doc.get("empty_rows", 0) for doc in manifest["sources"])
    if empty_rows:
        notes.append(f"{empty_rows:,} empty row(s) skipped")
    if manifest["unsafe_cuts"]:
        notes.append(f"{manifest['unsafe_cuts']} cut(s) inside a long run without whitespace (tokens there may "
                     f"differ from encoding the file whole)")
    return f"wrote {out}: {line}; split by {manifest['split']}; " + "; ".join(notes)


def build_parser() -> argparse.ArgumentParser:
    """Every value is checked as the flags are read: '--workers: must be at least 1, got 0'."""
    parser = script_parser(__doc__)
    parser.add_argument("inputs", nargs="*", type=nonempty_str, help="files (text, .parquet, .jsonl, .jsonl.gz, "
                        ".jsonl.zst), directories (read recursively) or glob patterns")
    parser.add_argument("--text-column", default="text", help="the column (Parquet, datasets) or key (JSON "
                        "Lines) holding each row's text")
    parser.add_argument("--hf-dataset", type=nonempty_str, default=None, metavar="NAME", help="a Hugging Face "
                        "dataset: a Hub name (streamed), a directory saved with save_to_disk, or a directory of data files")
    parser.add_argument("--hf-config", default=None, help="the dataset's configuration (subset)")
    parser.add_argument("--split", default="train", help="the dataset's split (default: train)")
    parser.add_argument("--out", type=nonempty_path, required=True, help="output directory (created if needed)")
    parser.add_argument("--workers", type=positive_int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--tokenizer", choices=["gpt2", "char"], default="gpt2")
    parser.add_argument("--train-frac", type=fraction, default=0.9, help="share of the tokens for training "
                        "(by documents: of the documents), in (0, 1): below 1, val.bin gets the rest")
    parser.add_argument("--split-by", choices=SPLIT_BY, default="auto",
                        help="documents (whole, by hash), tokens (val.bin gets 1 - train_frac of the tokens) "
                        "or auto: documents unless their split misses the asked share by more than half")
    parser.add_argument("--data-dir", type=nonempty_str, default="data",
                        help="where the GPT-2 BPE files are kept (as data.data_dir)")
    parser.add_argument("--mirror", type=nonempty_str, default=None,
                        help="offline copy of the BPE files (default: $GPT2_DATA_MIRROR)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.inputs and not args.hf_dataset:
        raise ConfigError("give input files or directories, or --hf-dataset NAME")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings(tokenizer=args.tokenizer, train_frac=args.train_frac, workers=args.workers,
                        data_dir=args.data_dir, mirror=args.mirror, text_column=args.text_column,
                        split_by=args.split_by,
                        hf=HFDataset(args.hf_dataset, args.hf_config, args.split) if args.hf_dataset else None)
    print(summary(prepare(args.inputs, args.out, settings), args.out))


if __name__ == "__main__":
    run_script(main)
