"""TIFF round trips (16-bit grey and RGB, float32, pages) against tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from diffsr.data.io import read, write
from tests.data.io._helpers import unit_of


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(3).integers(0, 65536, (20, 30), dtype=np.uint16),
        np.random.default_rng(4).integers(0, 65536, (20, 30, 3), dtype=np.uint16),
        np.random.default_rng(5).normal(100.0, 30.0, (20, 30)).astype(np.float32),
        np.random.default_rng(6).integers(0, 4096, (4, 20, 30), dtype=np.uint16),  # pages
    ],
    ids=["u16", "u16rgb", "float32", "pages"],
)
def test_tiff_round_trip(tmp_path: Path, array: np.ndarray) -> None:
    tifffile.imwrite(tmp_path / "in.tif", array, photometric="rgb" if array.ndim == 3 and array.shape[-1] == 3
                     else "minisblack")
    record = read(tmp_path / "in.tif")
    assert record.meta["dtype"] == str(array.dtype)
    if array.ndim == 3 and array.shape[-1] == 3:
        np.testing.assert_array_equal(np.moveaxis(record.array[0], 0, -1), array)
    elif array.ndim == 3:
        np.testing.assert_array_equal(record.array[:, 0], array)
    else:
        np.testing.assert_array_equal(record.array[0, 0], array)
    unit, intensity = unit_of(record, "minmax")
    out = write(tmp_path / "out.tif", unit, like=record, intensity=intensity)
    back = tifffile.imread(out)
    assert back.dtype == array.dtype and back.shape == array.shape
    if array.dtype.kind == "f":
        np.testing.assert_allclose(back, array, rtol=1e-6, atol=1e-4)  # float32 round trip via float64
    else:
        np.testing.assert_array_equal(back, array)


# ----------------------------------------------------------------------------- colour models (issue 18)


def test_cmyk_tiff_is_refused_never_read_as_rgba(tmp_path: Path) -> None:
    from diffsr.core.errors import DataError

    cmyk = np.random.default_rng(1).integers(0, 256, (16, 20, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "ink.tif", cmyk, photometric="separated")
    with pytest.raises(DataError, match="CMYK") as info:
        read(tmp_path / "ink.tif")
    assert str(info.value).startswith(str(tmp_path / "ink.tif")) and "\n" not in str(info.value)


def test_pillow_cmyk_tiff_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    from diffsr.core.errors import DataError

    Image.new("CMYK", (12, 10), (10, 20, 30, 40)).save(tmp_path / "pil.tif")
    with pytest.raises(DataError, match="CMYK"):
        read(tmp_path / "pil.tif")


def test_palette_tiff_reads_as_the_rgb_of_its_colour_map(tmp_path: Path) -> None:
    index = np.random.default_rng(2).integers(0, 3, (10, 12), dtype=np.uint8)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :3] = [[65535, 0, 257 * 40], [0, 65535, 257 * 50], [0, 0, 257 * 60]]  # red, green, a grey-blue
    tifffile.imwrite(tmp_path / "pal.tif", index, photometric="palette", colormap=cmap)
    record = read(tmp_path / "pal.tif")
    expected = (cmap[:, index] // 257).astype(np.float32)  # (3, H, W): the 8-bit palette entries
    assert record.array.shape == (1, 3, 10, 12) and record.meta["dtype"] == "uint8"
    np.testing.assert_array_equal(record.array[0], expected)


def test_planar_rgb_tiff_is_rgb_not_three_pages(tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (3, 10, 12), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate")
    record = read(tmp_path / "planar.tif")
    assert record.array.shape == (1, 3, 10, 12)
    np.testing.assert_array_equal(record.array[0], rgb)


def test_miniswhite_tiff_is_written_back_miniswhite(tmp_path: Path) -> None:
    grey = np.random.default_rng(4).integers(0, 256, (10, 12), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "mw.tif", grey, photometric="miniswhite")
    record = read(tmp_path / "mw.tif")
    unit, intensity = unit_of(record, "dtype")
    out = write(tmp_path / "out.tif", unit, like=record, intensity=intensity)
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].photometric.name == "MINISWHITE"  # a viewer shows it as the input
    np.testing.assert_array_equal(tifffile.imread(out), grey)


def test_int32_tiff_round_trips_exactly(tmp_path: Path) -> None:
    """int32 counts near 1.6e7 (below 2**24, which float32 holds exactly): minmax and its inverse give
    every count back, in int32 (the type's range, -2**31..2**31 - 1, would leave them 1/6000 of [0, 1])."""
    values = (16_000_000 + np.random.default_rng(5).integers(0, 700_000, (12, 14))).astype(np.int32)
    tifffile.imwrite(tmp_path / "i32.tif", values)
    record = read(tmp_path / "i32.tif")
    unit, intensity = unit_of(record, "minmax")
    back = tifffile.imread(write(tmp_path / "o.tif", unit, like=record, intensity=intensity))
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, values)


def test_other_colour_spaces_are_refused(tmp_path: Path) -> None:
    from diffsr.core.errors import DataError

    lab = np.random.default_rng(6).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "lab.tif", lab, photometric="cielab")
    with pytest.raises(DataError, match="photometric 'cielab'"):
        read(tmp_path / "lab.tif")


def test_a_tiff_with_several_series_says_which_it_reads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Pages of another size form another series: the first is read, the others are named, not dropped silently."""
    first = np.arange(256, dtype=np.uint8).reshape(16, 16)
    tifffile.imwrite(tmp_path / "two.tif", first)
    tifffile.imwrite(tmp_path / "two.tif", np.zeros((20, 20), np.uint8), append=True)
    with caplog.at_level("WARNING"):
        record = read(tmp_path / "two.tif")
    np.testing.assert_array_equal(record.array[0, 0], first)
    assert "2 image series; reading the first (16x16), ignoring the other(s) (20x20)" in caplog.text
