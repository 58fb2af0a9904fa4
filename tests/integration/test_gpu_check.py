"""CI runs the GPU check's dry run (benchmarks/gpu_check.sh --dry-run) so the script cannot rot.

The dry run is the real script on a CPU with tiny sizes: every step runs (pytest -m gpu, the
CUDA-variant checks, the speed measurements, two time-limited trainings on a data folder and
their ``diffsr eval``, the summary) and writes what the real run writes. Its figures mean
nothing; what is checked is that every step ran, every check passed and the files are complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _roadscene_like(root: Path) -> Path:
    """train/ and test/ folders of small smooth 8-bit PNGs (the layout of infrared/roadscene)."""
    gen = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        folder = root / split
        folder.mkdir(parents=True)
        for i in range(n):
            img = np.kron(gen.random((12, 12)), np.ones((8, 8))) * 255
            Image.fromarray(img.astype(np.uint8)).save(folder / f"frame{i}.png")
    return root


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_result_and_passes(tmp_path: Path) -> None:
    data = _roadscene_like(tmp_path / "roadscene")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src")}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--data", str(data), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("env", "pytest_gpu", "checks", "speed", "runs", "summary"):
        assert (out / f"{name}.json").is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == []
    checks = {row["name"]: row for row in json.loads((out / "checks.json").read_text())["rows"]}
    assert len(checks) == 4 and all(row["pass"] for row in checks.values())
    assert checks["one decode per step for the loss stack"]["decode_calls"] == 1
    assert checks["resume is exact"]["max_abs_param_diff"] == 0.0  # CPU: bitwise
    speed = {row["name"]: row for row in json.loads((out / "speed.json").read_text())["rows"]}
    assert all(row["status"] == "ok" for row in speed.values())
    assert {"training throughput: demo", "training throughput: edsr", "haar level-2 round trip"} <= set(speed)
    assert speed["haar level-2 round trip"]["max_abs_roundtrip_err"] < 1e-6
    runs = {row["name"]: row for row in json.loads((out / "runs.json").read_text())["rows"]}
    assert runs["training demo"]["steps"] >= 1 and runs["training edsr"]["steps"] >= 1
    assert set(runs["diffsr eval on roadscene/test"]["methods"]) == {"bicubic", "demo", "edsr"}
    md = (out / "summary.md").read_text()
    assert "# diffsr GPU check" in md and "failed: none" in md


def test_gpu_check_refuses_an_unknown_argument(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-rn"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "unknown argument '--dry-rn'" in proc.stderr
