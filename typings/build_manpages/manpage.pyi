# The one name parallel-flash uses from argparse-manpage (cli/completion.py).
import argparse
from typing import Any

class Manpage:
    def __init__(
        self, parser: argparse.ArgumentParser, _data: dict[str, Any] | None = ..., format: str = ...
    ) -> None: ...
