"""Engine benchmark: peak activation memory against depth and step time of the forms.

Usage: python tools/bench_engine.py [--depths 4 8 16 32] [--time-depth 16] [--rounds 5] [--quick] [--out DIR]
The measurement code is revzoo._bench, shared with `revzoo bench`.
"""

from revzoo._bench import main

if __name__ == "__main__":
    main()
