"""Progress of long work on stderr: a bar on a terminal, plain lines anywhere else.

A tqdm bar draws nothing when stderr is not a terminal (CI, nohup, a pipe, a log file), and
an hour of silent work looks hung. There `Progress` prints one line per step, or per `every`
steps, each with the step count and the seconds since the start, so that a log shows what ran
and where it stopped. `revzoo bench` and `tools/examples/train_dalle.py` use it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    """Counts `total` steps of the work named `description` on `stream` (default: stderr).

    On a terminal: a tqdm bar, its label shown after it. Elsewhere: `description: N/TOTAL label (S s)`
    after step N, when N is a multiple of `every` or the last, and `description: done (S s)` at `close()`
    (`stopped during ...` for work that did not finish).

    Example:
        >>> with Progress("training", 100, every=10) as progress:   # doctest: +SKIP
        ...     for step in range(100):
        ...         loss = train_step()
        ...         progress.step(f"loss {loss:.4f}")
    """

    def __init__(self, description: str, total: int, *, every: int = 1, stream: TextIO | None = None) -> None:
        self.description, self.total, self.every = description, total, max(1, every)
        self.stream = sys.stderr if stream is None else stream
        self.count = 0
        self.start = time.perf_counter()
        self.bar: Any = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=description, file=self.stream)

    def step(self, label: str = "") -> None:
        """Counts one step done (or, for work in stages, the stage `label` begun) and shows it."""
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update()
        elif self.count % self.every == 0 or self.count == self.total:
            self._line(f"{self.count}/{self.total} {label}".rstrip())

    def note(self, text: str) -> None:
        """Shows `text` about the current step without counting one (e.g. a round of timing within a stage)."""
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        else:
            self._line(text)

    def close(self, stopped: str | None = None) -> None:
        """Ends the display: `done`, or `stopped during STOPPED` for work that did not finish."""
        if self.bar is not None:
            self.bar.close()
        else:
            self._line("done" if stopped is None else f"stopped during {stopped}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc_info: object) -> None:
        self.close(None if kind is None else f"step {self.count + 1} ({kind.__name__})")

    def _line(self, text: str) -> None:
        seconds = time.perf_counter() - self.start
        print(f"{self.description}: {text} ({seconds:.0f} s)", file=self.stream, flush=True)
