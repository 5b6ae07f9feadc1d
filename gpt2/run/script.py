"""What every script under scripts/ shares: `run_script` (a user error is one line, Ctrl-C one line,
a closed pipe nothing), `stop_on_ctrl_c` (Ctrl-C one line during the slow imports too), the checks of
their own options (the argparse types below, which refuse a meaningless value while the flags are
read: NaN, inf, a count below 1, an empty path) and the `--threads` option. Standard library only at
import: a script imports it before torch."""

import argparse
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

from gpt2.errors import ConfigError, error_line

STOPPED = "stopped by Ctrl-C"


class ScriptParser(argparse.ArgumentParser):
    """argparse with the harness's one-line errors: a flag it cannot read, one missing or unknown is
    `error: --num-samples: invalid int value: 'x' (sample.py --help says more)` and exit status 1,
    not usage lines and status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message.removeprefix('argument ')} ({self.prog} --help says more)", file=sys.stderr)
        sys.exit(1)


def script_parser(doc: Optional[str]) -> ScriptParser:
    """A script's parser: its docstring as the description, shown as written."""
    return ScriptParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def _checked(kind: type, ok: Callable[[Any], bool], wants: str) -> Callable[[str], Any]:
    """An argparse type: text that `kind` cannot read is argparse's own 'invalid int value: 'x'', a
    value `ok` refuses 'must be <wants>, got <text>' (argparse prefixes the option: one line)."""
    def parse(text: str):
        value = _read(kind, text)
        refused = None if ok(value) else wants
        if kind is int and not -INT64 <= value < INT64:  # it would overflow in torch and numpy
            refused = "a 64-bit integer"
        if refused:
            raise argparse.ArgumentTypeError(f"must be {refused}, got {text.strip() or repr(text)}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type by it: 'invalid float value'
    return parse


def _read(kind: type, text: str):
    """float(text), or int(text) where '1e9' is an integer too; ValueError for anything else."""
    try:
        return kind(text)
    except ValueError:
        value = float(text)
        if not value.is_integer():  # also NaN and inf
            raise
        return int(value)


INT64 = 2 ** 63
integer = _checked(int, lambda v: True, "a 64-bit integer")
"""Any integer torch and numpy take (a seed): 10**30 is one line, not an overflow deep in a generator."""
positive_int = _checked(int, lambda v: v >= 1, "at least 1")
"""A count: 1 or more ('1e9' reads as 10**9)."""
nonnegative_int = _checked(int, lambda v: v >= 0, ">= 0")
finite_float = _checked(float, math.isfinite, "a finite number")
positive_float = _checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
nonnegative_float = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
probability = _checked(float, lambda v: 0 < v <= 1, "in (0, 1]")
fraction = _checked(float, lambda v: 0 < v < 1, "in (0, 1), both ends excluded")


def nonempty_str(text: str) -> str:
    """A path, or a name (`gpt2`), kept as written (Path would turn './gpt2' into the name 'gpt2'): ''
    (an unset shell variable, `--out $UNSET`) is refused, not read as the current directory."""
    if not text:
        from gpt2.config import EMPTY_PATH

        raise argparse.ArgumentTypeError(EMPTY_PATH)
    return text


def nonempty_path(text: str) -> Path:
    """A path option, as nonempty_str."""
    return Path(nonempty_str(text))


def comma_choices(*allowed: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated selection among `allowed` (each at most once); a name it does
    not know is refused, not skipped (a misspelled section would select nothing and exit 0)."""
    def parse(text: str) -> list[str]:
        chosen = text.split(",")
        unknown = [c for c in chosen if c not in allowed]
        if unknown or len(set(chosen)) != len(chosen):
            raise argparse.ArgumentTypeError(f"comma-separated, each once, of {','.join(allowed)}; got {text!r}")
        return chosen
    parse.allowed = allowed
    return parse


def check_input_file(path: Path, option: str) -> Path:
    """An input a script reads whole must be a regular file: a missing one, a folder, a FIFO or a
    device (/dev/zero: endless; a FIFO: blocks until written) is one line naming the option."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{option} {path}: no such file")
    if not path.is_file():
        raise ConfigError(f"{option} {path}: not a regular file (a folder, FIFO or device is not read)")
    return path


def add_force_option(parser: argparse.ArgumentParser) -> None:
    """`--force`: replace a result that the output path already holds (see `check_output`)."""
    parser.add_argument("--force", action="store_true", help="replace what the output path already holds")


def check_output(path: Path, option: str, force: bool, folder: bool = False) -> None:
    """Refuse, in one line and before any work, an output path that already holds a result (a file;
    for a folder, anything in it) unless --force; and one that cannot be written where it is."""
    path = Path(path)
    if folder:
        taken = path.is_file() or (path.is_dir() and any(path.iterdir()))
        wrong = path.is_file()
    else:
        taken, wrong = path.exists(), path.is_dir() or not path.parent.is_dir()
    if wrong:
        raise ConfigError(f"{option} {path}: give a {'folder' if folder else 'file'} path"
                          + ("" if folder else " in an existing directory"))
    if taken and not force:
        raise ConfigError(f"{option} {path} holds an earlier result: choose another path, or add --force to "
                          f"replace it")


def int_list(text: str, option: str) -> list[int]:
    """A script's comma-separated positive integers: '16,32' -> [16, 32]; anything else one line."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option}: comma-separated integers, got {text!r}") from None
    if min(values) < 1:
        raise ConfigError(f"{option}: each must be >= 1, got {text!r}")
    return values


def check_device(name: str, option: str = "--device") -> None:
    """Refuse a device name this machine cannot use, in one line naming the option (before
    gpt2.train.runtime.resolve_device, whose messages name trainer.device)."""
    import torch

    from gpt2.config import DEVICE_RE

    if not DEVICE_RE.match(name):
        raise ConfigError(f"{option}: must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    lacking = None
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(name.partition(":")[2] or 0) >= count:
            lacking = f"this machine has {count} CUDA device(s)" if count else "CUDA is not available here"
    elif name == "mps" and not torch.backends.mps.is_available():
        lacking = "MPS is not available here"
    if lacking:
        raise ConfigError(f"{option}: {name!r} asked for, but {lacking} (use {option} auto or cpu)")


def add_threads_option(parser: argparse.ArgumentParser, *, default_help: str = "torch's, one per core") -> None:
    """`--threads N`: the CPU threads torch computes with (default None: torch's own, one per core;
    a script that chooses otherwise when it is not given says so in `default_help`)."""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help=f"CPU threads for torch (default: {default_help})")


def apply_threads(args: argparse.Namespace) -> None:
    """Check --threads (at least 1) and, when given, have torch compute with that many CPU threads."""
    if args.threads is None:
        return
    if args.threads < 1:
        raise ConfigError(f"--threads: must be at least 1, got {args.threads}")
    import torch  # here: scripts without torch start fast

    torch.set_num_threads(args.threads)


def add_device_options(parser: argparse.ArgumentParser, *, threads_help: str = "torch's, one per core") -> None:
    """`--device` (auto, cpu, cuda, cuda:N, mps) and `--threads N`, as the scripts that compute take them."""
    parser.add_argument("--device", default="auto")
    add_threads_option(parser, default_help=threads_help)


def apply_device_options(args: argparse.Namespace) -> None:
    """check_device(--device) and apply_threads(--threads): one line for either, before any work."""
    check_device(args.device)
    apply_threads(args)


def quiet_broken_pipe() -> None:
    """The reader of stdout went away (`script | head`): nothing more is written, not even the
    buffered rest at exit, and the exit status is the shell's for a writer killed by SIGPIPE, 141
    (the pattern of Python's docs, library/signal.html#note-on-sigpipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(141)


def stop_on_ctrl_c() -> None:
    """Until run_script starts main(), Ctrl-C ends the script at once with its one line and status
    130: a script calls this before its slow imports (torch), where Ctrl-C would otherwise print a
    traceback, or raise an exception that an import catching everything swallows (seen in torch's
    imports: the script then ran on). As train.py installs gpt2.signals.STOP. Only in the script's
    own process (`if __name__ == "__main__":`), never in one that imports it (a test). Nothing
    changes where SIGINT is ignored (nohup, a background job) or handled already, or outside the
    main thread."""
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _exit_at_once)
    except ValueError:  # not the main thread
        pass


def _exit_at_once(signum, frame) -> None:
    os.write(sys.stderr.fileno(), f"{STOPPED}\n".encode())  # not print: stderr may be mid-write
    os._exit(130)  # nothing is written yet to tidy up


def _exit_quietly(signum, frame) -> None:
    os._exit(130)  # a second Ctrl-C while the script stops: its line is said already


def run_script(main: Callable[[], None]) -> None:
    """Run a script's main(): a user error (see error_line) becomes one line on stderr and exit
    status 1; Ctrl-C one line and status 130 (once: in a script that called stop_on_ctrl_c, a
    second Ctrl-C while it exits adds no 'Exception ignored' traceback); a closed stdout pipe
    nothing and status 141."""
    script = signal.getsignal(signal.SIGINT) is _exit_at_once  # a script's process, not a test's
    if script:  # main() may have files to tidy up: Ctrl-C unwinds it as KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main()
        sys.stdout.flush()  # here, not at exit: a closed pipe is found while it can still be handled
    except BrokenPipeError:
        quiet_broken_pipe()
    except KeyboardInterrupt:
        if script:
            signal.signal(signal.SIGINT, _exit_quietly)
        print(STOPPED, file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        line = error_line(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
