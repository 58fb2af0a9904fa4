"""Every malformed input is a DataError: one line, naming the offending file."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.uid import MRImageStorage

from diffsr.config import DataConfig
from diffsr.core.errors import DataError
from diffsr.data.datasets import build_datasets, load_eval_items
from diffsr.data.io import list_inputs, read
from tests._dicom import new_instance


def assert_one_line(err: pytest.ExceptionInfo[DataError], name: str) -> str:
    message = str(err.value)
    assert "\n" not in message and "\r" not in message
    assert name in message, message
    return message


def save_png(path: Path, h: int, w: int, value: int = 128) -> Path:
    Image.fromarray(np.full((h, w), value, np.uint8)).save(path)
    return path


def test_truncated_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    full = tmp_path / "full.png"
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(full)
    bad = tmp_path / "truncated.png"
    bad.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DataError) as err:
        read(bad)
    assert_one_line(err, "truncated.png")


def test_truncated_16bit_rgb_png(tmp_path: Path) -> None:
    from diffsr.data.io import _png16_write

    full = tmp_path / "full16.png"
    _png16_write(full, np.random.default_rng(1).integers(0, 65536, (32, 32, 3), dtype=np.uint16))
    bad = tmp_path / "cut16.png"
    bad.write_bytes(full.read_bytes()[:200])
    with pytest.raises(DataError) as err:
        read(bad)
    assert_one_line(err, "cut16.png")


def test_text_file_named_png(tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image\nsecond line\n")
    with pytest.raises(DataError) as err:
        read(bad)
    assert "not a PNG" in assert_one_line(err, "notes.png")


def test_text_file_named_tiff_and_nifti(tmp_path: Path) -> None:
    for name in ("fake.tif", "fake.nii.gz", "fake.dcm", "fake.npy"):
        (tmp_path / name).write_text("hello\nworld\n")
        with pytest.raises(DataError) as err:
            read(tmp_path / name)
        assert_one_line(err, name)


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    ds = new_instance(MRImageStorage)
    ds.PatientName, ds.Modality = "TEST", "MR"
    path = tmp_path / "nopixels.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DataError) as err:
        read(path)
    assert "no pixel data" in assert_one_line(err, "nopixels.dcm")
    with pytest.raises(DataError) as err:  # as a series folder too
        read(tmp_path)
    assert_one_line(err, "nopixels.dcm")


def test_nifti_with_nan(tmp_path: Path) -> None:
    data = np.ones((8, 9, 4), np.float32)
    data[2, 3, 1] = np.nan
    data[5, 5, 2] = np.inf
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(DataError) as err:
        read(path)
    assert "NaN" in assert_one_line(err, "nan.nii.gz")
    record = read(path, nan_policy="zero")
    vol = np.moveaxis(record.array[:, 0], 0, 2)
    assert vol[2, 3, 1] == 0 and vol[5, 5, 2] == 0 and np.isfinite(vol).all()
    assert vol.sum() == data.size - 2


def test_nifti_volume_index_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), path)
    with pytest.raises(DataError) as err:
        read(path, volume_index=2)
    assert_one_line(err, "four.nii.gz")


def test_empty_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        list_inputs(empty)
    assert_one_line(err, "empty_dir")
    with pytest.raises(DataError) as err:
        read(empty)
    assert_one_line(err, "empty_dir")
    with pytest.raises(DataError) as err:
        build_datasets(DataConfig(train=str(empty), scale=4, patch_size=16))
    assert_one_line(err, "empty_dir")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read(tmp_path / "nowhere.png")
    assert_one_line(err, "nowhere.png")


def test_tiny_image_vs_scale(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    save_png(folder / "big.png", 64, 64)
    save_png(folder / "tiny.png", 5, 5)
    with pytest.raises(DataError) as err:
        build_datasets(DataConfig(train=str(folder), val=str(folder), scale=4, patch_size=16))
    message = assert_one_line(err, "tiny.png")
    assert "5x5" in message and "scale 4" in message
    with pytest.raises(DataError) as err:
        load_eval_items(folder / "tiny.png", scale=4)
    assert_one_line(err, "tiny.png")


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("five_d.npy", np.zeros((2, 1, 1, 8, 8), np.float32)),
        ("one_d.npy", np.zeros(16, np.float32)),
        ("complex.npy", np.zeros((8, 8), np.complex64)),
        ("bool.npy", np.zeros((8, 8), bool)),
        ("nan.npy", np.full((8, 8), np.nan, np.float32)),
    ],
)
def test_bad_npy(tmp_path: Path, name: str, array: np.ndarray) -> None:
    np.save(tmp_path / name, array)
    with pytest.raises(DataError) as err:
        read(tmp_path / name)
    assert_one_line(err, name)


def test_object_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError) as err:
        read(tmp_path / "object.npy")
    assert_one_line(err, "object.npy")


def test_hr_lr_size_mismatch(tmp_path: Path) -> None:
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    save_png(hr_dir / "pair.png", 64, 64)
    save_png(lr_dir / "pair.png", 20, 16)
    cfg = DataConfig(train=str(hr_dir), val=str(hr_dir), lr_dir=str(lr_dir), scale=4, patch_size=16)
    with pytest.raises(DataError) as err:
        build_datasets(cfg)
    message = assert_one_line(err, str(hr_dir / "pair.png"))
    assert str(lr_dir / "pair.png") in message


def test_missing_lr_partner(tmp_path: Path) -> None:
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    save_png(hr_dir / "alone.png", 64, 64)
    cfg = DataConfig(train=str(hr_dir), val=str(hr_dir), lr_dir=str(lr_dir), scale=4, patch_size=16)
    with pytest.raises(DataError) as err:
        build_datasets(cfg)
    assert_one_line(err, "alone.png")


def test_mixed_dicom_series_folder(shared_data: Path, tmp_path: Path) -> None:
    import shutil

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(shared_data / "medical/brainix/FLAIR/IM-0001-0001.dcm", mixed / "a.dcm")
    shutil.copy(shared_data / "medical/brainix/T1/IM-0001-0008.dcm", mixed / "b.dcm")
    with pytest.raises(DataError) as err:
        read(mixed)
    assert_one_line(err, "mixed")
