"""The through-plane plan: the thick axis, the factor (non-integer too), the grids, the slice profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffsr.core.errors import DataError, DiffsrError
from diffsr.volumes import plan_iso, read_profile, read_volume
from tests.volumes._helpers import phantom, write_dicom_series, write_nifti


def volume(tmp_path: Path, zooms: tuple[float, float, float], shape: tuple[int, int, int] = (20, 18, 6)):  # noqa: ANN201
    return read_volume(write_nifti(tmp_path / "v.nii.gz", phantom(shape), zooms))


def test_the_thick_axis_and_a_non_integer_factor(tmp_path: Path) -> None:
    plan = plan_iso(volume(tmp_path, (0.94, 4.8, 0.94), (20, 6, 18)))
    assert plan.axis == 1 and plan.in_plane == (0, 2)
    assert plan.factor == pytest.approx(4.8 / 0.94)  # 5.106...
    assert plan.out_spacing == pytest.approx(0.94) and plan.thickness == pytest.approx(4.8)
    assert plan.n_out == 31  # 6 x 4.8 = 28.8 mm: 30.6 voxels of 0.94 mm, the last one partly outside
    assert plan.slice_profile.factor == pytest.approx(4.8 / 0.94)


def test_output_affine_keeps_the_first_edge_and_the_spacing(tmp_path: Path) -> None:
    vol = volume(tmp_path, (1.0, 1.0, 4.0))
    plan = plan_iso(vol)
    affine = plan.out_affine(vol.affine)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [1.0, 1.0, 1.0])
    # the outer edge of the first thick slice (index -0.5) is the outer edge of the first output voxel
    np.testing.assert_allclose(affine @ [0, 0, -0.5, 1], vol.affine @ [0, 0, -0.5, 1], atol=1e-9)
    # output voxel j sits at thick index (j + 0.5) / 4 - 0.5: voxels 1.5 and 2 straddle slice 0's centre
    np.testing.assert_allclose(affine @ [0, 0, 1.5, 1], vol.affine @ [0, 0, 0, 1], atol=1e-9)


def test_factor_and_spacing_options(tmp_path: Path) -> None:
    vol = volume(tmp_path, (1.0, 1.0, 4.0))
    assert plan_iso(vol, factor=2).out_spacing == pytest.approx(2.0)
    assert plan_iso(vol, spacing=1.5).n_out == 16  # 24 mm / 1.5 mm
    for bad in (0.5, 12.5):
        with pytest.raises(DiffsrError, match=f"--factor {bad:g}: must be from 1 to 12"):
            plan_iso(vol, factor=bad)
    with pytest.raises(DiffsrError, match="give one of them"):
        plan_iso(vol, factor=2, spacing=1.0)


def test_gap_sets_the_thickness_and_dicom_has_its_own(tmp_path: Path) -> None:
    vol = volume(tmp_path, (1.0, 1.0, 3.5))
    plan = plan_iso(vol, gap=1.0)
    assert plan.thickness == pytest.approx(2.5) and plan.gap == pytest.approx(1.0)
    assert plan.n_fine == 21  # 6 x 3.5 mm = 21 mm: 21 voxels of 1 mm holding the 6 slices again
    assert plan.slice_profile.count(plan.n_fine) == 6
    assert plan.slice_profile.width == pytest.approx(2.5)
    with pytest.raises(DiffsrError, match="--gap 4: must lie between"):
        plan_iso(vol, gap=4.0)
    series = read_volume(write_dicom_series(tmp_path / "s", phantom((4, 12, 12)), thickness=5.0, spacing=6.0))
    dplan = plan_iso(series)
    assert dplan.axis == 0 and dplan.thickness == pytest.approx(5.0) and dplan.gap == pytest.approx(1.0)


def test_isotropic_and_too_thick_volumes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="already isotropic .* use 'diffsr sr'"):
        plan_iso(volume(tmp_path, (1.0, 1.0, 1.05)))
    with pytest.raises(DataError, match="need a factor of 13; diffsr iso supports up to 12"):
        plan_iso(volume(tmp_path, (0.5, 0.5, 6.5)))


def test_profile_file(tmp_path: Path) -> None:
    good = tmp_path / "ssp.txt"
    good.write_text("# slice profile at 1 mm\n0.1, 0.5, 1.0, 0.5, 0.1\n")
    assert read_profile(good, 4.0) == (0.1, 0.5, 1.0, 0.5, 0.1)
    np.save(tmp_path / "ssp.npy", np.array([0.2, 1.0, 0.2]))
    assert read_profile(tmp_path / "ssp.npy", 4.0) == (0.2, 1.0, 0.2)
    plan = plan_iso(volume(tmp_path, (1.0, 1.0, 4.0)), profile=str(good))
    assert plan.slice_profile.profile == (0.1, 0.5, 1.0, 0.5, 0.1)
    even = tmp_path / "even.txt"
    even.write_text("1 2 3 4")
    with pytest.raises(DataError, match=r"even.txt: 4 samples: .* an odd number of samples from 3 to 33"):
        read_profile(even, 4.0)
