"""LPIPS (Zhang et al. 2018, v0.1) with our own copy of the architecture; weights resolved as the ecosystem does.

Architecture, as the ``lpips`` package: torchvision AlexNet / VGG16 ``features`` cut into five
slices (AlexNet after relu1..relu5, VGG16 after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3),
the LPIPS scaling layer (shift [-.030, -.088, -.188], scale [.458, .448, .450]), features
normalised to unit length over channels (eps 1e-10), squared differences, 1x1 "lin" layers
(no bias), spatial mean per layer, sum over layers.

Inputs are images in [0, 1], mapped to [-1, 1] here (never pass [-1, 1] images); one channel
is replicated to three (logged once). The network is frozen (requires_grad False) and has no
dropout or batch norm, so train/eval mode does not matter; it stays differentiable w.r.t. the
input.

Weights are resolved in one place (:func:`resolve_lpips_weights`), in a fixed order, and the
source is logged; random weights are never a fallback:

- backbone: ``backbone_weights`` (a torchvision state dict, ``features.*`` keys; other keys
  ignored), else the torch hub cache ``torch.hub.get_dir()/checkpoints/`` (``$TORCH_HOME/hub``,
  default ``~/.cache/torch/hub``) under torchvision's file name (``alexnet-owt-7be5be79.pth``,
  ``vgg16-397923af.pth``), else downloaded there on first use from the URL of torchvision's
  weights API (``AlexNet_Weights.IMAGENET1K_V1``, ``VGG16_Weights.IMAGENET1K_V1``), SHA-256
  checked, with one notice line;
- lin layers: ``weights`` (a state dict with ``lin{k}.model.1.weight`` keys as the ``lpips``
  package, or ``lin{k}.weight``), else ``lpips_v0.1_{alex,vgg}.pth`` in the same cache, else
  ``lpips/weights/v0.1/{alex,vgg}.pth`` of the installed ``lpips`` package (located without
  importing it), else downloaded into the cache from the ``lpips`` repository (SHA-256 pinned).

``DIFFSR_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` forbids the downloads: a missing file is then one
ConfigError line naming the file, the cache folder and ``diffsr weights fetch lpips-alex`` (or
``lpips-vgg``), which pre-fetches both files for machines without network (:func:`fetch_lpips`).

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

__all__ = ["BACKBONE_FILES", "FETCHABLE", "LPIPSLoss", "fetch_lpips", "lpips_distance", "resolve_lpips_weights",
           "weights_cache"]

log = logging.getLogger(__name__)

Net = Literal["alex", "vgg"]

#: torchvision checkpoint file names (as in the torch hub cache) and their weights-API names
BACKBONE_FILES: dict[str, str] = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
BACKBONE_WEIGHTS: dict[str, str] = {"alex": "AlexNet_Weights.IMAGENET1K_V1", "vgg": "VGG16_Weights.IMAGENET1K_V1"}
_LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{}.pth"
#: the lpips package's v0.1 linear heads: (file name in the cache, URL, SHA-256 of lpips 0.1.4's file)
LIN_SOURCES: dict[str, tuple[str, str, str]] = {
    "alex": ("lpips_v0.1_alex.pth", _LPIPS_URL.format("alex"),
             "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
    "vgg": ("lpips_v0.1_vgg.pth", _LPIPS_URL.format("vgg"),
            "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"),
}
#: ``diffsr weights fetch NAME`` names -> LPIPS net
FETCHABLE: dict[str, str] = {"lpips-alex": "alex", "lpips-vgg": "vgg"}

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


def weights_cache() -> Path:
    """The torch hub checkpoint cache, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def backbone_url(net: Net) -> str:
    """The backbone's download URL, from torchvision's weights API."""
    from torchvision.models import get_weight

    return str(get_weight(BACKBONE_WEIGHTS[net]).url)


def _check_net(net: str) -> None:
    if net not in BACKBONE_FILES:
        raise ConfigError(f"LPIPS net must be 'alex' or 'vgg', got {net!r}")


def _explicit(path: str | Path, what: str, key: str) -> Path:
    found = Path(path).expanduser()
    if not found.is_file():
        raise ConfigError(f"{what} not found: {found} ({key})")
    return found


def _missing(net: Net, what: str, name: str, key: str) -> str:
    from diffsr.core.fetch import offline_reason

    return (f"LPIPS {net} {what}: {name} is not in {weights_cache()} and downloads are off ({offline_reason()}): "
            f"fetch it with `diffsr weights fetch lpips-{net}` where there is network (same TORCH_HOME), or "
            f"put {name} in {weights_cache()}/ (or set {key})")


def _download(net: Net, what: str, url: str, name: str, sha256: str, key: str) -> Path:
    from diffsr.core.errors import DiffsrError
    from diffsr.core.fetch import download_file, offline

    if offline():
        raise ConfigError(_missing(net, what, name, key))
    try:
        return download_file(url, weights_cache() / name, sha256=sha256, what=f"LPIPS {net} {what}")
    except DiffsrError as err:
        raise ConfigError(f"{err}, or run `diffsr weights fetch lpips-{net}` where there is network") from None


def resolve_lpips_weights(
    net: Net, weights: str | Path | None = None, backbone_weights: str | Path | None = None
) -> tuple[Path, Path]:
    """(lin weights, backbone weights) files for ``net`` in the module docstring's order; a file
    missing where downloads are off is a ConfigError naming it, the cache and the fetch command."""
    _check_net(net)
    return _resolve_lin(net, weights), _resolve_backbone(net, backbone_weights)


def _resolve_backbone(net: Net, backbone_weights: str | Path | None) -> Path:
    if backbone_weights is not None:
        return _explicit(backbone_weights, f"LPIPS {net} backbone weights", "backbone_weights")
    name = BACKBONE_FILES[net]
    cached = weights_cache() / name
    if cached.is_file():
        return cached
    prefix = name.rsplit("-", 1)[-1].removesuffix(".pth")  # torchvision names files by their SHA-256 prefix
    return _download(net, "backbone weights", backbone_url(net), name, prefix, "backbone_weights")


def _resolve_lin(net: Net, weights: str | Path | None) -> Path:
    if weights is not None:
        return _explicit(weights, f"LPIPS {net} linear-layer weights", "weights")
    name, url, sha256 = LIN_SOURCES[net]
    cached = weights_cache() / name
    if cached.is_file():
        return cached
    package = _lpips_package_dir()
    if package is not None and (package / "weights" / "v0.1" / f"{net}.pth").is_file():
        return package / "weights" / "v0.1" / f"{net}.pth"
    return _download(net, "linear-layer weights", url, name, sha256, "weights")


def fetch_lpips(net: Net) -> tuple[Path, Path]:
    """Put both LPIPS files of ``net`` in the torch hub cache (download, or copy the lpips package's
    lin weights); returns (lin, backbone). For clusters whose compute nodes have no network."""
    import hashlib
    import shutil

    from diffsr.core.atomic import atomic_save

    _check_net(net)
    backbone = _resolve_backbone(net, None)
    name, _, sha256 = LIN_SOURCES[net]
    lin = weights_cache() / name
    if not lin.is_file():
        package = _lpips_package_dir()
        shipped = package / "weights" / "v0.1" / f"{net}.pth" if package is not None else None
        if shipped is not None and shipped.is_file() and hashlib.sha256(shipped.read_bytes()).hexdigest() == sha256:
            atomic_save(lin, lambda tmp: shutil.copyfile(shipped, tmp))
        else:
            lin = _download(net, "linear-layer weights", LIN_SOURCES[net][1], name, sha256, "weights")
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
    """LPIPS (alex | vgg): weights from a local file, the torch hub cache, or downloaded there on first use."""

    name: Literal["lpips"]
    net: Literal["alex", "vgg"] = "alex"
    weights: str | None = None  # LPIPS linear-layer weights (.pth); None: hub cache / lpips package / download
    backbone_weights: str | None = None  # torchvision backbone weights; None: torch hub cache / download


@TERMS.register("lpips", config=LPIPSTerm, space="pixel")
def _build_lpips(cfg: LPIPSTerm, **_: Any) -> nn.Module:
    return LPIPSLoss(net=cfg.net, weights=cfg.weights, backbone_weights=cfg.backbone_weights)
