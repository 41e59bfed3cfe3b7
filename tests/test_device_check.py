"""benchmarks/device_check.py in its --quick form: every part runs on the CPU and reports sound numbers."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_quick_runs_every_part_on_the_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "benchmarks" / "device_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "check.json"
    recipes = [str(ROOT / "configs" / "quality" / name) for name in ("vae-gated.toml", "iwae-k50.toml")]
    result = module.main(["--quick", "--device", "cpu", "--json", str(out), "--recipes", *recipes])
    assert json.loads(out.read_text())["quick"] is True
    training = result["training"]
    assert training["images"] == 2000 and len(training["seconds_per_epoch"]) == 1
    assert all(s > 0 for s in training["seconds_per_epoch"])
    ev = result["evaluation"]
    assert ev["images"] == 20 and ev["k"] == 50 and math.isfinite(ev["nll"]) and ev["nll"] > 0
    assert [r["recipe"] for r in result["recipes"]] == ["vae-gated.toml", "iwae-k50.toml"]
    assert all(r["loss_finite"] and r["seconds_per_step"] > 0 and r["batch_size"] == 8 for r in result["recipes"])
