"""Synthetic thick-slice volumes (NIfTI and DICOM series) and stand-in models for the volume tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from pydicom.uid import MRImageStorage, generate_uid
from torch import nn

from tests._dicom import new_instance


def phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A smooth blob with texture inside (float32, background exactly 0)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g**2 for g in grids) < 0.8
    texture = 0.5 + 0.3 * np.sin(4 * grids[0]) * np.cos(3 * grids[1]) + 0.1 * rng.random(shape)
    return (inside * texture * 1000).astype(np.float32)


def write_nifti(path: Path, data: np.ndarray, zooms: tuple[float, float, float], *,
                affine: np.ndarray | None = None) -> Path:
    """A NIfTI with a rotated, shifted affine of the given zooms (unless ``affine`` is given)."""
    if affine is None:
        c, s = np.cos(0.3), np.sin(0.3)
        rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
        affine = np.eye(4)
        affine[:3, :3] = rotation @ np.diag(zooms)
        affine[:3, 3] = [-40.0, 12.5, 7.0]
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, 1)
    img.set_qform(affine, 1)
    nib.save(img, str(path))
    return path


def write_dicom_series(folder: Path, data: np.ndarray, *, pixel: float = 0.8, positions: list[float] | None = None,
                       thickness: float = 5.0, spacing: float = 6.0) -> Path:
    """A 12-bit MR series (slices, rows, cols) with an oblique orientation, one file per slice.

    positions: the slice offsets along the normal in mm (default: ``spacing`` apart).
    """
    folder.mkdir(parents=True, exist_ok=True)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(0.1), np.sin(0.1)])
    normal = np.cross(row, col)
    origin = np.array([-100.0, -90.0, 20.0])
    offsets = positions if positions is not None else [k * spacing for k in range(data.shape[0])]
    series = generate_uid()
    for k, image in enumerate(data):
        ds = new_instance(MRImageStorage)
        ds.PatientName, ds.Modality, ds.SeriesInstanceUID = "TEST", "MR", series
        ds.SeriesDescription, ds.InstanceNumber = "T2 thick", k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
        ds.Rows, ds.Columns = image.shape
        ds.PixelSpacing = [pixel, pixel]
        ds.ImageOrientationPatient = [*row.tolist(), *col.tolist()]
        ds.ImagePositionPatient = (origin + offsets[k] * normal).tolist()
        ds.SliceThickness, ds.SpacingBetweenSlices = thickness, spacing
        ds.SliceLocation = float(offsets[k])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.clip(image, 0, 4095).astype("<u2").tobytes()
        ds.save_as(folder / f"IM{k + 1:04d}.dcm", enforce_file_format=True)
    return folder


class IdentityModel(nn.Module):
    """Stands in for an SRModel: returns its condition (the B-spline-interpolated slices) unchanged.

    ``batches`` records the batch size of every call (memory is bounded by it).
    """

    is_baseline = False

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # parameters() gives the device
        self.batches: list[int] = []
        self.codec = None

    def sample(self, cond: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.batches.append(int(cond.shape[0]))
        return cond.clone()


class NoisyModel(IdentityModel):
    """The condition plus seeded noise (a sampler with randomness): tests the std and the consistency."""

    def sample(self, cond: torch.Tensor, generator: torch.Generator | None = None, x0_hook: Any = None,
               **kwargs: Any) -> torch.Tensor:
        self.batches.append(int(cond.shape[0]))
        noise = torch.randn(cond.shape, generator=generator, device=cond.device)
        return (cond + 0.05 * noise).clamp(0, 1)
