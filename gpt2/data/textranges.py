"""Reading text files for prepare in pieces whose tokens are exactly those of the whole file.

A file is cut into nominal byte ranges, each moved to a "safe cut" (`safe_cut`: before an ASCII
whitespace byte that follows a non-whitespace character), where GPT-2's pre-tokenizer splits anyway,
so encoding the ranges one by one gives the tokens of encoding the file whole (a file with no such
place within MAX_SCAN bytes is cut at a character boundary instead, reported as an unsafe cut).
Bytes that are not UTF-8 become U+FFFD, counted (`decode_replacing`).
"""

from __future__ import annotations

import hashlib
import os
import re

MAX_SCAN = 1 << 20
"""How far past a nominal cut a safe cut is looked for."""
BINARY_PROBE = 8192
"""A file with a NUL byte in its first BINARY_PROBE bytes is binary, not text, and is skipped."""
_SPACE = re.compile(rb"[ \t\n\r\x0b\x0c]")
_ESCAPED = re.compile("[\udc80-\udcff]")  # an undecodable byte, as the surrogateescape handler keeps it


def hash_file(path: str | os.PathLike) -> tuple[int, str, bool]:
    """(size, sha256, whether it looks binary: a NUL byte near its start)."""
    digest, size, binary = hashlib.sha256(), 0, False
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            binary = binary or (size == 0 and b"\0" in block[:BINARY_PROBE])
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest(), binary


def decode_replacing(raw: bytes) -> tuple[str, int]:
    """(text, invalid bytes): UTF-8 decoded, each byte that is not UTF-8 one U+FFFD."""
    text = raw.decode("utf-8", errors="surrogateescape")
    replaced = len(_ESCAPED.findall(text))
    if replaced:
        text = _ESCAPED.sub("\ufffd", text)
    return text, replaced


def _after_non_space(window: bytes, i: int) -> bool:
    """Whether the character that ends just before byte i is not whitespace (an invalid byte, which
    decodes to U+FFFD, is not)."""
    j = i - 1
    while j > 0 and i - j < 4 and window[j] & 0xC0 == 0x80:  # back to the character's first byte
        j -= 1
    char = window[j:i].decode("utf-8", errors="replace")
    return bool(char) and not char[-1].isspace()


def safe_cut(f, pos: int, size: int, max_scan: int = MAX_SCAN) -> tuple[int, bool]:
    """The first safe cut at or after byte `pos` of the open file (0 and size are cuts), and whether
    it is a true safe cut (False: a character boundary, no safe cut within max_scan).

    A safe cut is just before an ASCII whitespace byte that follows a non-whitespace character: no
    piece of GPT-2's pre-tokenizer spans such a place (a piece is whitespace only, or starts with at
    most one space), and what matches from there on depends only on the text from there on."""
    if pos <= 0 or pos >= size:
        return min(max(pos, 0), size), True
    base = max(0, pos - 4)  # room for the character before a cut at pos
    f.seek(base)
    window = f.read(pos - base + max_scan)
    for match in _SPACE.finditer(window, pos - base):
        if match.start() > 0 and _after_non_space(window, match.start()):
            return base + match.start(), True
    if base + len(window) >= size:
        return size, True
    offset = next((i for i in range(pos - base, len(window)) if window[i] & 0xC0 != 0x80), len(window))
    return base + offset, False


def read_range(path: str, start: int, end: int, max_scan: int = MAX_SCAN) -> tuple[str, int, int]:
    """(text, invalid bytes, unsafe cut) of the nominal byte range [start, end) moved to safe cuts."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (begin, _), (stop, safe) = safe_cut(f, start, size, max_scan), safe_cut(f, end, size, max_scan)
        f.seek(begin)
        raw = f.read(max(0, stop - begin))
    text, replaced = decode_replacing(raw)
    return text, replaced, int(not safe and stop < size)
