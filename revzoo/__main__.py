"""`python -m revzoo`: the same command line as the `revzoo` script."""

from .cli import main

raise SystemExit(main())
