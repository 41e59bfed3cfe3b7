"""benchmarks/evaluation_sandwich.py's table: a figure the evaluation could not give (k-hat under a K too small to
fit any tail: pareto_k_fraction None; AIS's standard error from one chain) is a dash, not a crash."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its sibling _runs
    spec = importlib.util.spec_from_file_location("evaluation_sandwich", ROOT / "benchmarks" / "evaluation_sandwich.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(khat, ais_stderr=0.5):
    values = {"elbo": -100.0, "nll": 95.0, "ais_log_px": -94.5, "approximation_gap": 4.0,
              "amortization_gap": 1.0}
    row = {"model": "VAE 784-400-40", "pareto_k_fraction": khat, "bdmc": {"bdmc_width": 0.25}, **values}
    return row | {key + "_stderr": 0.5 for key in values} | {"ais_log_px_stderr": ais_stderr}


def test_table_prints_a_dash_for_a_missing_figure_and_the_figure_when_there_is_one(monkeypatch):
    module = _module(monkeypatch)
    args = argparse.Namespace(k=5, ais=10)
    missing, present = module.table([_row(None, ais_stderr=None), _row(0.75)], args).splitlines()[2:]
    assert missing == ("| VAE 784-400-40 | -100.00 ± 0.50 | -95.00 ± 0.50 | -94.50 ± — | 0.25 | 4.00 ± 0.50 | "
                       "1.00 ± 0.50 | — |")
    assert present == ("| VAE 784-400-40 | -100.00 ± 0.50 | -95.00 ± 0.50 | -94.50 ± 0.50 | 0.25 | 4.00 ± 0.50 | "
                       "1.00 ± 0.50 | 0.75 |")
