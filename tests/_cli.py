"""The exit code of ``diffsr`` run in-process, for tests of the command line."""

from __future__ import annotations

from diffsr.cli import main


def exit_code(argv: list[str]) -> int:
    """main(argv) -> exit code (0 when it returns normally, else its SystemExit's code)."""
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
