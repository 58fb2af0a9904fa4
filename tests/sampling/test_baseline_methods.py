"""A pretrained RGB baseline file as an eval method on 1-channel data (``--method edsr:rgb.pth``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffsr.cli import main
from diffsr.nets import build_baseline, load_baseline
from diffsr.sampling.infer import method_from_spec


def _rgb_edsr(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "rgb.pth"
    torch.save(build_baseline("edsr", channels=3, scale=4, size="tiny").state_dict(), path)
    return path


def test_rgb_baseline_file_on_grey_input(tmp_path: Path) -> None:
    path = _rgb_edsr(tmp_path)
    _, run = method_from_spec(f"edsr:{path}", 4)
    lr = torch.rand(1, 1, 8, 10, generator=torch.Generator().manual_seed(0))
    sr = run(lr, 4)
    assert sr.shape == (1, 1, 32, 40)
    net, _ = load_baseline(path)
    with torch.no_grad():
        expected = net.eval()(lr.expand(1, 3, 8, 10)).clamp(0, 1).mean(1, keepdim=True)
    torch.testing.assert_close(sr, expected)


def test_eval_cli_with_rgb_baseline_file(tmp_path: Path) -> None:
    path = _rgb_edsr(tmp_path)
    grey = (np.add.outer(np.arange(32), np.arange(32)) * 4 % 256).astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = tmp_path / "out"
    main(["eval", "--data", str(tmp_path / "g.png"), "--method", f"edsr:{path}", "--out", str(out)])
    assert "edsr" in json.loads((out / "metrics.json").read_text())["methods"]
