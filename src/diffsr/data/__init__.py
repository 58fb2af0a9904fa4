"""Data: readers and writers, intensity normalisation, degradations, datasets and tiling.

See docs/data.md. pydicom, nibabel and tifffile are imported only when a file needs them.
"""

from diffsr.data.datasets import (
    EvalItem,
    ImageItem,
    SRDataset,
    build_datasets,
    collate_pad,
    load_eval_items,
    to_channels,
)
from diffsr.data.degrade import (
    DEGRADATIONS,
    Degradation,
    add_gaussian_noise,
    add_poisson_noise,
    bicubic_down,
    build_degradation,
    column_stripes,
    gain_nonuniformity,
    gaussian_blur,
    infrared_degrade,
    kspace_keep_slices,
    kspace_measure,
    kspace_truncate,
    kspace_upsample,
    realesrgan_degrade,
    reduce_contrast,
    upsample,
)
from diffsr.data.io import FORMATS, IMAGE_SUFFIXES, Record, format_of, list_inputs, read, write
from diffsr.data.normalize import Intensity, default_policy, fit_intensity
from diffsr.data.slice_profile import SliceProfile, SliceProfileConfig, SliceProfileDegradation
from diffsr.data.tiling import tiled_apply

__all__ = [
    "DEGRADATIONS",
    "FORMATS",
    "IMAGE_SUFFIXES",
    "Degradation",
    "EvalItem",
    "ImageItem",
    "Intensity",
    "Record",
    "SRDataset",
    "SliceProfile",
    "SliceProfileConfig",
    "SliceProfileDegradation",
    "add_gaussian_noise",
    "add_poisson_noise",
    "bicubic_down",
    "build_datasets",
    "build_degradation",
    "collate_pad",
    "column_stripes",
    "default_policy",
    "fit_intensity",
    "format_of",
    "gain_nonuniformity",
    "gaussian_blur",
    "infrared_degrade",
    "kspace_keep_slices",
    "kspace_measure",
    "kspace_truncate",
    "kspace_upsample",
    "list_inputs",
    "load_eval_items",
    "read",
    "realesrgan_degrade",
    "reduce_contrast",
    "tiled_apply",
    "to_channels",
    "upsample",
    "write",
]
