"""The engine: one pipeline per device, station mode, device discovery.

No argparse, no rich, no exit codes, no print: the layers above present what
it reports (tests/test_architecture.py holds it to that).
"""
