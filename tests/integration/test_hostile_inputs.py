"""Hostile and malformed input through the real CLI: one ``error:`` line, exit 2, nothing written.

A generated corpus of malformed configs, images, volumes, DICOM files and checkpoints (forged
headers claiming 100000 x 100000 pixels, truncations, wrong types, NaN, wrong keys, pickled
code) goes through ``diffsr train | config | audit | sr | eval``. For every case:

- exit code 2, stderr is exactly one line starting with ``error:`` naming the culprit, no traceback;
- nothing is written outside ``--out`` (the case folder, the working directory included, is
  byte-for-byte unchanged) and nothing is left in ``--out``;
- forged sizes are refused from the header, before anything is allocated (the test process's
  memory would not survive a 100000 x 100000 float32 image: 40 GB).

Most cases call ``diffsr.cli.main`` in-process for speed; a handful run ``python -m diffsr.cli``
to prove the real entry point. The last tests check safe loading in the source: every
``torch.load`` passes ``weights_only=True``, no pickle / unsafe YAML / ``allow_pickle=True``.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.uid import MRImageStorage, generate_uid

from diffsr.cli import main
from tests._dicom import new_instance

SRC = Path(__file__).resolve().parents[2] / "src" / "diffsr"
TINY = [
    "data.patch_size=32", "data.batch_size=4", "net.width=16", "net.channel_mult=[1,2]",
    "train.log_every=1", "train.threads=1", "train.time_limit=null", "train.warmup_steps=0",
    "sample.steps=2", "process.steps=2", "train.audit=false", "train.steps=2",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step tiny run: the checkpoint every ``sr`` case starts from."""
    from diffsr.config import load_config
    from diffsr.train.trainer import Trainer

    threads = torch.get_num_threads()
    run = tmp_path_factory.mktemp("hostile") / "run"
    try:
        Trainer(load_config("demo", TINY), run, progress=False).fit()
    finally:
        torch.set_num_threads(threads)
    return run


# --------------------------------------------------------------------------- file makers


def _png(path: Path, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return path


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _forged_png(path: Path, depth: int, ctype: int, w: int = 100_000, h: int = 100_000) -> Path:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _chunk(b"IEND", b""))
    return path


def _corrupt_png(path: Path) -> Path:
    """A plausible 16 x 16 header followed by image data that is not zlib."""
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(range(200)))
                     + _chunk(b"IEND", b""))
    return path


def _forged_tiff(path: Path) -> Path:
    import tifffile

    tifffile.imwrite(path, np.zeros((8, 8), np.uint8))
    data = bytearray(path.read_bytes())
    (offset,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[offset : offset + 2])
    for i in range(count):
        entry = offset + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            if kind == 3:
                data[entry + 8 : entry + 10] = struct.pack("<H", 60_000)
            else:
                data[entry + 8 : entry + 12] = struct.pack("<I", 100_000)
    path.write_bytes(bytes(data))
    return path


def _npy_header(path: Path, descr: str, shape: tuple[int, ...], payload: bytes = b"\0" * 64) -> Path:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload)
    return path


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array, allow_pickle=True)
    return path


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _forged_nifti(path: Path) -> Path:
    _nifti(path, np.zeros((8, 8, 2), np.float32))
    data = bytearray(path.read_bytes())
    struct.pack_into("<8h", data, 40, 3, 30_000, 30_000, 30_000, 1, 1, 1, 1)  # the dim field
    path.write_bytes(bytes(data))
    return path


def _truncated(path: Path, make: Callable[[Path], Path], keep: float = 0.5) -> Path:
    full = make(path.with_name("full_" + path.name))
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _dicom(path: Path, rows: int = 16, cols: int = 16, pixels: bytes | bool | None = None,
           series: str | None = None) -> Path:
    ds = new_instance(MRImageStorage)
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientName, ds.Modality = "TEST", "MR"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if pixels is not False:
        ds.PixelData = pixels if pixels is not None else np.arange(rows * cols, dtype=np.uint16).tobytes()
        ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)
    return path


def _two_series(folder: Path) -> Path:
    folder.mkdir()
    _dicom(folder / "a.dcm", series="1.2.3.4")
    _dicom(folder / "b.dcm", series="1.2.3.5")
    return folder


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _negative_nifti(path: Path) -> Path:
    _nifti(path, np.ones((8, 8, 2), np.float32))
    data = bytearray(path.read_bytes())
    struct.pack_into("<8h", data, 40, 3, 8, -8, 2, 1, 1, 1, 1)
    path.write_bytes(bytes(data))
    return path


def _cmyk_tiff(path: Path) -> Path:
    import tifffile

    tifffile.imwrite(path, np.zeros((16, 16, 4), np.uint8), photometric="separated")
    return path


def _png_bomb(path: Path) -> Path:
    from tests.data.io.test_png import _inflating_png

    return _inflating_png(path, 14142, 16, 0)  # ~400 KB on disk, 400 MB of 16-bit grey once inflated


def _dicom_bad_spacing(path: Path) -> Path:
    _dicom(path)
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [0.5, 0.5]
    ds.save_as(path)
    path.write_bytes(path.read_bytes().replace(b"0.5\\0.5", b"abc\\def"))
    return path


def _resume_case(change: str) -> Callable[[Path, Path], list[str]]:
    def build(root: Path, trained: Path) -> list[str]:
        run = _copy_run(trained, root)
        return ["train", "demo", "--out", str(run), "--resume", *sum((["--set", t] for t in [*TINY, change]), [])]

    return build


def _config_wider_than_weights(ckpt: Path) -> None:
    text = (ckpt / "config.yaml").read_text().replace("  width: 16\n", "  width: 24\n", 1)
    (ckpt / "config.yaml").write_text(text)


class _Evil:
    def __reduce__(self) -> tuple[Callable[..., int], tuple[str]]:
        return (os.system, ("echo pwned > pwned.txt",))


# --------------------------------------------------------------------------- checkpoint corruptions


def _copy_run(trained: Path, root: Path) -> Path:
    run = root / "ckpt"
    shutil.copytree(trained, run)
    return run


def _newest(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step_*"))[-1]


def _rewrite_safetensors(path: Path, change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> None:
    from safetensors.torch import load_file, save_file

    save_file(change(load_file(str(path))), str(path))


def _ckpt_case(corrupt: Callable[[Path], None]) -> Callable[[Path, Path], list[str]]:
    def build(root: Path, trained: Path) -> list[str]:
        run = _copy_run(trained, root)
        corrupt(_newest(run))
        return ["sr", str(_png(root / "good.png")), "--ckpt", str(run), "--out", str(root / "out")]

    return build


def _cut(name: str, keep: float = 0.5) -> Callable[[Path], None]:
    def corrupt(ckpt: Path) -> None:
        data = (ckpt / name).read_bytes()
        (ckpt / name).write_bytes(data[: int(len(data) * keep)])

    return corrupt


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda ckpt: (ckpt / name).write_text(text)


def _pickled_state(ckpt: Path) -> None:
    torch.save({"step": 2, "optimizer": {}, "scheduler": {}, "payload": _Evil()}, ckpt / "state.pt")


def _renamed_keys(ckpt: Path) -> None:
    for name in ("model.safetensors", "ema.safetensors"):
        _rewrite_safetensors(ckpt / name, lambda t: {f"x.{k}": v for k, v in t.items()})


def _wrong_shapes(ckpt: Path) -> None:
    for name in ("model.safetensors", "ema.safetensors"):
        _rewrite_safetensors(ckpt / name, lambda t: {k: torch.zeros(*v.shape[:-1], v.shape[-1] + 1) if v.ndim
                                                      else v for k, v in t.items()})


def _nan_weights(ckpt: Path) -> None:
    for name in ("model.safetensors", "ema.safetensors"):
        _rewrite_safetensors(ckpt / name, lambda t: {k: v * float("nan") if v.is_floating_point() else v
                                                      for k, v in t.items()})


def _config_unknown_key(ckpt: Path) -> None:
    text = (ckpt / "config.yaml").read_text().replace("train:\n", "train:\n  stpes: 3\n", 1)
    (ckpt / "config.yaml").write_text(text)


# --------------------------------------------------------------------------- the corpus


def _yaml_case(command: str, text: str | bytes, name: str = "bad.yaml") -> Callable[[Path, Path], list[str]]:
    def build(root: Path, trained: Path) -> list[str]:
        path = root / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        extra = ["--out", str(root / "out")] if command == "train" else []
        return [command, str(path), *extra]

    return build


def _sr_case(make: Callable[[Path], Path], name: str) -> Callable[[Path, Path], list[str]]:
    def build(root: Path, trained: Path) -> list[str]:
        path = make(root / name)
        return ["sr", str(path), "--ckpt", str(trained), "--out", str(root / "out")]

    return build


def _eval_case(make: Callable[[Path], Path], name: str, *extra: str) -> Callable[[Path, Path], list[str]]:
    def build(root: Path, trained: Path) -> list[str]:
        folder = root / "data"
        folder.mkdir()
        _png(folder / "fine.png", 32)
        make(folder / name)
        return ["eval", "--data", str(folder), "--method", "bicubic", "--out", str(root / "out"), *extra]

    return build


def _argv(*args: str) -> Callable[[Path, Path], list[str]]:
    return lambda root, trained: [a.replace("{root}", str(root)).replace("{run}", str(trained)) for a in args]


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

#: id -> (builder(root, trained run) -> argv, text the error line must contain)
CASES: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    # configs: train / config / audit
    "yaml-syntax": (_yaml_case("train", "data: [unclosed\n  - x"), "invalid YAML"),
    "yaml-list": (_yaml_case("config", "- data\n- train\n"), "expected a mapping"),
    "yaml-scalar": (_yaml_case("train", "hello"), "expected a mapping"),
    "yaml-binary": (_yaml_case("config", bytes(range(256)) * 4), "bad.yaml"),
    "yaml-python-tag": (_yaml_case("train", "train: !!python/object/apply:os.system ['echo pwned']\n"),
                        "invalid YAML"),
    "yaml-billion-laughs": (_yaml_case("config", BILLION_LAUGHS), "unknown key"),
    "yaml-unknown-section": (_yaml_case("train", "trian: {steps: 3}\n"), "unknown key 'trian'"),
    "yaml-typo-key": (_yaml_case("audit", "train: {stpes: 3}\n"), "did you mean 'train.steps'"),
    "yaml-wrong-type": (_yaml_case("train", "train: {steps: many}\n"), "train.steps"),
    "yaml-nan": (_yaml_case("config", "train: {lr: .nan}\n"), "train.lr"),
    "yaml-negative": (_yaml_case("train", "train: {steps: -5}\n"), "train.steps"),
    "yaml-unknown-term": (_yaml_case("audit", "losses: {terms: [{name: l3}]}\n"), "l3"),
    "yaml-missing": (_argv("train", "{root}/nowhere.yaml", "--out", "{root}/out"), "nowhere.yaml"),
    "yaml-folder": (lambda root, run: ["config", str((root / "dir.yaml").mkdir() or root / "dir.yaml")], "dir.yaml"),
    "preset-typo": (_argv("config", "demoo"), "did you mean 'demo'"),
    "set-no-equals": (_argv("train", "demo", "--set", "train.steps", "--out", "{root}/out"), "key=value"),
    "audit-never-on": (_yaml_case("audit", "losses: {terms: [{name: l1, weight: {kind: ramp, value: 1, "
                                  "warmup: 100000, ramp_end: 100001}}]}\n"), "l1"),
    "train-bad-data": (lambda root, run: ["train", "demo", "--out", str(root / "out"), "--set",
                                          f"data.train={_truncated(root / 'cut.png', _png)}", *sum(
                                              (["--set", t] for t in TINY), [])], "cut.png"),
    # images and volumes: sr
    "png-truncated": (_sr_case(lambda p: _truncated(p, lambda q: _png(q, 64)), "cut.png"), "cut.png"),
    "png-text": (_sr_case(lambda p: (p.write_text("not an image\n"), p)[1], "notes.png"), "not a PNG"),
    "png-empty": (_sr_case(lambda p: (p.write_bytes(b""), p)[1], "empty.png"), "empty file"),
    "png-huge-8bit": (_sr_case(lambda p: _forged_png(p, 8, 0), "huge8.png"), "too large"),
    "png-huge-16bit-grey": (_sr_case(lambda p: _forged_png(p, 16, 0), "huge16.png"), "too large"),
    "png-huge-16bit-rgb": (_sr_case(lambda p: _forged_png(p, 16, 2), "huge16rgb.png"), "too large"),
    "png-corrupt-data": (_sr_case(_corrupt_png, "corrupt.png"), "corrupt.png"),
    "png-too-small": (_sr_case(lambda p: _png(p, 2), "tiny.png"), "too small"),
    "tiff-garbage": (_sr_case(lambda p: (p.write_bytes(b"II*\0" + bytes(60)), p)[1], "junk.tif"), "junk.tif"),
    "tiff-huge": (_sr_case(_forged_tiff, "huge.tif"), "too large"),
    "npy-nan": (_sr_case(lambda p: _npy(p, np.full((16, 16), np.nan, np.float32)), "nan.npy"), "NaN"),
    "npy-object": (_sr_case(lambda p: _npy(p, np.array([{"a": 1}], dtype=object)), "obj.npy"), "obj.npy"),
    "npy-huge": (_sr_case(lambda p: _npy_header(p, "<f4", (100_000, 100_000)), "huge.npy"), "too large"),
    "npy-short": (_sr_case(lambda p: _npy_header(p, "<f4", (64, 64)), "short.npy"), "truncated"),
    "npy-complex": (_sr_case(lambda p: _npy(p, np.ones((16, 16), np.complex64)), "cplx.npy"), "data type"),
    "npy-5-channels": (_sr_case(lambda p: _npy(p, np.ones((1, 5, 16, 16), np.float32)), "five.npy"), "shape"),
    "nifti-truncated": (_sr_case(lambda p: _truncated(p, lambda q: _nifti(q, np.ones((16, 16, 4), np.float32))),
                                 "cut.nii"), "cut.nii"),
    "nifti-nan": (_sr_case(lambda p: _nifti(p, np.full((16, 16, 2), np.nan, np.float32)), "nan.nii.gz"), "NaN"),
    "nifti-huge": (_sr_case(_forged_nifti, "huge.nii"), "too large"),
    "nifti-5d": (_sr_case(lambda p: _nifti(p, np.ones((8, 8, 2, 2, 2), np.float32)), "five.nii.gz"), "shape"),
    "dicom-garbage": (_sr_case(lambda p: (p.write_text("DICM? no\n"), p)[1], "junk.dcm"), "junk.dcm"),
    "dicom-no-pixels": (_sr_case(lambda p: _dicom(p, pixels=False), "nopix.dcm"), "no pixel data"),
    "dicom-huge": (_sr_case(lambda p: _dicom(p, 60_000, 60_000, pixels=b"\0" * 512), "huge.dcm"), "too large"),
    "dicom-two-series": (_sr_case(_two_series, "series"), "series"),
    "unknown-format": (_sr_case(lambda p: (p.write_bytes(b"GIF89a"), p)[1], "pic.gif"), "unknown image format"),
    "input-missing": (_argv("sr", "{root}/nowhere.png", "--ckpt", "{run}", "--out", "{root}/out"), "nowhere.png"),
    # checkpoints: sr --ckpt
    "ckpt-missing": (_argv("sr", "{root}", "--ckpt", "{root}/nothing", "--out", "{root}/out"), "nothing"),
    "ckpt-empty-run": (lambda root, run: ["sr", str(_png(root / "g.png")), "--ckpt",
                                          str((root / "empty").mkdir() or root / "empty"), "--out", str(root / "out")],
                       "no complete checkpoint"),
    "ckpt-a-file": (lambda root, run: ["sr", str(_png(root / "g.png")), "--ckpt",
                                       str((root / "w.txt").write_text("x") and root / "w.txt"), "--out",
                                       str(root / "out")], "w.txt"),
    "ckpt-model-truncated": (_ckpt_case(_cut("model.safetensors")), "model.safetensors"),
    "ckpt-ema-truncated": (_ckpt_case(_cut("ema.safetensors", 0.1)), "ema.safetensors"),
    "ckpt-state-truncated": (_ckpt_case(_cut("state.pt")), "state.pt"),
    "ckpt-pickled-code": (_ckpt_case(_pickled_state), "refused"),
    "ckpt-wrong-keys": (_ckpt_case(_renamed_keys), "does not match"),
    "ckpt-wrong-shapes": (_ckpt_case(_wrong_shapes), "shape"),
    "ckpt-nan-weights": (_ckpt_case(_nan_weights), "NaN"),
    "ckpt-config-yaml": (_ckpt_case(_write("config.yaml", "data: [oops\n")), "config.yaml"),
    "ckpt-config-list": (_ckpt_case(_write("config.yaml", "- 1\n- 2\n")), "config.yaml"),
    "ckpt-config-key": (_ckpt_case(_config_unknown_key), "stpes"),
    "ckpt-meta-json": (_ckpt_case(_write("meta.json", "{not json")), "meta.json"),
    "ckpt-meta-list": (_ckpt_case(_write("meta.json", "[1, 2]")), "meta.json"),
    # eval with bad data
    "eval-truncated": (_eval_case(lambda p: _truncated(p, lambda q: _png(q, 64)), "cut.png"), "cut.png"),
    "eval-nan-volume": (_eval_case(lambda p: _nifti(p, np.full((16, 16, 2), np.nan, np.float32)), "nan.nii.gz"),
                        "NaN"),
    "eval-huge": (_eval_case(lambda p: _forged_png(p, 8, 0), "huge.png"), "too large"),
    "eval-missing": (_argv("eval", "--data", "{root}/nope", "--method", "bicubic", "--out", "{root}/out"), "nope"),
    "eval-bad-scale": (_eval_case(lambda p: _png(p), "x.png", "--scale", "5"), "--scale"),
    "eval-bad-method": (_eval_case(lambda p: _png(p), "x.png", "--method", "{root}/norun"), "norun"),
    # issue 18: the classes that traced back, lost data or misread units
    "input-fifo": (_sr_case(_fifo, "pipe.png"), "FIFO"),
    "input-dev-null": (_argv("sr", "/dev/null", "--ckpt", "{run}", "--out", "{root}/out"), "/dev/null"),
    "out-dev-null": (lambda root, run: ["sr", str(_png(root / "g.png")), "--ckpt", str(run), "--out", "/dev/null"],
                     "--out /dev/null"),
    "out-a-file": (lambda root, run: ["sr", str(_png(root / "g.png")), "--ckpt", str(run), "--out",
                                      str((root / "taken").write_text("mine") and root / "taken")], "is a file"),
    "out-under-a-file": (lambda root, run: ["sr", str(_png(root / "g.png")), "--ckpt", str(run), "--out",
                                            str(_png(root / "f.png") / "out")], "where a folder must go"),
    "out-overwrites-input": (lambda root, run: ["sr", str(_png(root / "x.png")), str(_png(root / "x_sr.png")),
                                                "--ckpt", str(run), "--out", str(root)], "would overwrite the input"),
    "out-name-clash": (lambda root, run: ["sr", str(_png((root / "a").mkdir() or root / "a" / "s.png")),
                                          str(_png((root / "b").mkdir() or root / "b" / "s.png")), "--ckpt", str(run),
                                          "--out", str(root / "out")], "would both be written"),
    "sr-steps-0": (_argv("sr", "{root}", "--ckpt", "{run}", "--out", "{root}/out", "--steps", "0"), "--steps"),
    "sr-tile-1": (_argv("sr", "{root}", "--ckpt", "{run}", "--out", "{root}/out", "--tile", "1"), ">= 16"),
    "sr-samples-0": (_argv("sr", "{root}", "--ckpt", "{run}", "--out", "{root}/out", "--samples", "0"), "--samples"),
    "npy-1e300": (_sr_case(lambda p: _npy(p, np.full((16, 16), 1e300)), "big.npy"), "float32 range"),
    "nifti-negative-dim": (_sr_case(_negative_nifti, "neg.nii"), "dimensions"),
    "nifti-4d-no-index": (_sr_case(lambda p: _nifti(p, np.ones((8, 8, 2, 3), np.float32)), "four.nii.gz"),
                          "--volume-index"),
    "tiff-cmyk": (_sr_case(_cmyk_tiff, "ink.tif"), "CMYK"),
    "png-inflates-400mb": (_sr_case(_png_bomb, "bomb.png"), "nothing was decoded"),
    "dicom-pixel-spacing-text": (_sr_case(_dicom_bad_spacing, "ps.dcm"), "PixelSpacing"),
    "yaml-duplicate-key": (_yaml_case("train", "train: {steps: 3}\ndata: {scale: 2}\ntrain: {lr: 0.1}\n"),
                           "duplicate key 'train' (lines 1 and 3)"),
    "resume-must-nothing": (_argv("train", "demo", "--out", "{root}/out", "--resume=must"), "--resume=must"),
    "resume-other-scale": (_resume_case("data.scale=2"), "data.scale"),
    "ckpt-weights-vs-config": (_ckpt_case(_config_wider_than_weights), "do not match its config.yaml"),
    "eval-channels-2": (_eval_case(lambda p: _png(p), "x.png", "--channels", "2"), "--channels"),
    "eval-crop-border": (_eval_case(lambda p: _png(p, 32), "x.png", "--crop-border", "40"), "--crop-border"),
    "eval-out-in-data": (lambda root, run: ["eval", "--data", str(root), "--method", "bicubic", "--out",
                                            str(_png(root / "x.png").parent / "out")], "inside --data"),
    "eval-edsr-diffusion-run": (lambda root, run: _eval_case(lambda p: _png(p), "x.png", "--method",
                                                             f"edsr:{run}")(root, run), "net 'unet'"),
}


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and skip not in p.parents}


@pytest.fixture
def case_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "case"
    root.mkdir()
    monkeypatch.chdir(root)  # anything written to the working directory shows in the snapshot
    threads = torch.get_num_threads()
    yield root
    torch.set_num_threads(threads)


def _check(root: Path, argv: list[str], code: int | None, err: str, expect: str, before: dict) -> None:
    lines = err.strip("\n").splitlines()
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert "Traceback" not in err, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert expect in lines[0], lines[0]
    out = root / "out"
    assert not out.exists() or not any(out.rglob("*")), f"left in --out: {list(out.rglob('*'))}"
    assert _snapshot(root, out) == before, "files written or changed outside --out"
    assert not (root / "pwned.txt").exists()


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_is_one_error_line(case: str, case_root: Path, trained: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    build, expect = CASES[case]
    argv = [a.replace("{root}", str(case_root)) for a in build(case_root, trained)]
    before = _snapshot(case_root, case_root / "out")
    capsys.readouterr()
    caplog.clear()
    with pytest.raises(SystemExit) as info:
        main(argv)
    # pytest captures log records that a real run would print on stderr: they count as lines
    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    _check(case_root, argv, info.value.code, "\n".join([*logged, capsys.readouterr().err]), expect, before)


def test_corpus_is_large() -> None:
    assert len(CASES) >= 30


ENTRY_POINT_CASES = ["tiff-huge", "ckpt-pickled-code", "dicom-pixel-spacing-text"]


def test_real_entry_point(tmp_path: Path, trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few cases through ``python -m diffsr.cli``: the real entry point in fresh interpreters.

    Here stderr is what a user sees: third-party loggers (tifffile on a forged TIFF) and library
    warnings would show as extra lines. The interpreters run side by side to save time.
    """
    runs = []
    for case in ENTRY_POINT_CASES:
        root = tmp_path / case
        root.mkdir()
        monkeypatch.chdir(root)
        build, expect = CASES[case]
        argv = [a.replace("{root}", str(root)) for a in build(root, trained)]
        before = _snapshot(root, root / "out")
        proc = subprocess.Popen([sys.executable, "-m", "diffsr.cli", *argv], cwd=root, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        runs.append((root, argv, expect, before, proc))
    for root, argv, expect, before, proc in runs:
        stdout, stderr = proc.communicate(timeout=180)
        _check(root, argv, proc.returncode, stderr, expect, before)
        assert stdout == ""


# --------------------------------------------------------------------------- safe loading in the source


def _calls(tree: ast.AST) -> Iterator[tuple[str, ast.Call]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                yield f"{f.value.id}.{f.attr}", node
            elif isinstance(f, ast.Name):
                yield f.id, node


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def test_every_torch_load_is_weights_only() -> None:
    """Loading a checkpoint must never run code: weights_only=True, no pickle, no unsafe YAML."""
    found = 0
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for name, call in _calls(ast.parse(text)):
            where = f"{path.relative_to(SRC)}:{call.lineno}"
            if name == "torch.load":
                found += 1
                if _keyword(call, "weights_only") is not True:
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load", "cloudpickle.load"):
                problems.append(f"{where}: {name}")
            elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
                problems.append(f"{where}: {name} (use yaml.safe_load)")
            elif name == "np.load" and _keyword(call, "allow_pickle") not in (None, False):
                problems.append(f"{where}: np.load(allow_pickle=...)")
        # spelled without the module prefix (from torch import load) would escape the AST check
        if "from torch import load" in text or "torch.serialization.load(" in text:
            problems.append(f"{path.relative_to(SRC)}: torch load imported under another name")
    assert found >= 1  # the check looks at real code
    assert not problems, problems


def test_the_check_catches_an_unsafe_load() -> None:
    bad = ast.parse("import torch\nstate = torch.load('x.pt')\nok = torch.load('y.pt', weights_only=True)\n")
    unsafe = [c for n, c in _calls(bad) if n == "torch.load" and _keyword(c, "weights_only") is not True]
    assert [c.lineno for c in unsafe] == [2]


def test_pickled_checkpoint_message_is_clear(tmp_path: Path, trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(trained, tmp_path)
    _pickled_state(_newest(run))
    with pytest.raises(SystemExit):
        main(["sr", str(_png(tmp_path / "g.png")), "--ckpt", str(run), "--out", str(tmp_path / "out")])
    line = capsys.readouterr().err.strip()
    assert "state.pt" in line and "pickled" in line and "weights_only" in line, line
    assert not (tmp_path / "pwned.txt").exists() and not Path("pwned.txt").exists()
    assert json.loads((_newest(run) / "meta.json").read_text())["step"] == 2
