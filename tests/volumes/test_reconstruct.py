"""Reconstruction across the slices: orientations, consistency with the measured slices, std, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from diffsr.model import build_model
from diffsr.volumes import fourier_combine, iso_config, plan_iso, read_volume, reconstruct
from tests.volumes._helpers import IdentityModel, NoisyModel, phantom, write_nifti

REPO = Path(__file__).resolve().parents[2]


def thick_volume(tmp_path: Path, shape: tuple[int, int, int] = (14, 12, 5), factor: float = 4.0):  # noqa: ANN201
    data = phantom(shape) / 1000.0 * 0.8 + 0.1  # in [0.1, 0.9]: the B-spline stays inside [0, 1]
    vol = read_volume(write_nifti(tmp_path / "thick.nii.gz", data.astype(np.float32), (1.0, 1.0, factor)))
    return vol, plan_iso(vol)


def test_identity_model_gives_the_bspline_interpolation_along_the_slices(tmp_path: Path) -> None:
    vol, plan = thick_volume(tmp_path)
    model = IdentityModel()
    rec = reconstruct(model, vol.data, plan, batch=4)
    assert rec.mean.shape == (14, 12, 20)
    # independent reference: scipy's cubic B-spline at the output voxels' slice coordinates
    positions = (np.arange(20) + 0.5) / 4.0 - 0.5
    expected = ndimage.map_coordinates(
        vol.data.astype(np.float64),
        np.meshgrid(np.arange(14), np.arange(12), positions, indexing="ij"), order=3, mode="mirror")
    np.testing.assert_allclose(rec.mean, expected, atol=1e-5)
    assert max(model.batches) == 4  # never more planes than the batch
    assert rec.planes == {"processed": 14 + 12, "passed_through": 0}


def test_consistency_makes_the_output_reproduce_the_slices(tmp_path: Path) -> None:
    vol, plan = thick_volume(tmp_path)
    loose = reconstruct(NoisyModel(), vol.data, plan, consistency=False)
    fixed = reconstruct(NoisyModel(), vol.data, plan, consistency=True)
    redegraded = plan.slice_profile.degrade(torch.from_numpy(fixed.mean.astype(np.float64)), 2).numpy()
    np.testing.assert_allclose(redegraded, vol.data, atol=1e-5)
    assert fixed.residual["max_raw"] < 1e-5 < loose.residual["max_raw"]
    assert loose.residual["rms_raw"] > 1e-3


def test_consistency_through_a_diffusion_models_sampler(tmp_path: Path) -> None:
    # an untrained demo model (ResShift in Haar wavelet space): the hook decodes, projects the valid
    # region of the padded latent (5 slices x 4.8 -> 24 rows) and re-encodes at every step
    data = phantom((10, 9, 5)) / 1000.0
    vol = read_volume(write_nifti(tmp_path / "t.nii.gz", data, (0.9, 0.9, 4.32)))
    plan = plan_iso(vol)
    torch.manual_seed(0)
    model = build_model(iso_config("demo", plan)).eval()
    rec = reconstruct(model, vol.data, plan, consistency=True, steps=2)
    assert rec.mean.shape == (10, 9, plan.n_fine) and plan.n_fine == 24
    redegraded = plan.slice_profile.degrade(torch.from_numpy(rec.mean.astype(np.float64)), 2).numpy()
    np.testing.assert_allclose(redegraded, vol.data, atol=1e-5)


def test_samples_give_the_std_of_one_draw_of_the_combined_estimate(tmp_path: Path) -> None:
    vol, plan = thick_volume(tmp_path, shape=(16, 16, 6))
    rec = reconstruct(NoisyModel(), vol.data, plan, samples=6, seed=3)
    assert rec.std is not None and rec.std.shape == rec.mean.shape
    # each orientation adds N(0, 0.05^2) noise; one draw of their average has std 0.05 / sqrt(2)
    assert float(np.median(rec.std)) == pytest.approx(0.05 / np.sqrt(2), rel=0.15)
    again = reconstruct(NoisyModel(), vol.data, plan, samples=6, seed=3)
    np.testing.assert_array_equal(again.mean, rec.mean)  # seeded


def test_empty_planes_are_passed_through(tmp_path: Path) -> None:
    vol, plan = thick_volume(tmp_path)
    data = vol.data.copy()
    data[:4] = 0.0  # four empty sagittal planes
    model = IdentityModel()
    rec = reconstruct(model, data, plan)
    assert rec.planes["passed_through"] == 4
    assert np.all(rec.mean[:4] == 0)


def test_output_spacing_other_than_the_model_grid(tmp_path: Path) -> None:
    vol, _ = thick_volume(tmp_path)
    plan = plan_iso(vol, spacing=2.0)
    rec = reconstruct(IdentityModel(), vol.data, plan)
    assert rec.mean.shape == (14, 12, 10)
    fine = reconstruct(IdentityModel(), vol.data, plan_iso(vol)).mean  # 1 mm grid
    # 2 mm voxel j covers 1 mm voxels 2j and 2j + 1: its value lies near their mean
    np.testing.assert_allclose(rec.mean, 0.5 * (fine[..., 0::2] + fine[..., 1::2]), atol=0.05)


def test_fourier_combination_of_equal_estimates_is_that_estimate() -> None:
    a = np.random.default_rng(0).random((8, 10, 12)).astype(np.float32)
    np.testing.assert_allclose(fourier_combine(a, a), a, atol=1e-5)
    # the second estimate is blurred along axis 0 (it lost the high frequencies there): where the
    # first has more energy it dominates, so the fusion is closer to the first than the average is
    b = ndimage.gaussian_filter1d(a, 1.5, axis=0, mode="wrap")
    fused = fourier_combine(a, b)
    assert np.abs(fused - a).mean() < 0.5 * np.abs(0.5 * (a + b) - a).mean()


def test_memory_stays_bounded_for_a_256_cubed_output() -> None:
    # a fresh process: the peak resident memory it adds while reconstructing 256^3 voxels (64 MB of
    # float32) from 64 thick slices, planes in batches of 8 (the model: the identity)
    code = textwrap.dedent("""
        import json, resource, sys
        import numpy as np, torch
        from diffsr.data.io import Record
        from diffsr.volumes import plan_iso, reconstruct
        from diffsr.volumes.volume import Volume
        from tests.volumes._helpers import IdentityModel
        torch.set_num_threads(2)
        data = np.random.default_rng(0).random((256, 256, 64), dtype=np.float32)
        record = Record(data[None, None, :, :, 0], {"format": "nifti", "path": "synthetic"})
        plan = plan_iso(Volume(data, np.diag([1.0, 1.0, 4.0, 1.0]), (1.0, 1.0, 4.0), record))
        model = IdentityModel()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rec = reconstruct(model, data, plan, batch=8)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"shape": list(rec.mean.shape), "added_mb": (after - before) / 1024,
                          "batch": max(model.batches)}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                         env={**__import__("os").environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [256, 256, 256] and result["batch"] == 8
    # measured 121-125 MB: the output and one accumulator (64 MB each); all 512 planes at once: 430 MB
    assert result["added_mb"] < 200
