"""Run every command of README.md's ```bash blocks, as written but tiny, and print a table of what happened.

Usage: python scripts/check_readme.py [--list] [--only PATTERN] [--keep] [--timeout S] [--readme FILE]

Each command runs in README order, with bash, in one fresh temporary working copy: the repository's
train.py, conf/, gpt2/, scripts/, tests/, Makefile, pyproject.toml and .venv linked in, an empty data/
(downloads come from GPT2_DATA_MIRROR), .venv/bin first on PATH (the README's `. .venv/bin/activate`) and
HOME a fresh folder holding the README's example inputs (~/corpus.txt, ~/corpus/: Tiny Shakespeare).
So relative paths (outputs/, runs/ft, data/corpus, my-gpt2, optuna.db) land in the temporary folder,
and files one command makes are read by the next, as a reader following the README would.

How each command is run is one row of RULES below (the first whose pattern matches): its substitutions
(placeholders such as outputs/DATE/TIME-TAG -> the run made above; OpenAI's `gpt2` -> a tiny local
Hugging Face GPT-2 folder; 8 GPUs -> 2 CPU processes), and the tiny overrides it appends, as a shell
variable ($TINY and its variants, printed as a legend) that comes last on the command line and so wins
over the command's own values (Hydra takes the last value of a key). Set-up lines and `make test` are
reported, not run; a command that cannot work offline is run and must fail with one clear line.

--list prints each command with its mapping and runs nothing. --only PATTERN runs the commands whose
README text matches the regular expression, and the earlier commands they read files from. --keep keeps
the temporary folder. Exit status 1 when a runnable command fails (or a README command has no rule).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from dataclasses import dataclass, field
from pathlib import Path

from gpt2.errors import ConfigError
from gpt2.run.script import nonempty_path, positive_float, run_script, script_parser

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("GPT2_DATA_MIRROR") or ROOT.parent / "shared" / "data").resolve()
LINKED = ["train.py", "conf", "gpt2", "scripts", "tests", "Makefile", "pyproject.toml", ".venv"]

# A model and run small enough for a 2-core CPU: tests/conftest.py's TINY (a test keeps them equal).
TINY_BASE = [
    "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
    "data.block_size=16", "data.batch_size=4",
    "trainer.max_iters=20", "trainer.eval_interval=10", "trainer.eval_iters=2",
    "trainer.log_interval=5", "trainer.device=cpu", "trainer.sample_tokens=16",
    "trainer.progress=false", "optim.warmup_iters=2", "optim.lr=3e-3",
]


def searched_keys() -> set[str]:
    """The keys any conf/hparams_search/*.yaml searches (a trial sets them; a fixed override would not)."""
    import yaml

    keys = set()
    for path in (ROOT / "conf" / "hparams_search").glob("*.yaml"):
        keys |= set((yaml.safe_load(path.read_text()).get("hparams_search") or {}).get("params") or {})
    return keys


def tiny_sets() -> dict[str, list[str]]:
    """The tiny override sets, each passed to the commands as an environment variable of its name."""
    searched = searched_keys()
    return {
        "TINY": [*TINY_BASE, "logger=none"],
        "TINY_WANDB": TINY_BASE,  # the logger as configured: the default W&B run, offline here
        "TINY_RUN": [o for o in TINY_BASE if not o.startswith("model.")] + ["logger=none"],  # shape: init_from's
        "TINY_SWEEP": [o for o in TINY_BASE if o.split("=")[0] not in searched] + ["logger=none"],
    }


SETUP, CI, RUN, EXPECT_ERROR = "set-up", "ci", "run", "expect-error"


@dataclass(frozen=True)
class Rule:
    """How README commands matching `match` (a regex searched in the command as written) are checked."""

    match: str
    kind: str  # SETUP / CI: reported only; RUN: must exit 0; EXPECT_ERROR: must fail with one clear line
    why: str = ""  # the reason for the substitutions, or why it is not run
    subs: tuple = ()  # (regex, replacement) pairs applied in order; {name} is a PLACEHOLDERS value
    tiny: str = ""  # the tiny set appended as $NAME
    extra: str = ""  # appended after it (so it wins over the tiny set too)
    needs: tuple = ()  # regexes of earlier README commands whose files this one reads (for --only)
    expect: str = ""  # a regex the output must match as well
    creates: str = ""  # a glob (in the working copy) that must match a file the command wrote


CORPUS = r"prepare\.py ~/corpus/"
FINETUNE = r"hydra\.run\.dir=runs/ft"
DEFAULT_RUN = "outputs/*-*-*/*/wandb/offline-run-*"  # what the README says a default run leaves, W&B's run too
# First match wins. Keep the specific rows above the catch-all `python train.py` one at the end.
RULES = [
    Rule(r"^export ", SETUP, "CI exports it (.ci/run); here GPT2_DATA_MIRROR is set, as an absolute path"),
    Rule(r"^(\.|source) \S*activate$", SETUP, "CI's make does it; here .venv/bin is first on PATH"),
    Rule(r"^python3? -m venv ", SETUP, "CI's make setup (.ci/run: rm -rf .venv; make test)"),
    Rule(r"^pip install ", SETUP, "CI's make setup (.ci/run: rm -rf .venv; make test)"),
    Rule(r"^cd ", SETUP, "the commands run from the working copy's root"),
    Rule(r"^make test", CI, "covered by CI: .ci/run runs make test"),
    Rule(r"^python -m pytest", CI, "covered by CI: .ci/run runs make test (python -m pytest)"),
    Rule(r"^make train$", RUN, "the default run, tiny{make_note}",
         subs=((r"^make train$", 'make {make_flags}train ARGS="$TINY_WANDB"'),), creates=DEFAULT_RUN),
    Rule(r"^python train\.py$", RUN, "the default run (its offline W&B run included), tiny", tiny="TINY_WANDB",
         creates=DEFAULT_RUN),
    Rule(r"^python train\.py (--help|--cfg job)$", RUN, "nothing is trained: as written"),
    Rule(r"hparams_search=", RUN, "2 trials of tiny runs (the searched keys left to the study)",
         tiny="TINY_SWEEP", extra="hparams_search.n_trials=2", creates="optuna.db"),
    Rule(r"model\.init_from=gpt2(?=\s|$)", RUN, "OpenAI's gpt2 is on the Hub: a tiny local Hugging Face GPT-2 "
         "folder (2/2/32, context 64) stands in; grad_accum 32 -> 2 (20 steps of 32 micro-steps: 2.5 min here)",
         subs=((r"model\.init_from=gpt2(?=\s|$)", "model.init_from=hf-gpt2"),), tiny="TINY_RUN",
         extra="trainer.grad_accum=2", creates="runs/ft/ckpt/best.pt"),
    Rule(r"model\.init_from=", RUN, "the model's shape comes from the checkpoint (a tiny nanoGPT-format "
         "out-shakespeare-char/ckpt.pt, made here)", tiny="TINY_RUN"),
    Rule(r"trainer\.hellaswag_interval=", EXPECT_ERROR, "`...` dropped; HellaSwag's file is neither in the "
         "mirror nor downloadable offline", subs=((r" \.\.\.(?= )", ""),), tiny="TINY",
         extra="trainer.hellaswag_interval=10", expect="hellaswag_val.jsonl"),
    Rule(r"trainer\.sample_interval=", RUN, "samples every 10 of the 20 steps; its logger kept",
         tiny="TINY_WANDB", extra="trainer.sample_interval=10", creates="outputs/*/*/samples.jsonl"),
    Rule(r"^torchrun ", RUN, "2 CPU processes (gloo) instead of 8 GPUs; data/owt is Hub-only offline: the "
         "token files prepared above", subs=((r"--nproc_per_node=8", "--nproc_per_node=2"),
                                             (r"data\.dir=data/owt", "data.dir=data/corpus")),
         tiny="TINY", needs=(CORPUS,)),
    Rule(r"^tensorboard ", RUN, "--inspect reads the event files instead of serving them",
         subs=((r"^tensorboard ", "tensorboard --inspect "),), needs=(r"logger\.backend=\S*tensorboard",),
         expect=r"scalars"),
    Rule(r"--hf-dataset Skylion007/", EXPECT_ERROR, "streams a Hub dataset: offline here",
         expect=r"^error: .*Hub"),
    Rule(r"^python scripts/eval_hellaswag\.py", RUN, "HellaSwag's file is not in the mirror: the test "
         "fixture (4 examples) instead", extra="--data tests/fixtures/hellaswag_tiny.jsonl",
         needs=(r"export_hf\.py .*--out my-gpt2",)),
    Rule(r"^python scripts/evaluate\.py outputs/DATE/TIME-TAG", RUN, "the first run dir under outputs/ "
         "(the default run above)", subs=((r"outputs/DATE/TIME-TAG", "{first_run}"),), needs=(r"^python train\.py$",)),
    Rule(r"^python scripts/export_hf\.py runs/ft --out my-gpt2", RUN, "as written: the fine-tune above",
         needs=(FINETUNE,), creates="my-gpt2/model.safetensors"),
    Rule(r"^python scripts/\w+\.py runs/ft", RUN, "as written: the fine-tune above", needs=(FINETUNE,)),
    Rule(r"^python scripts/prepare\.py ", RUN, "as written: ~/corpus/ holds Tiny Shakespeare (two files)",
         creates="data/corpus/train.bin"),
    Rule(r"data\.dir=data/corpus", RUN, "tiny, on the token files prepared above", tiny="TINY", needs=(CORPUS,)),
    Rule(r"\$HOME/corpus\.txt", RUN, "tiny; $HOME/corpus.txt is Tiny Shakespeare", tiny="TINY"),
    Rule(r"^python train\.py ", RUN, "tiny", tiny="TINY"),
]


def setup_is_stale() -> bool:
    """Whether `make train` would reinstall (pyproject.toml newer than .venv/bin/.installed): pip needs
    the network, so make then runs with -o .venv/bin/.installed, the same recipe on the installed venv."""
    installed, project = ROOT / ".venv" / "bin" / ".installed", ROOT / "pyproject.toml"
    return not installed.exists() or installed.stat().st_mtime < project.stat().st_mtime


def make_flags(work: Path | None = None) -> str:
    return "-o .venv/bin/.installed " if setup_is_stale() else ""


def make_note(work: Path | None = None) -> str:
    return ("; pyproject.toml is newer than .venv/bin/.installed, and make's set-up would pip install from the "
            "network: make -o .venv/bin/.installed keeps the installed venv") if setup_is_stale() else ""


def first_run(work: Path | None = None) -> str:
    """The first run directory under outputs/DATE/ (the default run, the README's first)."""
    runs = sorted(p for p in work.glob("outputs/*-*-*/*") if p.is_dir()) if work else []
    return str(runs[0].relative_to(work)) if runs else "<the first run under outputs/>"


PLACEHOLDERS = {"make_flags": make_flags, "make_note": make_note, "first_run": first_run}


# ----------------------------------------------------------------------------------- reading the README
@dataclass
class Command:
    line: int  # README line number of its first line
    written: str  # as written (continuations joined, comment stripped)
    rule: Rule | None = None
    run: str = ""  # as run ({placeholders} filled in at run time)
    rc: int | None = None
    seconds: float | None = None
    started: float = 0.0  # time.time() at its start
    verdict: str = ""
    output: str = field(default="", repr=False)


def strip_comment(text: str) -> str:
    """The text before a `#` that starts a word outside quotes."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text.rstrip()


def split_and(text: str) -> list[str]:
    """`a && b` -> [a, b], outside quotes."""
    parts, quote, start = [], None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif text.startswith("&&", i):
            parts.append(text[start:i])
            start = i + 2
    return [p.strip() for p in [*parts, text[start:]] if p.strip()]


def bash_lines(markdown: str) -> list[tuple[int, str]]:
    """(line number, text) of every line inside ```bash blocks."""
    found, inside = [], False
    for number, line in enumerate(markdown.splitlines(), 1):
        if line.strip().startswith("```"):
            inside = not inside and line.strip() == "```bash"
        elif inside:
            found.append((number, line))
    return found


def extract(markdown: str) -> list[Command]:
    """Every command of the ```bash blocks: continuations joined, comments stripped, && chains split."""
    commands, pending, start = [], "", 0
    for number, line in bash_lines(markdown):
        start = start if pending else number
        if strip_comment(line).endswith("\\"):
            pending += strip_comment(line).rstrip("\\").strip() + " "
            continue
        text = " ".join((pending + strip_comment(line)).split())
        pending = ""
        commands += [Command(start, part) for part in split_and(text)]
    return commands


# ------------------------------------------------------------------------------------------ the rules
def rule_for(written: str) -> Rule | None:
    return next((rule for rule in RULES if re.search(rule.match, written)), None)


def rewrite(written: str, rule: Rule) -> str:
    """The command as run (placeholders still {named}); '' for rules that are not run."""
    if rule.kind in (SETUP, CI):
        return ""
    command = written
    for pattern, replacement in rule.subs:
        command = re.sub(pattern, replacement.replace("\\", "\\\\"), command)
    return " ".join(part for part in (command, f"${rule.tiny}" if rule.tiny else "", rule.extra) if part)


def fill(text: str, work: Path | None) -> str:
    for name, value in PLACEHOLDERS.items():
        if "{" + name + "}" in text:
            text = text.replace("{" + name + "}", value(work))
    return text


def plan(markdown: str) -> list[Command]:
    commands = extract(markdown)
    for command in commands:
        command.rule = rule_for(command.written)
        command.run = rewrite(command.written, command.rule) if command.rule else ""
    return commands


def selected(commands: list[Command], only: str | None) -> list[Command]:
    """The commands matching `only` and, transitively, the earlier commands they need. A pattern that
    matches none (or is empty: an unset shell variable) is one line, not a run of nothing or of all."""
    if only is None:
        return commands
    try:
        chosen = {i for i, c in enumerate(commands) if only and re.search(only, c.written)}
    except re.error as exc:
        raise ConfigError(f"--only {only!r}: not a regular expression ({exc})") from None
    if not chosen:
        raise ConfigError(f"--only {only!r}: matches no command of the README" if only else
                          "--only: an empty pattern; is a shell variable unset?")
    while True:
        more = {j for i in chosen for pattern in (commands[i].rule.needs if commands[i].rule else ())
                for j, c in enumerate(commands[:i]) if re.search(pattern, c.written)} - chosen
        if not more:
            return [c for i, c in enumerate(commands) if i in chosen]
        chosen |= more


# ------------------------------------------------------------------------------ the temporary work dir
def nanogpt_checkpoint(path: Path) -> None:
    """What nanoGPT's train.py saves for a tiny char model (block 64): compiled `_orig_mod.` names, the
    attention's mask buffers, its model_args, iter_num and best_val_loss."""
    import torch

    from gpt2.model.gpt import GPT, GPTConfig

    args = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64, "bias": False, "vocab_size": 65,
            "dropout": 0.0}
    torch.manual_seed(0)
    model = GPT(GPTConfig(**args))
    state = {"_orig_mod." + name: tensor[:65] if name in ("transformer.wte.weight", "lm_head.weight") else tensor
             for name, tensor in model.state_dict().items()}
    mask = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
    state["_orig_mod.transformer.h.0.attn.bias"] = mask
    path.parent.mkdir(parents=True)
    torch.save({"model": state, "model_args": args, "optimizer": {}, "iter_num": 2000,
                "best_val_loss": torch.tensor(1.5), "config": {"dataset": "shakespeare_char"}}, path)


def hf_folder(path: Path) -> None:
    """A tiny random GPT-2 as a Hugging Face folder (2 layers, 32 wide, context 64, GPT-2's tokenizer)."""
    import torch

    from gpt2.model.gpt import GPT, GPTConfig
    from gpt2.model.pretrained import export_pretrained

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, gelu_approximate="tanh"))
    export_pretrained(model, path, tokenizer_files=MIRROR / "gpt2-bpe")


def make_work(work: Path) -> None:
    """The working copy: the repository linked in, HOME with ~/corpus.txt and ~/corpus/, the stand-ins."""
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)
    text = (MIRROR / "tinyshakespeare" / "input.txt").read_text()
    home = work / "home"
    (home / "corpus").mkdir(parents=True)
    (home / "corpus.txt").write_text(text)
    half = text.index("\n\n", len(text) // 2) + 2  # two documents, split at a speech
    (home / "corpus" / "part1.txt").write_text(text[:half])
    (home / "corpus" / "part2.txt").write_text(text[half:])
    hf_folder(work / "hf-gpt2")
    nanogpt_checkpoint(work / "out-shakespeare-char" / "ckpt.pt")


def environment(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL")}
    env.update(PATH=f"{work / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(work / ".venv"),
               HOME=str(work / "home"), GPT2_DATA_MIRROR=str(MIRROR), MPLBACKEND="Agg", NETRC=os.devnull)
    env.update({name: " ".join(overrides) for name, overrides in tiny_sets().items()})
    return env


# ----------------------------------------------------------------------------------------- running
def one_line(output: str) -> str | None:
    """The only line of the output (its log prefix `[time][module][LEVEL] - ` dropped), if it is one."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[0].split("] - ", 1)[-1] if len(lines) == 1 and "Traceback" not in lines[0] else None


def wrote(command: Command, work: Path) -> bool:
    return any(path.stat().st_mtime >= command.started for path in work.glob(command.rule.creates))


def judge(command: Command, work: Path, timed_out: bool) -> str:
    rule, output = command.rule, command.output
    last = (output.strip().splitlines() or [""])[-1][:300]
    if rule.kind == RUN:
        if timed_out:
            return f"FAIL: still running after {command.seconds:.0f} s"
        if command.rc != 0:
            return f"FAIL: exit {command.rc}: {last}"
        if rule.expect and not re.search(rule.expect, output, re.M):
            return f"FAIL: no /{rule.expect}/ in its output"
        return f"FAIL: wrote no {rule.creates}" if rule.creates and not wrote(command, work) else "ok"
    if timed_out:
        return f"not runnable here: {rule.why} (still running after {command.seconds:.0f} s)"
    if command.rc == 0:
        return f"ok (ran, although expected not to: {rule.why})"
    line = one_line(output)
    if line and (not rule.expect or re.search(rule.expect, line)):
        return f"ran: clear one-line error, as expected ({rule.why}): {line[:300]}"
    return f"not runnable here: {rule.why}; and its error is not one clear line: {last}"


def execute(command: Command, work: Path, env: dict, timeout: float) -> None:
    command.run = fill(command.run, work)
    start, timed_out, command.started = time.monotonic(), False, time.time()
    process = subprocess.Popen(["bash", "-c", command.run], cwd=work, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        command.output = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:  # a timeout or Ctrl-C here: end the command's whole process group (torchrun's workers too)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            command.output = process.communicate()[0]
    command.rc = None if timed_out else process.returncode
    command.seconds = time.monotonic() - start
    command.verdict = judge(command, work, timed_out)


def run_all(commands: list[Command], work: Path, timeout: float, log) -> None:
    env = environment(work)
    for command in commands:
        if command.rule is None:
            command.verdict = "FAIL: no rule in scripts/check_readme.py's RULES matches this command"
        elif command.rule.kind == SETUP:
            command.verdict = f"set-up (run by CI): {command.rule.why}"
        elif command.rule.kind == CI:
            command.verdict = command.rule.why
        else:
            log(f"README:{command.line}: {command.run}")
            execute(command, work, env, timeout)
            log(f"  -> {command.verdict} ({command.seconds:.1f} s)")
            if command.verdict.startswith("FAIL"):
                log("  " + "\n  ".join(command.output.strip().splitlines()[-15:]))


# ------------------------------------------------------------------------------------------- output
def cell(text) -> str:
    return "" if text is None else str(text).replace("|", "\\|")


def table(commands: list[Command], listing: bool) -> str:
    head = ["line", "as written", "as run", "kind / why"] if listing else ["line", "as written", "as run", "exit",
                                                                           "s", "verdict"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for c in commands:
        run = ("= as written" if c.run == c.written else f"`{c.run}`") if c.run else "-"
        if listing:
            what = f"{c.rule.kind}: {fill(c.rule.why, None)}" if c.rule else "NO RULE"
            cells = [c.line, f"`{c.written}`", fill(run, None), what]
        else:
            seconds = f"{c.seconds:.1f}" if c.seconds is not None else "-"
            cells = [c.line, f"`{c.written}`", run, "-" if c.rc is None else c.rc, seconds, c.verdict]
        rows.append("| " + " | ".join(cell(x) for x in cells) + " |")
    return "\n".join(rows)


def legend() -> str:
    lines = ["Tiny override sets (environment variables; appended last, so they win):"]
    lines += [f"  ${name} = {' '.join(overrides)}" for name, overrides in tiny_sets().items()]
    return "\n".join(lines)


def summary(commands: list[Command], seconds: float) -> str:
    count = {}
    for c in commands:
        key = c.verdict.split(":")[0].split(" (")[0]
        key = "ran: clear one-line error, as expected" if key == "ran" else key
        count[key] = count.get(key, 0) + 1
    return f"{len(commands)} commands in {seconds:.0f} s: " + ", ".join(f"{n} {k}" for k, n in count.items())


def build_parser():
    parser = script_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the commands and their mapping; run nothing")
    parser.add_argument("--only", metavar="PATTERN", help="run the commands matching this regex (and their needs)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working copy")
    parser.add_argument("--timeout", type=positive_float, default=600, help="seconds per command (default 600)")
    parser.add_argument("--readme", type=nonempty_path, default=ROOT / "README.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = selected(plan(args.readme.read_text()), args.only)
    if args.list:
        print(legend() + "\n\n" + table(commands, listing=True))
        return 1 if any(c.rule is None for c in commands) else 0
    return run_and_report(commands, args)


def run_and_report(commands: list[Command], args) -> int:
    start, work = time.monotonic(), Path(tempfile.mkdtemp(prefix="check-readme-"))
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    try:
        log(f"working copy: {work}")
        make_work(work)
        run_all(commands, work, args.timeout, log)
    finally:
        if args.keep:
            log(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(legend() + "\n\n" + table(commands, listing=False) + "\n\n" + summary(commands, time.monotonic() - start))
    return 1 if any(c.verdict.startswith("FAIL") for c in commands) else 0


if __name__ == "__main__":
    run_script(lambda: sys.exit(main()))
