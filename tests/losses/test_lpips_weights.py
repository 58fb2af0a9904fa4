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
