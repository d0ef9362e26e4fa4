"""Start-up benchmark: wall time and peak RSS of `revzoo --help`, `list` and `info`, against `import torch`.

Usage: python tools/bench/bench_startup.py [--rounds 7] [--name vit-small-rev]

Each command runs in a fresh interpreter (this one's), round after round in rotating order; the
table shows the median wall time and peak resident size (the child's own `ru_maxrss`), and the
time over `python -c 'import torch'` measured in the same rounds. Goals: `--help` under
0.3 s and without torch; `list` and `info` within torch's import time + 0.3 s, without timm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

_WHICH = "import sys; print(' '.join(m for m in ('torch', 'timm') if m in sys.modules), file=sys.stderr)"


def _commands(name: str) -> dict[str, list[str]]:
    python = sys.executable
    revzoo = [python, "-c", f"import atexit; atexit.register(lambda: exec({_WHICH!r})); "
              "import sys; from revzoo.cli import main; sys.argv[0] = 'revzoo'; raise SystemExit(main())"]
    return {
        "python -c pass": [python, "-c", f"pass; {_WHICH}"],
        "python -c 'import torch'": [python, "-c", f"import torch; {_WHICH}"],
        "revzoo --help": [*revzoo, "--help"],
        "revzoo list": [*revzoo, "list"],
        f"revzoo info {name}": [*revzoo, "info", name],
    }


def _run(command: list[str]) -> tuple[float, float, str]:
    """Returns (wall seconds, peak RSS in MB, heavy modules imported) of one run of `command`."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0,):
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}): {stderr.strip()}")
    imported = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    return elapsed, usage.ru_maxrss / 1024, imported


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--name", default="vit-small-rev", help="the model `revzoo info` shows")
    args = parser.parse_args(argv)
    commands = _commands(args.name)
    labels = list(commands)
    times: dict[str, list[float]] = {label: [] for label in labels}
    peaks: dict[str, list[float]] = {label: [] for label in labels}
    imported: dict[str, str] = {}
    for round_index in range(args.rounds):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            elapsed, peak, heavy = _run(commands[label])
            times[label].append(elapsed)
            peaks[label].append(peak)
            imported[label] = heavy
    torch_time = statistics.median(times["python -c 'import torch'"])
    print(f"{'command':<32} {'time s':>7} {'- torch':>8} {'peak MB':>8}  imports")
    for label in labels:
        median = statistics.median(times[label])
        print(f"{label:<32} {median:>7.2f} {median - torch_time:>+8.2f} {statistics.median(peaks[label]):>8.0f}  "
              f"{imported[label] or '-'}")
    print(f"({args.rounds} rounds, medians; python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
