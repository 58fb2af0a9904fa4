"""train.faithful_fraction: a share of each batch trains the one-step sampler's start time (issue 17).

Those rows train the fidelity terms only (their diffusion loss has weight 0); the other rows keep
the timesteps and noise they would have drawn without the option, and their diffusion loss is
scaled by 1 / (1 - f), so the diffusion objective stays unbiased in expectation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffsr.config import load_config
from diffsr.train.trainer import Trainer

SETS = ["train.steps=2", "data.patch_size=32", "data.batch_size=64", "train.time_limit=null",
        "losses.terms.0.gate.kind=sampler"]


def _draws(tmp_path: Path, fraction: float, step: int = 3) -> tuple[Trainer, torch.Tensor, torch.Tensor]:
    trainer = Trainer(load_config("demo", [*SETS, f"train.faithful_fraction={fraction}"]),
                      tmp_path / f"run{fraction}", progress=False)
    trainer._setup_accelerator()
    trainer._build()  # model, data and loss stack: what _draw reads (no audit, no optimiser)
    batch = trainer.batches[step]
    t, noise = trainer._draw(step, batch)
    return trainer, t, noise


def test_forced_rows_sit_at_the_sampler_start_and_the_rest_keep_their_draws(tmp_path: Path) -> None:
    plain, t0, noise0 = _draws(tmp_path, 0.0)
    trainer, t, noise = _draws(tmp_path, 0.5)
    start = trainer.raw_model.process.sample_schedule(1)[0]
    weights = trainer._diffusion_rows
    assert weights is not None and plain._diffusion_rows is None
    forced = weights == 0
    assert 0 < int(forced.sum()) < len(t)  # 64 rows at f = 0.5: both kinds present
    assert torch.all(t[forced] == start)
    assert torch.equal(t[~forced], t0[~forced])  # the other rows: the very draws of f = 0
    assert torch.equal(noise, noise0)
    assert torch.allclose(weights[~forced], torch.full_like(weights[~forced], 2.0))  # 1 / (1 - 0.5)


def test_the_diffusion_weights_average_to_one_over_many_steps(tmp_path: Path) -> None:
    trainer, _, _ = _draws(tmp_path, 0.25)
    weights = []
    for step in range(40):
        trainer._draw(step, trainer.batches[0])
        weights.append(trainer._diffusion_rows)
    mean = torch.cat(weights).mean().item()
    # 2560 Bernoulli(0.75) rows scaled by 4/3: mean 1, std 4/3 * sqrt(0.75 * 0.25 / 2560) ~ 0.0114
    assert mean == pytest.approx(1.0, abs=0.05)


def test_the_fraction_must_be_below_one() -> None:
    from diffsr.core.errors import ConfigError

    with pytest.raises(ConfigError, match="faithful_fraction"):
        load_config("demo", ["train.faithful_fraction=1"])
