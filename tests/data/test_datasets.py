"""Datasets: patches, masks, reproducible randomness, pairing, volumes, splits."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from diffsr.config import DataConfig, DegradationConfig
from diffsr.data.datasets import (
    SAMPLES,
    ImageItem,
    SRDataset,
    build_datasets,
    collate_pad,
)
from tests.data._helpers import bicubic_lr


def write_pngs(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"img_{i:02d}.png")
        images.append(img)
    return images


# ----------------------------------------------------------------------------- built-in samples


def test_builtin_samples_items() -> None:
    train, val = build_datasets(DataConfig(scale=4, patch_size=32, batch_size=4))
    assert len(train.items) == len(list((SAMPLES / "train").glob("*.png")))
    assert len(val.items) == len(list((SAMPLES / "val").glob("*.png")))
    item = train[0]
    assert item["hr"].shape == (1, 32, 32) and item["lr"].shape == (1, 8, 8)
    assert item["lr_up"].shape == (1, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert item["paired"].dtype == torch.bool and bool(item["paired"])
    for key in ("hr", "lr", "lr_up"):
        assert item[key].min() >= 0 and item[key].max() <= 1
    # synthetic pair: LR is the bicubic degradation of the HR patch; lr_up its bicubic upsampling
    torch.testing.assert_close(item["lr"], bicubic_lr(item["hr"][None], 4)[0], rtol=0, atol=1e-6)
    up = F.interpolate(item["lr"][None], scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(item["lr_up"], up[0], rtol=0, atol=1e-6)
    # 16-bit sample: normalised by 65535 (dtype policy), not by 255
    mri = next(i for i, it in enumerate(train.items) if it.name.startswith("mri"))
    raw = np.asarray(Image.open(SAMPLES / "train" / f"{train.items[mri].name}.png"))
    np.testing.assert_allclose(train.items[mri].hr[0], raw / 65535.0, atol=1e-7)


def test_random_crops_are_reproducible_per_seed_epoch_and_index() -> None:
    cfg = DataConfig(scale=2, patch_size=32, degradation=DegradationConfig(name="blur_noise"))
    train, _ = build_datasets(cfg, seed=5)
    again, _ = build_datasets(cfg, seed=5)  # e.g. after a resume
    train.set_epoch(3)
    again.set_epoch(3)
    a, b = train[4], again[4]
    for key in ("hr", "lr", "lr_up", "mask"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    train.set_epoch(4)
    assert not torch.equal(train[4]["hr"], a["hr"])
    other, _ = build_datasets(cfg, seed=6)
    other.set_epoch(3)
    assert not torch.equal(other[4]["hr"], a["hr"])


def test_validation_is_deterministic_centre_crops() -> None:
    train, val = build_datasets(DataConfig(scale=4, patch_size=32))
    first = val[1]
    val.set_epoch(7)
    second = val[1]
    torch.testing.assert_close(first["hr"], second["hr"], rtol=0, atol=0)
    # the centre crop of side 2 x patch_size of the 256 x 256 sample
    hr_full = torch.from_numpy(val.items[1].hr)
    torch.testing.assert_close(first["hr"], hr_full[:, 96:160, 96:160], rtol=0, atol=0)
    assert first["mask"].min() == 1


# ----------------------------------------------------------------------------- padding and collation


def test_small_image_is_reflect_padded_with_zero_mask() -> None:
    img = np.random.default_rng(0).random((1, 20, 24)).astype(np.float32)
    ds = SRDataset([ImageItem("small", hr=img)], scale=4, patch_size=32, augment=False)
    item = ds[0]
    assert item["hr"].shape == (1, 32, 32)
    assert item["mask"][0, :20, :24].min() == 1 and item["mask"].sum() == 20 * 24
    torch.testing.assert_close(item["hr"][:, :20, :24], torch.from_numpy(img), rtol=0, atol=0)
    # reflect padding: row 20 mirrors row 18
    torch.testing.assert_close(item["hr"][:, 20, :24], torch.from_numpy(img)[:, 18], rtol=0, atol=0)
    augmented = SRDataset([ImageItem("small", hr=img)], scale=4, patch_size=32)[0]
    assert augmented["mask"].sum() == 20 * 24


def test_collate_pad_variable_sizes() -> None:
    items = [ImageItem("a", hr=np.full((1, 40, 24), 0.5, np.float32)),
             ImageItem("b", hr=np.full((1, 16, 32), 0.25, np.float32))]
    ds = SRDataset(items, scale=4, patch_size=32, train=False, max_size=64)
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate_pad)))
    assert batch["hr"].shape == (2, 1, 40, 32) and batch["lr"].shape == (2, 1, 10, 8)
    assert batch["mask"].shape == (2, 1, 40, 32) and batch["paired"].tolist() == [True, True]
    assert batch["mask"][0].sum() == 40 * 24 and batch["mask"][1].sum() == 16 * 32
    assert batch["mask"][0, 0, :, 24:].max() == 0 and batch["hr"][1, 0, 16:].max() == 0
    assert batch["name"] == ["a", "b"]


# ----------------------------------------------------------------------------- pairs


def test_real_pairs_are_aligned(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    for name in ("p0.png", "p1.png"):
        lr = rng.integers(0, 256, (24, 20), dtype=np.uint8)
        hr = np.kron(lr, np.ones((4, 4), np.uint8))  # HR = LR blown up: block means equal LR
        Image.fromarray(hr).save(hr_dir / name)
        Image.fromarray(lr).save(lr_dir / name)
    cfg = DataConfig(train=str(hr_dir), val=str(hr_dir), lr_dir=str(lr_dir), scale=4, patch_size=32)
    train, _ = build_datasets(cfg, seed=0)
    for index in range(len(train)):
        item = train[index]
        assert bool(item["paired"]) and item["lr"].shape == (1, 8, 8)
        block_mean = F.avg_pool2d(item["hr"][None], 4)[0]
        torch.testing.assert_close(block_mean, item["lr"], rtol=0, atol=1e-6)


def test_unpaired_lr_items(tmp_path: Path) -> None:
    write_pngs(tmp_path / "hr", [(64, 64)])
    write_pngs(tmp_path / "lr_only", [(20, 18), (16, 16)], seed=3)
    hr = str(tmp_path / "hr")
    cfg = DataConfig(train=hr, val=hr, unpaired_dir=str(tmp_path / "lr_only"), scale=2, patch_size=16,
                     batch_size=1)
    train, _ = build_datasets(cfg)
    unpaired = [train[i] for i in range(len(train)) if not bool(train[i]["paired"])]
    assert len(unpaired) == 2
    for item in unpaired:
        assert item["lr"].shape == (1, 8, 8) and item["hr"].shape == (1, 16, 16)
        torch.testing.assert_close(item["hr"], item["lr_up"], rtol=0, atol=0)
        assert item["mask"].min() == 1


# ----------------------------------------------------------------------------- folders, splits, volumes


def test_split_by_file_is_seeded_and_disjoint(tmp_path: Path) -> None:
    write_pngs(tmp_path / "imgs", [(32, 32)] * 10)
    cfg = DataConfig(train=str(tmp_path / "imgs"), val_fraction=0.2, scale=2, patch_size=16)
    train, val = build_datasets(cfg, seed=1)
    names_train = {it.name for it in train.items}
    names_val = {it.name for it in val.items}
    assert len(names_val) == 2 and len(names_train) == 8 and not names_train & names_val
    _, val_again = build_datasets(cfg, seed=1)
    assert {it.name for it in val_again.items} == names_val
    one = DataConfig(train=str(tmp_path / "imgs"), val_fraction=0.01, scale=2, patch_size=16)
    assert len(build_datasets(one)[1].items) == 1  # at least one val image


def test_volume_slices_foreground_and_split(shared_data: Path) -> None:
    src = shared_data / "medical/ct/CT_pitch.nii.gz"
    cfg = DataConfig(train=str(src), scale=4, patch_size=32, normalization="percentile", min_foreground=0.2,
                     val_fraction=0.25)
    train, val = build_datasets(cfg)
    vol = nib.load(src).get_fdata()
    nonzero = vol[vol != 0]
    lo, hi = np.percentile(nonzero, [0.5, 99.5])
    unit = np.clip((vol - lo) / (hi - lo), 0, 1)
    fg = (unit > 0.05).mean(axis=(0, 1))  # per slice along axis 2
    expected = [i for i in range(vol.shape[2]) if fg[i] >= 0.2]
    assert 0 < len(expected) < vol.shape[2]
    got = sorted(int(it.name.rsplit("_s", 1)[1]) for it in train.items + val.items)
    assert got == expected
    val_slices = [int(it.name.rsplit("_s", 1)[1]) for it in val.items]
    assert val_slices == expected[-len(val_slices):] and len(val_slices) == round(0.25 * len(expected))
    np.testing.assert_allclose(val.items[0].hr[0], unit[:, :, val_slices[0]], atol=1e-6)


def test_channels_conversion(shared_data: Path) -> None:
    folder = shared_data / "natural/set5"
    cfg = DataConfig(train=str(folder), val=str(folder), channels=1, scale=4, patch_size=32)
    grey, _ = build_datasets(cfg)
    rgb = np.asarray(Image.open(folder / "img_001.png").convert("RGB"), dtype=np.float64) / 255
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    item = next(it for it in grey.items if it.name == "img_001")
    np.testing.assert_allclose(item.hr[0], luma, atol=1e-6)
    ir = shared_data / "infrared/roadscene/test"
    three, _ = build_datasets(DataConfig(train=str(ir), val=str(ir), channels=3, scale=4, patch_size=32))
    assert three.items[0].hr.shape[0] == 3 and (three.items[0].hr[0] == three.items[0].hr[2]).all()
    assert three[0]["hr"].shape == (3, 32, 32)


def test_cache_off_gives_the_same_items(tmp_path: Path) -> None:
    write_pngs(tmp_path / "imgs", [(40, 36), (48, 48)])
    base = {"train": str(tmp_path / "imgs"), "val": str(tmp_path / "imgs"), "scale": 2, "patch_size": 16}
    cached, _ = build_datasets(DataConfig(**base, cache=True))
    lazy, _ = build_datasets(DataConfig(**base, cache=False))
    assert lazy.items[0].hr is None and lazy.items[0].hr_ref is not None
    for i in range(len(cached)):
        torch.testing.assert_close(cached[i]["hr"], lazy[i]["hr"], rtol=0, atol=0)


def test_dataloader_batches() -> None:
    train, _ = build_datasets(DataConfig(scale=4, patch_size=32, batch_size=4))
    batch = next(iter(DataLoader(train, batch_size=4, shuffle=True, collate_fn=collate_pad,
                                 generator=torch.Generator().manual_seed(0))))
    assert batch["hr"].shape == (4, 1, 32, 32) and batch["paired"].shape == (4,)
