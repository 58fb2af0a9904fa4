"""Feed-forward SR baselines (EDSR, RCAN, SwinIR) whose weights load from the usual .pth files.

Every baseline maps a [0, 1] LR image (B, C, h, w) to a [0, 1]-scaled SR image
(B, C, h * s, w * s); each architecture's own range convention stays inside the module:

- RCAN and SwinIR are spandrel's classes (``spandrel.architectures``), so a state dict they
  save loads in spandrel/chaiNNer and vice versa. RCAN multiplies by ``rgb_range`` (255, as the
  paper's checkpoints and spandrel's loader assume) and subtracts the DIV2K mean for RGB; its
  ``forward`` does ``x *= rgb_range`` in place, so diffsr adds a forward pre-hook that clones
  the input (the caller's LR tensor is never modified). SwinIR uses ``img_range`` 1.0 and the
  DIV2K mean for RGB; window 8 (spandrel reads window 7 as a 255-range JPEG model).
- EDSR is not in spandrel 0.4; :class:`EDSR` here keeps the key layout of the reference code
  (``sub_mean``, ``head.0``, ``body.i.body.{0,2}``, ``tail.0.*``, ``tail.1``), so EDSR-PyTorch
  checkpoints (``edsr_baseline_x2-*.pt``, ``edsr_x4-*.pt``) load, with rgb_range 255.

Grayscale (1 channel) models have no mean shift (the DIV2K mean is RGB). The mean-shift convs
are frozen (``requires_grad=False``): they are constants, not weights.
"""

from __future__ import annotations

import logging
import math
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from diffsr.core.errors import CheckpointError, ConfigError
from diffsr.core.registry import Registry
from diffsr.core.schema import Strict
from diffsr.nets.base import NETS

log = logging.getLogger(__name__)

BaselineSize = Literal["tiny", "small", "base"]

#: DIV2K RGB mean used by EDSR, RCAN and SwinIR
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)

BASELINES: Registry[nn.Module] = Registry("baseline")


# ----------------------------------------------------------------------------- EDSR


class MeanShift(nn.Conv2d):
    """1x1 conv adding ``sign * rgb_range * DIV2K_MEAN`` (EDSR's ``common.MeanShift``, std 1)."""

    def __init__(self, rgb_range: float, sign: float) -> None:
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(DIV2K_MEAN))
        self.requires_grad_(False)


class EDSRBlock(nn.Module):
    """conv-ReLU-conv, scaled by ``res_scale``, plus the input."""

    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale


def pixel_shuffle_upsampler(scale: int, n_feats: int) -> nn.Sequential:
    """EDSR/RCAN ``Upsampler``: (conv to 4n, shuffle 2) per factor 2, or (conv to 9n, shuffle 3)."""
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [nn.Conv2d(n_feats, 9 * n_feats, 3, padding=1), nn.PixelShuffle(3)]
    else:
        raise ConfigError(f"scale: EDSR/RCAN support 2, 3, 4, 8, got {scale}")
    return nn.Sequential(*layers)


class EDSR(nn.Module):
    """EDSR (Lim et al. 2017), key-compatible with EDSR-PyTorch; [0, 1] in, [0, 1] out.

    Inside: x * rgb_range - mean -> head conv -> res blocks + conv (+ global skip) -> upsampler
    -> conv -> + mean -> / rgb_range. ``norm`` (the mean shift) needs 3 channels.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        n_resblocks: int = 16,
        n_feats: int = 64,
        n_colors: int = 3,
        rgb_range: float = 255.0,
        norm: bool = True,
        res_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if norm and n_colors != 3:
            raise ConfigError(f"EDSR: the DIV2K mean shift needs 3 channels, got n_colors={n_colors}")
        self.scale, self.n_colors, self.rgb_range, self.norm = scale, n_colors, rgb_range, norm
        if norm:
            self.sub_mean = MeanShift(rgb_range, -1.0)
            self.add_mean = MeanShift(rgb_range, 1.0)
        self.head = nn.Sequential(nn.Conv2d(n_colors, n_feats, 3, padding=1))
        blocks: list[nn.Module] = [EDSRBlock(n_feats, res_scale) for _ in range(n_resblocks)]
        self.body = nn.Sequential(*blocks, nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.tail = nn.Sequential(pixel_shuffle_upsampler(scale, n_feats), nn.Conv2d(n_feats, n_colors, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) in [0, 1] -> (B, C, h * scale, w * scale) on the same scale.

        scale 1 (one-axis SR: the input is already interpolated onto the output grid, as in
        SMORE): no upsampler, and the output is the input plus the net's correction.
        """
        image = x
        x = x * self.rgb_range
        if self.norm:
            x = self.sub_mean(x)
        x = self.head(x)
        x = self.tail(self.body(x) + x)
        if self.norm:
            x = self.add_mean(x)
        x = x / self.rgb_range
        return x + image if self.scale == 1 else x


def _is_edsr(state_dict: Mapping[str, Any]) -> bool:
    needed = ("head.0.weight", "body.0.body.0.weight", "body.0.body.2.weight", "tail.1.weight")
    return all(k in state_dict for k in needed) and "body.0.body.0.body.0.weight" not in state_dict


def _load_edsr(state_dict: Mapping[str, Tensor]) -> tuple[EDSR, dict[str, Any]]:
    """Rebuild an EDSR from its state dict (hyperparameters read from the shapes)."""
    from spandrel.util import get_pixelshuffle_params, get_seq_len

    n_feats, n_colors = state_dict["head.0.weight"].shape[:2]
    n_resblocks = get_seq_len(state_dict, "body") - 1
    scale, _ = get_pixelshuffle_params(state_dict, "tail.0")
    # undetectable; the reference code uses 0.1 for the 256-feature EDSR and 1 for the baseline
    res_scale = 0.1 if n_feats >= 256 else 1.0
    model = EDSR(
        scale=scale,
        n_resblocks=n_resblocks,
        n_feats=n_feats,
        n_colors=n_colors,
        norm="sub_mean.weight" in state_dict,
        res_scale=res_scale,
    )
    model.load_state_dict(state_dict)
    tags = [f"{n_feats}nf", f"{n_resblocks}nb", f"res_scale={res_scale}"]
    return model, {
        "arch": "EDSR",
        "scale": scale,
        "in_channels": n_colors,
        "out_channels": n_colors,
        "tags": tags,
    }


# ----------------------------------------------------------------------------- builders

_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # EDSR: tiny for CPU; small = EDSR-baseline; base = the paper's EDSR
    "edsr": {
        "tiny": {"n_resblocks": 8, "n_feats": 32},
        "small": {"n_resblocks": 16, "n_feats": 64},
        "base": {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1},
    },
    # RCAN: base = the paper's 10 groups x 20 blocks x 64 features
    "rcan": {
        "tiny": {"n_resgroups": 2, "n_resblocks": 2, "n_feats": 32},
        "small": {"n_resgroups": 5, "n_resblocks": 10, "n_feats": 64},
        "base": {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64},
    },
    # SwinIR: small = the paper's lightweight model; base = classical SR
    "swinir": {
        "tiny": {
            "embed_dim": 32, "depths": [2, 2], "num_heads": [2, 2], "mlp_ratio": 2.0,
            "upsampler": "pixelshuffledirect", "drop_path_rate": 0.0,
        },
        "small": {
            "embed_dim": 60, "depths": [6] * 4, "num_heads": [6] * 4, "mlp_ratio": 2.0,
            "upsampler": "pixelshuffledirect",
        },
        "base": {
            "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6, "mlp_ratio": 2.0,
            "upsampler": "pixelshuffle",
        },
    },
}  # fmt: skip


def _clone_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: spandrel's RCAN scales its input in place (``x *= rgb_range``)."""
    return (args[0].clone(), *args[1:])


def _freeze_mean_shift(model: nn.Module) -> None:
    for name in ("sub_mean", "add_mean"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Module):
            layer.requires_grad_(False)


def _finish(model: nn.Module) -> nn.Module:
    """Shared fix-ups for built and loaded models."""
    _freeze_mean_shift(model)
    if type(model).__name__ == "RCAN":
        model.register_forward_pre_hook(_clone_input)
    return model


def _check(name: str, channels: int, scale: int, size: str) -> None:
    if size not in _PRESETS[name]:
        raise ConfigError(f"{name}: unknown size '{size}' (choose from {', '.join(_PRESETS[name])})")
    if channels < 1:
        raise ConfigError(f"{name}: channels must be >= 1, got {channels}")
    # scale 1: one-axis SR on an input interpolated onto the output grid (EDSR only)
    allowed = (1, 2, 3, 4, 8) if name == "edsr" else (2, 3, 4, 8)
    if scale not in allowed:
        tail = " (one-axis SR, scale 1, supports edsr only)" if scale == 1 else ""
        raise ConfigError(f"{name}: scale must be one of {allowed}, got {scale}{tail}")


@BASELINES.register("edsr")
def build_edsr(*, channels: int, scale: int, size: BaselineSize = "tiny") -> nn.Module:
    """EDSR; RGB uses the DIV2K mean shift with rgb_range 255, other channel counts none."""
    _check("edsr", channels, scale, size)
    cfg = _PRESETS["edsr"][size]
    return _finish(EDSR(scale=scale, n_colors=channels, norm=channels == 3, **cfg))


@BASELINES.register("rcan")
def build_rcan(*, channels: int, scale: int, size: BaselineSize = "tiny") -> nn.Module:
    """spandrel's RCAN; RGB: mean shift with rgb_range 255 (what spandrel's loader assumes)."""
    from spandrel.architectures.RCAN import RCAN

    _check("rcan", channels, scale, size)
    cfg = _PRESETS["rcan"][size]
    model = RCAN(scale=scale, n_colors=channels, norm=channels == 3, rgb_range=255, **cfg)
    return _finish(model)


@BASELINES.register("swinir")
def build_swinir(*, channels: int, scale: int, size: BaselineSize = "tiny") -> nn.Module:
    """spandrel's SwinIR, window 8, img_range 1.0 (pads inputs to a multiple of 8 inside)."""
    from spandrel.architectures.SwinIR import SwinIR

    _check("swinir", channels, scale, size)
    cfg = dict(_PRESETS["swinir"][size])
    model = SwinIR(
        in_chans=channels, upscale=scale, window_size=8, img_size=64, img_range=1.0,
        resi_connection="1conv", **cfg,
    )  # fmt: skip
    return _finish(model)


class BaselineNetConfig(Strict):
    """A feed-forward SR baseline (EDSR / RCAN / SwinIR), trained with process ``direct``."""

    name: Literal["edsr", "rcan", "swinir"]
    size: BaselineSize = "tiny"


def _build_from_config(cfg: BaselineNetConfig, *, channels: int, scale: int, **_: Any) -> nn.Module:
    return build_baseline(cfg.name, channels=channels, scale=scale, size=cfg.size)


for _name, _tiling in (("edsr", True), ("rcan", True), ("swinir", False)):
    # SwinIR's shifted windows and its input padding to a multiple of 8 defeat exact tiling
    NETS.register(_name, config=BaselineNetConfig, build=_build_from_config, feed_forward=True,
                  exact_tiling=_tiling)(BASELINES.get(_name))


def build_baseline(name: str, *, channels: int, scale: int, size: BaselineSize = "tiny") -> nn.Module:
    """A freshly initialised baseline: [0, 1] (B, C, h, w) -> (B, C, h * scale, w * scale).

    name: "edsr" | "rcan" | "swinir"; size: "tiny" (trains on CPU) | "small" | "base" (paper).
    """
    return BASELINES.build(name, channels=channels, scale=scale, size=size)


# ----------------------------------------------------------------------------- loading


def _read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors from a .safetensors file, or a pickle read with ``weights_only=True``."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(err)})") from err
    try:
        # weights_only: a checkpoint is data, never code (no arbitrary unpickling)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch state dict ({_first_line(err)})") from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (a mapping), got {type(obj).__name__}")
    return dict(obj)


def _first_line(err: BaseException, limit: int = 120) -> str:
    """``Type: first line`` of an exception, shortened, for one-line CheckpointErrors."""
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    line = line if len(line) <= limit else line[: limit - 3] + "..."
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


def load_baseline(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a pretrained SR model file into its architecture; returns (model in eval mode, info).

    Reads .safetensors, or .pth/.pt/.ckpt with ``torch.load(weights_only=True)``; unwraps
    ``params_ema``/``params``/``state_dict``/``model`` and ``module.``/``net.``/``model.``
    prefixes (BasicSR, DataParallel, wrapper modules); detects EDSR here and every other architecture through
    spandrel (RCAN, SwinIR, and also HAT, ESRGAN, ... when a user brings them).
    info: arch, scale, in_channels, out_channels, tags, params, path.
    A missing, unreadable or unrecognised file raises CheckpointError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    from spandrel import ModelLoader, UnsupportedModelError, canonicalize_state_dict

    state_dict = canonicalize_state_dict(_read_state_dict(path))
    for prefix in ("net.", "model."):  # a baseline saved inside a wrapper module
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    if not state_dict or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (keys -> weights)")
    try:
        if _is_edsr(state_dict):
            model, info = _load_edsr(state_dict)
        else:
            descriptor = ModelLoader(device="cpu").load_from_state_dict(state_dict)
            model = descriptor.model
            info = {
                "arch": descriptor.architecture.name,
                "scale": descriptor.scale,
                "in_channels": descriptor.input_channels,
                "out_channels": descriptor.output_channels,
                "tags": list(descriptor.tags),
            }
    except UnsupportedModelError as err:
        raise CheckpointError(f"{path}: unrecognised SR architecture (not EDSR, RCAN, SwinIR, ...)") from err
    except (RuntimeError, KeyError) as err:  # shapes that fit no architecture's hyperparameters
        raise CheckpointError(f"{path}: incompatible weights ({_first_line(err)})") from err
    model = _finish(model).eval()
    info["params"] = sum(p.numel() for p in model.parameters())
    info["path"] = str(path)
    log.info("loaded %s x%d (%d -> %d channels) from %s", info["arch"], info["scale"],
             info["in_channels"], info["out_channels"], path)  # fmt: skip
    return model, info
