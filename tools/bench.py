"""The full benchmark, the same as `revzoo bench`: the transformer stack and every registered architecture.

Usage: python tools/bench.py [--quick] [--out DIR] [--depths ...] [--arch-depths ...]
Writes DIR/bench.md, DIR/bench.json and DIR/memory.png (with matplotlib installed).
"""

from revzoo.bench._bench import main

if __name__ == "__main__":
    main()
