"""Every name README.md and docs/ show imports; moved paths re-export with a DeprecationWarning."""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FROM_IMPORT = re.compile(r"from (diffsr(?:\.\w+)*) import \(?([\w, ]+)")
DOTTED = re.compile(r"\b(diffsr(?:\.\w+)+)")


def _shown() -> tuple[set[tuple[str, str]], set[str]]:
    imports: set[tuple[str, str]] = set()
    dotted: set[str] = set()
    for doc in DOCS:
        text = doc.read_text()
        for module, names in FROM_IMPORT.findall(text):
            for name in names.split(","):
                if name.strip():
                    imports.add((module, name.strip()))
        dotted |= set(DOTTED.findall(text))
    return imports, dotted


def _resolve(dotted: str) -> object:
    """Import the longest importable prefix of ``dotted`` and get the rest as attributes."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ModuleNotFoundError:
            continue
        for attr in parts[n:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_the_docs_show_names_at_all() -> None:
    imports, dotted = _shown()
    assert len(imports) > 20 and len(dotted) > 20  # the scan itself works


@pytest.mark.parametrize(("module", "name"), sorted(_shown()[0]))
def test_every_import_the_docs_show_works(module: str, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert getattr(importlib.import_module(module), name) is not None


@pytest.mark.parametrize("dotted", sorted(_shown()[1]))
def test_every_dotted_name_the_docs_show_resolves(dotted: str) -> None:
    if dotted.endswith((".py", ".md", ".yaml", ".json")) or dotted.split(".")[-1] in ("pth", "safetensors"):
        pytest.skip("a file name, not a Python name")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert _resolve(dotted) is not None


MOVED = {
    "diffsr.infer": ("diffsr.sampling.infer", "super_resolve"),
    "diffsr.consistency": ("diffsr.sampling.consistency", "kspace_project"),
    "diffsr.uncertainty": ("diffsr.sampling.uncertainty", "calibrate"),
    "diffsr.demo": ("diffsr.cli.demo", "run_demo"),
    "diffsr.evaluate_cli": ("diffsr.cli.evaluate", "run_eval"),
    "diffsr.audit_cli": ("diffsr.cli.audit", "run_audit"),
    "diffsr.distill": ("diffsr.train.distill", "distill"),
    "diffsr.train.model": ("diffsr.model", "SRModel"),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_module_reexports_with_a_deprecation_warning(old: str) -> None:
    import subprocess
    import sys

    new, name = MOVED[old]
    code = (f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print('warned:', w)\n"
            f"warnings.simplefilter('ignore')\nimport {old} as a, {new} as b\nprint(a.{name} is b.{name})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"warned: {old} is deprecated: import from {new}" in out
    assert out.strip().endswith("True")


def test_the_top_level_api_is_lazy_and_complete() -> None:
    import subprocess
    import sys

    code = ("import sys, diffsr; print('torch' in sys.modules); "
            "from diffsr import load_config, load_model, super_resolve, fit, build_model; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "ok"]


def test_top_level_fit_stays_a_function_after_the_train_package_is_imported() -> None:
    """A top-level ``diffsr.train`` was shadowed by the ``diffsr.train`` subpackage once imported."""
    import subprocess
    import sys

    code = ("import diffsr, diffsr.train.trainer, diffsr.train.batches; "
            "print(callable(diffsr.fit), diffsr.fit is diffsr.train.trainer.train)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True"]
