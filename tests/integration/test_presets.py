"""Every shipped preset builds and trains two tiny CPU steps; ditsr-staged follows its stage table.

VAE presets get a tiny randomly initialised diffusers AutoencoderKL and LPIPS terms get random
backbone weights, both saved to a temporary folder (no pretrained weights can be fetched here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffsr.config import load_config, preset_names
from diffsr.losses.schedules import build_schedule
from diffsr.train.trainer import Trainer


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import diffusers

    from diffsr.losses.perceptual import _alexnet_features, _vgg16_features

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=32,
    )
    vae.save_pretrained(root / "vae")
    out = {"vae": root / "vae"}
    for net, build in (("alex", _alexnet_features), ("vgg", _vgg16_features)):
        path = root / f"{net}.pth"
        torch.save({f"features.{k}": v for k, v in build().state_dict().items()}, path)
        out[net] = path
    return out


def tiny_overrides(name: str, weights: dict[str, Path]) -> list[str]:
    cfg = load_config(name)
    sets = ["data.patch_size=32", "data.batch_size=2", "train.threads=2", "train.log_every=1",
            "train.time_limit=null", "data.val_images=1"]
    if cfg.data.train is not None:  # ir-x4 / mri-x4 name the shared data: the built-in samples stand in
        sets.append("data.train=null")
    if cfg.net.name == "unet":
        sets += ["net.size=tiny", "net.width=16", "net.channel_mult=[1,2]", "net.attention_levels=[]"]
    if cfg.codec.name == "vae":
        sets.append(f"codec.path={weights['vae']}")
    for i, term in enumerate(cfg.losses.terms):
        if term.name == "lpips":
            sets.append(f"losses.terms.{i}.backbone_weights={weights[term.net]}")
        if term.name == "gan":
            sets += [f"losses.terms.{i}.width=8", f"losses.terms.{i}.layers=2"]
    return sets


@pytest.mark.parametrize("name", preset_names())
def test_preset_trains_two_tiny_steps(name: str, weights: dict[str, Path], tmp_path: Path) -> None:
    cfg = load_config(name, tiny_overrides(name, weights))
    # the preset's own train.steps stays, so its schedules and audits are the real ones
    result = Trainer(cfg, tmp_path / "run", progress=False).fit(stop_after=2)
    assert result.step == 2 and result.checkpoint is not None
    terms = result.last_report["terms"]
    assert set(terms) == {"diffusion", *(t.key for t in cfg.losses.terms)}
    assert all(torch.isfinite(torch.tensor(v["raw"])) for v in terms.values())


def test_ditsr_staged_weights_follow_the_stage_table() -> None:
    cfg = load_config("ditsr-staged")
    weight = {t.key: build_schedule(t.weight) for t in cfg.losses.terms}
    # seed 003: A 0-3k (latent L1 1); B 3k-9k LPIPS 0->0.35, edge 0->0.06, flat 0->0.08;
    # C from 9k: GAN 0->0.03 over 4k steps, FFL <= 0.01 late
    table = {
        0: {"latent_l1": 1.0, "lpips": 0.0, "edge": 0.0, "flat": 0.0, "gan": 0.0, "ffl": 0.0},
        3000: {"latent_l1": 1.0, "lpips": 0.0, "edge": 0.0, "flat": 0.0, "gan": 0.0, "ffl": 0.0},
        6000: {"latent_l1": 1.0, "lpips": 0.175, "edge": 0.03, "flat": 0.04, "gan": 0.0, "ffl": 0.0},
        9000: {"latent_l1": 1.0, "lpips": 0.35, "edge": 0.06, "flat": 0.08, "gan": 0.0, "ffl": 0.0},
        13000: {"latent_l1": 1.0, "lpips": 0.35, "edge": 0.06, "flat": 0.08, "gan": 0.03, "ffl": 0.01},
    }
    for step, expected in table.items():
        for key, value in expected.items():
            assert weight[key](step) == pytest.approx(value, abs=1e-12), (key, step)
    gan = next(t for t in cfg.losses.terms if t.name == "gan")
    assert gan.warmup == 9000 and gan.r1_gamma == 10.0


def test_difiisr_presets_use_seed_004_recipe() -> None:
    for layout in ("ll", "full", "all", "all-learnable"):
        cfg = load_config(f"difiisr-dwt-{layout}")
        assert cfg.codec.layout == layout.replace("-", "_") and cfg.codec.levels == 2
        assert (cfg.process.steps, cfg.process.kappa, cfg.process.p) == (15, 2.0, 0.3)
        lpips = cfg.losses.terms[0]
        assert lpips.gate.edges == [5, 10] and lpips.gate.values == [1.0, 0.1, 0.001]
        schedule = build_schedule(lpips.weight)
        assert schedule(0) == pytest.approx(0.01) and schedule(cfg.train.steps) == pytest.approx(0.15)
