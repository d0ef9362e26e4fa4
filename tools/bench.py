"""The full benchmark, the same as `revzoo bench`: the transformer stack and the built-in architectures.

Usage: python tools/bench.py [--quick] [--out DIR] [--depths ...] [--arch-depths ...] [--architectures NAME ...]
Writes DIR/bench.md, DIR/bench.json and DIR/memory.png (with matplotlib installed); see `revzoo bench --help`.
"""

import sys

from revzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
