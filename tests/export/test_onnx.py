"""ONNX export of one-step models: parity with the PyTorch sampler, dynamic sizes, refusals, diffsr sr --onnx."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import diffsr
from diffsr.core.errors import DiffsrError
from tests.export._helpers import make_run

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from diffsr.export import OnnxModel, export_model, export_onnx  # noqa: E402
from tests._cli import exit_code as _code  # noqa: E402

# three LR sizes, one of them odd in both sides, one batch of 2
SIZES = [(1, 16, 16), (2, 21, 15), (1, 33, 40)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo preset (ResShift T 4 in Haar 'all' space, sampled in 1 step): run folder and its model folder."""
    root = tmp_path_factory.mktemp("onnx")
    run = make_run(root / "run")
    export_model(run, root / "model", onnx=True)
    return run, root / "model"


def _lr(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(seed))


def test_resshift_one_step_graph_matches_the_pytorch_sampler(demo: tuple[Path, Path]) -> None:
    run, model_dir = demo
    loaded = diffsr.load_model(run, device="cpu")
    graph = OnnxModel(model_dir / "model.onnx")
    for k, (b, h, w) in enumerate(SIZES):
        lr = _lr(b, h, w, k)
        expected = diffsr.super_resolve(loaded, lr, seed=7)  # the torch sampler draws its own noise
        got = graph.super_resolve(lr, seed=7)
        assert got.shape == (b, 1, 4 * h, 4 * w)
        assert (got - expected).abs().max().item() <= 1e-4, (b, h, w)
    assert (expected - diffsr.super_resolve(loaded, lr, seed=8)).abs().max() > 1e-3  # the noise matters


def test_graph_has_dynamic_batch_height_width_and_opset_17(demo: tuple[Path, Path]) -> None:
    proto = onnx.load(str(demo[1] / "model.onnx"))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["lr"] == ["batch", 1, "height", "width"]
    assert dims["noise"][0] == "batch" and all(isinstance(d, str) for d in dims["noise"][2:])
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["diffsr_scale"] == "4" and meta["diffsr_latent_channels"] == "16" and meta["diffsr_downsample"] == "4"
    assert "resshift" in meta["diffsr_config"] and "1x24x24" in meta["diffsr_parity"]


@pytest.mark.parametrize(("preset", "sets"), [
    ("rddm-dwt", ["sample.steps=1"]),                     # RDDM sampled in one step
    ("flow-pixel-ssim-px", ["sample.steps=1"]),           # a one-step student (diffsr distill's output)
    ("edsr", ["data.scale=2"]),                           # a feed-forward baseline, no noise input
])
def test_other_one_step_models_match_pytorch(tmp_path: Path, preset: str, sets: list[str]) -> None:
    run = make_run(tmp_path / "run", preset, sets)
    loaded = diffsr.load_model(run, device="cpu")
    result = export_onnx(loaded, tmp_path / "m.onnx")
    assert max(result.parity.values()) <= 1e-4
    graph = OnnxModel(tmp_path / "m.onnx")
    assert ("noise" in graph.inputs) == (preset != "edsr")
    lr = _lr(2, 19, 13, 3)
    expected = diffsr.super_resolve(loaded, lr)
    assert expected.std() > 1e-2  # the random net's output is an image, not a clamped constant
    torch.testing.assert_close(graph.super_resolve(lr), expected, rtol=0, atol=1e-4)


def test_multi_step_models_are_refused_naming_distill(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run", "demo", ["sample.steps=4"])
    assert _code(["export", str(run), "--out", str(tmp_path / "model"), "--onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "4-step model" in err and "diffsr distill" in err
    assert not (tmp_path / "model").exists()  # nothing written, not even the model folder
    for sets, words in ((["sample.detail=0.5"], "sample.detail 0.5"), (["sample.consistency=backprojection"],
                                                                         "data consistency")):
        other = make_run(tmp_path / sets[0].split("=")[0], "demo", sets)
        with pytest.raises(DiffsrError, match=words):
            export_onnx(other, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_sr_onnx_writes_what_sr_ckpt_writes(demo: tuple[Path, Path], tmp_path: Path, blocky_pngs: Path) -> None:
    from PIL import Image

    _, model_dir = demo
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.fromarray((np.random.default_rng(1).random((15, 21, 3)) * 255).astype(np.uint8)).save(rgb / "c.png")
    for inputs in (blocky_pngs, rgb):  # grey PNGs, and an RGB one (channels done one by one, as in torch)
        assert _code(["sr", str(inputs), "--ckpt", str(model_dir), "--out", str(tmp_path / "torch" / inputs.name),
                      "--cpu"]) == 0
        assert _code(["sr", str(inputs), "--onnx", str(model_dir / "model.onnx"), "--out",
                      str(tmp_path / "onnx" / inputs.name)]) == 0
        for path in sorted((tmp_path / "torch" / inputs.name).glob("*.png")):  # (and a units record .json each)
            a = np.asarray(Image.open(path), dtype=np.int16)
            b = np.asarray(Image.open(tmp_path / "onnx" / inputs.name / path.name), dtype=np.int16)
            assert a.shape == b.shape and np.abs(a - b).max() <= 1, path.name  # <= 1e-4 before rounding to 8 bits


def test_sr_onnx_refuses_what_a_fixed_graph_cannot_do(demo: tuple[Path, Path], tmp_path: Path,
                                                      blocky_pngs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = str(demo[1] / "model.onnx")
    base = ["sr", str(blocky_pngs), "--onnx", graph, "--out", str(tmp_path / "o")]
    for extra, words in ((["--steps", "4"], "one step"), (["--consistency", "kspace"], "--consistency"),
                         (["--detail", "1"], "--detail"), (["--ckpt", str(demo[1])], "one of --ckpt"),
                         (["--tile", "64", "--tile-mode", "exact"], "blend mode only")):
        assert _code([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and words in err, (extra, err)
    assert _code(["sr", str(blocky_pngs), "--onnx", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "o")]) == 2


def test_onnx_tiles_on_the_lr_grid(tmp_path: Path, demo: tuple[Path, Path]) -> None:
    # EDSR (x2, receptive radius ~20 LR px) with blend margins (overlap / 4) wider than that: tiles == whole
    run = make_run(tmp_path / "run", "edsr", ["data.scale=2"])
    export_onnx(run, tmp_path / "edsr.onnx")
    graph = OnnxModel(tmp_path / "edsr.onnx")
    lr = _lr(1, 200, 176, 5)
    whole = graph.super_resolve(lr)
    assert whole.std() > 1e-2
    tiled = graph.super_resolve(lr, tile=2 * 168, overlap=2 * 80)
    assert (tiled - whole).abs().max().item() <= 1e-4
    # a diffusion model: every tile gets its slice of the whole image's noise field (no error, right size,
    # and a tile as large as the image is the untiled result)
    diffusion = OnnxModel(demo[1] / "model.onnx")
    lr = _lr(1, 37, 29, 6)
    assert torch.equal(diffusion.super_resolve(lr, tile=4 * 40), diffusion.super_resolve(lr))
    tiled = diffusion.super_resolve(lr, tile=64, overlap=16)
    assert tiled.shape == (1, 1, 148, 116) and torch.isfinite(tiled).all()
