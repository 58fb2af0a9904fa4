"""Shared by the CLI tests that train a tiny teacher run."""

from __future__ import annotations

from diffsr.cli import main

TINY = ["--set", "data.patch_size=32", "--set", "data.batch_size=2", "--set", "net.width=16",
        "--set", "net.channel_mult=[1,2]", "--set", "train.time_limit=null", "--set", "train.steps=2",
        "--set", "train.threads=2"]


def _run(args: list[str]) -> None:
    try:
        main(args)
    except SystemExit as exit_:  # success returns; a user error exits 2
        assert exit_.code in (0, None), args
