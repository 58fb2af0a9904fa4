"""SR baselines: shapes, range conventions, the EDSR key layout, save/load round trips, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffsr.core.errors import CheckpointError, ConfigError
from diffsr.nets import BASELINES, build_baseline, load_baseline
from diffsr.nets.baselines import EDSR

pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")

NAMES = ["edsr", "rcan", "swinir"]
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)  # EDSR/RCAN/SwinIR papers' RGB mean
LAST_LAYER = {"edsr": "tail.1", "rcan": "tail.1", "swinir": "upsample.0"}  # tiny SwinIR: pixelshuffledirect


def lr_image(channels: int, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", [2, 4])
def test_maps_lr_to_sr_shape_without_touching_the_input(name: str, channels: int, scale: int) -> None:
    torch.manual_seed(0)
    model = build_baseline(name, channels=channels, scale=scale, size="tiny")
    lr = lr_image(channels)
    before = lr.clone()
    sr = model(lr)
    assert sr.shape == (1, channels, 12 * scale, 12 * scale)
    assert torch.isfinite(sr).all()
    assert torch.equal(lr, before)  # spandrel's RCAN scales its input in place without our hook


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_output_is_on_the_input_scale(name: str, channels: int) -> None:
    # last conv at zero: the net outputs its mean shift, divided back to [0, 1] units:
    # the DIV2K mean for RGB, 0 for grayscale (no mean shift)
    torch.manual_seed(0)
    model = build_baseline(name, channels=channels, scale=2).eval()
    last = model.get_submodule(LAST_LAYER[name])
    assert isinstance(last, nn.Conv2d)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    sr = model(lr_image(channels))
    expected = torch.tensor(DIV2K_MEAN if channels == 3 else (0.0,)).view(1, channels, 1, 1).expand_as(sr)
    torch.testing.assert_close(sr, expected, rtol=0, atol=1e-5)


def test_edsr_keys_follow_the_reference_code() -> None:
    # EDSR-PyTorch (model/edsr.py, model/common.py), n_resblocks=2, x4: the keys a pretrained file has
    expected = {"sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias", "head.0.weight",
                "head.0.bias", "body.2.weight", "body.2.bias", "tail.0.0.weight", "tail.0.0.bias",
                "tail.0.2.weight", "tail.0.2.bias", "tail.1.weight", "tail.1.bias"}  # fmt: skip
    for i in range(2):
        for j in (0, 2):
            expected |= {f"body.{i}.body.{j}.weight", f"body.{i}.body.{j}.bias"}
    model = EDSR(scale=4, n_resblocks=2, n_feats=8)
    assert set(model.state_dict()) == expected
    assert model.state_dict()["tail.0.0.weight"].shape == (32, 8, 3, 3)


def test_edsr_matches_a_functional_reference() -> None:
    # the reference forward written with F.conv2d: x*255 - mean -> head -> blocks (+skip) -> up -> + mean
    torch.manual_seed(0)
    model = EDSR(scale=2, n_resblocks=2, n_feats=8, res_scale=0.5).double()
    sd = model.state_dict()

    def conv(x: torch.Tensor, key: str) -> torch.Tensor:
        w = sd[f"{key}.weight"]
        return F.conv2d(x, w, sd[f"{key}.bias"], padding=w.shape[-1] // 2)

    lr = lr_image(3).double()
    mean = 255 * torch.tensor(DIV2K_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    h = conv(lr * 255 - mean, "head.0")
    r = h
    for i in range(2):
        r = r + 0.5 * conv(F.relu(conv(r, f"body.{i}.body.0")), f"body.{i}.body.2")
    r = conv(r, "body.2") + h
    out = conv(F.pixel_shuffle(conv(r, "tail.0.0"), 2), "tail.1")
    expected = (out + mean) / 255
    # float64 both sides except the mean-shift constants, stored in float32 like the reference
    # checkpoints (255 * 0.4488 differs by ~1e-6 from its float64 value; / 255 -> ~1e-8)
    torch.testing.assert_close(model(lr), expected, rtol=0, atol=1e-7)


def save(model: nn.Module, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("channels", "scale", "suffix"), [(3, 2, ".pth"), (3, 4, ".safetensors"), (1, 4, ".pth")])
def test_saved_weights_load_back_identically(name: str, channels: int, scale: int, suffix: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_baseline(name, channels=channels, scale=scale).eval()
    path = tmp_path / f"{name}_x{scale}{suffix}"
    save(model, path)
    loaded, info = load_baseline(path)
    assert info["arch"].lower() == name
    assert (info["scale"], info["in_channels"], info["out_channels"]) == (scale, channels, channels)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert not loaded.training
    lr = lr_image(channels, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr), model(lr), rtol=0, atol=0)


def test_basicsr_style_wrapped_files_load(tmp_path: Path) -> None:
    # BasicSR saves {"params_ema": sd}; DataParallel adds "module."
    torch.manual_seed(0)
    model = build_baseline("rcan", channels=3, scale=2).eval()
    path = tmp_path / "rcan_basicsr.pth"
    torch.save({"params_ema": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded, info = load_baseline(path)
    lr = lr_image(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr), model(lr), rtol=0, atol=0)
    # a baseline saved inside a wrapper module (keys "net.*")
    wrapped = tmp_path / "wrapped.safetensors"
    from safetensors.torch import save_file

    save_file({f"net.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(wrapped))
    loaded, _ = load_baseline(wrapped)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr), model(lr), rtol=0, atol=0)


def test_mean_shift_is_frozen() -> None:
    for name in ("edsr", "rcan"):
        model = build_baseline(name, channels=3, scale=2)
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        assert frozen == {"sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"}


def test_one_training_step_updates_the_baseline() -> None:
    torch.manual_seed(0)
    model = build_baseline("edsr", channels=1, scale=2)
    hr = torch.rand(2, 1, 24, 24)
    lr = F.avg_pool2d(hr, 2)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(4):
        loss = F.l1_loss(model(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["junk_pth", "junk_safetensors", "truncated", "empty", "unknown_arch", "list"])
def test_bad_files_raise_a_one_line_checkpoint_error(kind: str, tmp_path: Path) -> None:
    junk = bytes(range(256)) * 4
    if kind == "junk_pth":
        path = write_bytes(tmp_path / "bad.pth", junk)
    elif kind == "junk_safetensors":
        path = write_bytes(tmp_path / "bad.safetensors", junk)
    elif kind == "truncated":
        torch.save(build_baseline("edsr", channels=1, scale=2).state_dict(), tmp_path / "full.pth")
        data = (tmp_path / "full.pth").read_bytes()
        path = write_bytes(tmp_path / "bad.pth", data[: len(data) // 2])
    elif kind == "empty":
        path = write_bytes(tmp_path / "bad.pt", b"")
    elif kind == "unknown_arch":
        path = tmp_path / "bad.pth"
        torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    else:
        path = tmp_path / "bad.pth"
        torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError) as err:
        load_baseline(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope.pth"):
        load_baseline(tmp_path / "nope.pth")


class TouchOnUnpickle:
    """Unpickling this calls Path.touch(marker): code execution a weights-only load must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_pickled_code_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"head.0.weight": torch.zeros(1), "payload": TouchOnUnpickle(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_baseline(path)
    assert not marker.exists()


def test_registry_and_arguments_are_checked() -> None:
    assert BASELINES.names() == NAMES
    with pytest.raises(ConfigError, match="did you mean 'swinir'"):
        build_baseline("swinr", channels=3, scale=2)
    with pytest.raises(ConfigError, match="scale"):
        build_baseline("edsr", channels=3, scale=5)
    with pytest.raises(ConfigError, match="size"):
        build_baseline("rcan", channels=3, scale=2, size="huge")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
def test_sampled_sr_is_the_decoded_training_estimate(name: str) -> None:
    # regression: sample() once returned the net's [-1, 1] latent clamped to [0, 1] (PSNR ~8 dB)
    from diffsr.config import load_config
    from diffsr.data.degrade import upsample
    from diffsr.model import build_model

    torch.manual_seed(0)
    model = build_model(load_config(name)).eval()
    hr = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    lr = F.avg_pool2d(hr, 4)
    lr_up = upsample(lr, 4)
    with torch.no_grad():
        out = model(hr, lr_up, lr=lr)
        decoded = model.codec.decode(out.zc.with_z(out.z0_hat)).clamp(0, 1)
        sr = model.sample(lr_up, lr=lr)
    torch.testing.assert_close(sr, decoded)
    # and the training loss (L1 in the [-1, 1] latent) is twice the pixel L1 of what sampling returns
    raw = (model.net.net(lr) - hr).abs().flatten(1).mean(1)
    torch.testing.assert_close(out.diffusion, 2 * raw, rtol=1e-5, atol=1e-6)


def test_edsr_at_scale_one_is_the_input_plus_a_correction() -> None:
    # one-axis SR (SMORE's design): the input is already on the output grid; no upsampler, and a
    # zeroed last conv makes the whole net the identity
    torch.manual_seed(0)
    model = build_baseline("edsr", channels=1, scale=1, size="tiny")
    x = lr_image(1, size=20)
    assert model(x).shape == x.shape
    assert not any(isinstance(m, nn.PixelShuffle) for m in model.modules())
    with torch.no_grad():
        model.tail[1].weight.zero_()
        model.tail[1].bias.zero_()
    torch.testing.assert_close(model(x), x)
    with pytest.raises(ConfigError, match="one-axis SR, scale 1, supports edsr only"):
        build_baseline("rcan", channels=1, scale=1)
