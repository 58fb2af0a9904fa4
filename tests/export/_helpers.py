"""Runs for the export tests, written as a trainer would leave them, without training (seconds, not minutes)."""

from __future__ import annotations

from pathlib import Path

import torch

TINY_NET = ["net.size=tiny", "net.width=16", "net.channel_mult=[1,2]"]


def make_run(run: Path, preset: str = "demo", sets: list[str] | tuple[str, ...] = (), *, step: int = 5,
             meta: dict | None = None, ema: bool = True) -> Path:
    """A run folder with one checkpoint of ``preset`` (+ ``sets``): random weights (seeded), and EMA weights that
    differ from them by seeded noise of std 0.01 (so no zero-initialised output layer hides the net)."""
    import diffsr
    from diffsr.model import build_model, trainable_state
    from diffsr.train.checkpoint import save_checkpoint

    net = TINY_NET if preset not in ("edsr", "rcan", "swinir") else []
    cfg = diffsr.load_config(preset, [*net, *sets])
    torch.manual_seed(0)
    model = build_model(cfg)
    state = trainable_state(model)
    gen = torch.Generator().manual_seed(1)
    shadow = {k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
              for k, v in state.items()} if ema else None
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(cfg.to_yaml())
    save_checkpoint(run, step, model=state, ema=shadow, state={"step": step}, config_yaml=cfg.to_yaml(),
                    meta=meta if meta is not None else {"train_seconds": 12.5})
    return run
