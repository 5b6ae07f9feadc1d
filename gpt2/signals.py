"""Stop signals (SIGINT, SIGTERM), handled the same way at every moment of a process.

Inside the training loop (`with STOP.deferred():`) the first signal only sets `STOP.received`: the loop
finishes its step, saves and stops. Anywhere else (start-up, between sweep jobs or study trials), and
for a second Ctrl-C in the loop, the handler raises `Interrupted` at once: a SystemExit whose message is
one line saying where it stopped (`STOP.context`), so no `except Exception` swallows it and no
traceback is printed. Standard library only, so train.py installs it before its slow imports.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from typing import Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)
START_UP = "during start-up, before training began (nothing was saved): run the command again"


class Interrupted(SystemExit):
    """A stop that ends the process now: exit status 1 and one line (no traceback)."""

    def __init__(self, signal_name: str, where: str):
        self.signal_name = signal_name
        super().__init__(f"stopped by {signal_name} {where}")


class StopSignals:
    """The process's SIGINT/SIGTERM handler (one instance, STOP)."""

    def __init__(self) -> None:
        self.received: Optional[str] = None  # the first signal since the last reset
        self.context = START_UP  # where a signal raising Interrupted now would stop the process
        self._deferring = False
        self._installed = False
        self._pid = os.getpid()

    def install(self) -> None:
        """Handle SIGINT/SIGTERM from now on (a no-op outside the main thread)."""
        try:
            for sig in SIGNALS:
                signal.signal(sig, self._handle)
            self._installed, self._pid = True, os.getpid()
        except ValueError:  # not the main thread: signals stay as they are
            pass

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: its parent stops it
            return
        name = signal.Signals(signum).name
        again = self.received is not None
        self.received = self.received or name
        if not self._deferring or (again and signum == signal.SIGINT):
            raise Interrupted(name, "at once (second Ctrl-C)" if self._deferring else self.context)

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
            self.received = None
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
