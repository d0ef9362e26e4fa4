"""Engine benchmark: the transformer stack only (sequential, reversible, checkpoint, revlib/memcnn if installed).

Usage: python tools/bench_engine.py [--depths 4 8 16 32] [--time-depth 16] [--rounds 5] [--quick] [--out DIR]
Prints the tables; writes files only with --out DIR (bench.md, bench.json, memory.png). The measurement is
`revzoo bench --no-architectures` (revzoo.bench._bench), which adds the architectures without that flag.
"""

import sys

from revzoo.cli import main

if __name__ == "__main__":
    depths = [] if "--quick" in sys.argv else ["--depths", "4", "8", "16", "32"]  # later options win
    sys.exit(main(["bench", "--no-architectures", "--out", "-", *depths, *sys.argv[1:]]))
