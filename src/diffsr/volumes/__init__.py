"""Isotropic volumes from thick-slice scans: self-supervised through-plane super-resolution.

``diffsr iso`` (docs/volumes.md): read a NIfTI volume or a DICOM series with its geometry
(:mod:`.volume`), find the thick axis and the factor (:mod:`.plan`), train any preset on the
scan's own in-plane slices degraded along one axis with the slice profile (:mod:`.training`),
apply the model across the slices in both through-plane orientations, combine them, optionally
keep the result consistent with the measured slices (:mod:`.reconstruct`), and write the
volume with its new geometry (:mod:`.pipeline`).
"""

from diffsr.volumes.pipeline import IsoOptions, run_iso
from diffsr.volumes.plan import IsoPlan, plan_iso, read_profile
from diffsr.volumes.reconstruct import Reconstruction, consistency_residual, fourier_combine, reconstruct
from diffsr.volumes.training import iso_config, train_iso, training_slices
from diffsr.volumes.volume import Volume, read_volume, write_volume

__all__ = [
    "IsoOptions",
    "IsoPlan",
    "Reconstruction",
    "Volume",
    "consistency_residual",
    "fourier_combine",
    "iso_config",
    "plan_iso",
    "read_profile",
    "read_volume",
    "reconstruct",
    "run_iso",
    "train_iso",
    "training_slices",
    "write_volume",
]
