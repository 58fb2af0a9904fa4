"""LPIPS weight files: a corrupt backbone or linear-layer file is a one-line error naming the file
(no ``lpips`` package needed, unlike test_lpips.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diffsr.core.errors import DiffsrError


@pytest.mark.parametrize("content", [b"not a torch file at all", b"\x80\x02}q\x00(X"])
def test_corrupt_lpips_weights_are_one_line_error(content: bytes, tmp_path: Path) -> None:
    from diffsr.losses.perceptual import LPIPSLoss, _load

    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    lin = tmp_path / "lin.pth"
    lin.write_bytes(content)
    with pytest.raises(DiffsrError) as exc:  # the backbone is read first
        LPIPSLoss("alex", weights=lin, backbone_weights=bad)
    assert "\n" not in str(exc.value) and "bad.pth" in str(exc.value)
    with pytest.raises(DiffsrError) as exc:  # the same loader reads the linear-layer weights
        _load(lin)
    assert "\n" not in str(exc.value) and "lin.pth" in str(exc.value)


# ----------------------------------------------------------------------------- where the weights come from


def _alexnet_features(path: Path) -> str:
    """A random AlexNet ``features`` state dict saved at ``path``; returns its SHA-256."""
    import hashlib

    import torch
    import torchvision

    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.alexnet(weights=None).state_dict().items() if k.startswith("features")}
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lins(path: Path, channels: tuple[int, ...] = (64, 192, 384, 256, 256)) -> str:
    import hashlib

    import torch

    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(channels)}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME; the lpips package's own lin weights hidden (as on a machine without it)."""
    from diffsr.losses import perceptual

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(perceptual, "_lpips_package_dir", lambda: None)
    return tmp_path / "torch"


def test_files_planted_in_torch_home_are_found(torch_home: Path, tmp_path: Path) -> None:
    from diffsr.losses.perceptual import BACKBONE_FILES, LIN_SOURCES, resolve_lpips_weights

    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    _alexnet_features(cache / BACKBONE_FILES["alex"])
    _lins(cache / LIN_SOURCES["alex"][0])
    assert resolve_lpips_weights("alex") == (cache / LIN_SOURCES["alex"][0], cache / BACKBONE_FILES["alex"])
    # an explicit path comes first
    explicit = tmp_path / "mine.pth"
    _lins(explicit)
    assert resolve_lpips_weights("alex", weights=explicit)[0] == explicit


@pytest.mark.parametrize("variable", ["DIFFSR_OFFLINE", "HF_HUB_OFFLINE"])
def test_a_forbidden_download_is_one_line_naming_file_cache_and_command(
        torch_home: Path, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    from diffsr.losses.perceptual import LPIPSLoss

    monkeypatch.delenv("DIFFSR_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(DiffsrError) as exc:
        LPIPSLoss("vgg")
    message = str(exc.value)
    assert "\n" not in message and f"{variable}=1" in message
    assert "lpips_v0.1_vgg.pth" in message and str(torch_home / "hub" / "checkpoints") in message
    assert "diffsr weights fetch lpips-vgg" in message


def test_first_use_downloads_once_with_a_notice(torch_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from diffsr.losses import perceptual

    monkeypatch.delenv("DIFFSR_OFFLINE", raising=False)
    served = tmp_path / "served"
    served.mkdir()
    backbone_sha = _alexnet_features(served / "alexnet.pth")
    lin_sha = _lins(served / "alex.pth")
    # the URLs torchvision's weights API and the lpips repository would give, served from disk; the
    # torchvision file name carries its SHA-256 prefix, as the real one does
    monkeypatch.setattr(perceptual, "backbone_url", lambda net: (served / "alexnet.pth").as_uri())
    monkeypatch.setitem(perceptual.BACKBONE_FILES, "alex", f"alexnet-test-{backbone_sha[:8]}.pth")
    monkeypatch.setitem(perceptual.LIN_SOURCES, "alex", ("lpips_v0.1_alex.pth", (served / "alex.pth").as_uri(),
                                                         lin_sha))
    with caplog.at_level(logging.WARNING, logger="diffsr.core.fetch"):
        model = perceptual.LPIPSLoss("alex")
    cache = torch_home / "hub" / "checkpoints"
    assert sorted(p.name for p in cache.iterdir()) == sorted([f"alexnet-test-{backbone_sha[:8]}.pth",
                                                              "lpips_v0.1_alex.pth"])
    assert len([r for r in caplog.records if "downloading LPIPS alex" in r.getMessage()]) == 2  # one per file
    import torch

    served_lins = torch.load(served / "alex.pth", weights_only=True)
    torch.testing.assert_close(model.lins[3].weight, served_lins["lin3.model.1.weight"])
    # second use: from the cache, no download (the source is gone)
    for p in served.iterdir():
        p.unlink()
    caplog.clear()
    perceptual.LPIPSLoss("alex")
    assert not [r for r in caplog.records if "downloading" in r.getMessage()]


def test_a_corrupted_download_is_refused_and_not_cached(torch_home: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from diffsr.losses import perceptual

    monkeypatch.delenv("DIFFSR_OFFLINE", raising=False)
    _alexnet_features(tmp_path / "alexnet.pth")
    monkeypatch.setattr(perceptual, "backbone_url", lambda net: (tmp_path / "alexnet.pth").as_uri())
    with pytest.raises(DiffsrError, match=r"SHA-256 .* expected 7be5be79") as exc:  # the real name's prefix
        perceptual.resolve_lpips_weights("alex", weights=tmp_path / "alexnet.pth")
    assert "\n" not in str(exc.value)
    assert not (torch_home / "hub" / "checkpoints" / perceptual.BACKBONE_FILES["alex"]).exists()


def test_weights_fetch_prefetches_for_offline_nodes(torch_home: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from diffsr.losses import perceptual

    served = tmp_path / "served"
    served.mkdir()
    sha = _alexnet_features(served / "vgg.pth")  # any file does for the plumbing
    lin_sha = _lins(served / "vgg_lin.pth", (64, 128, 256, 512, 512))
    monkeypatch.setattr(perceptual, "backbone_url", lambda net: (served / "vgg.pth").as_uri())
    monkeypatch.setitem(perceptual.BACKBONE_FILES, "vgg", f"vgg16-test-{sha[:8]}.pth")
    monkeypatch.setitem(perceptual.LIN_SOURCES, "vgg", ("lpips_v0.1_vgg.pth", (served / "vgg_lin.pth").as_uri(),
                                                        lin_sha))

    from tests._cli import exit_code as code

    assert code(["weights", "fetch", "lpips-vgg"]) == 2  # DIFFSR_OFFLINE=1 (tests): one line, nothing fetched
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "downloads are off" in err
    monkeypatch.delenv("DIFFSR_OFFLINE")
    assert code(["weights", "fetch", "lpips-vgg"]) == 0
    cache = torch_home / "hub" / "checkpoints"
    assert (cache / f"vgg16-test-{sha[:8]}.pth").is_file() and (cache / "lpips_v0.1_vgg.pth").is_file()
    capsys.readouterr()
    monkeypatch.setenv("DIFFSR_OFFLINE", "1")  # a compute node: resolves from the cache
    assert code(["weights", "list"]) == 0
    assert f"lpips-vgg: backbone {cache / f'vgg16-test-{sha[:8]}.pth'}" in capsys.readouterr().out
    assert code(["weights", "fetch", "lpips-squeeze"]) == 2
