"""``diffsr eval`` overhead outside the models, and proof that the numbers did not change.

    python benchmarks/eval_overhead.py --data DIR [--run RUN] [--before SRC] [--repeat N] [--profile]

Each case runs the real command, ``python -m diffsr eval --data DIR --method bicubic [--method RUN]
--detail-sweep none``, in a subprocess (interpreter start and imports included, as a user sees
it) and reports its wall time, its CPU time (user + system, less sensitive to other jobs on a
shared machine), the methods' own time (``timing.*.seconds_total`` in metrics.json) and the
overhead = wall - methods. ``--before SRC`` also runs every case with another source tree
(e.g. the parent commit's ``src``, from ``git archive``), interleaved with this one, and compares
the two metrics.json files: every number must be equal except the timings and the run's date,
command and output folder. ``--profile``: a cProfile of each case in this tree, the diffsr
functions with the largest cumulative time (where the time goes). Results:
benchmarks/results/eval_overhead.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from loss_stack import hardware  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "eval_overhead.json"
VOLATILE = {"timing", "created", "reproduce", "out", "out_dir"}  # keys whose values differ run to run


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_case(src: Path, data: Path, methods: list[str], out: Path, profile: Path | None = None) -> dict[str, Any]:
    """One ``diffsr eval``: wall, CPU, the methods' own seconds, the metrics.json it wrote."""
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += ["-m", "diffsr", "eval", "--data", str(data), "--out", str(out), "--detail-sweep", "none"]
    for method in methods:
        cmd += ["--method", method]
    env = {**os.environ, "PYTHONPATH": str(src)}
    cpu0, start = _child_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - start, _child_cpu() - cpu0
    if proc.returncode:
        raise RuntimeError(f"diffsr eval failed:\n{proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    model = sum(t["seconds_total"] for t in metrics["timing"].values())
    return {"wall_s": wall, "cpu_s": cpu, "methods_s": model, "overhead_s": wall - model, "metrics": metrics}


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two metrics.json trees differ, the volatile keys ignored; numbers compared exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only on one side" for k in set(a) ^ set(b)]
        for k in a.keys() & b.keys():
            if k not in VOLATILE:
                out += differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def top_functions(profile: Path, n: int = 15) -> list[dict[str, Any]]:
    """The diffsr (and matplotlib / import) functions with the largest cumulative time."""
    stats = pstats.Stats(str(profile))
    rows = []
    for (filename, line, name), (_, calls, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename.split("/src/")[-1] if "/src/diffsr/" in filename else None
        if where is None and name == "<module>" and filename.endswith("torch/__init__.py"):
            where = "torch/__init__.py"
        if where is None and name == "savefig":
            where = "matplotlib savefig"
        if where:
            rows.append({"function": f"{where}:{line}({name})", "calls": calls, "cumulative_s": round(cumulative, 2)})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return rows[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="test images (e.g. infrared/roadscene/test)")
    parser.add_argument("--run", type=Path, default=None, help="a trained run folder: the diffusion case")
    parser.add_argument("--before", type=Path, default=None, help="another source tree to compare with")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cases = {"bicubic": ["bicubic"]}
    if args.run is not None:
        cases["bicubic + run"] = ["bicubic", str(args.run)]
    trees = {"after": ROOT / "src", **({"before": args.before} if args.before else {})}
    result: dict[str, Any] = {**hardware(), "data": str(args.data), "run": str(args.run), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for case, methods in cases.items():
            runs: dict[str, list[dict[str, Any]]] = {tree: [] for tree in trees}
            for r in range(args.repeat):
                for tree, src in trees.items():  # interleaved
                    out = Path(tmp) / f"{case}-{tree}-{r}".replace(" ", "_")
                    last = run_case(src, args.data, methods, out)
                    runs[tree].append(last)
                    print(f"  {case} [{tree}] wall {last['wall_s']:.1f} s, cpu {last['cpu_s']:.1f} s,"
                          f" methods {last['methods_s']:.1f} s", flush=True)
            row: dict[str, Any] = {"methods": methods}
            for tree, rs in runs.items():
                row[tree] = {k: round(statistics.median(x[k] for x in rs), 2)
                             for k in ("wall_s", "cpu_s", "methods_s", "overhead_s")}
            if "before" in runs:
                diff = differences(runs["before"][0]["metrics"], runs["after"][0]["metrics"])
                row["metrics_json_differences"] = diff
                row["overhead_speedup"] = round(row["before"]["overhead_s"] / row["after"]["overhead_s"], 2)
                row["cpu_speedup"] = round(row["before"]["cpu_s"] / row["after"]["cpu_s"], 2)
            if args.profile:
                prof = Path(tmp) / "profile.out"
                run_case(trees["after"], args.data, methods, Path(tmp) / "profiled", profile=prof)
                row["profile_after"] = top_functions(prof)
            result["cases"][case] = row
            print(json.dumps({k: v for k, v in row.items() if k != "profile_after"}, indent=1), flush=True)
    result["loadavg_after"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if any(row.get("metrics_json_differences") for row in result["cases"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
