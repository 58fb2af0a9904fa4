"""Architecture rules: imports point down the layers, nothing imports the CLI, imports stay lazy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "diffsr"

# the layers (docs/architecture.md): components register their config models, config assembles
# them, the model composes them, train / sample / evaluate use the model, the CLI uses them all.
# Keys are module prefixes; the longest matching prefix gives a module its level. The samplers
# depend on the process interface only, so the model (below the rest of sampling) can use them.
LEVEL = {
    "core": 0,
    "codecs": 1, "processes": 1, "losses": 1, "nets": 1, "data": 1, "presets": 1, "sampling.samplers": 1,
    "config": 2,
    "model": 3,
    "train": 4, "eval": 4, "sampling": 4,
    "export": 5,
    "volumes": 5,
    "cli": 6, "__main__": 6,
    # deprecated locations re-export the module that moved (their level is its level)
    "infer": 4, "consistency": 4, "uncertainty": 4, "distill": 4,
    "demo": 6, "evaluate_cli": 6, "audit_cli": 6,
}


def level(module: str) -> int:
    """The level of a dotted module name below ``diffsr`` (longest matching prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LEVEL:
            return LEVEL[key]
    raise AssertionError(f"no layer for diffsr.{module}")


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "core"


def diffsr_imports(path: Path) -> set[str]:
    """Modules below ``diffsr`` that ``path`` imports (at any depth of the file, lazily or not)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffsr."):
            out.add(node.module.removeprefix("diffsr."))
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("diffsr.") for a in node.names if a.name.startswith("diffsr.")}
    return out


def test_imports_point_down() -> None:
    for path in SRC.rglob("*.py"):
        src = module_of(path)
        for target in diffsr_imports(path):
            assert level(target) <= level(src), f"{path} (level {level(src)}) imports diffsr.{target}"


def test_components_do_not_import_the_config() -> None:
    # each component's config model lives beside it; only diffsr.config assembles them
    for package in ("codecs", "processes", "losses", "nets", "data", "core"):
        for path in (SRC / package).rglob("*.py"):
            assert "config" not in diffsr_imports(path), f"{path} imports diffsr.config"


def test_import_diffsr_is_light() -> None:
    code = ("import sys, diffsr, diffsr.config, diffsr.losses, diffsr.codecs; "
            "heavy = [m for m in ('diffusers', 'lpips', 'pywt', 'nibabel', 'pydicom', 'spandrel', 'accelerate')"
            " if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
