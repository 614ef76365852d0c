"""What several ECG test modules read: the CinC 2021 12-lead records and their diagnoses."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cinc_dir(shared_data: Path) -> Path:
    return shared_data / "ecg" / "cinc2021-12lead"


@pytest.fixture(scope="session")
def cinc_dx(cinc_dir: Path) -> dict[str, set[str]]:
    """Each record's SNOMED CT diagnosis codes (its header's `# Dx:` line), by record name."""
    codes = {}
    for header in sorted(cinc_dir.glob("*.hea")):
        lines = [line for line in header.read_text().splitlines()
                 if line.startswith("#") and "Dx:" in line]
        codes[header.stem] = set(lines[0].split("Dx:", 1)[1].strip().split(",")) if lines \
            else set()
    return codes
