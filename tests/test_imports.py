"""Architecture rules: imports point down the layers, nothing imports the CLI, imports stay lazy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "diffsr"

# config is a set of plain data models that imports only core, so layer-1 packages may use it
LEVEL = {"core": 0, "config": 1, "codecs": 1, "processes": 1, "losses": 1, "nets": 1, "data": 1,
         "presets": 1, "train": 2, "eval": 2, "infer": 2, "consistency": 2, "uncertainty": 2, "distill": 2,
         "demo": 3, "evaluate_cli": 3,
         "audit_cli": 3, "cli": 4}


def top_level(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if rel.parts[0] != "__init__.py" else "core"


def diffsr_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffsr."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("diffsr.")}
    return out


def test_imports_point_down() -> None:
    for path in SRC.rglob("*.py"):
        src = top_level(path)
        for target in diffsr_imports(path):
            assert target in LEVEL, f"{path}: unknown package {target}"
            assert LEVEL[target] <= LEVEL[src], f"{path} ({src}) imports {target}"


def test_config_imports_only_core() -> None:
    assert diffsr_imports(SRC / "config.py") <= {"core"}


def test_import_diffsr_is_light() -> None:
    code = ("import sys, diffsr, diffsr.config, diffsr.losses, diffsr.codecs; "
            "heavy = [m for m in ('diffusers', 'lpips', 'pywt', 'nibabel', 'pydicom', 'spandrel', 'accelerate')"
            " if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
