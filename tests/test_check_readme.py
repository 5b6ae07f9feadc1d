"""scripts/check_readme.py, without running anything: every command of README.md's bash blocks is
extracted and has a rule, and the rules rewrite commands as intended. (The script itself runs them.)"""

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("check_readme", ROOT / "scripts" / "check_readme.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_readme"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_its_tiny_run_is_the_tests_tiny_run(check):
    assert check.TINY_BASE == TINY
    sets = check.tiny_sets()
    assert not any(o.startswith("model.") for o in sets["TINY_RUN"])
    assert {o.split("=")[0] for o in sets["TINY_SWEEP"]}.isdisjoint({"model.n_layer", "model.n_embd", "optim.lr",
                                                                     "data.batch_size"})


def test_every_command_line_of_the_readme_is_extracted_with_a_rule(check):
    markdown = (ROOT / "README.md").read_text()
    code = [(n, check.strip_comment(line)) for n, line in check.bash_lines(markdown)]
    code = [(n, text) for n, text in code if text.strip()]
    starts = {n for i, (n, _) in enumerate(code) if i == 0 or not code[i - 1][1].endswith("\\")}
    commands = check.plan(markdown)
    assert {c.line for c in commands} == starts
    assert len(commands) >= len(starts) and all(c.written for c in commands)
    for c in commands:
        assert c.rule is not None, f"README.md:{c.line}: no rule for {c.written!r}"
        assert c.rule.why, c.written  # a mapping says why, a skip says why it is not run
        assert bool(c.run) == (c.rule.kind in (check.RUN, check.EXPECT_ERROR)), c.written


def test_list_prints_every_command_and_runs_nothing(check):
    env = {**os.environ, "GPT2_DATA_MIRROR": str(check.MIRROR)}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_readme.py"), "--list"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    for c in check.plan((ROOT / "README.md").read_text()):
        assert f"| {c.line} | `{c.written.replace('|', chr(92) + '|')}` |" in result.stdout


def test_extraction_joins_continuations_strips_comments_and_splits_chains(check):
    markdown = "\n".join([
        "```bash", "# a comment line", "a --x 'q # not a comment' && b \\", "    --y 2   # note", "", "```",
        "```", "not bash", "```", "text", "```bash", "export A=1", "c # x && d", "```"])
    commands = check.extract(markdown)
    assert [(c.line, c.written) for c in commands] == [
        (3, "a --x 'q # not a comment'"), (3, "b --y 2"), (12, "export A=1"), (13, "c")]


@pytest.mark.parametrize("written,run", [
    ("torchrun --standalone --nproc_per_node=8 train.py experiment=gpt2_124m data.dir=data/owt "
     "data.batch_size=256 trainer.grad_accum=2",
     "torchrun --standalone --nproc_per_node=2 train.py experiment=gpt2_124m data.dir=data/corpus "
     "data.batch_size=256 trainer.grad_accum=2 $TINY"),
    ("python train.py experiment=finetune_shakespeare model.init_from=gpt2 hydra.run.dir=runs/ft",
     "python train.py experiment=finetune_shakespeare model.init_from=hf-gpt2 hydra.run.dir=runs/ft $TINY_RUN "
     "trainer.grad_accum=2"),
    ("python train.py model.init_from=gpt2-xl", "python train.py model.init_from=gpt2-xl $TINY_RUN"),
    ("python train.py ... trainer.hellaswag_interval=250",
     "python train.py trainer.hellaswag_interval=250 $TINY trainer.hellaswag_interval=10"),
    ("python train.py -m hparams_search=shakespeare_optuna",
     "python train.py -m hparams_search=shakespeare_optuna $TINY_SWEEP hparams_search.n_trials=2"),
    ("python train.py --cfg job", "python train.py --cfg job"),
    ("python scripts/evaluate.py outputs/DATE/TIME-TAG --batches 20", "python scripts/evaluate.py {first_run} --batches 20"),
    ("tensorboard --logdir outputs", "tensorboard --inspect --logdir outputs"),
    ("pip install -e '.[test]'", ""),
    ("make test", ""),
])
def test_rewrites(check, written, run):
    assert check.rewrite(written, check.rule_for(written)) == run


def test_placeholders_are_filled_from_the_working_copy(check, tmp_path):
    for name in ("2026-01-02/10-00-00-bbbb", "2026-01-02/09-00-00-aaaa", "torchrun/0123"):
        (tmp_path / "outputs" / name).mkdir(parents=True)
    assert check.fill("evaluate.py {first_run}", tmp_path) == "evaluate.py outputs/2026-01-02/09-00-00-aaaa"
    made = check.fill(check.rewrite("make train", check.rule_for("make train")), tmp_path)
    assert made in ('make train ARGS="$TINY_WANDB"', 'make -o .venv/bin/.installed train ARGS="$TINY_WANDB"')


def test_a_command_without_a_rule_fails_the_listing(check, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("```bash\npython train.py\nrm -rf /nothing\n```\n")
    assert check.main(["--list", "--readme", str(readme)]) == 1


def test_only_takes_the_commands_a_command_reads_from(check):
    markdown = "```bash\n" + "\n".join([
        "python train.py", "python scripts/prepare.py ~/corpus/ --out data/corpus",
        "python train.py experiment=x model.init_from=gpt2 hydra.run.dir=runs/ft",
        "python scripts/export_hf.py runs/ft --out my-gpt2", "python scripts/eval_hellaswag.py my-gpt2"]) + "\n```\n"
    chosen = check.selected(check.plan(markdown), "eval_hellaswag")
    assert [c.line for c in chosen] == [4, 5, 6]
