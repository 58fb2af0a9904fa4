"""Through-plane SR on simulated thick slices (Kirby21) and on real ones (BRAINIX): docs/volumes.md.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/volumes.py simulate          # thick-slice NIfTIs from Kirby21
    OMP_WAIT_POLICY=PASSIVE python benchmarks/volumes.py run [CASE ...]    # every method on each case
    OMP_WAIT_POLICY=PASSIVE python benchmarks/volumes.py brainix           # the real thick-slice FLAIR series
    python benchmarks/volumes.py tables                                    # docs/volumes.md tables
    python benchmarks/volumes.py figures                                   # docs/figures/volumes_*.png

Cases: ``{mprage,t2w}-{g4,g2.5gap1}``. Each Kirby21 volume (170 x 256 x 256, 1.2 x 1.0 x 1.0 mm,
skull-stripped) is normalised with its own 0.5 / 99.5 percentiles of the brain voxels (clipped
to [0, 1]); thick axial slices are simulated along axis 2 (S, 1 mm) with the diffsr slice
operator: ``g4`` a Gaussian profile of FWHM 4 mm every 4 mm (64 slices), ``g2.5gap1`` FWHM 2.5
mm every 3.5 mm (a 1 mm gap, factor 3.5: 73 slices). They are written as NIfTI with the correct
affine, and ``diffsr iso`` (the Python API, the same code as the command) reconstructs them onto
the original grid (1 mm along S; 256 or 255 slices).

Methods, each trained on the thick volume alone (the in-plane slices degraded with the known
profile) for the same wall-clock budget (``--time-limit``, default 240 s; ``--threads``, default 1):

- ``bspline``: cubic B-spline interpolation along the slice axis (no training);
- ``edsr``: the same self-supervised pipeline with the ``edsr`` preset (SMORE's design: EDSR
  correcting the interpolated slices), no consistency;
- ``diffsr``: the ``demo`` preset (ResShift in Haar wavelet space, 1 step), without and with
  slice-axis consistency (the same trained model), and with the Fourier combination;
- ``edsr+c``: the EDSR model with consistency (same model as ``edsr``).

Metrics over the head mask (voxels where the original volume is non-zero), [0, 1] units of the
normalised truth: PSNR over the mask voxels (data range 1), and SSIM (Gaussian window 11,
sigma 1.5, only windows wholly inside the mask) on the through-plane views: every sagittal
(axis 0) and coronal (axis 1) plane, averaged over planes with mask. Times: the training budget
used and the reconstruction of the whole volume (both orientations) on this machine.
Results: benchmarks/results/volumes.json (each method written as it finishes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "medical"
RUNS = ROOT / "runs" / "volumes"
RESULTS = ROOT / "benchmarks" / "results" / "volumes.json"
FIGURES = ROOT / "docs" / "figures"
VOLUMES = {"mprage": DATA / "kirby21/113-02-MPRAGE_processed_reg.nii.gz",
           "t2w": DATA / "kirby21/113-02-T2w_processed_reg.nii.gz"}
SETTINGS = {"g4": (4.0, 4.0), "g2.5gap1": (3.5, 2.5)}  # (slice spacing, FWHM) in mm
AXIS = 2
METHODS = ("bspline", "edsr", "edsr+c", "diffsr", "diffsr+c", "diffsr+c+fourier", "diffsr-f+c")
#: the demo recipe with its L1 term trained at the one-step sampler's time (the levers of issue 17)
FAITHFUL = ["losses.terms.0.gate.kind=sampler", "train.faithful_fraction=0.5"]


def cases() -> list[str]:
    return [f"{v}-{s}" for v in VOLUMES for s in SETTINGS]


def truth(volume: str) -> tuple[np.ndarray, np.ndarray, Any]:
    """(normalised truth in [0, 1], head mask, nibabel image) of a Kirby21 volume."""
    import nibabel as nib

    img = nib.load(str(VOLUMES[volume]))
    raw = img.get_fdata(dtype=np.float32)
    mask = raw != 0
    lo, hi = np.percentile(raw[mask], [0.5, 99.5])
    return np.clip((raw - lo) / (hi - lo), 0, 1).astype(np.float32) * mask, mask, img


def simulate() -> None:
    """Write runs/volumes/<case>/thick.nii.gz (float32, [0, 1] units of the truth)."""
    import nibabel as nib

    from diffsr.data.slice_profile import SliceProfile

    for volume in VOLUMES:
        gt, _, img = truth(volume)
        for name, (spacing, fwhm) in SETTINGS.items():
            profile = SliceProfile(spacing, fwhm)  # the truth's S axis is 1 mm: pixels = mm
            thick = profile.degrade(torch.from_numpy(gt), AXIS).numpy()
            t = np.eye(4)
            t[AXIS, AXIS], t[AXIS, 3] = spacing, 0.5 * spacing - 0.5  # thick index k -> truth index c_k
            affine = img.affine @ t
            out = RUNS / f"{volume}-{name}"
            out.mkdir(parents=True, exist_ok=True)
            lr = nib.Nifti1Image(thick.astype(np.float32), affine)
            lr.set_sform(affine, 1)
            lr.set_qform(affine, 1)
            nib.save(lr, str(out / "thick.nii.gz"))
            print(f"{out}/thick.nii.gz {thick.shape} spacing {lr.header.get_zooms()}")


def metrics(sr: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """PSNR over the mask voxels and masked SSIM of the sagittal and coronal planes."""
    from diffsr.losses.ssim import ssim

    n = min(sr.shape[AXIS], gt.shape[AXIS])
    sr, gt, mask = sr[..., :n], gt[..., :n], mask[..., :n]
    err = (sr[mask].astype(np.float64) - gt[mask]) ** 2
    out = {"psnr": float(10 * np.log10(1.0 / err.mean()))}
    for name, axis in (("ssim_sagittal", 0), ("ssim_coronal", 1)):
        values = []
        for start in range(0, sr.shape[axis], 32):
            idx = slice(start, start + 32)

            def take(v: np.ndarray, i: slice = idx, a: int = axis) -> torch.Tensor:
                return torch.from_numpy(np.ascontiguousarray(np.moveaxis(v, a, 0)[i]))[:, None]

            m = take(mask.astype(np.float32))
            keep = m.flatten(1).amax(1) > 0
            if keep.any():
                s = ssim(take(sr)[keep], take(gt)[keep], data_range=1.0, mask=m[keep], reduction="none")
                values += s.tolist()
        out[name] = float(np.mean(values))
    return out


def record(case: str, method: str, entry: dict[str, Any]) -> None:
    """runs/volumes/<case>/<method>.json (``tables`` collects them: two runs may write side by side)."""
    entry = {**entry, "load_average": os.getloadavg(), "threads": torch.get_num_threads()}
    path = RUNS / case / f"{method.replace('+', '-')}.json"
    path.write_text(json.dumps(entry, indent=2))
    print(f"{case:16s} {method:18s} " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in entry.items() if not isinstance(v, (dict, tuple))))


def collect() -> dict[str, Any]:
    """Every recorded method of every case, written to benchmarks/results/volumes.json."""
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__}, "cases": {}}
    for case in cases():
        for method in METHODS:
            path = RUNS / case / f"{method.replace('+', '-')}.json"
            if path.exists():
                results["cases"].setdefault(case, {})[method] = json.loads(path.read_text())
            # the gap cases first ran without --gap (FWHM = spacing assumed): kept as a mismatch ablation
            path = RUNS / case / "nogap" / f"{method.replace('+', '-')}.json"
            if path.exists():
                results["cases"].setdefault(case, {})[f"{method}:nogap"] = json.loads(path.read_text())
    brainix = RUNS / "brainix" / "summary.json"
    if brainix.exists():
        results["brainix"] = json.loads(brainix.read_text())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    return results


def read_output(path: Path, gt_affine: np.ndarray) -> np.ndarray:
    import nibabel as nib

    img = nib.load(str(path))
    # the reconstruction must land on the truth's grid: same affine (the last slice may be missing)
    assert np.allclose(img.affine, gt_affine, atol=1e-4), (img.affine, gt_affine)
    return img.get_fdata(dtype=np.float32)


def run_case(case: str, time_limit: float, methods: tuple[str, ...], threads: int) -> None:
    """Every method of ``methods`` on one simulated case."""
    from diffsr.volumes import IsoOptions, plan_iso, read_volume, run_iso

    volume, _ = case.split("-", 1)
    gt, mask, img = truth(volume)
    folder = RUNS / case
    thick_path = folder / "thick.nii.gz"
    spacing, fwhm = SETTINGS[case.split("-", 1)[1]]
    # a NIfTI header has no slice thickness: the gap is given, as a user would with --gap
    gap = spacing - fwhm if spacing != fwhm else None
    common = {"time_limit": time_limit, "normalization": "minmax", "gap": gap,
              "overrides": [f"train.threads={threads}"]}
    if "bspline" in methods:
        vol = read_volume(thick_path)
        plan = plan_iso(vol, gap=gap)
        t0 = time.perf_counter()
        up = plan.slice_profile.interpolate(torch.from_numpy(vol.data), AXIS, plan.n_fine).numpy()
        record(case, "bspline", {**metrics(up, gt, mask), "seconds_reconstruct": time.perf_counter() - t0})
    families = (("edsr", [], ("edsr", "edsr+c")), ("demo", [], ("diffsr+c", "diffsr", "diffsr+c+fourier")),
                ("demo", FAITHFUL, ("diffsr-f+c",)))
    for preset, extra, family in families:
        model = None  # the first method of a family trains; the others reuse its model
        for method in (m for m in family if m in methods):
            out = folder / method.replace("+", "-")
            opts = IsoOptions(preset=preset, consistency="+c" in method,
                              combine="fourier" if "fourier" in method else "average", model=model,
                              **{**common, "overrides": common["overrides"] + extra})
            report = run_iso(thick_path, out, opts)
            model = model or out / "run"
            sr = read_output(Path(report["output"]["files"][0]), img.affine)
            entry = {**metrics(sr, gt, mask), "seconds_reconstruct": report["reconstruct"]["seconds"],
                     "train": report["train"], "residual": report["reconstruct"]["consistency_residual"]}
            record(case, method, entry)


BRAINIX = DATA / "brainix" / "FLAIR"


def brainix(time_limit: float, threads: int) -> None:
    """diffsr iso on the BRAINIX FLAIR series (22 slices, 5 mm thick, 6 mm apart; 0.8 mm pixels).

    A finished run (``runs/volumes/brainix/diffsr/iso.json``) is summarised, not redone.
    """
    from diffsr.volumes import IsoOptions, run_iso

    out = RUNS / "brainix"
    done = out / "diffsr" / "iso.json"
    if done.exists():
        report = json.loads(done.read_text())
    else:
        opts = IsoOptions(preset="demo", time_limit=time_limit, consistency=True, normalization="minmax",
                          overrides=[f"train.threads={threads}"])
        report = run_iso(BRAINIX, out / "diffsr", opts)
    seconds = report["train"]["seconds"] + report["reconstruct"]["seconds"]
    summary = {"plan": report["plan"], "train": report["train"], "reconstruct": report["reconstruct"],
               "seconds_train_and_reconstruct": seconds, "dicom": report["output"]["files"][0],
               "load_average": os.getloadavg(), "threads": threads}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("train", "seconds_train_and_reconstruct")}, indent=1))


def _brainix_figure() -> None:
    """docs/figures/volumes_brainix.png: sagittal and coronal reformats, thick slices vs diffsr iso."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffsr.data.io import read
    from diffsr.volumes import plan_iso, read_volume

    thick = read_volume(BRAINIX)
    plan = plan_iso(thick)
    sr = read(RUNS / "brainix" / "diffsr" / "FLAIR_iso").array[:, 0]  # (165, 288, 288), inferior first
    lo, hi = np.percentile(thick.data[thick.data > 0], [0.5, 99.5])
    nearest = np.repeat(thick.data, 1, axis=0)
    spline = plan.slice_profile.interpolate(torch.from_numpy((thick.data - lo) / (hi - lo)), 0, plan.n_fine).numpy()
    spline = spline * (hi - lo) + lo
    views = {"sagittal (column 144)": lambda v: v[:, :, 144], "coronal (row 150)": lambda v: v[:, 150, :]}
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.2))
    for row, (name, take) in enumerate(views.items()):
        for col, (title, vol, step) in enumerate((("thick slices (6 mm, as acquired)", nearest, plan.slice_spacing),
                                                  ("cubic B-spline", spline, plan.fine),
                                                  ("diffsr iso (demo, 240 s budget, consistency)", sr, plan.fine))):
            image = take(vol)[::-1]  # superior at the top
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest",
                      aspect=step / plan.spacing[1], extent=None)
            ax.set_title(f"{title}\n{name}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "volumes_brainix.png", dpi=110)
    plt.close(fig)


def _kirby_figure(case: str = "t2w-g4") -> None:
    """docs/figures/volumes_kirby21.png: a coronal view of one simulated case, every method vs the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    from diffsr.volumes import plan_iso, read_volume

    volume = case.split("-")[0]
    gt, _, _ = truth(volume)
    thick = read_volume(RUNS / case / "thick.nii.gz")
    plan = plan_iso(thick)
    panels = {"truth (1 mm)": gt,
              "thick slices (4 mm)": np.repeat(thick.data, 4, axis=2),
              "cubic B-spline": plan.slice_profile.interpolate(torch.from_numpy(thick.data), 2, plan.n_fine).numpy()}
    for method, folder in (("EDSR (SMORE-style)", "edsr"), ("diffsr", "diffsr"), ("diffsr + consistency", "diffsr-c")):
        path = RUNS / case / folder / "thick_iso.nii.gz"
        if path.exists():
            panels[method] = nib.load(str(path)).get_fdata(dtype=np.float32)
    row = 128  # a coronal plane: (R-L, S-I)
    rows, cols = np.nonzero(gt[:, row, :].T[::-1] > 0)  # the head's bounding box, 4 voxels of margin
    box = (slice(max(rows.min() - 4, 0), rows.max() + 5), slice(max(cols.min() - 4, 0), cols.max() + 5))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0))
    for ax, (title, vol) in zip(axes, panels.items(), strict=True):
        image = vol[:, row, :].T[::-1]
        ax.imshow(image[box], cmap="gray", vmin=0, vmax=1, aspect=1 / 1.2, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "volumes_kirby21.png", dpi=110)
    plt.close(fig)


def tables() -> str:
    """The markdown tables of docs/volumes.md from the recorded results."""
    results = collect()
    names = {"bspline": "cubic B-spline", "edsr": "EDSR (SMORE design)", "edsr+c": "EDSR + consistency",
             "diffsr": "diffsr demo", "diffsr+c": "diffsr demo + consistency",
             "diffsr+c+fourier": "diffsr demo + consistency, Fourier combination",
             "diffsr-f+c": "diffsr demo, L1 at the sampler's time + consistency"}
    lines = []
    for case, methods in results["cases"].items():
        base = methods.get("bspline", {}).get("psnr")
        lines += [f"**{case}**", "", "| method | PSNR (dB) | vs B-spline | SSIM sagittal | SSIM coronal | train "
                  "steps / s | reconstruct s | consistency residual (RMS) |", "|---|---|---|---|---|---|---|---|"]
        for method in [*METHODS, "edsr:nogap", "diffsr:nogap", "diffsr+c:nogap"]:
            e = methods.get(method)
            if e is None:
                continue
            train = e.get("train") or {}
            steps = f"{train['steps']} / {train['seconds']:.0f}" if "steps" in train else ("-" if not train else "same")
            resid = e.get("residual", {}).get("rms_raw")
            name = names[method.split(":")[0]] + (" [no --gap: FWHM 3.5 mm assumed]" if ":nogap" in method else "")
            lines.append(f"| {name} | {e['psnr']:.2f} | {e['psnr'] - base:+.2f} | {e['ssim_sagittal']:.4f} | "
                         f"{e['ssim_coronal']:.4f} | {steps} | {e['seconds_reconstruct']:.0f} | "
                         f"{'-' if resid is None else f'{resid:.1e}'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["simulate", "run", "brainix", "tables", "figures"])
    parser.add_argument("cases", nargs="*", help=f"cases (default all): {', '.join(cases())}")
    parser.add_argument("--time-limit", type=float, default=240.0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="threads of training and reconstruction")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    torch.set_num_threads(args.threads)
    if args.command == "simulate":
        simulate()
    elif args.command == "run":
        for case in args.cases or cases():
            run_case(case, args.time_limit, tuple(args.methods.split(",")), args.threads)
    elif args.command == "brainix":
        brainix(args.time_limit, args.threads)
    elif args.command == "tables":
        print(tables())
    else:
        _brainix_figure()
        _kirby_figure()


if __name__ == "__main__":
    main()
