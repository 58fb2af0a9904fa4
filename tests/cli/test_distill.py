"""diffsr distill: a one-step student run from a teacher run."""

from __future__ import annotations

from pathlib import Path

from tests.cli._helpers import _run


def test_distill_command_writes_a_one_step_run(teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    _run(["distill", "--teacher", str(teacher), "--out", str(out), "--steps", "2", "--no-progress"])
    from diffsr.sampling.infer import load_model

    assert load_model(out).step == 2
