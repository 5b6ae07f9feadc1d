"""HellaSwag scoring (gpt2/eval/hellaswag.py, scripts/eval_hellaswag.py) on a 4-example fixture in the
official format (the real file, hellaswag_val.jsonl, is not downloadable here)."""

import pytest
import torch
import torch.nn.functional as F

from gpt2.errors import DataError
from gpt2.eval.hellaswag import ending_losses, evaluate_file, read_examples
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.data.tokenizer import GPT2Tokenizer

from conftest import MIRROR, ROOT
from test_scripts import run_script

FIXTURE = ROOT / "tests" / "fixtures" / "hellaswag_tiny.jsonl"


@pytest.fixture(scope="module")
def model_and_encoder(tmp_path_factory):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=64)).eval()
    return model, GPT2Tokenizer(tmp_path_factory.mktemp("bpe"), MIRROR)


def test_each_ending_is_scored_on_its_own_tokens(model_and_encoder):
    """The batched, padded scoring equals scoring each context + ending alone, by hand."""
    model, encoder = model_and_encoder
    example = next(read_examples(FIXTURE))
    total, mean = ending_losses(model, encoder, example, "cpu")
    for i, ending in enumerate(example["endings"]):
        context, tail = encoder.encode(example["ctx"]), encoder.encode(" " + ending)
        ids = torch.tensor([context + tail])
        with torch.no_grad():
            logits = model(ids[:, :-1], ids[:, 1:])[0][0]
        losses = F.cross_entropy(logits[-len(tail):], ids[0, -len(tail):], reduction="none")
        assert total[i].item() == pytest.approx(losses.sum().item(), rel=1e-5)
        assert mean[i].item() == pytest.approx(losses.mean().item(), rel=1e-5)


@pytest.mark.slow
def test_the_script_reports_acc_and_acc_norm(model_and_encoder, tmp_path):
    model, encoder = model_and_encoder
    score = evaluate_file(model, encoder, FIXTURE, "cpu")
    assert score.examples == 4 and 0 <= score.acc_norm <= 1
    from gpt2.model.pretrained import export_pretrained

    export_pretrained(model, tmp_path / "hf")
    result = run_script("eval_hellaswag.py", str(tmp_path / "hf"), "--data", str(FIXTURE), "--device", "cpu",
                        "--data-dir", str(tmp_path / "data"), env=None)
    assert result.returncode == 0, result.stderr
    assert f"4 examples, acc {score.acc:.4f}, acc_norm {score.acc_norm:.4f}" in result.stdout


def test_a_missing_or_malformed_file_is_one_line(model_and_encoder, tmp_path):
    model, encoder = model_and_encoder
    with pytest.raises(DataError, match="download hellaswag_val.jsonl from https://raw.githubusercontent.com"):
        evaluate_file(model, encoder, tmp_path / "nope.jsonl", "cpu")
    (tmp_path / "bad.jsonl").write_text('{"ctx": "x", "endings": ["a", "b"], "label": 0}\n')
    with pytest.raises(DataError, match="bad.jsonl:1 is not a HellaSwag example"):
        evaluate_file(model, encoder, tmp_path / "bad.jsonl", "cpu")
