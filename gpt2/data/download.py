"""Files the harness downloads, checksummed, with an offline mirror as the alternative to the network.

A file is verified by its sha256, or, where its publisher gives no sha256, by the git blob id its git
repository records for it (`git_blob_sha1`: what `git hash-object FILE` prints)."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from gpt2.errors import DataError
from gpt2.files import atomic_write_bytes, sha256_bytes

MIRROR_ENV = "GPT2_DATA_MIRROR"
MIRROR_OPTION = "data.mirror"  # train.py's; the scripts' is --mirror


def mirror_hint(option: str = MIRROR_OPTION) -> str:
    """How to name a mirror: train.py's `data.mirror=DIR`, a script's `--mirror DIR`."""
    if option.startswith("-"):
        return f"pass {option} DIR (or set the {MIRROR_ENV} environment variable)"
    return f"set {option}=DIR (or the {MIRROR_ENV} environment variable)"


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file's content (`git hash-object`): sha1 of b"blob <size>\\0" + content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Remote:
    """A file with a canonical URL and a known checksum (exactly one of `sha256` and `git_blob_sha1`),
    stored at `relpath` under data_dir or a mirror."""

    relpath: str
    url: str
    sha256: Optional[str] = None
    git_blob_sha1: Optional[str] = None
    """The file's git blob id in its publisher's repository, for a file published without a sha256."""

    def __post_init__(self) -> None:
        if (self.sha256 is None) == (self.git_blob_sha1 is None):
            raise ValueError(f"Remote {self.relpath}: give exactly one of sha256 and git_blob_sha1")

    @property
    def digest_name(self) -> str:
        return "sha256" if self.sha256 is not None else "git blob sha1"

    @property
    def digest(self) -> str:
        """The expected checksum (of the kind `digest_name` says)."""
        return self.sha256 if self.sha256 is not None else self.git_blob_sha1

    def matches(self, data: bytes) -> bool:
        """Whether `data` is this file: the one verification every copy passes."""
        found = sha256_bytes(data) if self.sha256 is not None else git_blob_sha1(data)
        return found == self.digest


TINY_SHAKESPEARE = Remote(
    "tinyshakespeare/input.txt",
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)
GPT2_VOCAB_BPE = Remote(
    "gpt2-bpe/vocab.bpe",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
)
GPT2_ENCODER_JSON = Remote(
    "gpt2-bpe/encoder.json",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
)
# HellaSwag's validation set (10,042 examples); rowanz/hellaswag publishes no sha256, and this is the
# blob id of data/hellaswag_val.jsonl in that repository (commit a29ff8e)
HELLASWAG_VAL = Remote(
    "hellaswag/hellaswag_val.jsonl",
    "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
    git_blob_sha1="0f5ee25d72216f12317d5d8a7b92deafa423d81e",
)


def _verified(path: Path, remote: Remote) -> bool:
    return path.is_file() and remote.matches(path.read_bytes())


@contextmanager
def writing(target: Path) -> Iterator[None]:
    """An OSError while storing a download in data_dir (read-only, a file in the way, a full disk)
    becomes one DataError."""
    try:
        yield
    except OSError as exc:
        raise DataError(f"{target} cannot be written ({exc.strerror}): set data.data_dir to a writable "
                        f"directory") from None


def fetch(remote: Remote, data_dir: str | Path, mirror: Optional[str | Path] = None,
          timeout: float = 30.0, mirror_option: str = MIRROR_OPTION) -> Path:
    """Return a verified local copy of `remote` in data_dir: already there, copied from the mirror,
    or downloaded. Raises DataError with one actionable message when none of these works (naming the
    mirror as `mirror_option`: train.py's data.mirror, a script's --mirror).
    Without an explicit mirror, $GPT2_DATA_MIRROR is the mirror when set."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    target = Path(data_dir) / remote.relpath
    if _verified(target, remote):
        return target
    if mirror is not None:
        source = Path(mirror) / remote.relpath
        if not source.is_file():
            raise DataError(f"{source} does not exist: the mirror given by {mirror_option} / {MIRROR_ENV} "
                            f"must hold {remote.relpath} (or put the file at {target})")
        data = source.read_bytes()
        if not remote.matches(data):
            raise DataError(f"{source} has the wrong {remote.digest_name} (expected {remote.digest}); "
                            f"replace it with the file from {remote.url}")
    else:
        data = download(remote, target, timeout, mirror_option)
    with writing(target):
        atomic_write_bytes(target, data)  # never half a file
    return target


def download(remote: Remote, target: Path, timeout: float, mirror_option: str) -> bytes:
    """The file's verified bytes from its URL."""
    try:
        with urllib.request.urlopen(remote.url, timeout=timeout) as response:
            data = response.read()
    except (OSError, ValueError) as exc:
        raise DataError(f"{target} is missing and could not be downloaded from {remote.url} ({exc}). "
                        f"Offline? Put the file there, or {mirror_hint(mirror_option)} to a folder holding "
                        f"{remote.relpath}") from None
    if not remote.matches(data):
        raise DataError(f"the download of {remote.url} has the wrong {remote.digest_name} (expected "
                        f"{remote.digest}); nothing was saved. Try again, or {mirror_hint(mirror_option)} to a "
                        f"verified copy")
    return data
