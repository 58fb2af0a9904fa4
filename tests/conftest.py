"""Shared fixtures: paths to the real data beside the checkout, seeded RNGs, CPU threads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads
# of one process starve another's (convolutions slowed 10-100x); must precede `import torch`
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# tests need no network: nothing downloads weights or models (tests of the download path unset it)
os.environ["DIFFSR_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    """Every test leaves torch's thread count as it found it (training sets train.threads)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def blocky_pngs(tmp_path: Path) -> Path:
    """Four 48x48 8-bit PNGs (blocks plus noise: edges and texture) in tmp_path/imgs."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        img = np.kron(rng.random((6, 6)), np.ones((8, 8))) * 0.7 + 0.3 * rng.random((48, 48))
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip when this checkout has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("shared data not available beside the checkout")
    return SHARED_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
