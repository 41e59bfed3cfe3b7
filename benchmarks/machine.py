"""What the benchmarks ran on: CPU model, cores, vector extensions, caches, torch's build, the load average.

usage: python benchmarks/machine.py [--json benchmarks/results/machine.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

from threads import load_average


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def describe() -> dict:
    info = _lscpu()
    flags = set(info.get("Flags", "").split())
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2" if flags else "unknown"
    import torch

    return {"cpu": info.get("Model name", platform.processor() or platform.machine()),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "simd": simd, "l2": info.get("L2 cache"), "l3": info.get("L3 cache"),
            "torch": torch.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average": load_average()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write it to this file")
    args = ap.parse_args()
    facts = describe()
    print(json.dumps(facts, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(facts, indent=2) + "\n")


if __name__ == "__main__":
    main()
