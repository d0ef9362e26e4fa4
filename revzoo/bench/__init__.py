"""`revzoo bench` and `revzoo demo`: memory and time measurements, and the end-to-end demo.

May import every other part of revzoo; nothing imports it but the command line and tools/.
"""
