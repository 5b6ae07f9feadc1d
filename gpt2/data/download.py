"""Files the harness downloads, checksummed, with an offline mirror as the alternative to the network."""

from __future__ import annotations

import os
import shutil
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from gpt2.errors import DataError
from gpt2.files import atomic_file, atomic_write_bytes, sha256_bytes, sha256_file

MIRROR_ENV = "GPT2_DATA_MIRROR"
MIRROR_HINT = f"set data.mirror=DIR (or the {MIRROR_ENV} environment variable)"


@dataclass(frozen=True)
class Remote:
    """A file with a canonical URL and a known sha256, stored at `relpath` under data_dir or a mirror."""

    relpath: str
    url: str
    sha256: str


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


def _verified(path: Path, remote: Remote) -> bool:
    return path.is_file() and sha256_file(path) == remote.sha256


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
          timeout: float = 30.0) -> Path:
    """Return a verified local copy of `remote` in data_dir: already there, copied from the mirror,
    or downloaded. Raises DataError with one actionable message when none of these works.
    Without an explicit mirror, $GPT2_DATA_MIRROR is the mirror when set."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    target = Path(data_dir) / remote.relpath
    if _verified(target, remote):
        return target
    if mirror is not None:
        source = Path(mirror) / remote.relpath
        if not source.is_file():
            raise DataError(f"{source} does not exist: the mirror given by data.mirror / {MIRROR_ENV} "
                            f"must hold {remote.relpath}")
        if not _verified(source, remote):
            raise DataError(f"{source} has the wrong sha256 (expected {remote.sha256}); "
                            f"replace it with the file from {remote.url}")
        with writing(target), atomic_file(target) as f, open(source, "rb") as src:  # never half a file
            shutil.copyfileobj(src, f)
        return target
    try:
        with urllib.request.urlopen(remote.url, timeout=timeout) as response:
            data = response.read()
    except (OSError, ValueError) as exc:
        raise DataError(f"{target} is missing and could not be downloaded from {remote.url} ({exc}). "
                        f"Offline? Put the file there, or {MIRROR_HINT} to a folder holding "
                        f"{remote.relpath}") from None
    if sha256_bytes(data) != remote.sha256:
        raise DataError(f"the download of {remote.url} has the wrong sha256 (expected {remote.sha256}); "
                        f"nothing was saved. Try again, or {MIRROR_HINT} to a verified copy")
    with writing(target):
        atomic_write_bytes(target, data)
    return target
