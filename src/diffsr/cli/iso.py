"""``diffsr iso``: an isotropic volume from a thick-slice scan (docs/volumes.md).

The glue between the typer options and :func:`diffsr.volumes.run_iso`: option parsing, the
progress bar, the summary printed at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffsr.core.errors import DiffsrError


def parse_factor(text: str) -> float | str:
    """'auto' or a number; anything else is a one-line error."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise DiffsrError(f"--factor: 'auto' or a number, got '{text}'") from None


def run_iso_cli(volume: Path, out: Path, *, console: Any, err_console: Any, **options: Any) -> str:
    """Run ``diffsr iso`` with the CLI's options; returns the summary to print."""
    from rich.progress import Progress

    from diffsr.volumes import IsoOptions, run_iso

    options["factor"] = parse_factor(str(options.get("factor", "auto")))
    opts = IsoOptions(**options)
    # a progress bar only on a terminal: piped stderr stays clean (an error is then its one line)
    with Progress(console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("iso", total=None)

        def report(stage: str, i: int, n: int) -> None:
            bar.update(task, description=stage, completed=i, total=n)

        result = run_iso(volume, out, opts, progress=report if err_console.is_terminal else None,
                         say=console.print)
    rec, plan = result["reconstruct"], result["plan"]
    train = result["train"]
    trained = (f"trained {train['preset']} {train['steps']} steps in {train['seconds']:.0f} s on {train['slices']} "
               f"slices" if "steps" in train else f"model {train['model']}")
    residual = rec["consistency_residual"]
    lines = [
        f"{plan['slices_in']} slices of {plan['slice_spacing']:g} mm -> {plan['slices_out']} of "
        f"{plan['out_spacing']:.4g} mm (factor {plan['out_factor']:.3g}); {trained}; reconstructed in "
        f"{rec['seconds']:.0f} s",
        f"output re-degraded with the slice profile vs the input slices (consistency "
        f"{'on' if rec['consistency'] else 'off'}): RMS {residual['rms_raw']:.2e}, max {residual['max_raw']:.2e} "
        f"([0, 1] units, foreground; clipped to [0, 1]: RMS {residual['rms_clipped']:.2e})",
        *result["output"]["files"],
        str(Path(out) / "iso.json"),
    ]
    return "\n".join(lines)
