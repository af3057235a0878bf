"""Shared pytest setup: makes tests/ importable, also in spawned worker processes.

The runner starts its workers with the ``spawn`` method; they unpickle stage objects
by module name, so the helper stages in ``tests/stages_for_tests.py`` must be
importable by name there too. Spawned children inherit the parent's ``sys.path``;
subprocesses started by the tests get ``stages_for_tests.subprocess_env()``.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
