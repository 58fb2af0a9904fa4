"""--resume refuses what would train the weights as another model (issue 18), through the real CLI:
a different data.scale, codec or net names the key; a checkpoint whose weights do not fit its own
config.yaml is refused; no checkpoint to resume is a warning (--resume) or an error (--resume=must).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests._cli import exit_code as _run

TINY = [
    "data.patch_size=32", "data.batch_size=2", "net.width=16", "net.channel_mult=[1,2]",
    "train.threads=1", "train.time_limit=null", "train.warmup_steps=0", "sample.steps=2", "process.steps=2",
    "train.audit=false", "train.steps=1",
]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("resume") / "run"
    threads = torch.get_num_threads()
    try:
        assert _run(["train", "demo", "--out", str(folder), "--no-progress", *_sets(TINY)]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder


@pytest.mark.parametrize(("change", "key"), [
    ("data.scale=2", "data.scale"),
    ("codec.levels=1", "codec.levels"),
    ("codec={name: pixel}", "codec."),
    ("net.width=24", "net.width"),
    ("process.kappa=2.0", "process.kappa"),
])
def test_resume_with_another_model_is_refused_naming_the_key(run: Path, tmp_path: Path, change: str, key: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    copy = shutil.copytree(run, tmp_path / "run")
    before = sorted(p.name for p in (copy / "checkpoints").iterdir())
    capsys.readouterr()
    code = _run(["train", "demo", "--out", str(copy), "--resume", "--no-progress", *_sets([*TINY, "train.steps=2",
                                                                                            change])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: --resume: "), err
    assert key in err and "trained with" in err
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == before  # nothing trained or saved


def test_weights_that_do_not_fit_their_own_config_are_refused(run: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """config.yaml of the checkpoint says width 24, its weights are width 16: refused for --resume (with
    a config that matches the saved one) and for sr."""
    copy = shutil.copytree(run, tmp_path / "run")
    ckpt = sorted((copy / "checkpoints").glob("step_*"))[-1]
    saved = yaml.safe_load((ckpt / "config.yaml").read_text())
    saved["net"]["width"] = 24
    (ckpt / "config.yaml").write_text(yaml.safe_dump(saved))
    capsys.readouterr()
    code = _run(["train", "demo", "--out", str(copy), "--resume", "--no-progress",
                 *_sets([*TINY, "train.steps=2", "net.width=24"])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(ckpt) in err and "do not match the checkpoint's own config.yaml" in err
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("L", (12, 12), 90).save(img)
    assert _run(["sr", str(img), "--ckpt", str(copy), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "do not match its config.yaml" in err and str(ckpt) in err


def test_resume_without_a_checkpoint_warns_and_must_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "empty"
    assert _run(["train", "demo", "--out", str(empty), "--resume=must", "--no-progress", *_sets(TINY)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume=must" in err and "no complete checkpoint" in err
    assert not (empty / "checkpoints").exists()
    caplog.set_level(logging.WARNING)
    assert _run(["train", "demo", "--out", str(empty), "--resume", "--no-progress", *_sets(TINY)]) == 0
    notes = [r.getMessage() for r in caplog.records if "--resume" in r.getMessage()]
    assert len(notes) == 1 and "starts from scratch" in notes[0]
    assert (empty / "checkpoints").is_dir()
    # and with a checkpoint there, --resume=must resumes
    assert _run(["train", "demo", "--out", str(empty), "--resume=must", "--no-progress",
                 *_sets([*TINY, "train.steps=2"])]) == 0
    assert sorted(p.name for p in (empty / "checkpoints").glob("step_*"))[-1] == "step_0000002"
