"""Stop signals (SIGINT, SIGTERM), handled the same way at every moment of a process.

Inside the training loop (`with STOP.deferred():`) the first signal only sets `STOP.received`: the loop
finishes its step, saves and stops. Anywhere else (start-up, between sweep jobs or study trials), and
for a second Ctrl-C in the loop, the handler raises `Interrupted` at once: a SystemExit whose message is
one line saying where it stopped (`STOP.context`), so no `except Exception` swallows it and no
traceback is printed (under torchrun rank 0 says it, the other ranks exit 1 quietly). Once a run has
trained (`STOP.finishing()`), a signal no longer stops anything: the run writes its record, closes
its loggers and ends with its result (a second Ctrl-C still stops at once), and from the
interpreter's last steps on (atexit) signals are ignored, since Python then restores the default
handlers, which would end the process silently with status 130. Standard library only, so train.py
installs it before its slow imports.
"""

from __future__ import annotations

import atexit
import os
import signal
from contextlib import contextmanager
from typing import Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)
START_UP = "during start-up, before training began (nothing was saved): run the command again"
FINISHING = "while the run was closing, after training (its checkpoint and summary.json are written)"


class Interrupted(SystemExit):
    """A stop that ends the process now: exit status 1 and one line (no traceback)."""

    def __init__(self, signal_name: str, where: str):
        self.signal_name = signal_name
        super().__init__(f"stopped by {signal_name} {where}")
        if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 says it: exit 1 quietly
            self.code = 1


class StopSignals:
    """The process's SIGINT/SIGTERM handler (one instance, STOP)."""

    def __init__(self) -> None:
        self.received: Optional[str] = None  # the first signal since the last reset
        self.context = START_UP  # where a signal raising Interrupted now would stop the process
        self._deferring = False
        self._finishing = False  # the run has trained: it ends with its result (see finishing)
        self._installed = False
        self._at_exit = False
        self._pid = os.getpid()

    def install(self) -> None:
        """Handle SIGINT/SIGTERM from now on (a no-op outside the main thread)."""
        try:
            for sig in SIGNALS:
                signal.signal(sig, self._handle)
            self._installed, self._pid = True, os.getpid()
        except ValueError:  # not the main thread: signals stay as they are
            return
        if not self._at_exit:  # registered before the slow imports: runs after their atexit hooks
            atexit.register(self.ignore_at_exit)
            self._at_exit = True

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: its parent stops it
            return
        name = signal.Signals(signum).name
        again = self.received is not None
        self.received = self.received or name
        if not (self._deferring or self._finishing):
            raise Interrupted(name, self.context)
        if again and signum == signal.SIGINT:
            raise Interrupted(name, "at once (second Ctrl-C)" + ("" if self._deferring else f" {FINISHING}"))

    def finishing(self) -> None:
        """The run has trained (all its iterations, or up to a stop it saved): from now until the
        process starts another run (`starting`) a first signal is only recorded, so that the run
        writes its record, closes its loggers and ends with its result; a second Ctrl-C stops at once."""
        self._finishing = True

    def starting(self) -> None:
        """A run starts in this process (e.g. the next job of a sweep): a signal ends it at once again."""
        self._finishing = False

    def ignore_at_exit(self) -> None:
        """At the interpreter's exit (atexit, after the hooks registered later): ignore SIGINT and
        SIGTERM, since Python restores their default handlers while it finalises and a signal then
        would end the process silently with status 130 after everything was said."""
        if self._installed and os.getpid() == self._pid:
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    @contextmanager
    def deferred(self) -> Iterator["StopSignals"]:
        """The first signal is only recorded (the training loop; a study around its trials). The
        outermost block clears earlier signals, and installs the handler for its duration when
        nobody installed it (train() called from Python)."""
        outer, installed_here = self._deferring, not self._installed
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS} if installed_here else {}
        if installed_here:
            self.install()
        if not outer:
            self.received, self._finishing = None, False
        self._deferring = True
        try:
            yield self
        finally:
            self._deferring = outer
            if installed_here and self._installed:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                self._installed = False


STOP = StopSignals()
