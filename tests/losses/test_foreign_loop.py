"""LossStack in a plain PyTorch loop, exactly as docs/losses.md shows it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from diffsr.losses import LinearGate, LossStack, LossTerm, Ramp

DOCS = Path(__file__).resolve().parents[2] / "docs" / "losses.md"
README = Path(__file__).resolve().parents[2] / "README.md"


def l1(pred, target, mask=None):  # any per-sample loss -> (B,)
    return (pred - target).abs().flatten(1).mean(1)


def test_plain_loop_trains_and_reports() -> None:
    torch.manual_seed(0)
    net = nn.Conv2d(1, 1, 3, padding=1)
    stack = LossStack([LossTerm("l1", l1, weight=Ramp(0.5, warmup=0, ramp_end=10), gate=LinearGate(0.5))])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    hr = torch.rand(8, 1, 16, 16)
    z0 = hr * 2 - 1
    zc = z0 + 0.2 * torch.randn_like(z0)
    decode = lambda z, index: (z + 1) / 2  # noqa: E731
    with torch.no_grad():
        start = l1(decode(net(zc), None), hr).mean().item()
    diffusion_raw = []
    for step in range(40):
        t = torch.rand(8)
        z0_hat = net(zc)
        diffusion = (z0_hat - z0).pow(2).flatten(1).mean(1)
        total, report = stack(z0_hat=z0_hat, t=t, step=step, decode=decode, hr=hr, diffusion=diffusion)
        opt.zero_grad()
        total.backward()
        opt.step()
        diffusion_raw.append(report.terms["diffusion"].raw)
    with torch.no_grad():
        end = l1(decode(net(zc), None), hr).mean().item()
    assert set(report.terms) == {"diffusion", "l1"}
    assert report.terms["l1"].weight == 0.5  # the ramp reached its value at step 10
    assert 0 < report.terms["l1"].active_fraction <= 1
    assert diffusion_raw[-1] < 0.5 * diffusion_raw[0]
    assert end < 0.7 * start
    assert report.total > 0 and not report.skip_step


def doc_snippet(path: Path = DOCS) -> str:
    text = path.read_text()
    match = re.search(r"<!-- foreign-loop -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"{path.name} lost its foreign-loop example"
    return match.group(1)


def test_docs_example_runs_as_written() -> None:
    code = doc_snippet()
    assert code == doc_snippet(README)  # the README shows the same loop
    assert len(code.strip().splitlines()) <= 15
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # the docs' loop, verbatim
    report, net = namespace["report"], namespace["net"]
    zc, z0 = namespace["zc"], namespace["z0"]
    assert set(report.terms) == {"diffusion", "l1"}
    torch.manual_seed(0)
    fresh = nn.Conv2d(1, 1, 3, padding=1)  # the same initial weights as the snippet's net
    with torch.no_grad():
        before = (fresh(zc) - z0).pow(2).mean().item()
        after = (net(zc) - z0).pow(2).mean().item()
    assert after < 0.5 * before


def test_foreign_import_is_light() -> None:
    # term modules register on import (their config models), but none loads a heavy dependency
    heavy = ("lpips", "diffusers", "pywt", "accelerate", "spandrel", "nibabel", "pydicom")
    code = ("import sys; from diffsr.losses import LossStack, LossTerm, LinearGate; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
