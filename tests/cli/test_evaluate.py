"""diffsr eval / bench options: usage errors are one line and exit 2, --set eval.KEY, bench with
baseline presets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffsr.cli import main
from tests.data._helpers import _rgb_png


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--method", "bicubic", "--out", "o"],  # missing --data
        ["eval", "--data", "x", "--method", "bicubic", "--out", "o", "--scale", "abc"],
        ["eval", "--bogus"],
    ],
)
def test_usage_errors_are_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err


def test_eval_set_changes_conventions_and_typo_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _rgb_png(tmp_path / "a.png")
    out = tmp_path / "out"
    base = ["eval", "--data", str(tmp_path / "a.png"), "--method", "bicubic", "--out", str(out)]
    main(base + ["--set", "eval.quantize=true", "--set", "eval.y_channel=false"])
    conv = json.loads((out / "metrics.json").read_text())["conventions"]
    assert conv["quantize_bits"] == 8
    assert conv["y_channel"] is False
    assert "BT.601 studio-swing Y" in conv["rgb_input"]
    capsys.readouterr()
    assert _run(base + ["--set", "eval.quantise=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "eval.quantise" in err and len(err.splitlines()) == 1
    assert _run(base + ["--set", "eval.y_channel=maybe"]) == 2
    assert "eval.y_channel" in capsys.readouterr().err


def test_bench_baseline_preset_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    main(["bench", "--config", "edsr", "--size", "32", "--repeat", "1", "--out", str(out)])
    assert out.exists()


@pytest.mark.parametrize("extra", [["--size", "0"], ["--repeat", "0"]])
def test_bench_bad_size_or_repeat_is_one_line(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["bench", "--config", "edsr", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
