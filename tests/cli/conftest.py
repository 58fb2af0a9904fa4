"""Fixtures of the CLI tests: a tiny teacher run trained through ``diffsr train``, once for every CLI
test that needs one (distill, eval with a trained method).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli._helpers import TINY, _run


@pytest.fixture(scope="package")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("teacher") / "run"
    _run(["train", "demo", "--out", str(run), "--no-progress", *TINY])
    return run
