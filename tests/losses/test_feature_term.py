"""Task-feature loss (AFP) as a loss-stack term: config -> build_loss_stack -> gated, scheduled
contribution, gradient to the denoiser, a training step with the feature net frozen, and
one-line CLI errors for a missing model file or an unknown layer.

The term is built from ``losses.terms: [{name: feature, model: path.pt, layers: [...]}]``
around a user's TorchScript network (here a tiny "segmentation" net saved in tmp_path).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from diffsr.config import load_config
from diffsr.losses import build_loss_stack

# TorchScript is what users hand us (deprecated upstream in favour of torch.export, still supported)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


class TinySeg(nn.Module):
    """A stand-in for a user's segmentation network: stem -> block -> head (2 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1, stride=2))
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


@pytest.fixture
def seg(tmp_path: Path) -> tuple[Path, TinySeg]:
    torch.manual_seed(0)
    net = TinySeg().eval()
    path = tmp_path / "seg.pt"
    torch.jit.script(net).save(str(path))
    return path, net


def _features(net: TinySeg, x: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
    """Reference features by forward hooks on the eager (non-scripted) copy."""
    found: dict[str, torch.Tensor] = {}
    handles = [dict(net.named_modules())[name].register_forward_hook(
        lambda _m, _i, out, name=name: found.__setitem__(name, out)) for name in layers]
    net(x)
    for h in handles:
        h.remove()
    return [found[name] for name in layers]


def _per_layer_l1(net: TinySeg, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> torch.Tensor:
    """(L, B): mean |f_l(x) - f_l(y)| per sample for each layer."""
    with torch.no_grad():
        fx, fy = _features(net, x, layers), _features(net, y, layers)
    return torch.stack([(a - b).abs().flatten(1).mean(1) for a, b in zip(fx, fy, strict=True)])


def _stack(path: Path, layers: list[str], extra: str = "") -> object:
    cfg = load_config("demo", [
        "codec={name: pixel}", "process={name: flow}",
        f"losses.terms=[{{name: feature, model: '{path}', layers: {layers}{extra}}}]",
    ])
    return build_loss_stack(cfg.losses, channels=1, total_steps=100)


def _decode(z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return (z + 1) / 2  # the pixel codec


def test_feature_term_value_matches_hooked_features(seg: tuple[Path, TinySeg]) -> None:
    path, net = seg
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(3, 1, 16, 16, generator=g)
    x0_hat = torch.rand(3, 1, 16, 16, generator=g)
    z0_hat = 2 * x0_hat - 1
    t = torch.full((3,), 0.1)

    # one layer: the per-sample L1 of that layer's features, exactly
    stack = _stack(path, ["block"])
    total, report = stack(z0_hat=z0_hat, t=t, step=0, decode=_decode, hr=hr)
    ref = _per_layer_l1(net, x0_hat, hr, ["block"])[0]
    assert report.terms["feature"].raw == pytest.approx(float(ref.mean()), rel=1e-5)
    assert float(total.detach()) == pytest.approx(float(ref.mean()), rel=1e-5)

    # several layers: the layers' L1s combined (their mean or their sum)
    stack = _stack(path, ["stem", "block", "head"])
    _, report = stack(z0_hat=z0_hat, t=t, step=0, decode=_decode, hr=hr)
    per = _per_layer_l1(net, x0_hat, hr, ["stem", "block", "head"])
    got = report.terms["feature"].raw
    assert got == pytest.approx(float(per.mean(0).mean()), rel=1e-5) or got == pytest.approx(
        float(per.sum(0).mean()), rel=1e-5
    )
    # identical images: no loss
    _, same = stack(z0_hat=2 * hr - 1, t=t, step=0, decode=_decode, hr=hr)
    assert same.terms["feature"].raw == pytest.approx(0.0, abs=1e-7)


def test_feature_term_is_gated_scheduled_and_reaches_the_net(seg: tuple[Path, TinySeg]) -> None:
    path, net = seg
    extra = (", gate: {kind: hard, t_max: 0.5}, "
             "weight: {kind: linear, start: 0.0, end: 2.0, begin: 0, steps: 10}")
    stack = _stack(path, ["block"], extra)
    g = torch.Generator().manual_seed(2)
    hr = torch.rand(4, 1, 16, 16, generator=g)
    leaf = (2 * torch.rand(4, 1, 16, 16, generator=g) - 1).requires_grad_(True)
    t = torch.tensor([0.1, 0.9, 0.3, 0.7])  # rows 0 and 2 pass the gate
    total, report = stack(z0_hat=leaf, t=t, step=5, decode=_decode, hr=hr)
    rep = report.terms["feature"]
    assert rep.active_fraction == pytest.approx(0.5) and rep.weight == pytest.approx(1.0)
    ref = _per_layer_l1(net, (leaf.detach() + 1) / 2, hr, ["block"])[0]
    # normalised by the whole batch (4), over the active rows 0 and 2, times weight 1.0 at step 5
    assert float(total.detach()) == pytest.approx(float(ref[[0, 2]].sum() / 4), rel=1e-5)
    (grad,) = torch.autograd.grad(total, leaf)
    assert grad[[0, 2]].abs().sum() > 0 and float(grad[[1, 3]].abs().sum()) == 0.0
    # weight 0 at step 0 (linear from 0): built, reported, contributes nothing
    total0, report0 = stack(z0_hat=leaf, t=t, step=0, decode=_decode, hr=hr)
    assert report0.terms["feature"].weight == 0.0 and float(total0.detach()) == 0.0


def test_training_step_with_feature_term_keeps_the_network_frozen(tmp_path: Path,
                                                                  seg: tuple[Path, TinySeg]) -> None:
    from diffsr.train.checkpoint import read_checkpoint
    from diffsr.train.trainer import Trainer

    path, net = seg
    cfg = load_config("demo", [
        "data.patch_size=32", "data.batch_size=2", "net.width=16", "net.channel_mult=[1,2]",
        "train.threads=2", "train.time_limit=null", "train.warmup_steps=1", "train.steps=2",
        "train.ckpt_every=2", "codec={name: pixel}", "process={name: resshift, steps: 4, kappa: 1.0, min_noise: 0.2}",
        f"losses.terms=[{{name: feature, model: '{path}', layers: [block], weight: {{kind: constant, value: 0.5}}}}]",
    ])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    result = trainer.fit()
    assert result.step == 2
    assert result.last_report["terms"]["feature"]["raw"] > 0
    # the feature network is frozen: no trainable parameters, weights as loaded
    feature_module = trainer.stack.term_modules["feature"]
    params = list(feature_module.parameters())
    assert all(not p.requires_grad for p in params)
    assert not any(p.requires_grad and p in set(params) for g in trainer.optimizer.param_groups for p in g["params"])
    own = dict(net.named_parameters())
    matched = 0
    for name, p in feature_module.named_parameters():
        suffix = [k for k in own if name.endswith(k)]
        assert suffix, f"unexpected parameter {name} in the feature term"
        torch.testing.assert_close(p.detach(), own[max(suffix, key=len)].detach(), rtol=0, atol=0)
        matched += 1
    assert matched == len(own)
    # the checkpoint does not copy the user's network (it is reloaded from its file)
    stack_state = read_checkpoint(tmp_path / "run")["state"]["stack"]
    assert not any(k.startswith("term_modules.feature.") for k in stack_state)


def _audit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from diffsr.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["audit", "demo", *argv])
    return int(exc.value.code), capsys.readouterr().err


def test_cli_missing_model_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope" / "seg.pt"
    code, err = _audit(["--set", f"losses.terms=[{{name: feature, model: '{missing}', layers: [block]}}]"], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "error" in lines[0]
    assert str(missing) in lines[0] and "Traceback" not in err


def test_cli_unknown_layer_is_one_line(seg: tuple[Path, TinySeg], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = seg
    code, err = _audit(["--set", f"losses.terms=[{{name: feature, model: '{path}', layers: [stem, blok]}}]",
                        "--set", "codec={name: pixel}"], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "error" in lines[0]
    assert "blok" in lines[0] and "Traceback" not in err
