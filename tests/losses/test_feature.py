"""FeatureLoss: features of a TorchScript or nn.Module network."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from diffsr.core.errors import ConfigError
from diffsr.losses.feature import FeatureLoss


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)),
            pool=nn.AvgPool2d(2),
            head=nn.Conv2d(4, 2, 1),
        )
    ).double()


def _script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        torch.jit.script(module).save(str(path))
    return path


def _images(seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64),
            torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64))


def _expected(net: nn.Module, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """By hand: features.1 (ReLU output, 16 px) and pool (8 px) of the eager net, masked L1, mean."""
    with torch.no_grad():
        values = []
        for x in (pred, target):
            relu = net.features[1](net.features[0](x))
            pooled = net.pool(net.features[2](relu))
            values.append((relu, pooled))
        (r_p, p_p), (r_t, p_t) = values
        d1, d2 = (r_p - r_t).abs(), (p_p - p_t).abs()
        if mask is None:
            return (d1.mean(dim=(1, 2, 3)) + d2.mean(dim=(1, 2, 3))) / 2
        m2 = mask[..., ::2, ::2]  # nearest downsampling by 2 picks the even pixels
        l1 = (d1 * mask).sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) * 4)
        l2 = (d2 * m2).sum(dim=(1, 2, 3)) / (m2.sum(dim=(1, 2, 3)) * 4)
        return (l1 + l2) / 2


def test_torchscript_layers(tmp_path: Path) -> None:
    net = _net()
    path = _script(net, tmp_path / "net.pt")
    loss = FeatureLoss(str(path), ["features.1", "pool"])
    assert loss.scripted
    pred, target = _images()
    torch.testing.assert_close(loss(pred, target), _expected(net, pred, target), rtol=1e-12, atol=1e-14)
    mask = torch.ones(2, 1, 16, 16, dtype=torch.float64)
    mask[0, :, :, 8:] = 0
    torch.testing.assert_close(loss(pred, target, mask), _expected(net, pred, target, mask), rtol=1e-12,
                               atol=1e-14)


def test_module_hooks_match_and_gradient_reaches_pred_only() -> None:
    net = _net()
    loss = FeatureLoss(net, ["features.1", "pool"])
    assert not loss.scripted
    pred, target = _images(1)
    pred.requires_grad_(True)
    value = loss(pred, target)
    torch.testing.assert_close(value.detach(), _expected(net, pred.detach(), target), rtol=1e-12, atol=1e-14)
    value.sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    assert not net.training
    loss.train()
    assert not net.training  # stays frozen in eval mode


def test_no_layers_uses_the_output(tmp_path: Path) -> None:
    net = _net()
    loss = FeatureLoss(_script(net, tmp_path / "net.pt"), [])
    pred, target = _images(2)
    with torch.no_grad():
        expected = (net(pred) - net(target)).abs().mean(dim=(1, 2, 3))
    torch.testing.assert_close(loss(pred, target), expected, rtol=1e-12, atol=1e-14)


def test_unknown_layer_and_missing_file(tmp_path: Path) -> None:
    path = _script(_net(), tmp_path / "net.pt")
    with pytest.raises(ConfigError, match=r"unknown layer 'featurs\.1' \(did you mean 'features\.1'\?\)"):
        FeatureLoss(path, ["featurs.1"])
    with pytest.raises(ConfigError, match="unknown layer 'zzz'"):
        FeatureLoss(_net(), ["zzz"])
    with pytest.raises(ConfigError, match="feature model not found: .*missing.pt"):
        FeatureLoss(tmp_path / "missing.pt", [])
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="junk.pt: not a TorchScript file"):
        FeatureLoss(tmp_path / "junk.pt", [])


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.act(self.conv(x))


def test_torchscript_that_is_not_a_chain_is_refused(tmp_path: Path) -> None:
    loss = FeatureLoss(_script(_Residual(), tmp_path / "res.pt"), ["act"])
    pred, target = _images()
    with pytest.raises(ConfigError, match="not a plain chain"):
        loss(pred.float(), target.float())
    # the same module in eager mode works through hooks
    eager = FeatureLoss(_Residual(), ["act"])
    assert eager(pred.float(), target.float()).shape == (2,)
