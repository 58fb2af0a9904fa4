"""Data consistency at sampling: the projections against independent references, the hook
through SRModel.sample for every process with the pixel and wavelet codecs, and consistency
applied to a baseline's output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffsr.config import load_config
from diffsr.data.degrade import bicubic_down, kspace_truncate, upsample
from diffsr.model import build_model
from diffsr.sampling.consistency import (
    Consistency,
    back_project,
    bicubic_matrix,
    dps_step,
    kspace_mask,
    kspace_project,
    make_x0_hook,
)
from diffsr.sampling.infer import super_resolve
from tests.sampling._helpers import _loaded, _lr

TINY = ["net.width=16", "net.channel_mult=[1,2]", "data.channels=1"]


def _smooth(b: int, h: int, w: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 1, max(2, h // 4), max(2, w // 4), generator=g, dtype=dtype)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * x + 0.2 * torch.rand(b, 1, h, w, generator=g, dtype=dtype)).clamp(0, 1)


def _full_matrix(h: int, w: int, scale: int) -> torch.Tensor:
    """The dense (h w / s^2, h w) matrix of bicubic_down, column by column (independent of the
    separable matrices the projection uses)."""
    basis = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)
    return bicubic_down(basis, scale, clamp=False).reshape(h * w, -1).T


# ----------------------------------------------------------------------------- back-projection


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_matrix_is_bicubic_down(scale: int) -> None:
    x = torch.rand(2, 3, 24, 36, dtype=torch.float64)
    a_h, a_w = bicubic_matrix(24, scale), bicubic_matrix(36, scale)
    torch.testing.assert_close(a_h @ x @ a_w.T, bicubic_down(x, scale, clamp=False), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 4])
def test_back_projection_is_the_least_squares_projection(scale: int) -> None:
    h, w = 16, 12
    x = torch.rand(1, 1, h, w, dtype=torch.float64)
    lr = torch.rand(1, 1, h // scale, w // scale, dtype=torch.float64)
    a = _full_matrix(h, w, scale)
    # minimum-norm correction via the pseudo-inverse of the dense operator (numpy, independent)
    a_np = a.numpy()
    xv = x.reshape(-1).numpy()
    expected = xv + np.linalg.pinv(a_np) @ (lr.reshape(-1).numpy() - a_np @ xv)
    got = back_project(x, lr, scale).reshape(-1).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_back_projection_properties() -> None:
    scale = 4
    hr = _smooth(2, 32, 40, seed=1)
    lr = bicubic_down(hr, scale, clamp=False)
    x = torch.rand_like(hr)
    p = back_project(x, lr, scale)
    # consistent, idempotent, and never further from any consistent image (the truth among them)
    torch.testing.assert_close(bicubic_down(p, scale, clamp=False), lr, rtol=0, atol=1e-10)
    torch.testing.assert_close(back_project(p, lr, scale), p, rtol=0, atol=1e-10)
    assert (p - hr).norm() < (x - hr).norm()
    # float32 in, float32 out, still consistent to float32 rounding
    p32 = back_project(x.float(), lr.float(), scale)
    assert p32.dtype == torch.float32
    assert (bicubic_down(p32, scale, clamp=False) - lr.float()).abs().max() < 1e-5


def test_back_projection_rejects_a_wrong_measurement() -> None:
    with pytest.raises(ValueError, match="measurement"):
        back_project(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 5, 4), 4)


# ----------------------------------------------------------------------------- k-space


def _centre_spectrum_np(img: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(img), axes=(-2, -1))[..., keep]


@pytest.mark.parametrize(("h", "w", "scale"), [(32, 32, 2), (36, 28, 4), (30, 42, 3)])
def test_kspace_projection_keeps_the_measured_centre(h: int, w: int, scale: int) -> None:
    hr = _smooth(2, h, w, seed=2, dtype=torch.float32)
    # the default LR: magnitude image with Rician noise, as the k-space degradation makes it
    lr = kspace_truncate(hr, scale, rician=0.01, generator=torch.Generator().manual_seed(0)).clamp(0, 1)
    x = torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(3))
    out = kspace_project(x, lr, scale)
    assert out.dtype == torch.float32 and out.shape == x.shape

    # reference in numpy: the LR's spectrum zero-filled onto the HR grid (x H W / (h w))
    lh, lw = h // scale, w // scale
    ky, kx = (lh - 1) // 2, (lw - 1) // 2
    lr_spec = np.fft.fftshift(np.fft.fft2(lr.double().numpy()), axes=(-2, -1))
    cy, cx = lh // 2, lw // 2
    measured = lr_spec[..., cy - ky : cy + ky + 1, cx - kx : cx + kx + 1] * (h * w) / (lh * lw)
    keep = np.zeros((h, w), dtype=bool)
    keep[h // 2 - ky : h // 2 + ky + 1, w // 2 - kx : w // 2 + kx + 1] = True
    assert np.array_equal(keep, kspace_mask((h, w), scale).numpy())
    got = _centre_spectrum_np(out.double().numpy(), keep)
    # FFT scale: divide by sqrt(H W) so 1e-5 is relative to pixel values in [0, 1]
    np.testing.assert_allclose(got / np.sqrt(h * w), measured.reshape(2, 1, -1) / np.sqrt(h * w), atol=1e-5)
    # every other frequency is the estimate's
    np.testing.assert_allclose(
        np.fft.fft2(out.double().numpy())[..., ~np.fft.ifftshift(keep)] / np.sqrt(h * w),
        np.fft.fft2(x.double().numpy())[..., ~np.fft.ifftshift(keep)] / np.sqrt(h * w),
        atol=1e-5,
    )


# ----------------------------------------------------------------------------- guidance


def test_dps_step_is_the_normalised_adjoint_step() -> None:
    h, w, scale = 16, 12, 2
    x = torch.rand(1, 1, h, w, dtype=torch.float64)
    lr = torch.rand(1, 1, h // scale, w // scale, dtype=torch.float64)
    a = _full_matrix(h, w, scale).numpy()
    xv, lv = x.reshape(-1).numpy(), lr.reshape(-1).numpy()
    norm2 = np.linalg.norm(a, 2) ** 2  # largest singular value squared
    expected = xv - 0.5 * a.T @ (a @ xv - lv) / norm2
    got = dps_step(x, lr, scale, 0.5).reshape(-1).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    # a step of 1 never increases the data error
    e0 = np.linalg.norm(a @ xv - lv)
    e1 = np.linalg.norm(a @ dps_step(x, lr, scale, 1.0).reshape(-1).numpy() - lv)
    assert e1 < e0


def test_kspace_guidance_of_one_is_the_projection() -> None:
    hr = _smooth(1, 32, 32, seed=4)
    lr = kspace_truncate(hr, 2, magnitude=False)
    x = torch.rand_like(hr)
    torch.testing.assert_close(dps_step(x, lr, 2, 1.0, "kspace"), kspace_project(x, lr, 2), rtol=0, atol=1e-10)


def test_consistency_pocs_rounds_and_guidance_only() -> None:
    hr = _smooth(1, 32, 32, seed=5)
    lr = bicubic_down(hr, 4, clamp=False)
    x = 1.6 * torch.rand_like(hr) - 0.3  # partly outside [0, 1]
    one = Consistency(lr, 4, "backprojection", iters=1)(x)
    three = Consistency(lr, 4, "backprojection", iters=3)(x)
    for y in (one, three):
        torch.testing.assert_close(bicubic_down(y, 4, clamp=False), lr, rtol=0, atol=1e-10)
    # alternating with the [0, 1] box pulls the consistent estimate towards the box
    outside = lambda y: (y - y.clamp(0, 1)).norm()  # noqa: E731
    assert outside(three) < outside(one)
    guided = Consistency(lr, 4, "none", guidance=1.0)(x)
    err = lambda y: (bicubic_down(y, 4, clamp=False) - lr).norm()  # noqa: E731
    assert err(guided) < err(x) and not torch.equal(guided, one)
    assert torch.equal(Consistency(lr, 4, "none")(x), x)


# ----------------------------------------------------------------------------- through SRModel.sample

PROCESSES = {
    "flow": "process={name: flow, sample_steps: 3}",
    "ddpm": "process={name: ddpm, train_steps: 100, sample_steps: 3}",
    "resshift": "process={name: resshift, steps: 4, kappa: 1.0, min_noise: 0.2}",
    "rddm": "process={name: rddm, steps: 4}",
}
CODECS = {
    "pixel": "codec={name: pixel}",
    "wavelet": "codec={name: wavelet, wavelet: haar, levels: 2, layout: all}",
}


def _model(process: str, codec: str, mode: str, scale: int) -> tuple[torch.nn.Module, object]:
    cfg = load_config("demo", [*TINY, PROCESSES[process], CODECS[codec], f"data.scale={scale}",
                               f"sample.consistency={mode}", "sample.consistency_iters=1"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # a random, non-zero output layer: the property must hold for any net
        model.net.out_conv.weight.normal_(0, 0.05)
        model.net.out_conv.bias.normal_(0, 0.05)
    return model, cfg


@pytest.mark.parametrize("codec", ["pixel", "wavelet"])
@pytest.mark.parametrize("process", ["flow", "ddpm", "resshift", "rddm"])
@pytest.mark.parametrize("mode", ["backprojection", "kspace"])
def test_hook_through_srmodel_sample(process: str, codec: str, mode: str) -> None:
    scale = 2
    model, cfg = _model(process, codec, mode, scale)
    hr = _smooth(2, 18, 22, seed=6, dtype=torch.float32)  # 18 x 22: the wavelet codec pads to 20 x 24
    if mode == "kspace":
        lr = kspace_truncate(hr, scale).clamp(0, 1)
        degradation = "kspace"
    else:
        lr = bicubic_down(hr, scale)
        degradation = "bicubic"
    lr_up = upsample(lr, scale)
    hook = make_x0_hook(model, lr, scale, cfg.sample, degradation)
    seen: list[tuple[torch.Tensor, object]] = []

    def recording(z0_hat: torch.Tensor, t: torch.Tensor, zc: object) -> torch.Tensor:
        z = hook(z0_hat, t, zc)
        seen.append((z, zc))
        return z

    noise_gen = torch.Generator().manual_seed(1)
    sr = model.sample(lr_up, steps=3, generator=noise_gen, x0_hook=recording)
    assert len(seen) == 3 and sr.shape == hr.shape
    z_last, zc = seen[-1]
    x_last = model.codec.decode(zc.with_z(z_last))[..., :18, :22]  # type: ignore[attr-defined]
    # the sampler's output is the last hooked estimate, clipped to [0, 1]
    torch.testing.assert_close(sr, x_last.clamp(0, 1), rtol=0, atol=1e-5)

    def mismatch(x: torch.Tensor) -> float:
        if mode == "kspace":
            keep = kspace_mask(x.shape[-2:], scale)
            spec = torch.fft.fftshift(torch.fft.fft2(x.double(), norm="ortho"), dim=(-2, -1))[..., keep]
            ref = torch.fft.fftshift(torch.fft.fft2(kspace_project(torch.zeros_like(x.double()), lr.double(),
                                                                   scale), norm="ortho"), dim=(-2, -1))[..., keep]
            return float((spec - ref).abs().max())
        return float((bicubic_down(x.double(), scale, clamp=False) - lr.double()).abs().max())

    # float32 sampling: 1e-5 relative to the estimate's magnitude (a random eps-prediction net
    # gives DDPM estimates of size ~100 at the first, noisiest steps)
    assert mismatch(x_last) < 1e-5 * max(1.0, float(x_last.abs().max()))
    # the property is not there by accident: without the hook the same sampler is inconsistent
    free = model.sample(lr_up, steps=3, generator=torch.Generator().manual_seed(1))
    assert mismatch(free) > 1e-3


def test_guidance_alone_activates_the_hook_in_super_resolve() -> None:
    from diffsr.sampling.infer import LoadedModel, _consistency_hook

    model, cfg = _model("resshift", "pixel", "none", 2)
    loaded = LoadedModel(model, cfg, checkpoint=None, step=0, ema=False)  # type: ignore[arg-type]
    lr = torch.rand(1, 1, 8, 8)
    assert _consistency_hook(loaded, lr) is None
    cfg.sample.guidance = 0.5
    assert _consistency_hook(loaded, lr) is not None


def test_tiled_super_resolve_projects_the_stitched_image() -> None:
    from diffsr.sampling.infer import LoadedModel, super_resolve

    model, cfg = _model("resshift", "pixel", "backprojection", 2)
    cfg.sample.tile_mode = "blend"  # exact mode applies the hook like an untiled run (test_exact_tiling.py)
    loaded = LoadedModel(model, cfg, checkpoint=None, step=0, ema=False)  # type: ignore[arg-type]
    hr = _smooth(1, 40, 40, seed=7, dtype=torch.float32)
    lr = bicubic_down(hr, 2)
    with_fix = super_resolve(loaded, lr, steps=2, tile=16, overlap=4)
    cfg.sample.consistency = "none"
    plain = super_resolve(loaded, lr, steps=2, tile=16, overlap=4)
    expected = Consistency(lr, 2, "backprojection").project(plain).clamp(0, 1)
    torch.testing.assert_close(with_fix, expected, rtol=0, atol=1e-6)
    assert (bicubic_down(with_fix, 2, clamp=False) - lr).abs().mean() < (
        bicubic_down(plain, 2, clamp=False) - lr
    ).abs().mean()


def test_mri_preset_turns_kspace_consistency_on(caplog: pytest.LogCaptureFixture) -> None:
    from diffsr.sampling.infer import LoadedModel, super_resolve

    cfg = load_config("mri-kspace-x2", ["net.width=16", "net.channel_mult=[1,2]", "sample.steps=2",
                                        "sample.consistency_iters=1"])
    assert cfg.sample.consistency == "kspace" and cfg.data.degradation.name == "kspace"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    loaded = LoadedModel(model, cfg, checkpoint=None, step=0, ema=False)  # type: ignore[arg-type]
    hr = _smooth(1, 24, 24, seed=8, dtype=torch.float32)
    lr = kspace_truncate(hr, 2).clamp(0, 1)
    with caplog.at_level("WARNING", logger="diffsr.sampling.consistency"):
        sr = super_resolve(loaded, lr)
    assert not caplog.records  # mode and degradation agree
    # the untrained net returns the condition; the projection made its centre k-space the measurement's
    expected = kspace_project(upsample(lr, 2), lr, 2).clamp(0, 1)
    torch.testing.assert_close(sr, expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- baselines


def test_consistency_applies_to_baseline_output() -> None:
    from diffsr.sampling.consistency import Consistency

    loaded = _loaded("edsr", ["net.size=tiny"])
    lr = _lr(16, 20)
    plain = super_resolve(loaded, lr, tile=0)
    loaded.config.sample.consistency = "backprojection"
    fixed = super_resolve(loaded, lr, tile=0)
    expected = Consistency(lr, loaded.scale, "backprojection", iters=loaded.config.sample.consistency_iters)(plain)
    assert (fixed - plain).abs().max() > 1e-3
    torch.testing.assert_close(fixed, expected.clamp(0, 1), atol=1e-5, rtol=0)
