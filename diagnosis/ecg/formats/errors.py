"""The one error every ECG reader and writer raises for a file it cannot handle."""

from __future__ import annotations

from pathlib import Path


class EcgFormatError(ValueError):
    """A file is not a readable ECG record; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem
