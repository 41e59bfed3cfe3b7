"""Parse speed of the static binarized MNIST training file (78 MB of ``.amat`` text).

Prints, for ``binarized_mnist_train.amat[.gz]`` (50,000 lines of 784 '0'/'1' values):

- the time to read, gunzip and parse it with :func:`vaekit.data.read_amat` (no cache), and
  the parse of the decoded bytes alone;
- ``np.loadtxt`` (default float64, and ``dtype=np.uint8``) on the first ``--loadtxt-rows``
  lines of the decoded text, scaled linearly to 50,000 lines, and the ratio loadtxt / vaekit;
- the load from the packed-bit cache, and the full ``load_dataset`` (all three splits,
  float32 tensors), cold and cached.

Times are the best of ``--repeats`` runs (seconds, wall clock). The cache is written to a
temporary ``$XDG_CACHE_HOME`` (the data folder is read-only), deleted at the end. Without
the reference data (``--data-dir``) a random file of the same size is
generated and timed instead (reported as ``synthetic``).

    .venv/bin/python benchmarks/bench_parse_amat.py [--data-dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = (
    Path(os.environ.get("VAEKIT_SHARED_DATA", REPO.parent / "shared" / "data")) / "binarized_mnist"
)


def best_of(repeats: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--loadtxt-rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # before vaekit reads it
        from vaekit.data import load_dataset, parse_amat, read_amat, write_amat
        from vaekit.data.download import find_file, read_bytes

        data_dir = args.data_dir
        path = find_file(data_dir, "binarized_mnist_train.amat")
        source = "reference"
        if path is None:
            source = "synthetic"
            data_dir = Path(tmp) / "binarized_mnist"
            data_dir.mkdir()
            rng = np.random.default_rng(0)
            for split, n in (("train", 50_000), ("valid", 10_000), ("test", 10_000)):
                x = (rng.random((n, 784)) < 0.13).astype(np.uint8)
                write_amat(data_dir / f"binarized_mnist_{split}.amat.gz", x)
            path = data_dir / "binarized_mnist_train.amat.gz"

        t_read, raw = best_of(args.repeats, path.read_bytes)
        t_decoded, text = best_of(args.repeats, lambda: read_bytes(path))
        t_gunzip = max(0.0, t_decoded - t_read)
        t_parse, x = best_of(args.repeats, lambda: parse_amat(text, str(path)))
        t_total, _ = best_of(args.repeats, lambda: read_amat(path, cache=False))
        k = min(args.loadtxt_rows, len(x))
        head = text[: k * 1568]
        t_loadtxt, y = best_of(1, lambda: np.loadtxt(io.BytesIO(head)))
        assert np.array_equal(y, x[:k]), "np.loadtxt and parse_amat disagree"
        t_loadtxt_scaled = t_loadtxt * len(x) / k
        t_loadtxt_u8, _ = best_of(1, lambda: np.loadtxt(io.BytesIO(head), dtype=np.uint8))
        t_loadtxt_u8_scaled = t_loadtxt_u8 * len(x) / k

        read_amat(path)  # writes the cache
        t_cached, xc = best_of(args.repeats, lambda: read_amat(path))
        assert np.array_equal(xc, x), "cached copy differs"
        t_ds_cold, _ = best_of(
            1, lambda: load_dataset("binarized-mnist", data_dir=data_dir, cache=False)
        )
        load_dataset("binarized-mnist", data_dir=data_dir)  # caches valid / test too
        t_ds_cached, _ = best_of(
            args.repeats, lambda: load_dataset("binarized-mnist", data_dir=data_dir)
        )

    result = {
        "file": str(path),
        "data": source,
        "rows": int(len(x)),
        "text_mb": round(len(text) / 1e6, 1),
        "gz_mb": round(len(raw) / 1e6, 2),
        "read_s": t_read,
        "gunzip_s": t_gunzip,
        "parse_s": t_parse,
        "read_gunzip_parse_s": t_total,
        "loadtxt_rows": k,
        "loadtxt_scaled_s": t_loadtxt_scaled,
        "speedup_vs_loadtxt": t_loadtxt_scaled / t_total,
        "loadtxt_uint8_scaled_s": t_loadtxt_u8_scaled,
        "speedup_vs_loadtxt_uint8": t_loadtxt_u8_scaled / t_total,
        "cached_read_s": t_cached,
        "load_dataset_cold_s": t_ds_cold,
        "load_dataset_cached_s": t_ds_cached,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{path} ({source}): {len(x)} rows, {result['text_mb']} MB text, {result['gz_mb']} MB gz")
    print(f"  read file                         {t_read:8.3f} s")
    print(f"  gunzip                            {t_gunzip:8.3f} s")
    print(f"  parse + check (numpy)             {t_parse:8.3f} s")
    print(f"  read_amat, no cache (all above)   {t_total:8.3f} s   (target < 2 s)")
    scale = f"{k} rows x {len(x) / k:g}"
    print(
        f"  np.loadtxt (float64), {scale:<12}{t_loadtxt_scaled:8.3f} s   "
        f"-> {t_loadtxt_scaled / t_total:.0f}x the time of read_amat"
    )
    print(
        f"  np.loadtxt (uint8),   {scale:<12}{t_loadtxt_u8_scaled:8.3f} s   "
        f"-> {t_loadtxt_u8_scaled / t_total:.1f}x"
    )
    print(f"  read_amat from the packed cache   {t_cached:8.3f} s")
    print(f"  load_dataset, 3 splits, cold      {t_ds_cold:8.3f} s")
    print(f"  load_dataset, 3 splits, cached    {t_ds_cached:8.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
