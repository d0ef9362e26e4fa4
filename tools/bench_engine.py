"""Engine benchmark: the transformer stack only (sequential, reversible, checkpoint, revlib/memcnn if installed).

Usage: python tools/bench_engine.py [--depths 4 8 16 32] [--time-depth 16] [--rounds 5] [--quick] [--out DIR]
The measurement code is revzoo.bench._bench, shared with `revzoo bench` (which adds every registered architecture).
"""

import sys

from revzoo.bench._bench import main

if __name__ == "__main__":
    main(["--no-architectures", "--depths", "4", "8", "16", "32", *sys.argv[1:]])
