"""PNG reading and writing: 8/16-bit, grey and RGB (a 16-bit colour PNG encoded here by hand with every
filter type, from the PNG spec), alpha, float sources, and slice folders written atomically.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffsr.data.io import read, write
from diffsr.data.normalize import default_policy
from tests.data.io._helpers import unit_of


def png16_by_hand(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG whose row r uses filter type r % 5 (None, Sub, Up, Average, Paeth)."""
    h, w, _ = rgb.shape
    raw = rgb.astype(">u2").reshape(h, -1).view(np.uint8).astype(np.int64)  # (h, w * 6) bytes
    bpp = 6
    out = bytearray()
    for y in range(h):
        ftype = y % 5
        line = raw[y]
        up = raw[y - 1] if y > 0 else np.zeros_like(line)
        left = np.concatenate([np.zeros(bpp, np.int64), line[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        if ftype == 0:
            pred = np.zeros_like(line)
        elif ftype == 1:
            pred = left
        elif ftype == 2:
            pred = up
        elif ftype == 3:
            pred = (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        out.append(ftype)
        out += ((line - pred) % 256).astype(np.uint8).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b""))


def png16_decode_filter0(path: Path) -> np.ndarray:
    """Decode a 16-bit RGB PNG written with filter 0 on every row (what our writer emits)."""
    data = path.read_bytes()
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype = ihdr[:4]
    assert (depth, ctype) == (16, 2)
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 6)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].copy().view(">u2").astype(np.uint16).reshape(h, w, 3)


def test_roadscene_png_round_trip(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "infrared/roadscene/train/FLIR_00006.png"
    expected = np.asarray(Image.open(src))
    record = read(src)
    assert record.array.shape == (1, 1, 512, 640) and record.array.dtype == np.float32
    assert record.meta["dtype"] == "uint8" and record.meta["mode"] == "L"
    np.testing.assert_array_equal(record.array[0, 0], expected)
    assert default_policy(record) == "dtype"
    unit, intensity = unit_of(record, "dtype")
    assert (intensity.lo, intensity.hi) == (0.0, 255.0)
    out = write(tmp_path / "out.png", unit, like=record, intensity=intensity)
    with Image.open(out) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), expected)


def test_set5_rgb_png(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "natural/set5/img_005.png"
    expected = np.asarray(Image.open(src).convert("RGB"))
    record = read(src)
    assert record.array.shape == (1, 3, 344, 228)
    np.testing.assert_array_equal(np.moveaxis(record.array[0], 0, -1), expected)
    unit, intensity = unit_of(record, "dtype")
    out = write(tmp_path / "rgb.png", unit, like=record, intensity=intensity)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)


def test_png16_grey_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65536, (24, 40), dtype=np.uint16)
    Image.fromarray(img).save(tmp_path / "g16.png")
    record = read(tmp_path / "g16.png")
    assert record.meta["dtype"] == "uint16" and record.meta["range"] == (0.0, 65535.0)
    np.testing.assert_array_equal(record.array[0, 0], img)
    unit, intensity = unit_of(record, "dtype")
    out = write(tmp_path / "o16.png", unit, like=record, intensity=intensity)
    back = np.asarray(Image.open(out))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, img)


def test_png16_rgb_every_filter_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 65536, (11, 9, 3), dtype=np.uint16)
    png16_by_hand(tmp_path / "c16.png", img)
    record = read(tmp_path / "c16.png")
    assert record.meta["dtype"] == "uint16"
    np.testing.assert_array_equal(np.moveaxis(record.array[0], 0, -1), img)
    unit, intensity = unit_of(record, "dtype")
    out = write(tmp_path / "o.png", unit, like=record, intensity=intensity)
    np.testing.assert_array_equal(png16_decode_filter0(out), img)


def test_png_alpha_is_dropped(tmp_path: Path) -> None:
    rgba = np.random.default_rng(2).integers(0, 256, (8, 10, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    record = read(tmp_path / "a.png")
    assert record.array.shape == (1, 3, 8, 10) and record.meta["alpha_dropped"]
    np.testing.assert_array_equal(np.moveaxis(record.array[0], 0, -1), rgba[..., :3])


def test_float_png_source_writes_16bit_unit(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.linspace(-3.0, 5.0, 64, dtype=np.float32).reshape(8, 8))
    record = read(tmp_path / "f.npy")
    unit, intensity = unit_of(record, "minmax")
    out = write(tmp_path / "f.png", unit, like=record, intensity=intensity, fmt="png")
    back = np.asarray(Image.open(out))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, np.rint(unit[0, 0] * 65535).astype(np.uint16))


def test_png_slice_folder_is_written_via_a_temporary_sibling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from diffsr.data import io

    like = io.Record(np.zeros((3, 1, 8, 8), np.float32), {"format": "png", "dtype": "uint8", "bits": 8,
                                                           "range": [0, 255], "mode": "L"})
    from diffsr.data.normalize import Intensity

    intensity = Intensity(policy="fixed", lo=0.0, hi=255.0)
    unit = np.full((3, 1, 8, 8), 0.5, np.float32)
    out = io.write(tmp_path / "vol.png", unit, like=like, intensity=intensity, scale=1)
    assert out.is_dir() and len(list(out.glob("*.png"))) == 3
    assert not list(tmp_path.glob(".tmp-*"))
    # a failure half-way leaves the earlier output untouched and no partial folder
    calls = {"n": 0}
    real = io.png._write_png_file

    def flaky(path: Path, hwc: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(path, hwc)

    monkeypatch.setattr(io.png, "_write_png_file", flaky)  # where _write_png looks it up
    with pytest.raises(OSError):
        io.write(tmp_path / "vol.png", unit * 0.5, like=like, intensity=intensity, scale=1)
    assert sorted(p.name for p in out.iterdir()) == [f"vol_{i:04d}.png" for i in range(3)]
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".old-*"))


def _inflating_png(path: Path, side: int, depth: int, ctype: int) -> Path:
    """A valid PNG of side x side all-zero pixels: a few hundred KB that inflate to side^2 x bytes."""
    channels = {0: 1, 2: 3}[ctype]
    rows = 64
    block = b"\0" * ((1 + side * channels * depth // 8) * rows)  # filter byte 0 + zero samples, 64 rows
    # a full flush resets the compressor, so every block after the first compresses to the same bytes:
    # build the stream from one compressed block repeated (with the true Adler-32 of all the data)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; zlib header and checksum added here
    again = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    n, adler = side // rows, 1
    for _ in range(n):
        adler = zlib.adler32(block, adler)
    tail = b"\0" * ((1 + side * channels * depth // 8) * (side - n * rows))
    adler = zlib.adler32(tail, adler)
    body = b"\x78\xda" + again * n + packer.compress(tail) + packer.flush() + struct.pack(">I", adler)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, depth, ctype, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(("depth", "ctype"), [(16, 0), (16, 2), (8, 0)], ids=["grey16", "rgb16", "grey8"])
def test_png_that_inflates_to_400mb_is_refused_before_decoding(tmp_path: Path, depth: int, ctype: int) -> None:
    """A ~400 KB PNG whose pixels inflate to ~400 MB: refused from its IHDR (issue 18), never decoded
    (the test's traced allocations stay far below the decoded size)."""
    import tracemalloc

    from diffsr.core.errors import DataError

    side = 14142 if ctype == 0 and depth == 16 else 20000 if depth == 8 else 8165  # ~400 MB once decoded
    path = _inflating_png(tmp_path / "bomb.png", side, depth, ctype)
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="too large") as info:
            read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(str(path)) and "nothing was decoded" in str(info.value)
    assert peak < 20_000_000  # the decoded image would be 400 MB (800 MB as float32)
