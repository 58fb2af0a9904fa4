"""Pre-flight audits: the classic loss bugs injected on purpose must be named exactly, and the
gradient audit checks the denoiser's parameters, not a learnable codec's (layout all_learnable).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from diffsr.cli.audit import run_audit
from diffsr.config import Config, load_config
from diffsr.core.errors import ConfigError
from diffsr.losses import HardGate, LatentL1Loss, LinearGate, LossStack, LossTerm
from diffsr.model import SRModel
from diffsr.train.audit import AuditResult, audit_config, audit_dead, audit_reachability
from diffsr.train.trainer import Trainer

DT = torch.float64
Decode = Callable[[Tensor, Tensor], Tensor]


def l1(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    return (pred - target).abs().flatten(1).mean(1)


def one_minus_corr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    p = pred.flatten(1) - pred.flatten(1).mean(1, keepdim=True)
    q = target.flatten(1) - target.flatten(1).mean(1, keepdim=True)
    return 1 - (p * q).sum(1) / (p.norm(dim=1) * q.norm(dim=1) + 1e-12)


class Tiny:
    """A tiny conv 'net' predicting z0_hat from the condition, with a pixel-codec decode (z + 1) / 2."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.net = nn.Conv2d(1, 1, 3, padding=1).to(DT)
        self.hr = torch.rand(4, 1, 8, 8, generator=g, dtype=DT)
        self.z0 = self.hr * 2 - 1
        self.zc = self.z0 + 0.3 * torch.randn(4, 1, 8, 8, generator=g, dtype=DT)

    def probe(self, stack: LossStack, decode: Decode) -> Callable[[], dict[str, Tensor]]:
        def run() -> dict[str, Tensor]:
            z0_hat = self.net(self.zc)
            diffusion = (z0_hat - self.z0).pow(2).flatten(1).mean(1)
            return stack.term_losses(z0_hat=z0_hat, t=torch.ones(4), decode=decode, hr=self.hr, z0=self.z0,
                                     diffusion=diffusion)

        return run

    def audit(self, stack: LossStack, decode: Decode) -> AuditResult:
        return audit_reachability(stack, self.probe(stack, decode), list(self.net.parameters()))


def healthy_decode(z: Tensor, index: Tensor) -> Tensor:
    return (z + 1) / 2


def detached_decode(z: Tensor, index: Tensor) -> Tensor:
    return ((z + 1) / 2).detach()


def numpy_decode(z: Tensor, index: Tensor) -> Tensor:
    return torch.from_numpy(((z + 1) / 2).detach().cpu().numpy())


def no_grad_decode(z: Tensor, index: Tensor) -> Tensor:
    with torch.no_grad():
        return (z + 1) / 2


def stack_of_three() -> LossStack:
    # gates shut and a zero weight: the probe must open them all anyway
    return LossStack([
        LossTerm("l1", l1, gate=LinearGate(0.3), weight=0.05),
        LossTerm("ssim", one_minus_corr, gate=HardGate(0.01), weight=0.0),
        LossTerm("latent_l1", LatentL1Loss(), space="latent"),
    ])


def test_healthy_setup_passes() -> None:
    result = Tiny().audit(stack_of_three(), healthy_decode)
    assert result.ok == ["diffusion", "l1", "ssim", "latent_l1"]
    assert result.unreachable == [] and result.nonfinite == [] and not result.failed
    result.raise_if_failed()


@pytest.mark.parametrize("decode", [detached_decode, numpy_decode, no_grad_decode],
                         ids=["detach", "numpy", "no_grad"])
def test_broken_decode_cuts_every_pixel_term(decode: Decode) -> None:
    result = Tiny().audit(stack_of_three(), decode)
    assert result.unreachable == ["l1", "ssim"]  # exactly the pixel-space terms
    assert result.ok == ["diffusion", "latent_l1"]
    with pytest.raises(ConfigError) as err:
        result.raise_if_failed()
    msg = str(err.value)
    assert "'l1', 'ssim'" in msg and ".detach(), a numpy round trip or a no_grad decode" in msg
    assert "\n" not in msg


def test_term_that_detaches_its_input_is_named() -> None:
    stack = LossStack([
        LossTerm("l1", l1),
        LossTerm("edge", lambda p, t, m: l1(p.detach(), t)),
        LossTerm("zeroed", lambda p, t, m: (p * 0).flatten(1).mean(1) + 0.1),  # a graph but zero gradient
    ])
    result = Tiny().audit(stack, healthy_decode)
    assert result.unreachable == ["edge", "zeroed"]
    assert result.ok == ["diffusion", "l1"]


def test_nonfinite_loss_or_gradient_is_named() -> None:
    stack = LossStack([
        LossTerm("l1", l1),
        LossTerm("nan_value", lambda p, t, m: l1(p, t) * float("nan")),
        # finite value 0, but d sqrt(x) / dx at 0 is inf and inf * 0 = NaN in the backward
        LossTerm("nan_grad", lambda p, t, m: torch.sqrt(l1(p, t) * 0)),
    ])
    result = Tiny().audit(stack, healthy_decode)
    assert result.nonfinite == ["nan_value", "nan_grad"]
    assert result.unreachable == []
    with pytest.raises(ConfigError, match="NaN/Inf .*'nan_value', 'nan_grad'"):
        result.raise_if_failed()


def test_probe_that_skips_a_term_is_flagged() -> None:
    tiny = Tiny()
    stack = stack_of_three()
    full = tiny.probe(stack, healthy_decode)

    def partial() -> dict[str, Tensor]:
        losses = full()
        del losses["ssim"]
        return losses

    result = audit_reachability(stack, partial, list(tiny.net.parameters()))
    assert result.unreachable == ["ssim"]


def test_audit_dead_lists_terms_seen_contributing_zero() -> None:
    tiny = Tiny()
    stack = LossStack([LossTerm("l1", l1), LossTerm("edge", lambda p, t, m: torch.zeros(p.shape[0]))])
    z0_hat = tiny.net(tiny.zc)
    stack(z0_hat=z0_hat, t=torch.zeros(4), step=0, decode=healthy_decode, hr=tiny.hr)
    assert audit_dead(stack) == ["edge"]


# ----------------------------------------------------------------------------- config audit


def config(terms: list[dict], steps: int = 1000, **sections) -> Config:
    return Config.model_validate({"losses": {"terms": terms}, "train": {"steps": steps}, **sections})


FLOW = (0.0, 1.0)
DDPM = (0.0, 999.0)
RESSHIFT = (0.0, 14.0)


def test_healthy_configs_pass() -> None:
    gate = {"kind": "linear", "t_max": 0.3}
    flow_ssim = [{"name": "l2", "weight": {"kind": "constant", "value": 0.05}, "gate": gate},
                 {"name": "ssim", "gate": gate}]
    audit_config(config(flow_ssim), has_decoder=True, t_range=FLOW)
    resshift = [{"name": "lpips", "gate": {"kind": "bins", "edges": [5, 10], "values": [1.0, 0.1, 0.001]},
                 "weight": {"kind": "linear", "start": 0.01, "end": 0.15, "steps": 1000}}]
    audit_config(config(resshift), has_decoder=True, t_range=RESSHIFT)
    ditsr = [{"name": "latent_l1"},
             {"name": "lpips", "weight": {"kind": "ramp", "value": 0.35, "warmup": 3000, "ramp_end": 9000}},
             {"name": "gan", "weight": {"kind": "stages", "stages": [{"step": 9000, "value": 0},
                                                                      {"step": 13000, "value": 0.03}]}}]
    audit_config(config(ditsr, steps=20000), has_decoder=True, t_range=DDPM)
    full_range = [{"name": "l1", "gate": {"kind": "hard", "t_max": 1.0}}]
    audit_config(config(full_range), has_decoder=True, t_range=FLOW)


def test_pixel_term_without_decoder() -> None:
    with pytest.raises(ConfigError, match=r"losses.terms.0 \('ssim'\): term 'ssim' needs pixel space"):
        audit_config(config([{"name": "ssim"}]), has_decoder=False, t_range=FLOW)
    audit_config(config([{"name": "latent_l1"}]), has_decoder=False, t_range=FLOW)


def test_gate_in_the_wrong_units() -> None:
    ddpm_gate = [{"name": "l2", "label": "pix", "gate": {"kind": "linear", "t_max": 300}}]
    with pytest.raises(ConfigError, match=r"\('pix'\): gate t_max 300 lies outside .*\[0, 1\]"):
        audit_config(config(ddpm_gate), has_decoder=True, t_range=FLOW)
    flow_gate = [{"name": "ssim", "gate": {"kind": "hard", "t_max": 0.3}}]
    with pytest.raises(ConfigError, match=r"\('ssim'\).*opens only at t = 0"):
        audit_config(config(flow_gate), has_decoder=True, t_range=DDPM)
    bins = [{"name": "lpips", "gate": {"kind": "bins", "edges": [50, 100], "values": [1.0, 0.1, 0.0]}}]
    with pytest.raises(ConfigError, match=r"\('lpips'\): bins gate edge\(s\) \[50.0, 100.0\] lie outside"):
        audit_config(config(bins), has_decoder=True, t_range=RESSHIFT)


def test_gate_that_never_opens() -> None:
    closed = [{"name": "l1", "gate": {"kind": "hard", "t_max": 0.3}}]
    with pytest.raises(ConfigError, match=r"\('l1'\): gate .* never opens"):
        audit_config(config(closed), has_decoder=True, t_range=(0.5, 1.0))
    zero_bins = [{"name": "l1", "gate": {"kind": "bins", "edges": [5], "values": [0.0, 0.0]}}]
    with pytest.raises(ConfigError, match="never opens"):
        audit_config(config(zero_bins), has_decoder=True, t_range=RESSHIFT)


def test_schedule_that_never_switches_on() -> None:
    late = [{"name": "l1", "label": "late", "weight": {"kind": "ramp", "value": 0.35, "warmup": 5000,
                                                       "ramp_end": 9000}}]
    with pytest.raises(ConfigError, match=r"\('late'\): weight schedule .* never switches on"):
        audit_config(config(late, steps=1000), has_decoder=True, t_range=FLOW)
    audit_config(config(late, steps=6000), has_decoder=True, t_range=FLOW)
    knots = [{"step": 0, "value": 0}, {"step": 9000, "value": 0}, {"step": 13000, "value": 0.03}]
    gan = [{"name": "gan", "weight": {"kind": "stages", "stages": knots}}]
    with pytest.raises(ConfigError, match=r"\('gan'\).*never switches on"):
        audit_config(config(gan, steps=9000), has_decoder=True, t_range=FLOW)
    off = [{"name": "ffl", "weight": {"kind": "constant", "value": 0.0}}]
    with pytest.raises(ConfigError, match=r"\('ffl'\).*never switches on"):
        audit_config(config(off), has_decoder=True, t_range=FLOW)


def test_latent_perceptual_needs_the_vae() -> None:
    with pytest.raises(ConfigError, match=r"\('latent_perceptual'\): latent_perceptual needs the VAE codec"):
        audit_config(config([{"name": "latent_perceptual"}]), has_decoder=True, t_range=FLOW)
    vae = config([{"name": "latent_perceptual"}], codec={"name": "vae"})
    audit_config(vae, has_decoder=True, t_range=FLOW)


def test_nothing_to_train_and_adaptive_without_reference() -> None:
    with pytest.raises(ConfigError, match="nothing to train"):
        empty = Config.model_validate({"losses": {"diffusion_weight": 0}})
        audit_config(empty, has_decoder=True, t_range=FLOW)
    adaptive = {"losses": {"diffusion_weight": 0, "terms": [{"name": "gan", "weight": {"kind": "adaptive"}}]}}
    with pytest.raises(ConfigError, match="'gan'.*reference"):
        audit_config(Config.model_validate(adaptive), has_decoder=True, t_range=FLOW)


def test_config_audit_runs_before_any_compute(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a bad gate is reported before the model is built or any data is read (the data folder and
    # the VAE path do not even exist)
    from diffsr import model as model_module
    from diffsr.cli.audit import run_audit
    from diffsr.config import load_config
    from diffsr.train.trainer import Trainer

    def no_model(*a: object, **k: object) -> None:
        raise AssertionError("the model was built before the config audit")

    monkeypatch.setattr(model_module, "build_model", no_model)
    monkeypatch.setattr("diffsr.train.trainer.build_model", no_model)
    bad = ["losses.terms=[{name: l1, gate: {kind: linear, t_max: 300}}]", f"data.train={tmp_path / 'missing'}"]
    with pytest.raises(ConfigError, match="t_max 300"):
        Trainer(load_config("demo", bad), tmp_path / "run", progress=False).fit()
    with pytest.raises(ConfigError, match="t_max 300"):
        run_audit("flow-ssim", ["losses.terms=[{name: ssim, gate: {kind: linear, t_max: 300}}]",
                                f"codec.path={tmp_path / 'no-vae'}"])


# ----------------------------------------------------------------------------- learnable codec


LEARNABLE = [
    "data.patch_size=32", "data.batch_size=2", "net.width=16", "net.channel_mult=[1,2]", "net.attention_levels=[]",
    "train.threads=2", "train.time_limit=null", "train.steps=1", "train.log_every=1",
    "losses.terms=[{name: l1}]",
]


def _detach_before_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    original = SRModel.decoder_for

    def decoder_for(self: SRModel, zc):  # type: ignore[no-untyped-def]
        decode = original(self, zc)
        return lambda z, index: decode(z.detach(), index)  # the classic bug: z0_hat cut off

    monkeypatch.setattr(SRModel, "decoder_for", decoder_for)


def test_audit_cli_healthy_learnable_codec_passes() -> None:
    assert "OK" in run_audit("difiisr-dwt-all-learnable", LEARNABLE)


def test_audit_cli_detach_before_learnable_decode_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    _detach_before_decode(monkeypatch)
    with pytest.raises(ConfigError, match="'l1'"):
        run_audit("difiisr-dwt-all-learnable", LEARNABLE)


def test_trainer_audit_detach_before_learnable_decode_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blocky_pngs: Path
) -> None:
    data = blocky_pngs
    cfg = load_config("difiisr-dwt-all-learnable", [*LEARNABLE, f"data.train={data}", f"data.val={data}"])
    _detach_before_decode(monkeypatch)
    with pytest.raises(ConfigError, match="'l1'"):
        Trainer(cfg, tmp_path / "run", progress=False).fit()
