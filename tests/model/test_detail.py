"""sample.detail: 0 is the one-step estimate, 1 a full-chain sample, in between a chain from the re-noised estimate."""

from __future__ import annotations

import pytest
import torch

from diffsr.config import load_config
from diffsr.model import build_model

PROCESSES = {
    "resshift": ["process.name=resshift", "process.steps=4", "process.kappa=1.0", "process.min_noise=0.2"],
    "flow": ["process.name=flow", "process.sample_steps=4"],
    "ddpm": ["process.name=ddpm", "process.train_steps=20", "process.sample_steps=4"],
    "rddm": ["process.name=rddm", "process.steps=4"],
}


def _model(process: str) -> torch.nn.Module:
    cfg = load_config("demo", ["net.size=tiny", *PROCESSES[process]])
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("process", list(PROCESSES))
def test_detail_ends_are_the_one_step_estimate_and_a_full_chain_sample(process: str) -> None:
    model = _model(process)
    lr_up = torch.rand(1, 1, 32, 32, generator=_gen(1))
    one_step = model.sample(lr_up, steps=1, generator=_gen())
    assert torch.equal(model.sample(lr_up, detail=0.0, generator=_gen()), one_step)
    full = model.process.default_steps
    assert torch.equal(model.sample(lr_up, detail=1.0, generator=_gen()),
                       model.sample(lr_up, steps=full, generator=_gen()))


@pytest.mark.parametrize("process", list(PROCESSES))
def test_intermediate_detail_runs_the_chain_from_the_renoised_estimate(process: str) -> None:
    """detail 0.5 with a 4-time schedule: the faithful estimate, re-noised with q(z_t | z0, zc) at the
    third time, then the last two times of the chain (counted by the denoiser calls)."""
    model = _model(process)
    lr_up = torch.rand(1, 1, 32, 32, generator=_gen(2))
    times = model.process.sample_schedule(None)
    calls: list[float] = []
    net = model.net

    def counting(x, t, cond):  # noqa: ANN001, ANN202
        calls.append(float(t[0]))
        return net(x, t, cond)

    model.sample(lr_up, detail=0.5, generator=_gen(), net=counting)
    k = round(0.5 * len(times))
    # one call for the one-step estimate at the noisiest time, then the chain from time k on
    expected = [model.process.sample_schedule(1)[0], *times[k:]]
    assert [model.process.time_input(torch.tensor([t]), torch.zeros(1)).item() for t in expected] == \
        pytest.approx(calls)

    # the chain's start is q(z_t | z0_hat, zc) of the one-step estimate with the generator's next noise
    from diffsr.codecs.base import pad_to
    from diffsr.processes.common import randn
    from diffsr.sampling.samplers import sample

    zc = model.codec.encode(pad_to(lr_up, model.codec.downsample)[0]).z
    g = _gen()
    faithful = sample(model.net, model.process, zc, 1, generator=g)
    t = torch.full((1,), times[k])
    z_k = model.process.q_sample(faithful, zc, t, randn(zc.shape, device=zc.device, dtype=zc.dtype, generator=g))
    z0 = sample(model.net, model.process, zc, None, generator=g, start=(z_k, k))
    expected_sr = model.codec.decode(model.codec.encode(pad_to(lr_up, model.codec.downsample)[0]).with_z(z0))
    got = model.sample(lr_up, detail=0.5, generator=_gen())
    torch.testing.assert_close(got, expected_sr[..., :32, :32].clamp(0, 1), rtol=0, atol=0)


def test_detail_outside_0_1_is_refused() -> None:
    model = _model("resshift")
    with pytest.raises(ValueError, match=r"detail must be in \[0, 1\]"):
        model.sample(torch.rand(1, 1, 16, 16), detail=1.5)
    from diffsr.core.errors import ConfigError

    with pytest.raises(ConfigError, match="sample.detail"):
        load_config("demo", ["sample.detail=2"])
