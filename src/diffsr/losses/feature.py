"""Feature loss: L1 between features of a frozen user network for the prediction and the target.

The network is a TorchScript file (``torch.jit.load(path, map_location="cpu")``) or an
``nn.Module``; it is frozen (requires_grad False, eval) but differentiable w.r.t. its input.
``layers`` name submodules (``dict(model.named_modules())`` keys, e.g. ``"features.3"``); with no
layers the model's output is used (a tensor, or every tensor of a returned tuple/list/dict).

How layer outputs are taken:

- ``nn.Module``: forward hooks on the named submodules.
- TorchScript: hooks are not supported there, so the model is run as a chain of its submodules
  (descending into the parents of the named layers, in definition order). On the first call the
  chain's result is checked against ``model(x)``; a model whose forward is not such a chain is a
  ConfigError (export one whose forward returns the features instead, with ``layers: []``).

Per sample: for each feature map, the mean |f(pred) - f(target)| over channels and positions,
with the mask (B, 1, H, W) resized to the map by nearest neighbour; features that are not
(B, C, h, w) maps are averaged over all their elements (no mask). The loss is the mean over
layers. Target features are computed without gradient.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from diffsr.core.errors import ConfigError
from diffsr.core.registry import closest
from diffsr.core.shapes import check_image, check_mask
from diffsr.losses.base import TERMS, TermBase
from diffsr.losses.pixel import masked_mean

__all__ = ["FeatureLoss", "load_feature_model"]

log = logging.getLogger(__name__)


def load_feature_model(path: str | Path) -> nn.Module:
    """Load a TorchScript module on CPU; ConfigError naming the file if missing or not TorchScript."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"feature model not found: {file} (model must be a TorchScript .pt file)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            return torch.jit.load(str(file), map_location="cpu")
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"feature model {file}: not a TorchScript file ({first})") from None


def _tensors(out: object) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [v for v in out.values() if isinstance(v, Tensor)]
    if isinstance(out, (list, tuple)):
        return [v for v in out if isinstance(v, Tensor)]
    return []


def _chain(module: nn.Module, x: Tensor, prefix: str, targets: set[str], out: dict[str, Tensor]) -> Tensor:
    """Run ``module`` as a chain of its children where a target lies below it; record targets."""
    children = list(module.named_children())
    if not children or not any(t.startswith(prefix) for t in targets):
        return module(x)
    for name, child in children:
        full = prefix + name
        x = _chain(child, x, full + ".", targets, out)
        if full in targets:
            out[full] = x
    return x


class FeatureLoss(nn.Module):
    """Per-sample feature L1 (B,) of a frozen network; see the module docstring.

    model: path to a TorchScript file, or an ``nn.Module``. layers: named submodules (empty:
    the model output).
    """

    def __init__(self, model: str | Path | nn.Module, layers: Sequence[str] = ()) -> None:
        super().__init__()
        if isinstance(model, nn.Module):
            self.source = type(model).__name__
            net = model
        else:
            self.source = str(model)
            net = load_feature_model(model)
        for param in net.parameters():  # ScriptModules have no requires_grad_()
            param.requires_grad_(False)
        self.net = net.eval()
        self.layers = list(layers)
        modules = dict(self.net.named_modules())
        for layer in self.layers:
            if not layer or layer not in modules:
                hint = closest(layer, [n for n in modules if n])
                tail = f" (did you mean '{hint}'?)" if hint else ""
                raise ConfigError(f"feature model {self.source}: unknown layer '{layer}'{tail}")
        self.scripted = isinstance(self.net, torch.jit.ScriptModule)
        self._chain_checked = False

    def train(self, mode: bool = True) -> FeatureLoss:
        """The network stays in eval mode (frozen batch norm / dropout) whatever the parent does."""
        super().train(mode)
        self.net.eval()
        return self

    def _input(self, x: Tensor) -> Tensor:
        param = next(iter(self.net.parameters()), None)
        return x if param is None else x.to(dtype=param.dtype)

    def _hooked(self, x: Tensor) -> list[Tensor]:
        captured: dict[str, Tensor] = {}
        modules = dict(self.net.named_modules())
        handles = []
        for name in self.layers:

            def hook(_m: nn.Module, _i: object, output: object, name: str = name) -> None:
                tensors = _tensors(output)
                if not tensors:
                    raise ConfigError(f"feature model {self.source}: layer '{name}' returns no tensor")
                captured[name] = tensors[0]

            handles.append(modules[name].register_forward_hook(hook))
        try:
            self.net(x)
        finally:
            for handle in handles:
                handle.remove()
        return [captured[name] for name in self.layers]

    def _chained(self, x: Tensor) -> list[Tensor]:
        captured: dict[str, Tensor] = {}
        targets = set(self.layers)
        if not self._chain_checked:
            with torch.no_grad():
                try:
                    chained = _chain(self.net, x, "", targets, captured)
                    expected = self.net(x)
                    ok = isinstance(expected, Tensor) and torch.allclose(chained, expected, rtol=1e-4, atol=1e-5)
                except (RuntimeError, TypeError):
                    ok = False
            if not ok:
                raise ConfigError(
                    f"feature model {self.source}: TorchScript modules take no hooks and its forward is "
                    "not a plain chain of its submodules; export a model whose forward returns the "
                    "features and set layers: []"
                )
            self._chain_checked = True
            captured.clear()
        _chain(self.net, x, "", targets, captured)
        return [captured[name] for name in self.layers]

    def features(self, x: Tensor) -> list[Tensor]:
        """The feature tensors of ``x`` (one per layer, or the output tensors without layers)."""
        x = self._input(x)
        if not self.layers:
            feats = _tensors(self.net(x))
            if not feats:
                raise ConfigError(f"feature model {self.source}: the output holds no tensor")
            return feats
        return self._chained(x) if self.scripted else self._hooked(x)

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        check_image(pred, "pred")
        if pred.shape != target.shape:
            raise ValueError(f"target: expected {tuple(pred.shape)} like pred, got {tuple(target.shape)}")
        check_mask(mask, pred)
        with torch.no_grad():
            feats_t = self.features(target)
        feats_p = self.features(pred)
        total: Tensor | None = None
        for fp, ft in zip(feats_p, feats_t, strict=True):
            diff = (fp - ft).abs()
            if diff.ndim == 4:
                m = None if mask is None else F.interpolate(mask.to(diff.dtype), size=diff.shape[-2:])
                value = masked_mean(diff, m)
            else:
                value = diff.flatten(1).mean(dim=1)
            total = value if total is None else total + value
        assert total is not None
        return total / len(feats_p)

class FeatureTerm(TermBase):
    """L1 between features of a frozen user network (TorchScript file) for x0_hat and HR."""

    name: Literal["feature"]
    model: str  # path to a TorchScript (.pt) module
    layers: list[str] = Field(default_factory=list)  # named submodules; empty: the output


@TERMS.register("feature", config=FeatureTerm, space="pixel")
def _build_feature(cfg: FeatureTerm, **_: Any) -> nn.Module:
    return FeatureLoss(model=cfg.model, layers=list(cfg.layers))
