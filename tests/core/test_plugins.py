"""A new component is one file: a loss term and a gate defined outside the package, used from YAML."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from diffsr.config import load_config
from diffsr.core.errors import ConfigError

PLUGIN = textwrap.dedent('''
    """A total-variation loss term and a cosine timestep gate, registered from outside diffsr."""
    import math
    from typing import Literal

    import torch
    from pydantic import Field
    from torch import nn

    from diffsr.losses import GATES, TERMS, Gate, TermBase
    from diffsr.losses.pixel import masked_mean

    CALLS = {"tv": 0, "gate": 0}


    class TVTerm(TermBase):
        name: Literal["tv_plugin"]
        eps: float = Field(1e-3, gt=0)


    class TVLoss(nn.Module):
        def __init__(self, eps: float) -> None:
            super().__init__()
            self.eps = eps

        def forward(self, pred, target, mask=None):
            CALLS["tv"] += 1
            dy = (pred[..., 1:, :] - pred[..., :-1, :]).abs()
            dx = (pred[..., :, 1:] - pred[..., :, :-1]).abs()
            tv = dy[..., :, :-1] + dx[..., :-1, :]
            return masked_mean(torch.sqrt(tv * tv + self.eps ** 2))


    @TERMS.register("tv_plugin", config=TVTerm, space="pixel")
    def build_tv(cfg, **context):
        return TVLoss(cfg.eps)


    class CosineGateConfig(__import__("diffsr.core.schema", fromlist=["Strict"]).Strict):
        kind: Literal["cosine_plugin"] = "cosine_plugin"
        t_max: float = Field(gt=0)


    @GATES.register("cosine_plugin", config=CosineGateConfig)
    class CosineGate(Gate):
        kind = "cosine_plugin"

        def __init__(self, t_max: float) -> None:
            self.t_max = t_max

        def __call__(self, t):
            CALLS["gate"] += 1
            t = t.detach().float()
            return torch.where(t <= self.t_max, 0.5 * (1 + torch.cos(math.pi * t / self.t_max)), torch.zeros_like(t))

        def max_over(self, t_lo, t_hi):
            return 1.0 if t_lo <= self.t_max else 0.0
''')


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One plug-in file for the module; its components are unregistered afterwards (no test sees them)."""
    from diffsr.core.plugins import forget_plugin
    from diffsr.losses import GATES, TERMS

    folder = tmp_path_factory.mktemp("plugin")
    (folder / "my_terms.py").write_text(PLUGIN)
    yield folder
    for registry, name in ((TERMS, "tv_plugin"), (GATES, "cosine_plugin")):
        if name in registry:
            registry.unregister(name)
    forget_plugin(str(folder / "my_terms.py"))


def test_unregistering_a_plugin_restores_the_config_unions(plugin_dir: Path) -> None:
    from diffsr.config import validate
    from diffsr.core.plugins import forget_plugin
    from diffsr.losses import GATES, TERMS

    load_config(_write(plugin_dir, "my_terms.py"))
    assert "tv_plugin" in TERMS
    TERMS.unregister("tv_plugin")
    GATES.unregister("cosine_plugin")
    forget_plugin(str(plugin_dir / "my_terms.py"))
    with pytest.raises(ConfigError, match="unknown loss term 'tv_plugin'"):
        validate({"losses": {"terms": [{"name": "tv_plugin"}]}})
    load_config(_write(plugin_dir, "my_terms.py"))  # and it registers again
    assert "tv_plugin" in TERMS


def _write(folder: Path, plugin_ref: str, term: str = "tv_plugin") -> Path:
    config = folder / f"run_{abs(hash((plugin_ref, term)))}.yaml"
    config.write_text(textwrap.dedent(f"""
        plugins: [{plugin_ref}]
        data: {{patch_size: 32, batch_size: 2}}
        codec: {{name: wavelet, levels: 2, layout: all}}
        process: {{name: resshift, steps: 4, kappa: 1.0, min_noise: 0.2}}
        net: {{size: tiny}}
        losses:
          terms:
            - name: {term}
              eps: 0.01
              weight: {{kind: constant, value: 0.5}}
              gate: {{kind: cosine_plugin, t_max: 3}}
        train: {{steps: 2, log_every: 1, ckpt_every: 2, ema_decay: null}}
        sample: {{steps: 1}}
    """))
    return config


def test_a_plugin_term_and_gate_train_from_yaml_without_touching_diffsr(plugin_dir: Path, tmp_path: Path) -> None:
    from diffsr.sampling.infer import load_model
    from diffsr.train.trainer import Trainer

    config = _write(plugin_dir, "my_terms.py")  # relative to the YAML file's folder
    cfg = load_config(config)
    assert cfg.losses.terms[0].name == "tv_plugin" and cfg.losses.terms[0].gate.kind == "cosine_plugin"
    result = Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert result.step == 2
    terms = result.last_report["terms"]
    assert "tv_plugin" in terms and terms["tv_plugin"]["active_fraction"] > 0
    assert terms["tv_plugin"]["raw"] > 0 and terms["tv_plugin"]["weighted"] > 0
    import sys

    plugin = next(m for name, m in sys.modules.items() if name.startswith("diffsr_plugin_my_terms"))
    assert plugin.CALLS["tv"] > 0 and plugin.CALLS["gate"] > 0  # the plug-in's code really ran
    # the saved run config names its plug-in by absolute path, so the run loads from anywhere
    assert cfg.plugins == [str((plugin_dir / "my_terms.py").resolve())]
    loaded = load_model(tmp_path / "run", device="cpu")
    assert loaded.config.losses.terms[0].name == "tv_plugin" and loaded.config.plugins == cfg.plugins
    assert torch.isfinite(next(loaded.model.parameters())).all()


def test_the_plugin_term_reaches_the_network_in_the_audit(plugin_dir: Path) -> None:
    from diffsr.cli.audit import run_audit

    config = _write(plugin_dir, str(plugin_dir / "my_terms.py"))
    summary = run_audit(str(config), [])
    assert "tv_plugin" in summary and "OK" in summary


def test_a_missing_plugin_or_unknown_plugin_term_is_one_line(plugin_dir: Path) -> None:
    config = _write(plugin_dir, "no_such_file.py")
    with pytest.raises(ConfigError, match=r"plugins: no_such_file\.py: no such file"):
        load_config(config)
    config = _write(plugin_dir, "definitely_not_a_module_xyz")
    with pytest.raises(ConfigError, match="cannot import 'definitely_not_a_module_xyz'"):
        load_config(config)
    config = _write(plugin_dir, "my_terms.py", term="tv_plugn")
    with pytest.raises(ConfigError, match="unknown loss term 'tv_plugn' \\(did you mean 'tv_plugin'\\?\\)"):
        load_config(config)
