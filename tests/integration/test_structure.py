"""Size limits on the source: no file in src/ over 600 lines, no function over 80 lines unless its
docstring says why ("long because ..."). Both are measured, not estimated: lines as the file has
them, and a function from its first decorator to its last line, found with ``ast`` (methods and
nested functions included).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
REASON = re.compile(r"\blong because\s+\S", re.IGNORECASE)  # "long because" followed by the reason


def text_files(root: Path) -> list[Path]:
    """Every text file below ``root`` (images and other binaries skipped), caches excluded."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found.append(path)
    return found


def long_files(root: Path, limit: int = MAX_FILE_LINES) -> list[str]:
    return [f"{p.relative_to(root)}: {n} lines" for p in text_files(root)
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit]


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions over ``limit`` lines whose docstring does not say why they are long."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            lines = node.end_lineno - start + 1
            if lines > limit and not REASON.search(ast.get_docstring(node) or ""):
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}: {lines} lines")
    return found


def test_source_is_there() -> None:
    # the checks below pass vacuously on an empty tree: make sure they look at the real one
    assert len(list(SRC.rglob("*.py"))) > 50


def test_no_source_file_is_over_600_lines() -> None:
    assert long_files(SRC) == []


def test_no_function_is_over_80_lines_without_a_reason() -> None:
    assert long_functions(SRC) == []


def test_the_checks_catch_long_code(tmp_path: Path) -> None:
    def body(n: int) -> str:
        return "".join(f"    x{i} = {i}\n" for i in range(n))

    over = "def over():\n" + body(MAX_FUNCTION_LINES)  # 81 lines
    explained = 'def explained():\n    """Long because it lists every case."""\n' + body(MAX_FUNCTION_LINES)
    at_limit = "@staticmethod\ndef at_limit():\n" + body(MAX_FUNCTION_LINES - 2)  # decorator counted: 80
    (tmp_path / "long.py").write_text(over + "\n" * (MAX_FILE_LINES - 80))  # 601 lines
    (tmp_path / "ok.py").write_text(explained + at_limit + "\n" * (MAX_FILE_LINES - 200))
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n" + b"\n" * 700)  # binary: not counted
    assert long_files(tmp_path) == ["long.py: 601 lines"]
    assert long_functions(tmp_path) == ["long.py:1 over: 81 lines"]
    assert long_functions(tmp_path, limit=81) == []
