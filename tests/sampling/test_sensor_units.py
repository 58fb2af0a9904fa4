"""sr_files on the units real sensors write (issue 18): 14-bit thermal counts in a uint16, CT in
Hounsfield units (NIfTI and a DICOM CT series with a rescale intercept), int32 counts.

The reference is independent of diffsr: the input upsampled by PyTorch bicubic. The model is the
demo preset's residual ResShift net with its output convolution drawn at 0.005: its output differs
from the bicubic condition by about 0.5 % of [0, 1], as a lightly trained model's does. Read in
the right units the output follows bicubic (correlation >= 0.95 asked, 0.99 measured); read as if
the counts filled their type, that 0.5 % is most of the image (correlation 0.16 measured for thermal).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diffsr.core.errors import DataError
from diffsr.sampling.infer import LoadedModel, sr_files
from tests._dicom import new_instance

SCALE = 2


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    from diffsr.config import load_config
    from diffsr.model import build_model

    cfg = load_config("demo", ["net.width=16", "net.channel_mult=[1,2]", f"data.scale={SCALE}", "sample.steps=2",
                               "process.steps=2"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.net.out_conv.weight.normal_(0, 0.005)
    return LoadedModel(model, cfg, checkpoint=Path("built-in-test-model"), step=0, ema=False)


def _scene(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth scene in [-1, 1] with a little sensor noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(seed).normal(0, 0.03, (h, w))
    return np.clip((np.sin(xx / 4) + np.cos(yy / 5)) / 2 + noise, -1, 1)


def _bicubic(x: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(x.astype(np.float64))[None, None]
    return F.interpolate(t, scale_factor=SCALE, mode="bicubic", align_corners=False)[0, 0].numpy()


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def test_thermal_14bit_counts_in_uint16(loaded: LoadedModel, tmp_path: Path) -> None:
    counts = (8000 + 900 * _scene()).astype(np.uint16)  # 7100..8900: 14-bit counts
    assert counts.min() >= 7000 and counts.max() <= 9000
    Image.fromarray(counts).save(tmp_path / "ir.png")
    out = sr_files(loaded, [tmp_path / "ir.png"], tmp_path / "out")[0]
    sr = np.asarray(Image.open(out))
    assert sr.dtype == np.uint16 and sr.shape == (48, 64)
    assert counts.min() <= sr.min() and sr.max() <= counts.max()  # the input's units, nothing stretched
    assert _corr(sr, _bicubic(counts)) >= 0.95
    record = json.loads((tmp_path / "out" / "ir_sr.png.json").read_text())
    assert record["intensity"]["policy"] == "minmax"
    assert (record["intensity"]["lo"], record["intensity"]["hi"]) == (float(counts.min()), float(counts.max()))
    assert record["outputs"] == {"sr": "ir_sr.png"} and record["input"] == str((tmp_path / "ir.png").resolve())
    # the old behaviour, asked for explicitly: a warning, and the output no longer follows the image
    wrong = sr_files(loaded, [tmp_path / "ir.png"], tmp_path / "dtype", normalization="dtype")[0]
    assert _corr(np.asarray(Image.open(wrong)), _bicubic(counts)) < 0.9


def test_ct_nifti_in_hounsfield_units(loaded: LoadedModel, tmp_path: Path) -> None:
    scene = _scene(24, 32, 1)
    hu = np.where(scene > 0.6, 1280, np.where(scene < -0.5, -1000, 40 + 30 * scene)).astype(np.int16)
    volume = np.stack([hu, hu[:, ::-1], hu[::-1]], axis=-1)
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.7, 2.0, 1.0])), tmp_path / "ct.nii.gz")
    out = sr_files(loaded, [tmp_path / "ct.nii.gz"], tmp_path / "out")[0]
    sr = np.asarray(nib.load(out).dataobj)
    assert sr.dtype == np.int16 and sr.shape == (48, 64, 3)
    assert sr.min() >= -1000 and sr.max() <= 1280 and sr.max() > 1000  # bone is not clipped to a percentile
    for k in range(3):
        assert _corr(sr[..., k], _bicubic(volume[..., k])) >= 0.95


def test_ct_percentile_clipping_is_reported(loaded: LoadedModel, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    hu = np.full((24, 32), -1000, np.int16)
    hu[4:20, 4:28] = (40 + 30 * _scene(16, 24, 2)).astype(np.int16)
    hu[10, 10] = 1280  # one bone voxel: above the 99.5th percentile of the non-zero voxels
    nib.save(nib.Nifti1Image(hu[..., None], np.eye(4)), tmp_path / "head.nii.gz")
    caplog.set_level(logging.WARNING)
    sr_files(loaded, [tmp_path / "head.nii.gz"], tmp_path / "out", normalization="percentile")
    notes = [r.getMessage() for r in caplog.records if "head.nii.gz" in r.getMessage()]
    assert len(notes) == 1 and "clipped" in notes[0] and "1280" in notes[0] and "%" in notes[0]
    clip = json.loads((tmp_path / "out" / "head_sr.nii.gz.json").read_text())["intensity"]["clipped"]
    p_hi = np.percentile(hu[hu != 0].astype(np.float64), 99.5)  # the policy, computed here with numpy
    assert clip["fraction_high"] == pytest.approx(np.count_nonzero(hu > p_hi) / hu.size, rel=1e-6)
    assert clip["data_max"] == 1280.0 and p_hi < 1280


def _ct_slice(path: Path, values: np.ndarray, position: float) -> Path:
    from pydicom.uid import CTImageStorage

    ds = new_instance(CTImageStorage)
    ds.SeriesInstanceUID, ds.Modality = "1.2.826.0.1.3680043.2.1143.7", "CT"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelSpacing, ds.ImageOrientationPatient = [0.7, 0.7], [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, position]
    ds.PixelData = (values + 1024).astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_ct_dicom_series_with_rescale(loaded: LoadedModel, tmp_path: Path) -> None:
    folder = tmp_path / "ct"
    folder.mkdir()
    scene = _scene(24, 32, 3)
    hu = np.where(scene > 0.6, 1500, np.where(scene < -0.5, -1000, 40 + 30 * scene)).astype(np.int16)
    for k in range(2):
        _ct_slice(folder / f"s{k}.dcm", hu if k == 0 else hu[::-1], 2.0 * k)
    out = sr_files(loaded, [folder], tmp_path / "out")[0]
    backs = sorted(out.iterdir())
    assert len(backs) == 2
    sr = pydicom.dcmread(out / "s0.dcm")
    values = sr.pixel_array.astype(np.float64) * float(sr.RescaleSlope) + float(sr.RescaleIntercept)
    assert values.min() >= -1000 and values.max() <= 1500 and values.max() > 1200
    assert _corr(values, _bicubic(hu)) >= 0.95
    assert [float(v) for v in sr.PixelSpacing] == pytest.approx([0.35, 0.35])


def test_int32_counts(loaded: LoadedModel, tmp_path: Path) -> None:
    counts = (1_100_000 + 100_000 * _scene(24, 32, 4)).astype(np.int32)
    np.save(tmp_path / "c.npy", counts)
    sr = np.load(sr_files(loaded, [tmp_path / "c.npy"], tmp_path / "out")[0])
    assert sr.dtype == np.int32 and sr.shape == (48, 64)
    assert counts.min() <= sr.min() and sr.max() <= counts.max()
    assert _corr(sr, _bicubic(counts)) >= 0.95


def test_a_model_policy_that_does_not_fit_is_refused(loaded: LoadedModel, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A model trained with data.normalization 'dtype' given 14-bit counts: refused, with the way out;
    the same policy passed explicitly is used, with a warning."""
    counts = (8000 + 900 * _scene()).astype(np.uint16)
    Image.fromarray(counts).save(tmp_path / "ir.png")
    trained_with = loaded.config.data.normalization
    loaded.config.data.normalization = "dtype"  # type: ignore[assignment]
    try:
        with pytest.raises(DataError, match=r"ir\.png: values .* 'dtype'.*--normalization minmax"):
            sr_files(loaded, [tmp_path / "ir.png"], tmp_path / "out")
        assert not (tmp_path / "out" / "ir_sr.png").exists()
        caplog.set_level(logging.WARNING)
        sr_files(loaded, [tmp_path / "ir.png"], tmp_path / "out", normalization="dtype")
        assert any("'dtype'" in r.getMessage() for r in caplog.records)
        assert sr_files(loaded, [tmp_path / "ir.png"], tmp_path / "mm", normalization="minmax")
    finally:
        loaded.config.data.normalization = trained_with


def test_dark_and_constant_8bit_images_run_on_the_type_range(loaded: LoadedModel, tmp_path: Path) -> None:
    """8-bit photos live on 0..255 whatever they hold: a dark one (0..20) and a constant one are super-resolved
    (they were refused as 'dtype that does not fit'); the output stays at their grey levels."""
    dark = np.clip(10 + 10 * _scene(24, 32, 5), 0, 20).astype(np.uint8)
    Image.fromarray(dark).save(tmp_path / "dark.png")
    Image.fromarray(np.full((24, 32), 7, np.uint8)).save(tmp_path / "flat.png")
    outs = sr_files(loaded, [tmp_path / "dark.png", tmp_path / "flat.png"], tmp_path / "out")
    sr_dark, sr_flat = (np.asarray(Image.open(p)) for p in outs)
    assert sr_dark.dtype == np.uint8 and sr_dark.shape == (24 * SCALE, 32 * SCALE)
    # in the input's units: the mean grey level kept to within a few levels of 255, nothing stretched
    assert abs(float(sr_dark.mean()) - float(_bicubic(dark).mean())) <= 3 and sr_dark.max() <= 40
    assert abs(float(sr_flat.mean()) - 7) <= 3
    record = json.loads(Path(f"{outs[0]}.json").read_text())["intensity"]
    assert (record["policy"], record["lo"], record["hi"]) == ("dtype", 0.0, 255.0)
