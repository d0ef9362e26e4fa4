"""Peak memory and time of refusing the hostile files of tests/hostile.py (and seeded fuzzed ones), one process, one table.

    python tools/bench/measure_refusals.py [--fuzz 40] [--seed 14] [--bomb-mib 512]

Runs tests/hostile.py with MALLOC_MMAP_THRESHOLD_ set (revzoo.bench.MMAP_ENV): each command
goes through `revzoo.cli.main` in that process, and its peak resident memory above the size
before it is measured. Prints one row per case: exit code, peak MiB, seconds, file size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from revzoo.bench import MMAP_ENV

HOSTILE = Path(__file__).resolve().parents[2] / "tests" / "hostile.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=40)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--bomb-mib", type=int, default=512)
    args = parser.parse_args()
    env = {**os.environ, **MMAP_ENV, "REVZOO_LOAD_PLUGINS": "dalle,lie,vit", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(HOSTILE), "--fuzz", str(args.fuzz), "--seed", str(args.seed),
               "--bomb-mib", str(args.bomb_mib), "--seconds", "600"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    print(f"{'case':<62} {'exit':>4} {'peak MiB':>9} {'seconds':>8} {'file KiB':>9}")
    for row in rows:
        print(f"{row['label'][:62]:<62} {row['code']:>4} {row['peak_bytes'] / 2**20:>9.2f} {row['seconds']:>8.3f} "
              f"{row['file_bytes'] / 1024:>9.1f}")
    refusals = [row for row in rows if row["code"] == 2]
    worst = max(refusals, key=lambda row: row["peak_bytes"])
    print(f"{len(rows)} cases, {len(refusals)} refused in one line; largest refusal peak {worst['peak_bytes'] / 2**20:.2f} "
          f"MiB ({worst['label']}); largest of all {max(row['peak_bytes'] for row in rows) / 2**20:.2f} MiB; "
          f"crashes: {sum('crash' in row for row in rows)}")


if __name__ == "__main__":
    main()
