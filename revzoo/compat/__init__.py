"""Drop-in replacements for other projects' reversible modules, built on revzoo's engine.

`revzoo.compat.lucidrains`: the `reversible.py` of DALLE-pytorch, lie-transformer-pytorch and
the other projects that copied it. Imports the engine only.
"""
