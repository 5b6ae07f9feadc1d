"""A seeded shuffle of every window in O(1) memory: a keyed bijection of [0, n), evaluated where needed.

`FeistelPermutation(n, key)` maps position i of an epoch to the window it visits. It is a balanced
Feistel network over Z_m x Z_m with m = ceil(sqrt(n)) (so m*m < n + 2*sqrt(n) + 1), made a bijection of
[0, n) by cycle-walking: a value that lands in [n, m*m) is encrypted again until it falls inside
(on average fewer than 1 + 3/sqrt(n) rounds of the network per position). Each round's function is the
splitmix64 finalizer of the half XOR a round key, so the order is a function of (n, key) alone: nothing
to store, nothing to build per epoch, the same on every rank and every machine. At 10^10 windows a
batch of starts costs the same microseconds as at 10^3.

Feistel networks are bijections whatever the round function (each round is undone by subtracting it
again), so every window is visited exactly once per epoch; with six rounds of a well-mixed function the
order passes for a random permutation (Luby-Rackoff needs four), which is all a data order needs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

ROUNDS = 6
_M64 = (1 << 64) - 1


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on uint64 (wrapping arithmetic): a fast, well-mixed 64-bit hash."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def round_keys(key: int, rounds: int = ROUNDS) -> list[int]:
    """`rounds` 64-bit keys drawn from one integer key by the splitmix64 sequence."""
    state = np.array([key & _M64], dtype=np.uint64)
    keys = []
    for _ in range(rounds):
        state = state + np.uint64(0x9E3779B97F4A7C15)
        keys.append(int(splitmix64(state)[0]))
    return keys


class FeistelPermutation:
    """perm(positions) -> windows: a keyed permutation of [0, n), in O(1) memory."""

    def __init__(self, n: int, key: int):
        if n < 1:
            raise ValueError(f"a permutation needs n >= 1, got {n}")
        self.n = n
        self.m = math.isqrt(n - 1) + 1  # the smallest m with m * m >= n
        self.keys = [np.uint64(k) for k in round_keys(key)]

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        m = np.uint64(self.m)
        left, right = x // m, x % m
        with np.errstate(over="ignore"):
            for k in self.keys:
                left, right = right, (left + splitmix64(right ^ k) % m) % m
        return left * m + right

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        """The windows at these positions of the permutation (int64 in, int64 out, same shape)."""
        x = positions.numpy().astype(np.uint64)  # a negative position wraps to beyond n
        if x.size and int(x.max()) >= self.n:
            raise IndexError(f"positions must lie in [0, {self.n})")
        y = self._encrypt(x)
        outside = np.flatnonzero(y >= self.n)
        while outside.size:  # cycle-walk: encrypt again until inside [0, n)
            y[outside] = self._encrypt(y[outside])
            outside = outside[y[outside] >= self.n]
        return torch.from_numpy(y.astype(np.int64))
