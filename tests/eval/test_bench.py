"""Benchmark: FLOPs against hand formulas, parameter counts, latency, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from diffsr.eval.bench import benchmark_model, count_flops, format_table, write_json


@pytest.mark.parametrize(("cin", "cout", "k", "h", "w"), [(3, 8, 3, 16, 16), (1, 4, 5, 12, 20)])
def test_conv_flops_and_params_match_hand_formula(cin: int, cout: int, k: int, h: int, w: int) -> None:
    conv = nn.Conv2d(cin, cout, k, padding=k // 2)
    row = benchmark_model(conv, [(2, cin, h, w)], steps=3, warmup=1, repeat=2, name="conv")
    per_image_forward = 2 * cin * cout * k * k * h * w  # multiply-add = 2 FLOPs, "same" padding
    assert row["flops_per_forward"] == 2 * per_image_forward  # batch 2
    assert row["flops_per_image"] == 3 * per_image_forward  # 3 steps per image
    assert row["params"] == cin * cout * k * k + cout
    assert row["batch"] == 2 and row["steps"] == 3
    assert row["latency_s_per_forward"] > 0
    assert row["latency_s_per_image"] == pytest.approx(row["latency_s_per_forward"] * 3 / 2)
    assert row["peak_memory_bytes"] >= 0 and "approximate" in row["memory_method"]


def test_keyword_inputs_and_linear_flops() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 32, bias=False)

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.fc(x) * t[:, None]

    assert count_flops(nn.Linear(16, 32), [torch.zeros(4, 16)]) == 2 * 4 * 16 * 32
    row = benchmark_model(Net(), {"x": (4, 16), "t": (4,)}, warmup=0, repeat=1)
    assert row["flops_per_image"] == 2 * 16 * 32
    assert row["params"] == 16 * 32 and row["name"] == "Net"


def test_plain_function_has_no_parameters() -> None:
    row = benchmark_model(lambda x: x * 2, [(1, 1, 8, 8)], warmup=0, repeat=1, name="double")
    assert row["params"] == 0 and row["flops_per_image"] == 0


def test_table_and_json(tmp_path: Path) -> None:
    rows = [benchmark_model(nn.Conv2d(1, 2, 3, padding=1), [(1, 1, 8, 8)], warmup=0, repeat=1, name="tiny")]
    table = format_table(rows)
    assert table.splitlines()[0].startswith("| model |") and "| tiny |" in table
    path = write_json(tmp_path / "bench.json", rows)
    assert json.loads(path.read_text())[0]["params"] == 2 * 9 + 2
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary left behind


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory() -> None:
    row = benchmark_model(
        nn.Conv2d(8, 64, 3, padding=1), [(4, 8, 128, 128)], device="cuda", warmup=1, repeat=2
    )
    assert row["peak_memory_bytes"] >= 4 * 64 * 128 * 128 * 4  # at least the fp32 output
    assert row["memory_method"].startswith("cuda")
