"""MATLAB imresize bicubic (a = -0.5, antialiased, mirrored borders) for LR and the bicubic baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffsr.data.degrade import DEGRADATIONS, bicubic_down, upsample
from diffsr.data.resize import imresize_matlab, imresize_matrix


def _pil(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL's bicubic (also a = -0.5, antialiased when shrinking; it renormalises at borders instead of mirroring)."""
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((size[1], size[0]), Image.BICUBIC))


@pytest.mark.parametrize(("shape", "size", "margin"), [((64, 48), (16, 12), 2), ((20, 30), (80, 120), 10),
                                                        ((33, 33), (11, 11), 2)])
def test_interior_matches_pil_bicubic(shape: tuple[int, int], size: tuple[int, int], margin: int) -> None:
    a = np.random.default_rng(0).random(shape)
    ours = imresize_matlab(torch.from_numpy(a)[None, None], size)[0, 0].numpy()
    ref = _pil(a, size)
    # same kernel and pixel centres; borders differ by design (MATLAB mirrors, PIL renormalises)
    np.testing.assert_allclose(ours[margin:-margin, margin:-margin], ref[margin:-margin, margin:-margin], atol=2e-6)


def test_mirrored_borders_by_hand() -> None:
    # x2 down of [a, b, c, d]: output 1 sits at u = 1 / 0.5 + 0.5 (1 - 2) = 1.5, the kernel stretched x2
    # reaches |u - i| < 4 -> indices -2 .. 5 (1-based); mirrored ('symmetric'): 0 -> 1, -1 -> 2, -2 -> 3, 5 -> 4
    m = imresize_matrix(4, 2)
    from diffsr.data.resize import _matlab_cubic

    u, idx = 1.5, torch.arange(-2, 6, dtype=torch.float64)
    w = 0.5 * _matlab_cubic(0.5 * (u - idx))
    w = w / w.sum()
    mirror = {-2: 3, -1: 2, 0: 1, 1: 1, 2: 2, 3: 3, 4: 4, 5: 4}
    row = torch.zeros(4, dtype=torch.float64)
    for i, weight in zip(idx.long().tolist(), w, strict=True):
        row[mirror[i] - 1] += weight
    torch.testing.assert_close(m[0], row, rtol=0, atol=1e-15)
    assert torch.allclose(m.sum(1), torch.ones(2, dtype=torch.float64))


def test_the_matlab_kernel_reaches_the_degradation_and_the_baseline() -> None:
    hr = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    deg = DEGRADATIONS.build("bicubic", scale=4, kernel="matlab")
    torch.testing.assert_close(deg(hr), imresize_matlab(hr, (8, 8)).clamp(0, 1))
    assert not torch.allclose(deg(hr), bicubic_down(hr, 4))  # a = -0.5 is not PyTorch's a = -0.75
    lr = deg(hr)
    torch.testing.assert_close(upsample(lr, 4, kernel="matlab"), imresize_matlab(lr, (32, 32)).clamp(0, 1))
    from diffsr.sampling.infer import method_from_spec

    _, fn = method_from_spec("bicubic", 4, bicubic="matlab")
    torch.testing.assert_close(fn(lr, 4), imresize_matlab(lr, (32, 32)).clamp(0, 1))


def test_eval_records_the_bicubic_choice(tmp_path) -> None:
    import json

    from diffsr.cli import main

    img = (np.random.default_rng(2).random((32, 32)) * 255).astype(np.uint8)
    (tmp_path / "d").mkdir()
    Image.fromarray(img).save(tmp_path / "d" / "a.png")
    main(["eval", "--data", str(tmp_path / "d"), "--method", "bicubic", "--scale", "4", "--out",
          str(tmp_path / "o"), "--bicubic", "matlab", "--detail-sweep", "none"])
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["conventions"]["bicubic"] == "matlab"
    assert "a = -0.5" in metrics["conventions"]["bicubic_kernel"]
    with pytest.raises(SystemExit) as bad:
        main(["eval", "--data", str(tmp_path / "d"), "--method", "bicubic", "--out", str(tmp_path / "p"),
              "--bicubic", "lanczos"])
    assert bad.value.code == 2
