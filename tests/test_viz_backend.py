"""vaekit's figures leave matplotlib's backend alone: importing its modules in a process that has an interactive
backend set (Jupyter's inline backend where installed) changes nothing, and the figures are Figure objects that
save as PNGs without pyplot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _backend() -> str:
    """A backend other than Agg that works without a display: Jupyter's inline one where installed."""
    if importlib.util.find_spec("matplotlib_inline") and importlib.util.find_spec("IPython"):
        return "module://matplotlib_inline.backend_inline"
    return "svg"


SCRIPT = r"""
import json, sys
import matplotlib
set_ = matplotlib.get_backend()
import vaekit, vaekit.pages.viz, vaekit.pages.report, vaekit.pages.compare, vaekit.pages.explorer
import vaekit.commands.gradients, vaekit.commands.gradients_run, vaekit.cli
after_import = matplotlib.get_backend()

import torch
from matplotlib.figure import Figure
from vaekit.pages import viz
from vaekit.cli import main
from vaekit.models import VAE

torch.manual_seed(0)
model = VAE(shape=(1, 6, 6), latent=2, hidden=[8])
x = torch.rand(12, 1, 6, 6)
figs = {"samples": viz.samples_figure(model, 9), "manifold": viz.manifold_figure(model, 4),
        "traversals": viz.traversals_figure(model, [0, 1], None, 3),
        "scatter": viz.latent_scatter_figure(model, x, torch.arange(12) % 3),
        "curves": viz.training_curves_figure([{"epoch": e, "train_elbo": -50.0 + e} for e in range(1, 5)]),
        "kl": viz.kl_per_unit_figure([0.3, 0.1], [0.2, 0.0])}
out = sys.argv[1]
saved = {}
for name, fig in figs.items():
    path = viz.save_figure(fig, f"{out}/{name}.png")
    saved[name] = [isinstance(fig, Figure), open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n",
                   fig._repr_png_()[:4] == b"\x89PNG"]
code = main(["gradients", "--samples", "2,20", "--trials", "20", "--plot", f"{out}/gradients.png"])
print(json.dumps({"set": set_, "import": after_import, "figures": matplotlib.get_backend(),
                  "pyplot": "matplotlib.pyplot" in sys.modules, "saved": saved, "cli": code}))
"""


def test_importing_and_drawing_keep_the_backend(tmp_path):
    backend = _backend()
    env = {**os.environ, "MPLBACKEND": backend, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["set"] == backend
    assert out["import"] == backend and out["figures"] == backend  # no matplotlib.use("Agg") anywhere
    assert not out["pyplot"]  # nothing vaekit did needed pyplot (whose import can pick a backend)
    for name, (is_figure, png, shown) in out["saved"].items():
        assert is_figure and png and shown, name
    assert out["cli"] == 0 and (tmp_path / "gradients.png").read_bytes()[:4] == b"\x89PNG"


def test_pyplot_still_works_after_vaekit(tmp_path):
    """A notebook's own pyplot figure after importing vaekit: the chosen backend, and it draws."""
    backend = _backend()
    script = ("import matplotlib, vaekit.pages.viz, vaekit.pages.report\n"
              "import matplotlib.pyplot as plt\n"
              "fig, ax = plt.subplots(); ax.plot([1, 2, 3])\n"
              "fig.savefig(__import__('sys').argv[1]); print(matplotlib.get_backend())\n")
    env = {**os.environ, "MPLBACKEND": backend, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "own.png")], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == backend
    assert (tmp_path / "own.png").read_bytes()[:4] == b"\x89PNG"
