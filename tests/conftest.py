"""Shared test set-up: `tests/` on sys.path so that tests can import the `tools` helpers."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
