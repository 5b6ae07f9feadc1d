import hashlib
import json
import threading
import time
import warnings
from dataclasses import replace
from itertools import islice

import numpy as np
import pytest
import torch

from gpt2.data import sources as sources_module
from gpt2.config import DataConfig
from gpt2.data.loaders import _mix, FixedBatchSampler, LMSequenceDataset, WindowBatchSampler, make_dataloader
from gpt2.errors import DataError
from gpt2.data.sources import TextSource, load_tokens, train_valid_split
from gpt2.data.tokenfiles import FORMAT
from gpt2.data.tokenizer import CharTokenizer, GPT2Tokenizer

from conftest import MIRROR


def first_batches(cfg: DataConfig, n: int = 3):
    return [tuple(t.clone() for t in b) for b in islice(make_dataloader(cfg).train_dl.forever(), n)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))


# ------------------------------------------------------------------------------ the seed's pieces
def test_dataset_windows_are_shifted_by_one():
    ds = LMSequenceDataset(torch.arange(10), block_size=3)
    assert len(ds) == 7  # N - T
    x, y = ds[0]
    assert x.tolist() == [0, 1, 2] and y.tolist() == [1, 2, 3]
    x, y = ds[6]  # the last window reaches the last token
    assert x.tolist() == [6, 7, 8] and y.tolist() == [7, 8, 9]


def test_batch_gather_equals_per_sample_windows():
    tokens = torch.randint(0, 100, (500,))
    ds = LMSequenceDataset(tokens, block_size=32)
    starts = torch.tensor([0, 7, 467, 100])
    x, y = ds[starts]
    assert x.shape == y.shape == (4, 32) and x.is_contiguous() and y.is_contiguous()
    assert x.dtype == torch.int64
    for row, s in enumerate(starts.tolist()):
        assert torch.equal(x[row], tokens[s:s + 32]) and torch.equal(y[row], tokens[s + 1:s + 33])


def test_dataset_too_short_names_both_sizes():
    with pytest.raises(ValueError, match=r"^5 tokens .* block_size=5 \(need at least 6\)"):
        LMSequenceDataset(torch.arange(5), block_size=5)
    LMSequenceDataset(torch.arange(6), block_size=5)  # exactly one window


def test_train_valid_split_is_contiguous():
    tokens = torch.arange(100)
    train, valid = train_valid_split(tokens, 0.9)
    assert train.tolist() == list(range(90)) and valid.tolist() == list(range(90, 100))


# ---------------------------------------------------------------------------- tokens and cache
def test_gpt2_tokens_of_tiny_shakespeare(data_dir):
    corpus, tokens, encoder = load_tokens(DataConfig(data_dir=str(data_dir)))
    assert len(corpus) == 1_115_394 and len(tokens) == 338_025 and tokens.dtype == torch.int64
    assert encoder.vocab_size == 50257 and int(tokens.max()) < 50257
    assert encoder.decode(tokens[:20].tolist()) == corpus[:len(encoder.decode(tokens[:20].tolist()))]
    # nanoGPT's recipe (split characters 90/10, encode each) gives its reference counts
    n = len(corpus)
    assert len(encoder.encode(corpus[: int(n * 0.9)])) == 301_966
    assert len(encoder.encode(corpus[int(n * 0.9):])) == 36_059


def test_text_source_gives_the_tokenizer_and_both_splits(data_dir):
    source = TextSource(DataConfig(data_dir=str(data_dir), tokenizer="char", train_frac=0.8))
    train, valid = source.splits()
    assert (len(train), len(valid)) == (892_315, 223_079) and source.tokenizer.vocab_size == 65
    assert torch.equal(torch.cat((train, valid)), source.tokens)
    assert source.fingerprint == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"  # the file's sha256


def test_char_tokens_of_tiny_shakespeare(data_dir):
    cfg = DataConfig(data_dir=str(data_dir), tokenizer="char")
    corpus, tokens, encoder = load_tokens(cfg)
    assert encoder.vocab_size == 65 and len(tokens) == 1_115_394
    train, valid = train_valid_split(tokens, cfg.train_frac)
    assert (len(train), len(valid)) == (1_003_854, 111_540)  # nanoGPT's shakespeare_char split
    assert encoder.decode(tokens[:100].tolist()) == corpus[:100]


@pytest.mark.parametrize("tokenizer", ["gpt2", "char"])
def test_second_load_uses_the_cache(data_dir, monkeypatch, tokenizer):
    cfg = DataConfig(data_dir=str(data_dir), tokenizer=tokenizer)
    _, first, _ = load_tokens(cfg)
    assert list((data_dir / "cache").glob(f"*-{tokenizer}.pt"))

    def refuse(*args):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(GPT2Tokenizer, "encode", refuse)
    monkeypatch.setattr(CharTokenizer, "encode", refuse)
    _, second, encoder = load_tokens(cfg)
    assert torch.equal(first, second) and encoder.name == tokenizer


def test_cache_is_keyed_by_content(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("abcabc" * 10)
    cfg = DataConfig(data_dir=str(tmp_path / "d"), tokenizer="char", path=str(text))
    _, first, _ = load_tokens(cfg)
    text.write_text("xyzxyz" * 10)  # same path, other text: must not reuse the cache
    _, second, encoder = load_tokens(cfg)
    assert encoder.decode(second[:3].tolist()) == "xyz"
    assert len(list((tmp_path / "d" / "cache").iterdir())) == 2


# ------------------------------------------------------------------------------ randomness
def test_same_seed_same_batches_other_seed_other_batches(data_dir):
    cfg = DataConfig(data_dir=str(data_dir), block_size=32, batch_size=8, seed=7)
    a = first_batches(cfg)
    torch.manual_seed(123)
    torch.rand(1000)  # other code drawing from the global RNG changes nothing
    b = first_batches(cfg)
    c = first_batches(replace(cfg, seed=8))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])


def test_loader_does_not_consume_global_rng(data_dir):
    cfg = DataConfig(data_dir=str(data_dir), block_size=32, batch_size=8)
    torch.manual_seed(0)
    first_batches(cfg)
    after_loading = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after_loading, torch.rand(3))


def test_batches_do_not_depend_on_num_workers_or_prefetching(data_dir):
    cfg = DataConfig(data_dir=str(data_dir), block_size=32, batch_size=8, tokenizer="char")
    in_main = first_batches(cfg, 6)
    assert same(in_main, first_batches(replace(cfg, num_workers=2), 6))
    assert same(in_main, first_batches(replace(cfg, prefetch=True), 6))


def test_prefetching_gathers_the_next_batch_on_a_background_thread(tmp_path, small_text, monkeypatch):
    """With data.prefetch=true, every gather runs on the 'gather' thread, and batch n+1 is gathered
    before the loop asks for it (while it computes on batch n)."""
    gathered = []
    real = LMSequenceDataset._gather

    def spy(self, starts):
        gathered.append(threading.current_thread().name)
        return real(self, starts)

    monkeypatch.setattr(LMSequenceDataset, "_gather", spy)
    cfg = DataConfig(data_dir=str(tmp_path), path=str(small_text), block_size=16, batch_size=8, tokenizer="char",
                     prefetch=True)
    stream = make_dataloader(cfg).train_dl.forever()
    for n in range(1, 4):
        next(stream)
        deadline = time.monotonic() + 10
        while len(gathered) < n + 1 and time.monotonic() < deadline:
            time.sleep(0.001)  # the next batch is being gathered meanwhile
        assert len(gathered) == n + 1
    assert all(name.startswith("gather") for name in gathered)


def test_sampler_epoch_is_a_permutation_and_epochs_differ():
    sampler = WindowBatchSampler(100, 10, shuffle=True, seed=3)
    epoch0 = torch.cat(list(sampler))
    assert sorted(epoch0.tolist()) == list(range(100))
    sampler.set_epoch(1)
    assert not torch.equal(epoch0, torch.cat(list(sampler)))
    assert sampler.state_dict() == {"seed": 3, "epoch": 1, "start_batch": 0, "permutation": "feistel"}


def test_sampler_resumes_mid_epoch():
    sampler = WindowBatchSampler(100, 10, seed=3)
    full = list(sampler)
    sampler.set_epoch(0, start_batch=4)
    assert all(torch.equal(a, b) for a, b in zip(full[4:], sampler)) and len(list(sampler)) == 6


@pytest.fixture
def small_text(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text((MIRROR / "tinyshakespeare" / "input.txt").read_text()[:20_000])
    return path


@pytest.mark.parametrize("workers, prefetch", [(0, False), (2, False), (0, True)])
def test_train_loader_position_is_its_state(tmp_path, small_text, workers, prefetch):
    """The loader counts the batches it has handed out (not those a worker or the gather thread
    prefetched); a new loader given that state continues with exactly the next batch, across epoch
    boundaries too."""
    cfg = DataConfig(data_dir=str(tmp_path), path=str(small_text), block_size=16, batch_size=64,
                     tokenizer="char", num_workers=workers, prefetch=prefetch)
    loader = make_dataloader(cfg).train_dl
    per_epoch = len(loader)
    assert per_epoch == (18_000 - 16) // 64
    stream = loader.forever()
    head = [tuple(t.clone() for t in b) for b in islice(stream, per_epoch + 3)]
    state = loader.state_dict()
    assert state == {"seed": 1337, "epoch": 1, "start_batch": 3, "permutation": "feistel"}
    expected = [tuple(t.clone() for t in b) for b in islice(stream, 4)]
    again = make_dataloader(cfg).train_dl
    again.load_state_dict(state)
    assert same([tuple(t.clone() for t in b) for b in islice(again.forever(), 4)], expected)
    assert not same(head[:4], head[per_epoch:per_epoch + 4])  # epoch 1 is another order


def test_each_pass_over_the_train_loader_is_one_epoch(tmp_path, small_text):
    cfg = DataConfig(data_dir=str(tmp_path), path=str(small_text), block_size=16, batch_size=64, tokenizer="char")
    loader = make_dataloader(cfg).train_dl
    first = [x.clone() for x, _ in loader]
    second = [x.clone() for x, _ in loader]
    assert len(first) == len(second) == len(loader)
    assert loader.state_dict() == {"seed": 1337, "epoch": 2, "start_batch": 0, "permutation": "feistel"}
    assert sorted(torch.cat(first)[:, 0].tolist()) == sorted(torch.cat(second)[:, 0].tolist())
    assert not torch.equal(first[0], second[0])


def test_the_order_is_the_same_computed_per_batch_or_once_per_epoch(monkeypatch):
    cached = torch.cat(list(WindowBatchSampler(1000, 64, seed=5)))
    monkeypatch.setattr(WindowBatchSampler, "CACHE_WINDOWS", 0)  # every batch evaluates the permutation
    assert torch.equal(torch.cat(list(WindowBatchSampler(1000, 64, seed=5))), cached)


def test_a_sampler_state_from_before_the_feistel_order_resumes_in_its_own_order():
    """Checkpoints written before the permutation existed hold no 'permutation': their runs go on
    drawing torch.randperm's order, so they resume exactly."""
    sampler = WindowBatchSampler(100, 10, seed=3)
    sampler.load_state_dict({"seed": 3, "epoch": 2, "start_batch": 4})
    expected = torch.randperm(100, generator=torch.Generator().manual_seed(_mix(3, 2)))[40:]
    assert torch.equal(torch.cat(list(sampler)), expected)
    assert sampler.state_dict()["permutation"] == "randperm"


def test_unshuffled_training_is_sequential():
    assert torch.cat(list(WindowBatchSampler(20, 5, shuffle=False))).tolist() == list(range(20))


def test_validation_batches_are_fixed_and_spread_over_the_split(data_dir):
    cfg = DataConfig(data_dir=str(data_dir), block_size=32, batch_size=8)
    valid_dl = make_dataloader(cfg, eval_iters=4).valid_dl
    first = [x.clone() for x, _ in valid_dl]
    second = [x.clone() for x, _ in valid_dl]
    assert len(first) == 4 and all(torch.equal(a, b) for a, b in zip(first, second))
    starts = torch.cat(list(valid_dl.sampler))
    assert starts.tolist() == sorted(starts.tolist())
    assert starts[0] == 0 and starts[-1] == len(valid_dl.dataset) - 1  # the whole split, in order


def test_validation_without_eval_iters_scores_every_token_once():
    sampler = FixedBatchSampler(num_windows=100, batch_size=4, block_size=10)
    assert torch.cat(list(sampler)).tolist() == list(range(0, 100, 10))


def test_no_pinning_and_no_warnings_on_cpu(data_dir):
    cfg = DataConfig(data_dir=str(data_dir), block_size=32, batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaders = make_dataloader(cfg, device="cpu")
        x, y = next(iter(loaders.train_dl))
        next(iter(loaders.valid_dl))
    assert not loaders.train_dl.pin_memory and not x.is_pinned()


# ---------------------------------------------------------------------------------- bad input
def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="data.path=.*nope.txt does not exist"):
        load_tokens(DataConfig(data_dir=str(tmp_path), path=str(tmp_path / "nope.txt")))


def test_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty.txt is empty"):
        load_tokens(DataConfig(data_dir=str(tmp_path), path=str(tmp_path / "empty.txt")))


def test_not_utf8(tmp_path):
    (tmp_path / "bin.dat").write_bytes(b"hello \xff\xfe world")
    with pytest.raises(DataError, match=r"bin.dat is not UTF-8 text \(invalid byte at offset 6\)"):
        load_tokens(DataConfig(data_dir=str(tmp_path), path=str(tmp_path / "bin.dat")))


def test_corpus_too_short_for_one_block(tmp_path):
    (tmp_path / "short.txt").write_text("to be or not to be")
    cfg = DataConfig(data_dir=str(tmp_path), path=str(tmp_path / "short.txt"), tokenizer="char",
                     block_size=64)
    with pytest.raises(DataError, match=r"16 tokens are not enough .* block_size=64 .*18 tokens"):
        make_dataloader(cfg)


def test_offline_without_a_copy_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2_DATA_MIRROR")
    # a closed local port: fails at once, like a machine without network
    monkeypatch.setattr(sources_module, "TINY_SHAKESPEARE",
                        replace(sources_module.TINY_SHAKESPEARE, url="http://127.0.0.1:9/input.txt"))
    with pytest.raises(DataError) as err:
        load_tokens(DataConfig(data_dir=str(tmp_path)))
    message = str(err.value)
    assert "tinyshakespeare/input.txt is missing" in message
    assert "data.mirror=DIR" in message and "GPT2_DATA_MIRROR" in message


# ------------------------------------------------------------------------- a validation split to measure
def char_token_dir(directory, train: int, val: int) -> None:
    """A token directory of `train` and `val` char tokens ("ab" repeated), as scripts/prepare.py writes it."""
    directory.mkdir()
    files = {}
    for name, count in (("train.bin", train), ("val.bin", val)):
        data = (np.arange(count) % 2).astype(np.uint16).tobytes()
        (directory / name).write_bytes(data)
        files[name] = {"tokens": count, "documents": 1, "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"format": FORMAT, "tokenizer": {"name": "char", "vocab_size": 2, "chars": "ab"}, "files": files}
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_token_files_with_a_validation_split_under_min_val_frac_are_refused_in_one_line(tmp_path):
    char_token_dir(tmp_path / "tokens", 100_000, 60)
    cfg = DataConfig(source="bin", dir=str(tmp_path / "tokens"), block_size=8, batch_size=4, data_dir=str(tmp_path))
    with pytest.raises(DataError) as err:
        make_dataloader(cfg, eval_iters=2)
    assert str(err.value) == ("val split: 60 tokens (0.06% of 100,060), under data.min_val_frac=0.001: prepare it "
                              "with --split-by tokens, or set data.min_val_frac=0 to train anyway")
    assert len(make_dataloader(replace(cfg, min_val_frac=0.0005), eval_iters=2).valid_dl) == 2
    assert len(make_dataloader(replace(cfg, min_val_frac=0), eval_iters=2).valid_dl) == 2


def test_a_text_split_under_one_eval_batch_is_refused_before_training(tmp_path, small_text):
    """A window starts at every validation token: one eval batch of batch_size windows needs
    batch_size + block_size tokens. train_frac=0.999 leaves 20 of 20,000 (0.1%: not under
    min_val_frac), under one batch of 8 windows of 16."""
    cfg = DataConfig(data_dir=str(tmp_path), path=str(small_text), block_size=16, batch_size=8, tokenizer="char",
                     train_frac=0.999)
    with pytest.raises(DataError) as err:
        make_dataloader(cfg, eval_iters=2)
    assert str(err.value) == ("val split: 20 tokens (0.10% of 20,000), under one eval batch (data.batch_size + "
                              "data.block_size = 24 tokens): lower data.train_frac, or set data.min_val_frac=0 to "
                              "train anyway")
    assert len(make_dataloader(replace(cfg, batch_size=4), eval_iters=2).valid_dl.dataset) == 4  # 20 - 16 windows
    assert len(make_dataloader(replace(cfg, min_val_frac=0), eval_iters=2).valid_dl.dataset) == 4


def test_a_train_frac_near_one_is_refused_as_too_small_a_share(data_dir):
    cfg = DataConfig(data_dir=str(data_dir), block_size=32, batch_size=8, train_frac=0.9995)
    tokens = len(load_tokens(cfg)[1])
    val = tokens - int(tokens * 0.9995)
    with pytest.raises(DataError, match=rf"^val split: {val} tokens \(0\.05% of {tokens:,}\), under "
                                        rf"data.min_val_frac=0.001: lower data.train_frac, or set"):
        make_dataloader(cfg)
    assert make_dataloader(replace(cfg, train_frac=0.999)).source.splits()[1].numel() >= tokens // 1000
