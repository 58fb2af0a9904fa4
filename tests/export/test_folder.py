"""Model folders: what diffsr export writes, and that load_model / --ckpt read it back (also as a hub id)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import diffsr
from diffsr.core.errors import DiffsrError
from diffsr.export import export_model
from tests._cli import exit_code as _exit_code
from tests.export._helpers import make_run

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("export") / "run", meta={"train_seconds": 12.5, "val": {
        "val/psnr": 21.5, "val/psnr_bicubic": 20.25, "val/ssim": 0.5, "val/ssim_bicubic": 0.45,
        "val/sharpness": 0.8, "val/sharpness_bicubic": 0.4, "val/images": 3.0}})


def test_model_folder_holds_the_ema_weights_config_and_card(run: Path, tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    out = tmp_path / "model"
    result = export_model(run, out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.yaml", "model.safetensors"]
    assert result.step == 5
    ema = load_file(str(run / "checkpoints" / "step_0000005" / "ema.safetensors"))
    exported = load_file(str(out / "model.safetensors"))
    assert exported.keys() == ema.keys()
    for key in ema:
        assert torch.equal(exported[key], ema[key]), key
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        header = f.metadata()
    assert header["weights"] == "ema" and header["step"] == "5" and header["dtype"] == "fp32"
    # the config reloads to the run's
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved == yaml.safe_load((run / "checkpoints" / "step_0000005" / "config.yaml").read_text())
    # a Hub card: YAML front matter with the keys the Hub indexes
    text = (out / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "diffsr" and front["license"] == "other"
    assert {"diffsr", "super-resolution", "x4", "resshift", "wavelet"} <= set(front["tags"])
    # and as the Hub's own client parses it
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "diffsr" and card.data.pipeline_tag == "image-to-image"
    assert "Research use; not for diagnosis" in card.text


def test_model_folder_loads_like_the_run(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    _ = export_model(run, out)
    from_run = diffsr.load_model(run, device="cpu")
    from_folder = diffsr.load_model(out, device="cpu")
    assert from_folder.step == 5 and from_folder.ema and from_folder.scale == 4
    lr = torch.rand(1, 1, 13, 17, generator=torch.Generator().manual_seed(0))
    expected = diffsr.super_resolve(from_run, lr)
    assert torch.equal(diffsr.super_resolve(from_folder, lr), expected)


@pytest.mark.parametrize(("dtype", "torch_dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_weights_round_the_ema_weights(run: Path, tmp_path: Path, dtype: str,
                                                       torch_dtype: torch.dtype) -> None:
    from safetensors.torch import load_file

    export_model(run, tmp_path / dtype, dtype=dtype)
    ema = load_file(str(run / "checkpoints" / "step_0000005" / "ema.safetensors"))
    half = load_file(str(tmp_path / dtype / "model.safetensors"))
    key = next(k for k, v in ema.items() if v.is_floating_point() and v.numel() > 1)
    assert half[key].dtype == torch_dtype
    assert torch.equal(half[key], ema[key].to(torch_dtype))  # rounded once, nothing else
    loaded = diffsr.load_model(tmp_path / dtype, device="cpu")
    weight = dict(loaded.model.named_parameters())[key]
    assert weight.dtype == torch.float32 and torch.equal(weight.data, ema[key].to(torch_dtype).float())


def test_calibration_is_copied_and_found_beside_the_weights(run: Path, tmp_path: Path) -> None:
    from diffsr.sampling.calibration import find_calibration

    calibrated = tmp_path / "calibrated"
    shutil.copytree(run, calibrated)
    payload = {"marker": "copied verbatim"}
    (calibrated / "calibration.json").write_text(json.dumps(payload))
    export_model(calibrated, tmp_path / "model")
    assert json.loads((tmp_path / "model" / "calibration.json").read_text()) == payload
    assert "calibration.json" in (tmp_path / "model" / "README.md").read_text()
    with pytest.raises(DiffsrError):  # find_calibration reads the folder's file (a stub here: not a calibration)
        find_calibration(tmp_path / "model")


def test_existing_output_and_the_run_itself_are_refused(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DiffsrError, match="not empty.*--overwrite"):
        export_model(run, out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(DiffsrError, match="would replace the run"):
        export_model(run, run)
    export_model(run, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_file_plugins_travel_with_the_folder(tmp_path: Path) -> None:
    from diffsr.core.plugins import forget_plugin
    from diffsr.losses import TERMS

    plugin = tmp_path / "lab" / "myterm.py"
    plugin.parent.mkdir()
    plugin.write_text(
        "from typing import Literal\nfrom diffsr.losses import TERMS, TermBase\n"
        "from diffsr.losses.pixel import l1_loss\n"
        "class ExportTestTerm(TermBase):\n    name: Literal['export_test_l1']\n"
        "@TERMS.register('export_test_l1', config=ExportTestTerm, space='pixel')\n"
        "def build(cfg, **context):\n    return l1_loss\n")
    config = tmp_path / "lab" / "cfg.yaml"
    config.write_text("plugins: [myterm.py]\nlosses: {terms: [{name: export_test_l1}]}\n")
    try:
        cfg = diffsr.load_config(str(config), ["net.width=16", "net.channel_mult=[1,2]"])
        from diffsr.model import build_model, trainable_state
        from diffsr.train.checkpoint import save_checkpoint

        state = trainable_state(build_model(cfg))
        save_checkpoint(tmp_path / "run", 1, model=state, ema=state, state={}, config_yaml=cfg.to_yaml(), meta={})
        export_model(tmp_path / "run", tmp_path / "model")
        saved = yaml.safe_load((tmp_path / "model" / "config.yaml").read_text())
        assert saved["plugins"] == ["plugins/myterm.py"]
        assert (tmp_path / "model" / "plugins" / "myterm.py").read_text() == plugin.read_text()
        # a colleague's machine: the original plug-in is not there, only the folder's copy
        TERMS.unregister("export_test_l1")
        forget_plugin(str(plugin))
        moved = tmp_path / "elsewhere" / "model"
        shutil.move(str(tmp_path / "model"), moved)
        shutil.rmtree(tmp_path / "lab")
        loaded = diffsr.load_model(moved, device="cpu")
        assert [t.name for t in loaded.config.losses.terms] == ["export_test_l1"]
    finally:
        if "export_test_l1" in TERMS:
            TERMS.unregister("export_test_l1")
        forget_plugin(str(plugin))
        forget_plugin(str(tmp_path / "elsewhere" / "model" / "plugins" / "myterm.py"))


# ----------------------------------------------------------------------------- hub ids


def _plant_in_hub_cache(model_dir: Path, hf_home: Path, repo: str = "lab/tiny-sr") -> Path:
    """``model_dir`` as huggingface_hub's cache stores a snapshot (refs/main -> snapshots/<commit>)."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(model_dir, root / "snapshots" / COMMIT)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    (root / "refs" / "v1").write_text(COMMIT)
    return root / "snapshots" / COMMIT


def test_hub_id_loads_from_the_cache_offline(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    export_model(run, tmp_path / "model")
    _plant_in_hub_cache(tmp_path / "model", tmp_path / "hf")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lr = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    expected = diffsr.super_resolve(diffsr.load_model(tmp_path / "model", device="cpu"), lr)
    for spec in ("hf://lab/tiny-sr", "hf://lab/tiny-sr@v1", f"hf://lab/tiny-sr@{COMMIT}"):
        loaded = diffsr.load_model(spec, device="cpu")
        assert loaded.step == 5 and torch.equal(diffsr.super_resolve(loaded, lr), expected), spec
    # an eval method: a hub id, with a revision and sampling options
    from diffsr.sampling.infer import method_from_spec

    name, method = method_from_spec("hf://lab/tiny-sr@v1@seed=0", 4, device="cpu")
    assert name == "demo@seed=0" and torch.equal(method(lr, 4), expected)


def test_hub_id_on_the_command_line(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    blocky_pngs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export_model(run, tmp_path / "model")
    _plant_in_hub_cache(tmp_path / "model", tmp_path / "hf")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DIFFSR_OFFLINE")  # HF_HUB_OFFLINE alone keeps the Hub away
    image = next(blocky_pngs.glob("*.png"))
    assert _exit_code(["sr", str(image), "--ckpt", "hf://lab/tiny-sr", "--out", str(tmp_path / "out"), "--cpu"]) == 0
    assert (tmp_path / "out" / f"{image.stem}_sr.png").is_file()
    capsys.readouterr()
    # not in the cache and offline: one line naming the id and the cache, exit 2, nothing written
    code = _exit_code(["sr", str(image), "--ckpt", "hf://lab/other@v2", "--out", str(tmp_path / "out2")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "hf://lab/other@v2" in err and str(tmp_path / "hf" / "hub") in err
    assert "HF_HUB_OFFLINE=1" in err and not (tmp_path / "out2").exists()


def test_malformed_hub_id_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, blocky_pngs: Path) -> None:
    image = next(blocky_pngs.glob("*.png"))
    assert _exit_code(["sr", str(image), "--ckpt", "hf://no-name", "--out", str(tmp_path / "o")]) == 2
    assert "expected hf://ORG/NAME" in capsys.readouterr().err


def test_a_vae_codec_is_shipped_in_the_folder(tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                  layers_per_block=1, norm_num_groups=8, latent_channels=4, sample_size=32)
    vae.save_pretrained(tmp_path / "vae_src")
    run = make_run(tmp_path / "run", "flow-pixel", ["net.size=tiny", f"codec.path={tmp_path / 'vae_src'}",
                                                   "sample.steps=1"])
    export_model(run, tmp_path / "model")
    assert yaml.safe_load((tmp_path / "model" / "config.yaml").read_text())["codec"]["path"] == "vae"
    assert (tmp_path / "model" / "vae" / "config.json").is_file()
    lr = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = diffsr.super_resolve(diffsr.load_model(run, device="cpu"), lr)
    moved = tmp_path / "colleague" / "model"
    shutil.move(str(tmp_path / "model"), moved)
    shutil.rmtree(tmp_path / "vae_src")  # only the folder's copy is left
    loaded = diffsr.load_model(moved, device="cpu")
    assert loaded.config.codec.path == str((moved / "vae").resolve())
    torch.testing.assert_close(diffsr.super_resolve(loaded, lr), expected, rtol=0, atol=1e-6)
