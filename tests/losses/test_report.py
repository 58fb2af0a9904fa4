"""Loss reports: values, JSON, the summary line and the TensorBoard names."""

from __future__ import annotations

import json

import pytest
import torch

from diffsr.losses import (
    LossReport,
    LossStack,
    LossTerm,
    TermReport,
    log_report,
)
from tests.losses._helpers import DT, CountingDecode, Recorder, batch, l1_rows


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: dict[str, tuple[float, int]] = {}

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars[tag] = (value, step)


def test_report_values_and_log_names() -> None:
    d = batch()
    stack = LossStack([
        LossTerm("l1", Recorder(), weight=0.5),
        LossTerm("off", Recorder(), weight=0.0),
    ], diffusion_weight=2.0)
    diffusion = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=DT)
    total, report = stack(z0_hat=d["z0_hat"], t=torch.zeros(4), step=11, decode=CountingDecode(), hr=d["hr"],
                          diffusion=diffusion)
    loss = l1_rows((d["z0_hat"] + 1) / 2, d["hr"])
    assert list(report.terms) == ["diffusion", "l1", "off"]
    assert report.terms["diffusion"] == TermReport(raw=3.0, weighted=6.0, weight=2.0, active_fraction=1.0)
    assert report.terms["l1"].weighted == pytest.approx(0.5 * loss.mean(), rel=1e-12)
    assert report.terms["off"] == TermReport(raw=0.0, weighted=0.0, weight=0.0, active_fraction=0.0)
    assert report.total == pytest.approx(6.0 + 0.5 * loss.mean(), rel=1e-12)
    assert report.total == pytest.approx(total.item(), rel=1e-12)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["terms"]["l1"]["weight"] == 0.5 and data["decode_calls"] == 1
    assert report.summary().startswith("loss ") and "diffusion" in report.summary()
    writer = FakeWriter()
    log_report(writer, report, 11)
    expected = {"loss/total"} | {
        name for k in ("diffusion", "l1", "off")
        for name in (f"loss/{k}/raw", f"loss/{k}/weighted", f"weight/{k}", f"active/{k}")
    }
    assert set(writer.scalars) == expected
    assert writer.scalars["weight/l1"] == (0.5, 11)
    assert writer.scalars["loss/total"][0] == pytest.approx(report.total)


def test_report_from_floats() -> None:
    r = LossReport({"a": TermReport(1.0, 0.5, 0.5, 1.0)}, total=0.5)
    assert r.total == 0.5 and r.terms["a"].weighted == 0.5 and not r.skip_step
