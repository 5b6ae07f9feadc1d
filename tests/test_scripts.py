"""The scripts in scripts/: each runs from anywhere on the installed package, answers --help, and turns
a user error into one line on stderr with exit status 1."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # every test here runs train.py, a script or torchrun in a subprocess

SCRIPTS = ["bench_data.py", "bench_checkpoint.py", "sweep_report.py", "prepare.py", "bench_tokens.py", "sample.py",
           "export_hf.py", "bench_sample.py", "loss_chart.py", "bench.py", "compare_runs.py", "bench_muon.py",
           "eval_hellaswag.py"]


def run_script(name, *args, env=None, cwd="/"):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_works_from_any_directory(name):
    result = run_script(name, "--help")  # cwd=/: the package comes from the installation, not sys.path edits
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr


def test_no_script_edits_sys_path():
    for path in (ROOT / "scripts").glob("*.py"):
        assert "sys.path" not in path.read_text(), path.name


def test_bench_data_without_data_is_one_line(tmp_path, monkeypatch):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GPT2_DATA_MIRROR": str(tmp_path / "no-mirror")}
    result = run_script("bench_data.py", "--batches", "2", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'no-mirror' / 'tinyshakespeare' / 'input.txt'} does not exist: the mirror given "
        f"by data.mirror / GPT2_DATA_MIRROR must hold tinyshakespeare/input.txt (or put the file at "
        f"data/tinyshakespeare/input.txt)"]


def test_sweep_report_of_a_directory_without_runs_is_one_line(tmp_path):
    result = run_script("sweep_report.py", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: no summary.json under {tmp_path}: is it a sweep directory?"


@pytest.mark.parametrize("override,message", [
    ("model.n_head=5", "error: model.n_head: model.n_embd (128) must be divisible by model.n_head (5)"),
    ("model.nosuch=3", "error: Could not override 'model.nosuch'. (Key 'nosuch' not in 'ModelConfig')"),
    ("experiment=nosuch", "error: In 'config': Could not find 'experiment/nosuch'"),
])
def test_bench_checkpoint_with_a_bad_override_is_one_line(tmp_path, override, message):
    result = run_script("bench_checkpoint.py", override, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


def one_error_line(result) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("args,message", [
    (["--batches", "0"], "error: --batches: must be at least 1, got 0"),
    (["--repeats", "-1"], "error: --repeats: must be at least 1, got -1"),
    (["--batch-size", "0"], "error: --batch-size: must be at least 1, got 0"),
    (["--block-size", "400000"], ("error: 304222 tokens are not enough to build one block of block_size=400000 "
                                  "(need at least 400001)")),
])
def test_bench_data_with_an_invalid_value_is_one_line(tmp_path, args, message):
    line = one_error_line(run_script("bench_data.py", *args, cwd=tmp_path))
    assert line.startswith(message), line


def test_bench_checkpoint_with_no_repeats_is_one_line(tmp_path):
    result = run_script("bench_checkpoint.py", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
                        "data=shakespeare_char", "data.block_size=16", "--repeats", "0", cwd=tmp_path)
    assert one_error_line(result) == ("error: --repeats: must be at least 1, got 0 (bench_checkpoint.py --help says "
                                      "more)")


def test_bench_checkpoint_saves_and_restores_a_run_checkpoint(tmp_path):
    result = run_script("bench_checkpoint.py", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
                        "data=shakespeare_char", "data.block_size=16", "trainer.device=cpu", "--repeats", "2",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("model: 0.02M parameters; checkpoint ") and lines[2].startswith("save ")
    assert lines[3].startswith("load + restore: median ") and lines[3].endswith(" ms over 2")


@pytest.mark.parametrize("where,state", [("missing", "does not exist"), ("file", "is not a directory")])
def test_sweep_report_of_a_missing_or_file_path_is_one_line(tmp_path, where, state):
    (tmp_path / "file").write_text("not a sweep")
    result = run_script("sweep_report.py", str(tmp_path / where))
    assert one_error_line(result) == (f"error: {tmp_path / where} {state}: give the sweep's multirun "
                                      f"(or Optuna study) directory")


def write_job(job_dir, summary: str, overrides_file: str = "", overrides: str = ""):
    job_dir.mkdir(parents=True)
    (job_dir / "summary.json").write_text(summary)
    if overrides_file:
        (job_dir / overrides_file).parent.mkdir(exist_ok=True)
        (job_dir / overrides_file).write_text(overrides)


def test_sweep_report_leaves_out_damaged_jobs_with_a_warning(tmp_path):
    good = '{"best_val_loss": %s, "tokens_per_sec": 1000.0, "wall_s": 3.0}'
    write_job(tmp_path / "0", good % 2.5, ".hydra/overrides.yaml", "- optim.lr=1e-3\n- tag=${oc.env:NOPE}\n")
    write_job(tmp_path / "1", good % 2.0, ".hydra/overrides.yaml", "- [optim.lr=3e-3\n")
    write_job(tmp_path / "2", good % 2.2, "overrides.json", '["optim.lr=2e-3"')
    write_job(tmp_path / "3", '{"best_val_loss": 2.')
    write_job(tmp_path / "4", "[2.1]")
    result = run_script("sweep_report.py", str(tmp_path))
    assert result.returncode == 0, result.stderr
    unlisted = "is not a list of overrides (damaged?): the job is reported without them"
    assert result.stderr.strip().splitlines() == [
        f"warning: {tmp_path}/1/.hydra/overrides.yaml {unlisted}",
        f"warning: {tmp_path}/2/overrides.json {unlisted}",
        f"warning: {tmp_path}/3/summary.json is not a JSON object (damaged?): the job is left out of the report",
        f"warning: {tmp_path}/4/summary.json is not a JSON object (damaged?): the job is left out of the report"]
    jobs = [line.split()[:3] for line in result.stdout.splitlines()[1:-1]]
    assert jobs == [["1", "1", "2.0000"], ["2", "2", "2.2000"], ["3", "0", "2.5000"]]
    assert "optim.lr=0.001 tag=${oc.env:NOPE}" in result.stdout  # written overrides, not resolved ones
    assert (tmp_path / "sweep_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("png", ["no-dir/report.png", "file/report.png", "dir.png", "report.jpg"])
def test_sweep_report_with_an_unwritable_png_is_one_line(tmp_path, png):
    write_job(tmp_path / "sweep" / "0", '{"best_val_loss": 2.5, "tokens_per_sec": 1000.0, "wall_s": 3.0}')
    (tmp_path / "file").write_text("a file, not a directory")
    (tmp_path / "dir.png").mkdir()
    result = run_script("sweep_report.py", str(tmp_path / "sweep"), "--png", str(tmp_path / png))
    assert one_error_line(result) == (f"error: --png {tmp_path / png}: give a .png file path in an "
                                      f"existing directory")
    assert result.stdout == ""


@pytest.mark.parametrize("recipe", [[], ["model=modern", "optim=muon"]], ids=["gpt2", "modern"])
def test_sample_continues_a_prompt_the_same_with_and_without_the_cache(tmp_path, data_dir, recipe):
    """A trained run sampled greedily: the KV cache changes the speed, not the text (rotary
    positions included)."""
    from conftest import TINY, run_train

    trained = run_train(tmp_path / "run", *TINY, f"data.data_dir={data_dir}", "logger=none", "data.tokenizer=char",
                        *recipe)
    assert trained.returncode == 0, trained.stderr
    common = [str(tmp_path / "run"), "--prompt", "ROMEO:", "--temperature", "0", "--num-samples", "2",
              "--max-new-tokens", "40", "--device", "cpu", "--data-dir", str(data_dir)]
    cached, uncached = run_script("sample.py", *common), run_script("sample.py", *common, "--no-cache")
    assert cached.returncode == 0 and uncached.returncode == 0, cached.stderr + uncached.stderr
    texts = [out.stdout.rsplit("---------------", 1)[0] for out in (cached, uncached)]
    assert texts[0] == texts[1] and texts[0].startswith("ROMEO:") and texts[0].count("---------------") == 1
    assert "80 tokens in" in cached.stdout and "tokens/s (KV cache, cpu, 1 thread)" in cached.stdout  # 1: CPU default
    for args, message in [([str(tmp_path)], "is neither a checkpoint, a run directory"),
                          ([str(tmp_path / "run"), "--prompt", "\u00e9t\u00e9"], "--prompt: character"),
                          ([str(tmp_path / "run"), "--temperature", "-1"],
                           "--temperature: must be a finite number >= 0")]:
        result = run_script("sample.py", *args, "--data-dir", str(data_dir))
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_bench_sample_prints_the_three_ways_and_refuses_bad_values():
    result = run_script("bench_sample.py", "--models", "char", "--batch", "2", "--tokens", "70", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    row = [line for line in result.stdout.splitlines() if line.startswith("| char |")]
    cells = row[0].strip("|").split("|")
    assert len(cells) == 7 and cells[1].strip() == "2" and cells[4].strip().endswith("x"), result.stdout
    for args, message in ((["--models", "huge"], "--models: comma-separated, each once, of char,baby,gpt2; got 'huge'"),
                          (["--batch", "a"], "--batch"),
                          (["--tokens", "0"], "--tokens")):
        bad = run_script("bench_sample.py", *args)
        assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_loss_chart_prints_a_mermaid_chart_of_the_runs_metric(tmp_path):
    rows = [{"iter": 0, "val_loss": 4.21}, {"iter": 10, "train_loss": 3.8}, {"iter": 250, "val_loss": 2.43},
            {"iter": 250, "val_loss": 2.4306}, {"iter": 500, "val_loss": float("nan")}, {"iter": 750, "val_loss": 1.87}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_script("loss_chart.py", str(tmp_path), "--title", "char")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["```mermaid", "xychart-beta", '    title "char"',
                                          '    x-axis "iteration" [0, 250, 750]', '    y-axis "val_loss" 1.8 --> 4.3',
                                          "    line [4.2100, 2.4306, 1.8700]", "```"]
    for content, message in (("", "has no 'val_loss' values"), ("{oops\n", "has no 'val_loss' values"),  # cut short
                             ('{oops\n{"iter": 1}\n', "metrics.jsonl line 1 is not JSON (damaged?)")):
        (tmp_path / "metrics.jsonl").write_text(content)
        bad = run_script("loss_chart.py", str(tmp_path))
        assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_gpu_check_runs_end_to_end_on_a_cpu_with_tiny_settings(tmp_path, data_dir):
    """scripts/gpu_check.sh, the one script for a GPU machine, kept working here: its GPU tests skip,
    a shortened shakespeare_char run and a tiny bench fill $OUT/results.md's two tables."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable,
           "CHAR_ARGS": "trainer.max_iters=2 trainer.eval_iters=1 data.batch_size=2 data.block_size=32 "
                        f"trainer.sample_tokens=0 trainer.device=cpu data.data_dir={data_dir}",
           "BENCH_ARGS": f"--preset char_cpu --compile off --iters 2 --warmup 1 data.data_dir={data_dir}",
           "RECIPE": "1", "SPEEDRUN_ARGS": "model.n_layer=1 model.n_head=2 model.n_embd=32 data.block_size=32 "
                                           "trainer.max_iters=2 trainer.device=cpu"}
    result = subprocess.run(["bash", "scripts/gpu_check.sh", "400"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| experiment | dtype | best val loss" in table and "| char_cpu | off | 12 |" in table, table
    for name in ("shakespeare_char", "shakespeare_char_modern", "speedrun_124m"):
        assert f"| {name} | " in table, table
    rows = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert rows[0]["tokens_per_sec"] > 0 and 0 < rows[0]["mfu"] < 1 and 0 <= rows[0]["data_wait"] < 1


def test_ctrl_c_in_a_script_is_one_line(tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "bench_sample.py"), "--models", "baby",
                             "--repeats", "50"], cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(6)  # past start-up, decoding
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # never left running by a failed test
    assert proc.returncode == 130 and err.strip() == "stopped by Ctrl-C", err


def test_bench_refuses_an_unwritable_json_before_measuring(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = run_script("bench.py", "--json", str(tmp_path / "a_file" / "rows.json"), "--iters", "1", "--warmup", "1")
    assert result.returncode == 1 and "a_file" in result.stderr and "Traceback" not in result.stderr
    assert "| char_cpu |" not in result.stdout  # nothing measured first


def test_compare_runs_draws_the_curves_and_finds_the_target(tmp_path):
    for name, losses in (("a", [4.2, 2.5, 1.9]), ("b", [4.2, 1.95, 1.7])):
        run = tmp_path / name
        run.mkdir()
        rows = [{"iter": 50 * i, "val_loss": v, **({"tokens_per_sec": 1000.0} if i else {})}
                for i, v in enumerate(losses)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "summary.json").write_text(json.dumps({"iters": 100, "tokens_seen": 100 * 768}))
    out = tmp_path / "curves.png"
    result = run_script("compare_runs.py", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "A,B",
                        "--target", "1.95", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "| A | 100 | 1.9000 | 100 | 76.8 s |" in result.stdout  # 2 x 50 iterations x 768 tokens / 1000 tokens/s
    assert "| B | 100 | 1.7000 | 50 | 38.4 s |" in result.stdout and out.read_bytes()[:4] == b"\x89PNG"
    for args, message in (([str(tmp_path)], "no summary.json with iterations"),
                          ([str(tmp_path / "a"), "--labels", "A,B"], "--labels: 2 labels for 1 runs"),
                          ([str(tmp_path / "a"), "--out", str(out)], "holds an earlier result")):
        bad = run_script("compare_runs.py", *args, *(["--out", str(tmp_path / "new.png")] if "--out" not in args
                                                     else []))
        assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_bench_muon_prints_the_share_of_a_step():
    result = run_script("bench_muon.py", "--preset", "char", "--micro-batch", "2", "--tokens-per-step", "768",
                        "--world", "1,2", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    assert "char: 16 matrices in 4 shapes" in result.stdout and "| 2 | 384 |" in result.stdout, result.stdout
    bad = run_script("bench_muon.py", "--world", "0,x")
    assert bad.returncode == 1 and "--world" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def char_run(data_dir, tmp_path_factory):
    """A finished 2-iteration char-level run (ckpt/best.pt), trained once in this process: what
    sample.py reads."""
    from conftest import tiny_config
    from gpt2.train.trainer import train

    run = tmp_path_factory.mktemp("sample") / "run"
    train(tiny_config(data_dir, "data=shakespeare_char", "trainer.max_iters=2", "trainer.eval_interval=1",
                      "optim.warmup_iters=1", "trainer.sample_tokens=0"), run)
    return run


def test_sample_piped_into_head_ends_quietly(char_run, data_dir, tmp_path):
    """`sample.py ... | head -n 3` with more output than a pipe holds (a 100 kB prompt, printed with
    each sample): head's three lines, and sample.py ends as a writer whose reader left (141 under
    pipefail), with nothing on stderr ('error: Broken pipe' before)."""
    from conftest import MIRROR

    prompt = tmp_path / "prompt.txt"
    prompt.write_text((MIRROR / "tinyshakespeare" / "input.txt").read_text()[:100_000])
    sample = [sys.executable, str(ROOT / "scripts" / "sample.py"), str(char_run), "--prompt", f"@{prompt}",
              "--num-samples", "2", "--max-new-tokens", "1", "--device", "cpu", "--data-dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as in a user's shell
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {shlex.join(sample)} | head -n 3"], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr) == (141, ""), result.stderr
    assert result.stdout.splitlines() == prompt.read_text().splitlines()[:3]


def test_sample_threads_option_overrides_its_one_thread_on_a_cpu(char_run, data_dir):
    """One thread is sample.py's CPU default (test_sample_continues_a_prompt_... sees it); --threads
    sets another number, and the last line says how many decoded."""
    result = run_script("sample.py", str(char_run), "--threads", "2", "--num-samples", "1", "--max-new-tokens", "4",
                        "--device", "cpu", "--data-dir", str(data_dir))
    assert result.returncode == 0 and result.stdout.endswith(" tokens/s (KV cache, cpu, 2 threads)\n"), result.stderr


@pytest.mark.parametrize("script, args, message", [
    ("sample.py", ["--temperature", "-1"], "error: --temperature: must be a finite number >= 0, got -1 (sample.py "
                                           "--help says more)"),
    ("sample.py", ["--top-k", "-5"], "error: --top-k: must be >= 0, got -5 (sample.py --help says more)"),
    ("sample.py", ["--top-p", "1.5"], "error: --top-p: must be in (0, 1], got 1.5 (sample.py --help says more)"),
    ("sample.py", ["--device", "gpu"], "error: --device: must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("eval_hellaswag.py", ["--threads", "-2"], "error: --threads: must be at least 1, got -2 (eval_hellaswag.py "
                                               "--help says more)"),
    ("eval_hellaswag.py", ["--device", "cuda:x"], "error: --device: must be auto, cpu, cuda, cuda:N or mps, "
                                                  "got 'cuda:x'"),
    ("eval_hellaswag.py", ["--data", "/nope.jsonl"], "error: --data /nope.jsonl: no such file"),
    ("eval_hellaswag.py", ["--data", "/dev/zero"], "error: --data /dev/zero: not a regular file (a folder, FIFO or "
                                                   "device is not read)"),
    ("evaluate.py", ["--batches", "0"], "error: --batches: must be at least 1, got 0 (evaluate.py --help says more)"),
])
def test_a_bad_option_value_is_one_line_naming_its_flag(tmp_path, script, args, message):
    """Checked before the model (tmp_path is none) or the data are read."""
    assert one_error_line(run_script(script, str(tmp_path), *args)) == message


@pytest.mark.parametrize("script, args, message", [
    ("sample.py", ["--num-samples", "x"], "error: --num-samples: invalid int value: 'x' (sample.py --help says more)"),
    ("eval_hellaswag.py", ["--threads", "1.5"],
     "error: --threads: invalid int value: '1.5' (eval_hellaswag.py --help says more)"),
])
def test_an_unreadable_option_value_is_one_line_naming_its_flag(tmp_path, script, args, message):
    result = run_script(script, str(tmp_path), *args)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", message + "\n")


def test_ctrl_c_while_sample_starts_is_one_line(char_run, data_dir):
    """Ctrl-C (twice, impatiently) while sample.py imports torch: the one line, not a traceback."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "sample.py"), str(char_run),
                             "--max-new-tokens", "100000", "--data-dir", str(data_dir)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)  # in the imports: torch takes a second or more
        proc.send_signal(signal.SIGINT)
        time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, out, err) == (130, "", "stopped by Ctrl-C\n")


def test_a_prompt_or_data_file_that_is_no_regular_file_is_refused_without_blocking(tmp_path):
    """sample.py --prompt @FILE on a FIFO (which would block until written) or /dev/zero (endless):
    one line, at once."""
    import importlib.util
    import os

    from gpt2.errors import ConfigError

    spec = importlib.util.spec_from_file_location("prompt_sample", ROOT / "scripts" / "sample.py")
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    os.mkfifo(tmp_path / "fifo")
    for path, why in ((tmp_path / "fifo", "not a regular file"), ("/dev/zero", "not a regular file"),
                      (tmp_path / "nope", "no such file"), (tmp_path, "not a regular file")):
        with pytest.raises(ConfigError) as err:
            sample.read_prompt(f"@{path}")
        assert str(err.value).startswith(f"--prompt {path}: {why}")
    (tmp_path / "p.txt").write_text("ROMEO:")
    assert sample.read_prompt(f"@{tmp_path / 'p.txt'}") == "ROMEO:"
