"""LPIPS (Zhang et al. 2018, v0.1) with our own copy of the architecture and no downloads, ever.

Architecture, as the ``lpips`` package: torchvision AlexNet / VGG16 ``features`` cut into five
slices (AlexNet after relu1..relu5, VGG16 after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3),
the LPIPS scaling layer (shift [-.030, -.088, -.188], scale [.458, .448, .450]), features
normalised to unit length over channels (eps 1e-10), squared differences, 1x1 "lin" layers
(no bias), spatial mean per layer, sum over layers.

Inputs are images in [0, 1], mapped to [-1, 1] here (never pass [-1, 1] images); one channel
is replicated to three (logged once). The network is frozen (requires_grad False) and has no
dropout or batch norm, so train/eval mode does not matter; it stays differentiable w.r.t. the
input.

Weights are resolved in one place, in a fixed order, and never downloaded:

- backbone: ``backbone_weights`` (a torchvision state dict, ``features.*`` keys; other keys
  ignored), else ``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`` or
  ``vgg16-397923af.pth`` (the torchvision file names);
- lin layers: ``weights`` (a state dict with ``lin{k}.model.1.weight`` keys as the ``lpips``
  package, or ``lin{k}.weight``), else ``lpips/weights/v0.1/{alex,vgg}.pth`` inside the installed
  ``lpips`` package (located without importing it).

A missing file is a ConfigError naming the file and where to put it.

Masks (B, 1, H, W): each layer's spatial mean becomes a weighted mean, with the mask resized
to the layer's resolution by area averaging (the fraction of valid pixels under each feature
cell); a full mask gives exactly the unmasked value, a sample with an empty mask gives 0.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffsr.core.errors import ConfigError
from diffsr.core.shapes import check_image, check_mask
from diffsr.losses.base import TERMS, TermBase

__all__ = ["BACKBONE_FILES", "LPIPSLoss", "lpips_distance", "resolve_lpips_weights"]

log = logging.getLogger(__name__)

Net = Literal["alex", "vgg"]

#: torchvision checkpoint file names (as in the torch hub cache)
BACKBONE_FILES: dict[str, str] = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}

_CHANNELS: dict[str, list[int]] = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}
# end index (exclusive) of each slice in torchvision's ``features``
_SLICES: dict[str, list[int]] = {"alex": [2, 5, 8, 10, 12], "vgg": [4, 9, 16, 23, 30]}
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _alexnet_features() -> nn.Sequential:
    """torchvision ``alexnet().features`` (same layer indices, so state-dict keys match)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def _vgg16_features() -> nn.Sequential:
    """torchvision ``vgg16().features`` (configuration "D", no batch norm)."""
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(v, int)
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


def _lpips_package_dir() -> Path | None:
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def resolve_lpips_weights(
    net: Net, weights: str | Path | None = None, backbone_weights: str | Path | None = None
) -> tuple[Path, Path]:
    """(lin weights, backbone weights) files for ``net``; ConfigError naming a missing file."""
    if net not in BACKBONE_FILES:
        raise ConfigError(f"LPIPS net must be 'alex' or 'vgg', got {net!r}")
    if backbone_weights is not None:
        backbone = Path(backbone_weights).expanduser()
        if not backbone.is_file():
            raise ConfigError(f"LPIPS {net} backbone weights not found: {backbone} (backbone_weights)")
    else:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        backbone = hub / BACKBONE_FILES[net]
        if not backbone.is_file():
            raise ConfigError(
                f"LPIPS {net} backbone weights not found: put {BACKBONE_FILES[net]} in {hub}/ "
                "or set backbone_weights"
            )
    if weights is not None:
        lin = Path(weights).expanduser()
        if not lin.is_file():
            raise ConfigError(f"LPIPS {net} linear-layer weights not found: {lin} (weights)")
    else:
        package = _lpips_package_dir()
        if package is None:
            raise ConfigError(
                f"LPIPS {net} linear-layer weights not found: install the lpips package "
                f"or set weights to a copy of lpips/weights/v0.1/{net}.pth"
            )
        lin = package / "weights" / "v0.1" / f"{net}.pth"
        if not lin.is_file():
            raise ConfigError(f"LPIPS {net} linear-layer weights not found: {lin}; set weights")
    return lin, backbone


def _load(path: Path) -> dict[str, Tensor]:
    """A weights file through the project's safe loader (weights_only; a corrupt, truncated or
    code-carrying file is a one-line ConfigError naming it)."""
    from diffsr.core.errors import CheckpointError
    from diffsr.core.serialization import safe_torch_load

    try:
        state = safe_torch_load(path)
    except CheckpointError as err:
        raise ConfigError(f"LPIPS weights {err}") from None
    except Exception as err:  # a garbage file can make the unpickler fail in any way
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ConfigError(f"LPIPS weights {path}: not a readable weights file ({reason})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"LPIPS weights {path}: expected a state dict, got {type(state).__name__}")
    return state


class LPIPSLoss(nn.Module):
    """Per-sample LPIPS distance (B,) between images in [0, 1]; see the module docstring.

    net: "alex" (default, the usual training loss) or "vgg". weights / backbone_weights: files
    overriding the default locations.
    """

    def __init__(
        self, net: Net = "alex", weights: str | Path | None = None, backbone_weights: str | Path | None = None
    ) -> None:
        super().__init__()
        lin_path, backbone_path = resolve_lpips_weights(net, weights, backbone_weights)
        self.net_name = net
        features = _alexnet_features() if net == "alex" else _vgg16_features()
        backbone = {
            k.removeprefix("features."): v for k, v in _load(backbone_path).items() if k.startswith("features.")
        }
        try:
            features.load_state_dict(backbone)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise ConfigError(f"LPIPS {net} backbone weights {backbone_path} do not fit: {first}") from None
        bounds = [0, *_SLICES[net]]
        self.slices = nn.ModuleList(
            nn.Sequential(*[features[i] for i in range(lo, hi)]) for lo, hi in zip(bounds, bounds[1:], strict=False)
        )
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in _CHANNELS[net])
        self._load_lins(_load(lin_path), lin_path)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()
        self._warned_gray = False
        log.info("LPIPS %s: backbone %s, linear layers %s", net, backbone_path, lin_path)

    def _load_lins(self, state: dict[str, Tensor], path: Path) -> None:
        for k, lin in enumerate(self.lins):
            for key in (f"lin{k}.model.1.weight", f"lin{k}.model.0.weight", f"lin{k}.weight"):
                if key in state:
                    weight = state[key]
                    break
            else:
                raise ConfigError(f"LPIPS linear-layer weights {path}: no 'lin{k}.model.1.weight'")
            if weight.shape != lin.weight.shape:
                raise ConfigError(
                    f"LPIPS linear-layer weights {path}: lin{k} has shape {tuple(weight.shape)}, "
                    f"expected {tuple(lin.weight.shape)} for net '{self.net_name}'"
                )
            lin.weight.data.copy_(weight)

    def _prepare(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            if not self._warned_gray:
                log.info("LPIPS: one-channel input replicated to three channels")
                self._warned_gray = True
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"LPIPS: expected 1 or 3 channels, got {tuple(x.shape)}")
        dtype = self.shift.dtype
        # [0, 1] -> [-1, 1], then the LPIPS scaling layer
        return ((x.to(dtype) * 2 - 1) - self.shift) / self.scale

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        check_image(pred, "pred")
        if pred.shape != target.shape:
            raise ValueError(f"target: expected {tuple(pred.shape)} like pred, got {tuple(target.shape)}")
        check_mask(mask, pred)
        h0, h1 = self._prepare(pred), self._prepare(target)
        total: Tensor | None = None
        for block, lin in zip(self.slices, self.lins, strict=True):
            h0, h1 = block(h0), block(h1)
            diff = (_unit(h0) - _unit(h1)).square()
            layer = lin(diff)  # (B, 1, h, w)
            if mask is None:
                value = layer.mean(dim=(1, 2, 3))
            else:
                weight = F.interpolate(mask.to(layer.dtype), size=layer.shape[-2:], mode="area")
                den = weight.sum(dim=(1, 2, 3))
                value = (layer * weight).sum(dim=(1, 2, 3)) / den.clamp_min(torch.finfo(den.dtype).tiny)
            total = value if total is None else total + value
        assert total is not None
        return total


def _unit(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Features divided by their L2 norm over channels (lpips.normalize_tensor)."""
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


def lpips_distance(
    pred: Tensor,
    target: Tensor,
    *,
    net: Net = "alex",
    mask: Tensor | None = None,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
) -> Tensor:
    """Per-sample LPIPS (B,) with a freshly built network (use :class:`LPIPSLoss` in loops)."""
    model = LPIPSLoss(net, weights=weights, backbone_weights=backbone_weights).to(pred.device)
    return model(pred, target, mask)

class LPIPSTerm(TermBase):
    """LPIPS (alex | vgg) with weights from a local file or the torch hub cache."""

    name: Literal["lpips"]
    net: Literal["alex", "vgg"] = "alex"
    weights: str | None = None  # LPIPS linear-layer weights (.pth); None: lpips package / hub
    backbone_weights: str | None = None  # torchvision backbone weights; None: torch hub cache


@TERMS.register("lpips", config=LPIPSTerm, space="pixel")
def _build_lpips(cfg: LPIPSTerm, **_: Any) -> nn.Module:
    return LPIPSLoss(net=cfg.net, weights=cfg.weights, backbone_weights=cfg.backbone_weights)
