"""Haar level-2 round trip: diffsr's transform against pywt and two de-interleaving rewrites.

    python benchmarks/haar_variants.py [--threads 1] [--repeat 15]

RESULTS.md section 1 names the lever for the last factor over pywt: the column butterflies read
even and odd columns with stride 2, which torch's elementwise kernels do not vectorise. This
script measures, interleaved in one process after a warm-up, the round trip
``waverec2(wavedec2(x, 2))`` on 16x3x256^2 and 4x1x512^2 float32 for:

- ``diffsr``: ``diffsr.codecs.wavelet`` as shipped (row then column butterflies, stride 2 on W,
  chunked so a chunk stays in cache);
- ``gemm-deinterleave``: the column butterfly as one matrix product ``[[1, 1], [1, -1]] / 2 @ x.view(N, 2).T``
  (a BLAS call that writes even / odd sums de-interleaved), then contiguous row butterflies;
- ``permute+mm4``: one de-interleaving copy to (B, 2, 2, C, h, w) (the 2x2 phases) and one
  4x4 matrix product per level that writes LL, cH, cV, cD in the codec's layout;
- ``pywt``: ``pywt.wavedec2`` / ``waverec2`` (periodization) looped over images and channels.

Every variant is checked against pywt (max abs difference of all coefficients). Median ms and
the ratio pywt / variant. Also (``stride2``): one ``torch.add`` of the even and odd columns
(stride 2) against the same add on two contiguous halves of the same tensor, in cache (1.5 MB)
and out of it (6 MB): is the stride the limiter? Results: benchmarks/results/haar_variants.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pywt  # noqa: E402
import torch  # noqa: E402
from loss_stack import hardware  # noqa: E402
from torch import Tensor  # noqa: E402

from diffsr.codecs.wavelet import wavedec2, waverec2  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "haar_variants.json"
SHAPES = [(16, 3, 256, 256), (4, 1, 512, 512)]


def _gemm_level(x: Tensor) -> tuple[Tensor, Tensor]:
    b, c, h2, w2 = x.shape
    h, w = h2 // 2, w2 // 2
    m = x.new_tensor([[0.5, 0.5], [0.5, -0.5]])
    buf = torch.matmul(m, x.view(b, c, h2 * w, 2).transpose(-1, -2)).view(b, c, 2, h, 2, w)  # low-W, high-W
    highs = x.new_empty(b, 3, c, h, w)
    ll = buf[:, :, 0, :, 0] + buf[:, :, 0, :, 1]
    torch.sub(buf[:, :, 0, :, 0], buf[:, :, 0, :, 1], out=highs[:, 0])
    torch.add(buf[:, :, 1, :, 0], buf[:, :, 1, :, 1], out=highs[:, 1])
    torch.sub(buf[:, :, 1, :, 0], buf[:, :, 1, :, 1], out=highs[:, 2])
    return ll, highs


def _gemm_inverse_level(ll: Tensor, highs: Tensor) -> Tensor:
    b, c, h, w = ll.shape
    buf = ll.new_empty(b, c, 2, h, 2, w)
    torch.add(ll, highs[:, 0], out=buf[:, :, 0, :, 0])
    torch.sub(ll, highs[:, 0], out=buf[:, :, 0, :, 1])
    torch.add(highs[:, 1], highs[:, 2], out=buf[:, :, 1, :, 0])
    torch.sub(highs[:, 1], highs[:, 2], out=buf[:, :, 1, :, 1])
    out = ll.new_empty(b, c, 2 * h, 2 * w)
    m = ll.new_tensor([[0.5, 0.5], [0.5, -0.5]])
    torch.matmul(buf.view(b, c, 2, 2 * h * w).transpose(-1, -2), m, out=out.view(b, c, 2 * h * w, 2))
    return out


def gemm_roundtrip(x: Tensor) -> tuple[list[Tensor], Tensor]:
    ll1, h1 = _gemm_level(x)
    ll2, h2 = _gemm_level(ll1)
    coeffs = [ll2, h2, h1]
    return coeffs, _gemm_inverse_level(_gemm_inverse_level(ll2, h2), h1)


_K = torch.tensor([[1.0, 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]]) / 2  # LL cH cV cD x phases


def perm_roundtrip(x: Tensor, chunk_bytes: int = 1 << 20) -> tuple[list[Tensor], Tensor]:
    b, c, h0, w0 = x.shape
    step = max(1, chunk_bytes // (x[0].numel() * x.element_size()))
    packs = [x.new_empty(b, 4, c, h0 >> lv, w0 >> lv) for lv in (1, 2)]
    for i in range(0, b, step):
        cur = x[i : i + step]
        for lv in range(2):
            n, _, hc, wc = cur.shape
            phases = cur.reshape(n, c, hc // 2, 2, wc // 2, 2).permute(0, 3, 5, 1, 2, 4).contiguous().view(n, 4, -1)
            dst = packs[lv][i : i + step]
            torch.matmul(_K, phases, out=dst.view(n, 4, -1))
            cur = dst[:, 0]
    coeffs = [packs[1][:, 0], packs[1][:, 1:], packs[0][:, 1:]]
    out = x.new_empty(x.shape)
    for i in range(0, b, step):
        cur = coeffs[0][i : i + step]
        for lv, highs in enumerate(coeffs[1:]):
            n, _, hh, ww = cur.shape
            bands = torch.cat([cur.unsqueeze(1), highs[i : i + step]], 1).view(n, 4, -1)
            ph = torch.matmul(_K.t(), bands).view(n, 2, 2, c, hh, ww)
            target = out[i : i + step] if lv == 1 else x.new_empty(n, c, 2 * hh, 2 * ww)
            target.view(n, c, hh, 2, ww, 2).permute(0, 3, 5, 1, 2, 4).copy_(ph)
            cur = target
    return coeffs, out


def _parity(coeffs: list[Tensor], x: Tensor) -> float:
    """Max abs difference of every coefficient of image 0, channel 0 against pywt."""
    ref = pywt.wavedec2(x[0, 0].numpy(), "haar", mode="periodization", level=2)
    err = float((coeffs[0][0, 0] - torch.from_numpy(ref[0])).abs().max())
    for highs, bands in zip(coeffs[1:], ref[1:], strict=True):
        for k in range(3):
            err = max(err, float((highs[0, k, 0] - torch.from_numpy(bands[k])).abs().max()))
    return err


def run(repeat: int) -> list[dict[str, Any]]:
    rows = []
    for shape in SHAPES:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        xn = x.numpy()

        def pywt_loop(xn: np.ndarray = xn, shape: tuple[int, ...] = shape) -> None:
            for i in range(shape[0]):
                for j in range(shape[1]):
                    pywt.waverec2(pywt.wavedec2(xn[i, j], "haar", mode="periodization", level=2), "haar",
                                  mode="periodization")

        fns: dict[str, Callable[[], Any]] = {
            "pywt": pywt_loop,
            "diffsr": lambda x=x: waverec2(wavedec2(x, "haar", 2), "haar"),
            "gemm-deinterleave": lambda x=x: gemm_roundtrip(x),
            "permute+mm4": lambda x=x: perm_roundtrip(x),
        }
        parity = {"diffsr": _parity(wavedec2(x, "haar", 2), x), "gemm-deinterleave": _parity(gemm_roundtrip(x)[0], x),
                  "permute+mm4": _parity(perm_roundtrip(x)[0], x)}
        roundtrip = {"diffsr": float((waverec2(wavedec2(x, "haar", 2), "haar") - x).abs().max()),
                     "gemm-deinterleave": float((gemm_roundtrip(x)[1] - x).abs().max()),
                     "permute+mm4": float((perm_roundtrip(x)[1] - x).abs().max())}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for fn in fns.values():
            fn()
        for _ in range(repeat):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["pywt"])
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append({"shape": list(shape), "variant": name, "ms": round(1e3 * med, 2),
                         "min_ms": round(1e3 * min(ts), 2), "pywt_over_variant": round(base / med, 2),
                         "max_abs_diff_vs_pywt": parity.get(name), "roundtrip_err": roundtrip.get(name)})
            print(f"{'x'.join(map(str, shape)):<14} {name:<18} {1e3 * med:8.2f} ms  pywt/variant {base / med:5.2f}",
                  flush=True)
    return rows


def stride2(repeat: int) -> list[dict[str, Any]]:
    """Median ms of a stride-2 add (even + odd columns) and of the same add on contiguous halves."""
    rows = []
    for n in (196_608, 786_432):
        s = torch.rand(n, 2)
        out = torch.empty(n)
        flat = s.view(-1)
        fns = {"strided": lambda s=s, out=out: torch.add(s[:, 0], s[:, 1], out=out),
               "contiguous": lambda flat=flat, out=out, n=n: torch.add(flat[:n], flat[n:], out=out)}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(3 * repeat):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        row = {"elements_out": n, "input_mb": round(8 * n / 2**20, 1),
               **{f"{k}_ms": round(1e3 * statistics.median(v), 3) for k, v in times.items()}}
        row["strided_over_contiguous"] = round(row["strided_ms"] / row["contiguous_ms"], 2)
        print(f"stride2 {row}", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {**hardware(), "repeat": args.repeat, "rows": run(args.repeat), "stride2": stride2(args.repeat)}
    result["loadavg_after"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
