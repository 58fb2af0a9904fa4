"""``diffsr export`` on a run trained through the CLI: the summary, the folder, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests._cli import exit_code as _code


def test_export_a_trained_run_and_super_resolve_with_the_folder(teacher: Path, tmp_path: Path, blocky_pngs: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    assert _code(["export", str(teacher), "--out", str(out), "--dtype", "bf16", "--tag", "mri",
                  "--license", "apache-2.0"]) == 0
    printed = capsys.readouterr().out
    assert f"model folder {out} (step 2)" in printed and "upload_folder" in printed
    front = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])
    assert front["license"] == "apache-2.0" and "mri" in front["tags"] and front["library_name"] == "diffsr"
    assert "| training time |" in (out / "README.md").read_text()
    assert _code(["sr", str(blocky_pngs), "--ckpt", str(out), "--out", str(tmp_path / "sr"), "--cpu"]) == 0
    assert len(list((tmp_path / "sr").glob("*_sr.png"))) == 4


@pytest.mark.parametrize(("args", "words"), [
    (["--dtype", "int8"], "--dtype: 'int8'"),
    (["--opset", "13", "--onnx"], "--opset: 13"),
    (["--eval", "/nonexistent/eval"], "no metrics.json"),
])
def test_bad_arguments_are_one_line(teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    args: list[str], words: str) -> None:
    if "--onnx" in args:
        pytest.importorskip("onnx")
    assert _code(["export", str(teacher), "--out", str(tmp_path / "m"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err and not (tmp_path / "m").exists()


def test_missing_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _code(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    assert "no such run" in capsys.readouterr().err


def test_a_distilled_student_exports_to_onnx_and_matches(teacher: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import torch

    import diffsr
    from diffsr.export import OnnxModel

    student = tmp_path / "student"
    assert _code(["distill", "--teacher", str(teacher), "--out", str(student), "--steps", "2",
                  "--no-progress"]) == 0
    assert _code(["export", str(student), "--out", str(tmp_path / "model"), "--onnx"]) == 0
    lr = torch.rand(2, 1, 15, 22, generator=torch.Generator().manual_seed(4))
    expected = diffsr.super_resolve(diffsr.load_model(student, device="cpu"), lr)
    got = OnnxModel(tmp_path / "model" / "model.onnx").super_resolve(lr)
    assert (got - expected).abs().max().item() <= 1e-4
