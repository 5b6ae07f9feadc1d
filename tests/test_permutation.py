import numpy as np
import pytest
import torch

from gpt2.data.permutation import FeistelPermutation


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 17, 100, 1023, 4099, 65_537])
def test_every_position_maps_to_a_distinct_window(n):
    """A bijection of [0, n), checked exhaustively, for squares, non-squares and primes."""
    for key in (0, 1, 2**63 + 5):
        windows = FeistelPermutation(n, key)(torch.arange(n))
        assert windows.dtype == torch.int64
        assert torch.equal(windows.sort().values, torch.arange(n))


def test_the_order_is_a_function_of_the_key_alone():
    n = 10_000
    first = FeistelPermutation(n, 42)(torch.arange(n))
    assert torch.equal(FeistelPermutation(n, 42)(torch.arange(n)), first)
    assert not torch.equal(FeistelPermutation(n, 43)(torch.arange(n)), first)
    # any subset of positions gives the same windows as the whole
    positions = torch.tensor([9_999, 0, 5_000, 17])
    assert torch.equal(FeistelPermutation(n, 42)(positions), first[positions])


def test_the_order_looks_shuffled():
    """No trace of the identity: position and window uncorrelated, neighbours far apart, and about
    n/e fixed-point-free structure (a random permutation has ~1 fixed point)."""
    n = 100_000
    windows = FeistelPermutation(n, 7)(torch.arange(n)).numpy()
    assert abs(np.corrcoef(np.arange(n), windows)[0, 1]) < 0.02
    gaps = np.abs(np.diff(windows))
    assert abs(gaps.mean() / n - 1 / 3) < 0.01  # mean |U - V| of two uniforms is n/3
    assert (windows == np.arange(n)).sum() < 10
    # every tenth of the epoch draws from every tenth of the windows, about evenly
    counts = np.histogram2d(np.arange(n), windows, bins=10)[0]
    assert counts.min() > 0.8 * n / 100 and counts.max() < 1.2 * n / 100


def test_ten_billion_windows_need_no_memory():
    perm = FeistelPermutation(10**10, 1)
    windows = perm(torch.arange(10**10 - 64, 10**10))
    assert len(set(windows.tolist())) == 64 and windows.min() >= 0 and windows.max() < 10**10
    with pytest.raises(IndexError):
        perm(torch.tensor([10**10]))
