"""``diffsr iso`` through the real CLI: tiny end-to-end runs (NIfTI, DICOM) and the bad inputs of issue 19.

Every bad input gives exit code 2, exactly one ``error:`` line naming the problem, and writes
nothing (the output folder is not created, the case folder is unchanged).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from diffsr.cli import main
from diffsr.data.io import read
from tests.volumes._helpers import phantom, write_dicom_series, write_nifti

# a tiny model and a short run: 2 training steps on 32 x 32 patches
TINY = ["--train-steps", "2", "--set", "data.patch_size=32", "--set", "data.batch_size=4", "--set", "net.width=16",
        "--set", "net.channel_mult=[1,2]", "--set", "train.threads=2", "--set", "train.audit=false"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_nifti_end_to_end_writes_the_isotropic_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_nifti(tmp_path / "t2.nii.gz", phantom((24, 20, 6)), (0.9, 0.9, 4.5))
    out = tmp_path / "out"
    code, stdout, err = run(["iso", str(src), "--out", str(out), "--samples", "2", *TINY], capsys)
    assert code == 0, err
    img = nib.load(str(out / "t2_iso.nii.gz"))
    assert img.shape == (24, 20, 30)  # 6 slices x 4.5 mm = 27 mm = 30 voxels of 0.9 mm
    assert img.header.get_zooms() == pytest.approx((0.9, 0.9, 0.9))
    source = nib.load(str(src)).affine
    # same orientation and in-plane grid; along the slices the first edge is kept
    np.testing.assert_allclose(img.affine[:3, :2], source[:3, :2], atol=1e-6)
    np.testing.assert_allclose(img.affine[:3, 2], source[:3, 2] / 5.0, atol=1e-6)
    np.testing.assert_allclose(img.affine @ [0, 0, -0.5, 1], source @ [0, 0, -0.5, 1], atol=1e-5)
    std = nib.load(str(out / "t2_iso_std.nii.gz"))
    assert std.shape == img.shape and np.all(std.get_fdata() >= 0) and std.get_fdata().max() > 0
    report = json.loads((out / "iso.json").read_text())
    assert report["plan"]["model_factor"] == pytest.approx(5.0) and report["train"]["steps"] == 2
    assert report["reconstruct"]["consistency_residual"]["max_raw"] < 1e-3  # in [0, 1] units
    assert "t2_iso.nii.gz" in stdout and (out / "run" / "config.yaml").is_file()
    # the trained model is reused by --model, and a second training into the same --out is refused
    again = tmp_path / "again"
    code, _, err = run(["iso", str(src), "--out", str(again), "--model", str(out / "run"), "--no-consistency"],
                       capsys)
    assert code == 0, err and (again / "t2_iso.nii.gz").is_file()
    code, _, err = run(["iso", str(src), "--out", str(out), *TINY], capsys)
    assert code == 2 and "already holds a trained model" in err


def test_dicom_series_end_to_end_writes_a_new_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_dicom_series(tmp_path / "flair", (phantom((5, 24, 24)) * 3).astype(np.float32), pixel=1.5,
                                thickness=5.0, spacing=6.0)
    out = tmp_path / "out"
    code, _, err = run(["iso", str(folder), "--out", str(out), "--preset", "edsr", "--train-steps", "2",
                        "--set", "data.patch_size=32", "--set", "data.batch_size=4"], capsys)
    assert code == 0, err
    series = read(out / "flair_iso")
    src = read(folder)
    assert series.array.shape == (20, 1, 24, 24)  # 5 slices x 6 mm = 30 mm = 20 slices of 1.5 mm
    assert series.meta["spacing"] == pytest.approx([1.5, 1.5, 1.5])
    normal = np.cross(*np.reshape(src.meta["orientation"], (2, 3)))
    first = np.asarray(src.meta["positions"][0])
    # output slice j sits (j + 0.5) 1.5 - 3 mm along the normal from the first input slice's centre
    for j, position in enumerate(series.meta["positions"]):
        np.testing.assert_allclose(position, first + ((j + 0.5) * 1.5 - 3.0) * normal, atol=1e-3)
    report = json.loads((out / "iso.json").read_text())
    assert report["plan"]["thickness"] == pytest.approx(5.0) and report["plan"]["gap"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- bad input


def _png(root: Path) -> list[str]:
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "slice.png")
    return [str(root / "slice.png")]


def _nifti_2d(root: Path) -> list[str]:
    nib.save(nib.Nifti1Image(phantom((16, 16, 1))[..., 0], np.eye(4)), str(root / "flat.nii.gz"))
    return [str(root / "flat.nii.gz")]


def _isotropic(root: Path) -> list[str]:
    return [str(write_nifti(root / "iso.nii.gz", phantom((12, 12, 12)), (1.0, 1.0, 1.0)))]


def _four_d(root: Path) -> list[str]:
    data = np.stack([phantom((12, 12, 4))] * 3, axis=-1)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 4.0, 1.0])), str(root / "dwi.nii.gz"))
    return [str(root / "dwi.nii.gz")]


def _zero_spacing(root: Path) -> list[str]:
    header = nib.Nifti1Header()  # no sform / qform: pixdim is all the geometry there is
    header.set_data_shape((12, 12, 4))
    header.set_data_dtype(np.float32)
    path = root / "zero.nii"
    nib.save(nib.Nifti1Image(phantom((12, 12, 4)), None, header), str(path))
    raw = bytearray(path.read_bytes())  # nibabel refuses to write a zero pixdim: patch pixdim[2] (byte 84)
    raw[84:88] = struct.pack("<f", 0.0)
    path.write_bytes(bytes(raw))  # nibabel would read it back as 1 mm (it "fixes" zero pixdims)
    return [str(path)]


def _no_pixel_spacing(root: Path) -> list[str]:
    folder = write_dicom_series(root / "series", phantom((4, 12, 12)))
    import pydicom

    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path)
    return [str(folder)]


def _factor(value: str) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        return [str(write_nifti(root / "v.nii.gz", phantom((12, 12, 4)), (1.0, 1.0, 4.0))), "--factor", value]

    return build


def _too_thick(root: Path) -> list[str]:
    return [str(write_nifti(root / "v.nii.gz", phantom((12, 12, 4)), (0.5, 0.5, 7.0)))]


def _profile_length(root: Path) -> list[str]:
    (root / "ssp.txt").write_text("0.2 0.6 1.0 0.6")
    return [str(write_nifti(root / "v.nii.gz", phantom((12, 12, 4)), (1.0, 1.0, 4.0))), "--profile",
            str(root / "ssp.txt")]


def _uneven_dicom(root: Path) -> list[str]:
    return [str(write_dicom_series(root / "series", phantom((5, 12, 12)), positions=[0.0, 6.0, 12.0, 24.0, 30.0]))]


BAD = {
    "png": (_png, "2-D image"),
    "nifti-2d": (_nifti_2d, "2-D image"),
    "isotropic": (_isotropic, "already isotropic"),
    "4d-no-index": (_four_d, "--volume-index"),
    "zero-spacing": (_zero_spacing, "has a zero"),
    "dicom-no-pixel-spacing": (_no_pixel_spacing, "no PixelSpacing"),
    "factor-below-1": (_factor("0.5"), "--factor 0.5: must be from 1 to 12"),
    "factor-above-12": (_factor("13"), "--factor 13: must be from 1 to 12"),
    "factor-word": (_factor("big"), "--factor: 'auto' or a number"),
    "volume-factor-above-12": (_too_thick, "supports up to 12"),
    "profile-length": (_profile_length, "ssp.txt: 4 samples"),
    "dicom-uneven": (_uneven_dicom, "a gap of 12.00 mm between slices 2 and 3"),
}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_line_and_writes_nothing(case: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    build, expect = BAD[case]
    root = tmp_path / case
    root.mkdir()
    argv = ["iso", *build(root)]
    before = _snapshot(root)
    code, stdout, err = run([*argv[:2], "--out", str(root / "out"), *argv[2:], *TINY], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert expect in " ".join(err.split()), err
    assert not (root / "out").exists() and _snapshot(root) == before
    assert "Traceback" not in err + stdout


def test_four_d_volume_with_an_index_is_read(tmp_path: Path) -> None:
    from diffsr.volumes import read_volume

    path = _four_d(tmp_path)[0]
    vol = read_volume(path, volume_index=2)
    assert vol.shape == (12, 12, 4) and vol.spacing == pytest.approx((1.0, 1.0, 4.0))


def test_sr_refuses_a_through_plane_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_nifti(tmp_path / "t2.nii.gz", phantom((20, 20, 5)), (1.0, 1.0, 4.0))
    code, _, err = run(["iso", str(src), "--out", str(tmp_path / "iso"), *TINY], capsys)
    assert code == 0, err
    code, _, err = run(["sr", str(src), "--ckpt", str(tmp_path / "iso" / "run"), "--out", str(tmp_path / "sr")],
                       capsys)
    assert code == 2 and "a through-plane model" in err and "diffsr iso" in err
    assert not (tmp_path / "sr").exists()


def test_brainix_flair_series_plan_and_output_geometry(shared_data: Path, tmp_path: Path) -> None:
    """The real thick-slice series (22 oblique slices, 5 mm thick, 6 mm apart, 0.8 mm pixels).

    The expected geometry comes from the source headers alone (ImagePositionPatient sorted along
    the slice normal, SliceThickness), not from the code's affine: output slice j lies at
    ``p_0 + ((j + 0.5) / f - 0.5) (p_21 - p_0) / 21`` with f = 6 mm / pixel spacing.
    """
    import pydicom

    from diffsr.volumes import plan_iso, read_volume, reconstruct, write_volume
    from tests.volumes._helpers import IdentityModel

    folder = shared_data / "medical" / "brainix" / "FLAIR"
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm")]
    cosines = np.asarray(headers[0].ImageOrientationPatient, float)
    normal = np.cross(cosines[:3], cosines[3:])  # slices in volume order run along the normal
    headers.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))
    first, last = (np.asarray(ds.ImagePositionPatient, float) for ds in (headers[0], headers[-1]))
    step = (last - first) / (len(headers) - 1)
    pixel = float(headers[0].PixelSpacing[0])
    vol = read_volume(folder)
    plan = plan_iso(vol)
    assert plan.axis == 0 and plan.slice_spacing == pytest.approx(np.linalg.norm(step), abs=1e-3)
    assert plan.thickness == pytest.approx(float(headers[0].SliceThickness)) and plan.gap == pytest.approx(1.0)
    f = np.linalg.norm(step) / pixel  # 7.51: a non-integer factor
    assert plan.factor == pytest.approx(f, rel=1e-4) and plan.n_out == int(np.ceil(22 * f - 1e-4)) == 166
    # the identity model leaves the B-spline interpolation: cheap, and the geometry is what is checked
    unit = vol.data / vol.data.max()
    rec = reconstruct(IdentityModel(), unit, plan, batch=64)
    out = write_volume(tmp_path / "FLAIR_iso", rec.mean * vol.data.max(), vol, plan.out_affine(vol.affine))
    back = read(out)
    assert back.array.shape == (166, 1, 288, 288)
    for j in (0, 1, 83, 165):
        ds = back.headers[j]
        expected = first + ((j + 0.5) / f - 0.5) * step
        np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, float), expected, atol=1e-3)
        np.testing.assert_allclose(np.asarray(ds.ImageOrientationPatient, float),
                                   np.asarray(headers[0].ImageOrientationPatient, float), atol=1e-6)
        assert float(ds.SliceThickness) == pytest.approx(pixel, rel=1e-4)
    assert [float(v) for v in back.headers[0].PixelSpacing] == pytest.approx([pixel, pixel])
