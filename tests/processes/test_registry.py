"""The process registry: building from configs, closest-name errors, bad arguments."""

from __future__ import annotations

import pytest
import torch

from diffsr.config import DDPMConfig, FlowConfig, ResShiftConfig
from diffsr.core.errors import ConfigError
from diffsr.processes import DDPM, PROCESSES, RectifiedFlow, ResShift, build_process


def test_build_process_from_configs() -> None:
    flow = build_process(FlowConfig(shift=3.0, sample_steps=4))
    assert isinstance(flow, RectifiedFlow) and flow.shift == 3.0 and flow.default_steps == 4
    ddpm = build_process(DDPMConfig(schedule="cosine", prediction="v", train_steps=100, sample_steps=10))
    assert isinstance(ddpm, DDPM) and ddpm.prediction == "v" and ddpm.train_steps == 100
    resshift = build_process(ResShiftConfig(steps=4, min_noise=0.2))
    assert isinstance(resshift, ResShift) and resshift.default_steps == 4
    assert resshift.t_range == (0.0, 3.0)
    assert set(PROCESSES.names()) >= {"flow", "ddpm", "resshift", "rddm"}


def test_unknown_process_names_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'resshift'"):
        PROCESSES.build("reshift")


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="prediction"):
        DDPM(prediction="score")
    with pytest.raises(ConfigError, match="exceed"):
        DDPM(train_steps=10, sample_steps=11)
    with pytest.raises(ConfigError, match="exceed"):
        ResShift(steps=4).sample(lambda x, t, c: x, torch.zeros(1, 1, 2, 2), steps=5)
    with pytest.raises(ConfigError, match="eta_max"):
        ResShift(min_noise=2.0, kappa=1.0)
