"""LPIPS: parity with the ``lpips`` package on the same (random) weights, errors, gradients, masks.

No pretrained weights are needed: random torchvision backbones and random linear layers are
saved to tmp files and loaded into both implementations (float64, exact to 1e-10).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision

from diffsr.core.errors import ConfigError
from diffsr.losses.perceptual import BACKBONE_FILES, LPIPSLoss, lpips_distance

lpips = pytest.importorskip("lpips")

CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Random backbone + lin weights per net, as files: {net: (lin, backbone)}."""
    root = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    out = {}
    for net, build in (("alex", torchvision.models.alexnet), ("vgg", torchvision.models.vgg16)):
        state = build(weights=None).state_dict()
        # keep the file small: features only, plus one classifier key that must be ignored
        backbone = {k: v for k, v in state.items() if k.startswith("features.")}
        backbone["classifier.6.bias"] = torch.zeros(3)
        lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(CHANNELS[net])}
        torch.save(backbone, root / f"{net}_backbone.pth")
        torch.save(lin, root / f"{net}_lin.pth")
        out[net] = (root / f"{net}_lin.pth", root / f"{net}_backbone.pth")
    return out


def _reference(net: str, lin: Path, backbone: Path) -> torch.nn.Module:
    ref = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, model_path=str(lin), verbose=False)
    features = torch.load(backbone, weights_only=True)
    # the package's slices keep torchvision's layer indices: slice{k}.{index}.{weight|bias}
    state = {name: features[f"features.{name.split('.')[1]}.{name.split('.')[2]}"] for name, _ in
             ref.net.named_parameters()}
    ref.net.load_state_dict(state)
    return ref.eval()


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_lpips_package(net: str, weights: dict[str, tuple[Path, Path]]) -> None:
    lin, backbone = weights[net]
    ref = _reference(net, lin, backbone).double()
    ours = LPIPSLoss(net, weights=lin, backbone_weights=backbone).double()
    gen = torch.Generator().manual_seed(1)
    size = 64 if net == "alex" else 32
    for channels in (1, 3):
        x = torch.rand(2, channels, size, size, generator=gen, dtype=torch.float64)
        y = torch.rand(2, channels, size, size, generator=gen, dtype=torch.float64)
        got = ours(x, y)
        # the package takes [0, 1] with normalize=True; grayscale replicated by hand
        expected = ref(x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1), normalize=True).flatten()
        assert got.shape == (2,)
        torch.testing.assert_close(got, expected.detach(), rtol=0, atol=1e-10)
    assert ours(x, x).abs().max().item() == 0.0


def test_float32_parity_and_gradient(weights: dict[str, tuple[Path, Path]]) -> None:
    lin, backbone = weights["alex"]
    ours = LPIPSLoss("alex", weights=lin, backbone_weights=backbone)
    ref = _reference("alex", lin, backbone)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 64, 64, generator=gen, requires_grad=True)
    y = torch.rand(2, 3, 64, 64, generator=gen)
    got = ours(x, y)
    # float32: same operations in the same order; tolerance for summation-order differences
    torch.testing.assert_close(got, ref(x, y, normalize=True).flatten().detach(), rtol=1e-5, atol=1e-6)
    got.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in ours.parameters())


def test_input_mapped_from_unit_range(weights: dict[str, tuple[Path, Path]]) -> None:
    # feeding [0, 1] images must equal the package fed the same images mapped to [-1, 1] by hand
    lin, backbone = weights["alex"]
    ours = LPIPSLoss("alex", weights=lin, backbone_weights=backbone).double()
    ref = _reference("alex", lin, backbone).double()
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    y = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    expected = ref(2 * x - 1, 2 * y - 1).flatten().detach()
    torch.testing.assert_close(ours(x, y), expected, rtol=0, atol=1e-10)


def test_mask(weights: dict[str, tuple[Path, Path]]) -> None:
    lin, backbone = weights["alex"]
    ours = LPIPSLoss("alex", weights=lin, backbone_weights=backbone).double()
    ref = _reference("alex", lin, backbone).double()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 64, 64, generator=gen, dtype=torch.float64)
    y = torch.rand(2, 3, 64, 64, generator=gen, dtype=torch.float64)
    full = torch.ones(2, 1, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(ours(x, y, full), ours(x, y), rtol=0, atol=1e-12)
    mask = full.clone()
    mask[0, :, :, 40:] = 0
    mask[1, :, 10:30, :] = 0
    # by hand from the package's per-layer maps: each layer's spatial mean weighted by the
    # fraction of valid pixels under each feature cell (adaptive average pooling of the mask)
    with torch.no_grad():
        outs0 = ref.net(ref.scaling_layer(2 * x - 1))
        outs1 = ref.net(ref.scaling_layer(2 * y - 1))
        expected = torch.zeros(2, dtype=torch.float64)
        for k in range(5):
            diff = (lpips.normalize_tensor(outs0[k]) - lpips.normalize_tensor(outs1[k])) ** 2
            layer = ref.lins[k](diff)
            weight = torch.nn.functional.adaptive_avg_pool2d(mask, layer.shape[-2:])
            expected += (layer * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3))
    torch.testing.assert_close(ours(x, y, mask), expected, rtol=0, atol=1e-10)
    assert not torch.allclose(ours(x, y, mask), ours(x, y))
    empty = torch.zeros(2, 1, 64, 64, dtype=torch.float64)
    assert ours(x, y, empty).abs().max().item() == 0.0


def test_missing_files_raise_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights: dict[str, tuple[Path, Path]]
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match=r"put alexnet-owt-7be5be79\.pth in .*hub/checkpoints/"):
        LPIPSLoss("alex")
    with pytest.raises(ConfigError, match="vgg16-397923af.pth"):
        LPIPSLoss("vgg")
    with pytest.raises(ConfigError, match="nope.pth"):
        LPIPSLoss("alex", backbone_weights=tmp_path / "nope.pth")
    lin, backbone = weights["alex"]
    with pytest.raises(ConfigError, match="lin.pth"):
        LPIPSLoss("alex", weights=tmp_path / "lin.pth", backbone_weights=backbone)
    # the backbone from the hub cache, the lin layers from the lpips package
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / BACKBONE_FILES["alex"]).write_bytes(backbone.read_bytes())
    model = LPIPSLoss("alex")
    shipped = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu",
                         weights_only=True)
    torch.testing.assert_close(model.lins[2].weight, shipped["lin2.model.1.weight"])
    # wrong lin file for the net: a shape error naming the file
    with pytest.raises(ConfigError, match="lin1 has shape"):
        LPIPSLoss("alex", weights=weights["vgg"][0], backbone_weights=backbone)


def test_function_and_grayscale_log(weights: dict[str, tuple[Path, Path]], caplog: pytest.LogCaptureFixture) -> None:
    lin, backbone = weights["alex"]
    x = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    y = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    model = LPIPSLoss("alex", weights=lin, backbone_weights=backbone).double()
    with caplog.at_level(logging.INFO, logger="diffsr.losses.perceptual"):
        value = model(x, y)
    assert "replicated" in caplog.text
    torch.testing.assert_close(lpips_distance(x.float(), y.float(), weights=lin, backbone_weights=backbone),
                               value.float(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        model(torch.rand(1, 2, 64, 64), torch.rand(1, 2, 64, 64))
